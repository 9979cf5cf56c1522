"""to_dot and render: golden DOT text, escaping through both renderers, the collapse path, options."""
import os
import shutil
from pathlib import Path

import graphviz
import numpy as np
import pytest

import graphdiff as gd
from graphdiff import viz
from graphdiff.viz import dot as D, labels, renderer as R
from graphdiff.viz import gallery

from .viz_helpers import AWKWARD, need_renderer, scoped_graph, svg_texts, twice_a

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("GRAPHDIFF_UPDATE_GOLDEN") == "1"


def check_golden(name, text):
    path = GOLDEN / f"{name}.dot"       # not .gv: the repo ignores *.gv (render outputs)
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}; run with GRAPHDIFF_UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text(encoding="utf-8"), f"DOT for {name} changed; diff against {path}"


def golden_cases():
    g, L = gallery.scalar()
    yield "scalar_before_backward", D.to_dot(L).source
    g.backward(L, retain_grads=True)
    yield "scalar", D.to_dot(L, legend=True).source
    g, J = gallery.mlp()
    g.backward(J, retain_grads=True)
    yield "mlp", D.to_dot(J, highlight=["z", ("alpha", "a")]).source
    g, loss = gallery.transformer()           # float32 values vary with the BLAS: structure only
    yield "transformer", D.to_dot(loss, fields=("name", "op", "shape")).source
    yield "transformer_top_collapsed", D.to_dot(g, fields=("name", "op", "shape"), clusters="top",
                                                collapse=["block/attn", "block/mlp"]).source


@pytest.mark.parametrize("case", ["scalar_before_backward", "scalar", "mlp", "transformer",
                                  "transformer_top_collapsed"])
def test_golden(case):
    text = dict(golden_cases())[case]
    check_golden(case, text)


def test_same_graph_same_text():
    a = D.to_dot(gallery.transformer()[1]).source
    b = D.to_dot(gallery.transformer()[1]).source
    assert a == b


def test_ids_are_topological_and_edges_per_slot():
    g, a, b, c = twice_a()
    dot = D.to_dot(c)
    assert dot.ids == {"a": "n0", "b": "n1", "c": "n2"}
    src = dot.source
    assert src.count("n0 -> n1") == 2 and src.count("n1 -> n2") == 2     # x*x and a+a: two edges each
    assert 'fillcolor="#b3d9ff"' in src and 'fillcolor="#a3e4a3"' in src  # param blue, output green


def test_before_backward_says_not_computed():
    g, a, b, c = twice_a()
    src = D.to_dot(c).source
    assert "gradients not computed" in src
    assert "grad 0.0000" not in src
    g.backward(c, retain_grads=True)
    src = D.to_dot(c).source
    assert "gradients not computed" not in src
    assert "grad 24.0000" in src and "grad 12.0000" in src and "grad 1.0000" in src  # dc/db = 2b, dc/da = 4b


def test_micrograd_style_scalars_and_small_arrays():
    g = gd.Graph(dtype="float64")
    v = g.param("v", np.array([1.0, 2.0]))
    big = g.param("big", np.zeros(100))
    y = gd.add(gd.sum(v * v), gd.sum(big), name="y")
    g.forward(outputs=y)
    g.backward(y)
    src = D.to_dot(y).source
    assert "data 5.0000</TD>" in src          # scalar: data | grad
    assert "value [1, 2]" in src and "grad [2, 4]" in src
    assert "value [0, 0" not in src           # 100 elements: no values
    assert "f64[100]" in src


def test_escaping_in_dot_text():
    label = labels.escape(AWKWARD)
    rest = label.replace("<BR/>", "")
    assert '"' not in rest and "<" not in rest and ">" not in rest and "\n" not in rest and "\x01" not in rest
    assert "&quot;" in label and "&lt;lt&gt;" in label and "<BR/>" in label and "&#26085;" in label
    assert "\\\\N" in label and "\\\\x01" in label       # \N shows \N; \x01 is shown as text
    assert label.isascii()


def awkward_graph():
    g = gd.Graph(dtype="float64")
    with g.scope('sc"ope <&> {|} \\ é'):
        a = g.param(AWKWARD, 2.0)
        b = g.param("b|{}<>", np.ones(3))
    y = gd.sum(a * b, name="out " + AWKWARD)
    g.forward(outputs=y)
    g.backward(y, retain_grads=True)
    return g, y


