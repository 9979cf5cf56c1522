"""viz.explore / `graphdiff explore`: graphs in Google's Model Explorer (the optional [explore] extra).

The export of an unrolled GPT (thousands of nodes, forward and backward) loads through the package's own graph
and node-data classes; the served page, opened in headless Chromium, shows the graph's top-level layers (a
screenshot is saved and its path printed); a port in use and a missing extra are one line and exit 2.
Outside CI the tests that need the extra skip without it; in CI (CI=true, .ci/run installs it) they fail.
"""
import io
import json
import select as select_fd
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import graphdiff as gd
from graphdiff import viz
from graphdiff.cli import main
from graphdiff.lm import GPT
from graphdiff.lm.unrolled import unroll
from graphdiff.viz import gallery
from graphdiff.viz.explorer import ExplorerUnavailable, PortInUse, export_graph, free_port, to_model_explorer
from graphdiff.viz.graphs import backward_graph, is_backward, select
from tests.browser import browser, missing  # noqa: F401 (fixture)


def need_explorer():
    """The model_explorer package, or skip (fail in CI, which installs the [explore] extra)."""
    try:
        import model_explorer
    except ImportError:
        missing("the [explore] extra (ai-edge-model-explorer)", ".ci/run installs it")
    return model_explorer


def hide_explorer(monkeypatch):
    """Make `import model_explorer` fail, as without the extra."""
    monkeypatch.setitem(sys.modules, "model_explorer", None)


def gpt_backward(T=6):
    """An unrolled GPT over T positions with its backward graph (children variant): a few thousand nodes."""
    model = GPT(vocab_size=20, block_size=T, n_layer=2, n_head=2, n_embd=16, seed=0)
    ids = np.random.default_rng(0).integers(1, 20, T + 1)
    u = unroll(model, ids[:-1], ids[1:])
    u.graph.forward(outputs=u.loss)
    u.graph.backward(u.loss, retain_grads=True)
    return u, backward_graph(u.graph, u.loss)