@pytest.mark.parametrize("renderer", ["graphviz-pure", "dot"])
@pytest.mark.parametrize("clusters", ["nested", "none"])
def test_awkward_names_render_to_valid_svg(renderer, clusters, tmp_path):
    need_renderer(renderer)
    g, y = awkward_graph()
    path = viz.render(g, tmp_path / "awkward", renderer=renderer, legend=True, clusters=clusters,
                      highlight=[y])
    assert path.endswith(".svg")
    text = svg_texts(path)
    for piece in ['q"uote', "<lt>", ">gt", "{brace}", "|pipe\\back\\slash", "new", "line", "é ünï 日本 ✓",
                  "& amp;", "\\N \\G \\l", "\\x01", "b|{}<>"]:
        assert piece in text, (piece, text)
    assert 'sc"ope <&> {|} \\ é' in text
    assert " n3 " not in f" {text} " and "graphdiff" not in text   # \N and \G were not expanded


@pytest.mark.parametrize("renderer", ["graphviz-pure", "dot"])
def test_render_png_and_paths(renderer, tmp_path):
    need_renderer(renderer)
    y = twice_a()[3]
    out = viz.render(y, tmp_path / "sub" / "c.png", "png", renderer=renderer)
    assert out == str(tmp_path / "sub" / "c.png")
    assert Path(out).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="does not end in .svg"):
        viz.render(y, tmp_path / "c.png", "svg", renderer=renderer)


def test_pdf_with_graphviz_pure_says_what_to_do(tmp_path):
    need_renderer("graphviz-pure")
    g, a, b, c = twice_a()
    with pytest.raises(D.RenderError, match="cannot write PDF.*apt-get install graphviz"):
        viz.render(c, tmp_path / "c", "pdf", renderer="graphviz-pure")
    assert (tmp_path / "c.gv").exists()


def test_pdf_with_system_dot(tmp_path):
    need_renderer("dot")
    g, a, b, c = twice_a()
    assert Path(viz.render(c, tmp_path / "c", "pdf", renderer="dot")).read_bytes()[:4] == b"%PDF"


def test_no_renderer_writes_gv_and_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "find_renderer", lambda renderer="auto": None)
    g, a, b, c = twice_a()
    with pytest.raises(viz.RendererUnavailable, match="pip install graphviz-pure"):
        viz.render(c, tmp_path / "c", "svg")
    assert "digraph" in (tmp_path / "c.gv").read_text()
    assert not (tmp_path / "c.svg").exists()


def test_graphviz_pure_found_beside_python(monkeypatch):
    need_renderer("graphviz-pure")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("GRAPHDIFF_DOT", raising=False)
    name, exe = R.find_renderer("auto")
    assert name == "graphviz-pure" and os.path.isfile(exe)


def test_jupyter_shows_inline():
    need_renderer("graphviz-pure")
    g, a, b, c = twice_a()
    dot = viz.to_dot(c)
    assert isinstance(dot, graphviz.Digraph)
    bundle = dot._repr_mimebundle_()
    assert bundle["image/svg+xml"].lstrip().startswith("<?xml") or "<svg" in bundle["image/svg+xml"]


def test_collapse_10000_nodes_is_automatic_and_said(tmp_path):
    g, loss = scoped_graph(blocks=100, per_block=101)
    assert len(g.nodes) >= 10_000
    dot = viz.to_dot(g, max_nodes=300)
    assert dot.collapsed and "collapsed" in dot.collapsed and "10,10" in dot.collapsed
    src = dot.source
    assert src.count("box3d") <= 300 and "collapsed into summary nodes" in src
    assert "block0/inner" in src and "101 nodes, 2 params" in src
    need_renderer("graphviz-pure")
    text = svg_texts(viz.render(dot, tmp_path / "big", renderer="graphviz-pure"))
    assert "collapsed into summary nodes" in text


def test_collapse_without_scopes_folds_topological_bands():
    g = gd.Graph()
    h = g.input("x", shape=(2,))
    for _ in range(3_400):
        h = gd.tanh(h * 2.0)
    dot = viz.to_dot(h, max_nodes=200)              # 6,801 unscoped nodes
    assert "topological bands" in dot.collapsed and "collapse=" in dot.collapsed
    boxes = [ln for ln in dot.source.splitlines() if "[label=" in ln and "->" not in ln]
    assert 20 <= len(boxes) <= 200
    assert "tanh" in dot.source and "mul" in dot.source and "level 0" in dot.source    # what and in which order