def test_gpt_export_loads_through_model_explorers_graph_classes(tmp_path):
    me = need_explorer()
    import dacite
    from model_explorer import graph_builder, node_data_builder
    u, what = gpt_backward()
    nodes, outputs = select(what)
    assert 2000 < len(nodes) < 20000
    first = nodes[len(nodes) // 3]
    paths = export_graph(what, tmp_path / "gpt.json", quantities={"custom": {first: 1.5, nodes[0].name: 2.5}})
    assert [p.name for p in paths] == ["gpt.json", "gpt.value_norm.json", "gpt.grad_norm.json", "gpt.nonfinite.json",
                                       "gpt.bytes_kept_for_backward.json", "gpt.custom.json"]   # health's + ours
    strict = dacite.Config(strict=True)
    collection = dacite.from_dict(graph_builder.GraphCollection, json.loads(paths[0].read_text()), config=strict)
    (graph,) = collection.graphs
    assert collection.label == "gpt" and len(graph.nodes) == len(nodes)
    by_id = {n.id: n for n in graph.nodes}
    assert len(by_id) == len(nodes)
    for n in nodes:                               # each node, its scope, its inputs in slot order
        e = by_id[n.name]
        assert [(x.sourceNodeId, x.targetNodeInputId) for x in e.incomingEdges] == \
            [(p.name, str(i)) for i, p in enumerate(n.inputs)]
        attrs = {a.key: a.value for a in e.attrs}
        assert attrs["shape"] == str(tuple(n.shape)) and attrs["dtype"] == str(n.dtype)
        if is_backward(n):
            assert e.namespace == "grad" or e.namespace.startswith("grad/"), (n.name, e.namespace)
        else:
            assert e.namespace == n.scope and attrs["op"] == (n.op or n.kind)
    # a backward node reading a forward value in a scope sits in that scope's mirror under grad/
    reader = next(n for n in nodes if is_backward(n) and any(not is_backward(p) and p.scope for p in n.inputs))
    scope = next(p.scope for p in reader.inputs if not is_backward(p) and p.scope)
    assert by_id[reader.name].namespace == f"grad/{scope}"
    top = {n.namespace.split("/")[0] for n in graph.nodes if n.namespace}
    assert top == {f"t{t}" for t in range(6)} | {"grad"}
    # value statistics as attributes, equal to the values themselves
    v = gd.to_numpy(first.value)
    assert float({a.key: a.value for a in by_id[first.name].attrs}["max"]) == pytest.approx(v.max(), rel=1e-5)
    # node data: each quantity loads as the package's GraphNodeData, keyed by the graph's id
    data = {p.stem.split(".", 1)[1]: json.loads(p.read_text()) for p in paths[1:]}
    loaded = {k: dacite.from_dict(node_data_builder.GraphNodeData, d["gpt"], config=strict) for k, d in data.items()}
    assert {r.value for r in loaded["custom"].results.values()} == {1.5, 2.5}
    assert len(loaded["value_norm"].results) == sum(1 for n in nodes if n.value is not None and n.dtype != "bool")
    param = u.params["wte.weight"]
    assert loaded["grad_norm"].results[param.name].value == pytest.approx(np.linalg.norm(gd.to_numpy(param.grad)))
    assert set(loaded["grad_norm"].results) <= {n.name for n in nodes if not is_backward(n)}
    edges = [t.value for t in loaded["value_norm"].thresholds]
    assert edges == sorted(edges) and edges[-1] == max(r.value for r in loaded["value_norm"].results.values())
    # the package's own config takes the file and the node data as the served page receives them
    config = me.config().add_model_from_path(str(paths[0]))
    config.add_node_data(name="value_norm", node_data=paths[1].read_text())
    assert config.model_sources == [{"url": str(paths[0])}] and config.get_node_data(0) == paths[1].read_text()


def test_node_data_for_a_node_not_in_the_graph_is_refused(tmp_path):
    g, y = gallery.scalar()
    with pytest.raises(ValueError, match="no node 'nope'"):
        export_graph(y, tmp_path / "s.json", quantities={"q": {"nope": 1.0}})
    out = to_model_explorer(y, label="s")
    assert [n["id"] for n in out["graphs"][0]["nodes"]] == [n.name for n in select(y)[0]]


def test_nonfinite_values_are_attributes_not_node_data(tmp_path):
    g = gd.Graph(dtype="float64")
    x = g.param("x", np.array([1.0, -1.0]))
    y = gd.sum(gd.log(x, name="l"), name="y")
    with np.errstate(invalid="ignore"):
        g.forward(outputs=y)
    paths = export_graph(y, tmp_path / "nan.json")
    nodes = {n["id"]: n for n in json.loads(paths[0].read_text())["graphs"][0]["nodes"]}
    assert {a["key"]: a["value"] for a in nodes["l"]["attrs"]}["nonfinite"] == "1"
    norms = json.loads(paths[1].read_text())["nan"]["results"]
    assert "x" in norms and "l" not in norms and "y" not in norms


def test_export_needs_no_extra(tmp_path, monkeypatch, capsys):
    hide_explorer(monkeypatch)
    f = tmp_path / "t.json"
    assert main(["explore", "transformer", "--backward", "--export", str(f)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {f}" in out
    top = {n["namespace"].split("/")[0] for n in json.loads(f.read_text())["graphs"][0]["nodes"]}
    assert top == {"", "block", "grad"}


def test_explore_without_the_extra_says_what_to_install(monkeypatch, capsys):
    hide_explorer(monkeypatch)
    assert main(["explore", "scalar"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and 'pip install -e ".[explore]"' in err and err.startswith("graphdiff explore:")
    g, y = gallery.scalar()
    with pytest.raises(ExplorerUnavailable, match=r"\[explore\]"):
        viz.explore(y, open_browser=False)


def test_a_port_in_use_is_one_line_and_exit_2(capsys):
    need_explorer()
    with socket.socket() as s:
        s.bind(("localhost", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["explore", "scalar", "--port", str(port), "--no-browser"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"port {port} is in use" in err
        g, y = gallery.scalar()
        with pytest.raises(PortInUse):
            viz.explore(y, port=port, open_browser=False, block=False)


def test_explore_from_python_serves_the_graph_and_shows_inline():
    """The notebook path: block=False returns at once with an Explorer whose HTML is the page in an iframe."""
    need_explorer()
    g, y = gallery.mlp()
    g.backward(y, retain_grads=True)
    alpha = next(n for n in g.nodes if n.name == "alpha")
    ex = viz.explore(y, label="mlp", open_browser=False, block=False)
    assert f'src="{ex.url}"' in ex._repr_html_()
    base = ex.url.split("/?")[0]
    with urllib.request.urlopen(f"{base}/api/v1/read_text_file?path={ex.path}", timeout=10) as r:
        served = json.loads(json.loads(r.read())["content"])
    assert served == to_model_explorer(y, label="mlp")
    with urllib.request.urlopen(f"{base}/api/v1/load_node_data?node_data_index=1", timeout=10) as r:
        grad = json.loads(json.loads(r.read())["content"])["mlp"]["results"]
    assert grad["alpha"]["value"] == pytest.approx(np.linalg.norm(gd.to_numpy(alpha.grad)))


def _serve(args, timeout=90):
    """Start `graphdiff explore ARGS --no-browser` on a free port; (process, url) once it prints the url."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "graphdiff", "explore", *args, "--port", str(port),
                             "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select_fd.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            seen.append(line)
            if line.startswith("graphdiff explore: http"):
                return proc, line.split(": ", 1)[1].strip()
    proc.kill()
    pytest.fail(f"graphdiff explore did not serve within {timeout} s:\n{''.join(seen)}")


@pytest.mark.slow
def test_served_page_shows_the_top_level_layers(browser, tmp_path):  # noqa: F811 (fixture)
    """The page of `graphdiff explore transformer --backward`, in headless Chromium: Model Explorer lists the
    graph's top-level layers and nodes (its root-level table), and draws the "grad" layer in its colour."""
    need_explorer()
    from matplotlib import image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    g, y = gallery.transformer()
    g.backward(y, retain_grads=True)
    nodes = to_model_explorer(backward_graph(g, y))["graphs"][0]["nodes"]
    top = {n["namespace"].split("/")[0] if n["namespace"] else n["label"] for n in nodes}
    assert {"block", "grad"} <= top
    proc, url = _serve(["transformer", "--backward"])
    try:
        browser.set_window_size(1400, 900)
        browser.get(url)
        rows = ("return [...document.querySelectorAll('table.children-stats-results tr')]"
                ".slice(1).map(r => r.cells.length > 1 ? r.cells[1].innerText.trim() : '')")

        def root_table(driver):                   # Model Explorer's "Root-level nodes stats": layers and nodes
            names = set(driver.execute_script(rows)) - {""}
            return names if top <= names else None

        shown = WebDriverWait(browser, 60, poll_frequency=1).until(root_table)
        assert shown == top, shown
        assert f"{len(nodes)} nodes" in browser.find_element(By.TAG_NAME, "body").text
        time.sleep(2)                             # the WebGL canvas draws after the tables
        shot = tmp_path / "explorer.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        pixels = (image.imread(io.BytesIO(shot.read_bytes()))[..., :3] * 255).round()
        graph_pane = pixels[:, : pixels.shape[1] * 2 // 3]
        grad_layer = np.all(np.abs(graph_pane - (0xff, 0xf3, 0xe0)) <= 2, axis=-1).sum()
        assert grad_layer > 1000, f"the grad layer's colour covers {grad_layer} px of the graph pane ({shot})"
    finally:
        proc.kill()
        proc.wait(10)