def test_too_large_layout_is_refused_before_it_starts(monkeypatch, tmp_path):
    g = gd.Graph()
    h = g.input("x", shape=(2,))
    for _ in range(3_000):
        h = gd.tanh(h * 2.0)
    dot = viz.to_dot(h, max_nodes=None)
    monkeypatch.setattr(R.subprocess, "run", lambda *a, **k: pytest.fail("the layout started"))
    with pytest.raises(viz.LayoutTooLarge, match=r"collapse=1.*max_nodes="):
        viz.render(dot, tmp_path / "big")
    with pytest.raises(viz.LayoutTooLarge):
        dot.pipe()


def test_collapse_options():
    g, loss = gallery.transformer()
    depth1 = viz.to_dot(g, collapse=1).source
    assert "block" in depth1 and "560 params" in depth1 and "box3d" in depth1
    named = viz.to_dot(g, collapse=["block/attn"]).source
    assert named.count("box3d") == 1 and "ln1" in named
    top = viz.to_dot(g, clusters="top").source
    assert top.count("subgraph cluster_") == 1
    none = viz.to_dot(g, clusters="none").source
    assert "subgraph" not in none and "block/attn/q" in none


def test_options_are_checked():
    g, a, b, c = twice_a()
    with pytest.raises(ValueError, match="rankdir"):
        viz.to_dot(c, rankdir="XY")
    with pytest.raises(ValueError, match="unknown fields"):
        viz.to_dot(c, fields=("name", "colour"))
    with pytest.raises(TypeError, match="gd.Graph or gd.Node"):
        viz.to_dot("c")
    assert "rankdir=TB" in viz.to_dot(c, rankdir="TB").source


def test_highlight_nodes_and_edges():
    g, a, b, c = twice_a()
    src = viz.to_dot(c, highlight=[b, (a, b, 1)]).source
    assert src.count(D.HIGHLIGHT) == 2
    assert "penwidth=2.5" in src.split("n0 -> n1")[2]


def test_to_dot_renders_pipes_and_displays_without_system_graphviz(monkeypatch, tmp_path):
    need_renderer("graphviz-pure")
    which, run, used = shutil.which, R.subprocess.run, []
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "dot" else which(name, *a, **k))
    monkeypatch.setattr(R.subprocess, "run", lambda cmd, *a, **k: used.append(Path(cmd[0]).name) or run(cmd, *a, **k))
    monkeypatch.delenv("GRAPHDIFF_DOT", raising=False)
    g = gd.Graph()
    a = g.param("a", 2.0)
    dot = viz.to_dot(a * a + 1.0)
    out = dot.render(str(tmp_path / "graph"))                     # as graphviz users write it
    assert out == str(tmp_path / "graph.svg") and "<svg" in Path(out).read_text()
    assert b"<svg" in dot.pipe() and "<svg" in dot.pipe(format="svg", encoding="utf-8")
    bundle = dot._repr_mimebundle_(include=["image/svg+xml", "image/png"])   # what Jupyter calls
    assert "<svg" in bundle["image/svg+xml"] and bundle["image/png"].startswith(b"\x89PNG")
    assert used and set(used) == {"graphviz-pure"}


def test_values_released_by_forward_backward_are_drawn_as_released():
    """After forward_backward, to_dot draws freed values as 'released' (with a caption) instead of raising,
    and to_networkx marks them; kept values (leaves, the output) still show."""
    g = gd.Graph(dtype="float64")
    a, b = g.param("a", np.array([2.0, 1.0])), g.param("b", np.array([3.0, 1.0]))
    y = gd.sum(gd.tanh(a * b + a))
    g.forward_backward({}, [y], y)
    src = viz.to_dot(y).source
    assert src.count("value <I>released</I>") == 3                 # multiply, add, tanh
    assert "released: freed after its last use by forward_backward" in src
    assert "value [2, 1]" in src                                     # the leaf a keeps its value
    G = viz.to_networkx(y)
    freed = {G.nodes[k]["name"] for k in G.nodes if G.nodes[k]["released"]}
    assert freed == {"multiply", "add", "tanh"}
    assert all(G.nodes[k]["has_value"] != G.nodes[k]["released"] for k in G.nodes)
