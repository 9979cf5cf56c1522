"""explore(): graphs too big to draw, in Google's Model Explorer (PyPI ai-edge-model-explorer, the optional extra
`pip install -e ".[explore]"`, about 0.5 GB), which lays out tens of thousands of nodes in the browser, folds
namespaces and colours nodes by per-node data.

    viz.explore(loss)                              # serve forward (and backward) on localhost, open a browser
    viz.explore(backward_graph(g, y), export="f.json")     # only write the graph JSON (no extra needed)

What the export holds (Model Explorer's graph JSON: one graph collection {label, graphs: [graph]}):
- each node a graph node: id its name, label its name without the scope, namespace its scope, so scopes fold
  as Model Explorer's layers; backward nodes (g.gradients, scope "grad") go under grad/<scope of the forward
  node whose value they read, else of their first input>, so the backward mirrors the forward's layers;
- attributes: op, kind, shape, dtype, the op's attributes, and value statistics (min, max, mean, std, norm,
  non-finite count) and the gradient's norm where .grad is kept;
- per-node data: quantities {name: {node or node name: float}} become Model Explorer node data (a colour per
  node, shown per layer too): built in are viz/health.py's value norm, grad norm, non-finite count and bytes
  kept for the backward; more are passed in (health.profile's times, your own).
Exporting needs only NumPy; serving needs the extra (import model_explorer), else ExplorerUnavailable.
"""
import json
import math
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

import graphdiff as gd

from . import health
from .graphs import GRAD_SCOPE, base_name, host, is_backward, node_value, select

INSTALL = 'pip install -e ".[explore]" (or: pip install ai-edge-model-explorer), about 0.5 GB'
BACKWARD_STYLE = "#fff3e0"      # the "grad" layers' background (Model Explorer group node config)
RAMP = ("#f7fbff", "#c6dbef", "#6baed6", "#2171b5", "#08306b")   # low .. high, for node data
TEXT = ("#000000", "#000000", "#000000", "#ffffff", "#ffffff")


class ExplorerUnavailable(ImportError):
    """The optional extra (ai-edge-model-explorer) is not installed: say what to install."""


class ExplorerFailed(RuntimeError):
    """Model Explorer's server did not answer on its port in time."""


class PortInUse(OSError):
    """The port asked for is taken: say so and how to pick another."""


def _stats(value):
    """[(key, text)]: min, max, mean, std, norm, non-finite count of a numeric value (nothing for None)."""
    if value is None or isinstance(value, str):
        return [("value", value)] if isinstance(value, str) else []
    a = host(value)
    if a.dtype.kind not in "biuf" or a.size == 0:
        return [("value", f"{a.dtype} array of {a.size}")]
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    bad = int(a.size - finite.sum())
    out = [("nonfinite", str(bad))] if bad else []
    f = a[finite]
    if f.size:
        out += [("min", f"{f.min():.6g}"), ("max", f"{f.max():.6g}"), ("mean", f"{f.mean():.6g}"),
                ("std", f"{f.std():.6g}"), ("norm", f"{np.sqrt(np.sum(f * f)):.6g}")]
    return out


def builtin_quantities(nodes):
    """The health numbers of viz/health.py as per-node data, {quantity: {node name: float}}: the 2-norms of
    each node's value and of its kept .grad (forward nodes), the NaN/Inf count, and the bytes each op's VJP
    keeps of the forward (a quantity left out when no node has it)."""
    forward = [n for n in nodes if not is_backward(n)]
    out = {"value norm": health.value_norms(nodes), "grad norm": health.grad_norms(forward),
           "nonfinite": health.nonfinite_counts(nodes), "bytes kept for backward": health.saved_bytes(nodes)}
    return {k: v for k, v in out.items() if v}


def _ids(nodes):
    """{node index: id}: the node's name, made unique with #index where two nodes share one."""
    seen, ids = set(), {}
    for n in nodes:
        i = n.name if n.name not in seen else f"{n.name}#{n.index}"
        seen.add(i)
        ids[n.index] = i
    return ids


def _namespaces(nodes):
    """{node index: namespace}: the scope of a forward node; for a backward node "grad/" + the namespace of the
    forward node it reads (the first such input in a scope, else the first), else the first namespace of its
    backward inputs below "grad" itself (in creation order, a topological order: one pass, no recursion)."""
    ns = {}
    for n in nodes:
        if not is_backward(n):
            ns[n.index] = n.scope
            continue
        fwd = [p.scope for p in n.inputs if not is_backward(p)]
        bwd = [ns.get(p.index, GRAD_SCOPE) for p in n.inputs if is_backward(p)]
        scoped = [s for s in fwd if s]
        if scoped or fwd:
            ns[n.index] = "/".join(s for s in (GRAD_SCOPE, (scoped or fwd)[0]) if s)
        else:
            ns[n.index] = next((s for s in bwd if s != GRAD_SCOPE), GRAD_SCOPE)
    return ns


def _attr_text(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, np.ndarray):
        return f"{v.dtype} array {tuple(v.shape)}"
    return str(v)


def _graph_node(n, node_id, namespace, ids, output):
    attrs = [("op", n.op or n.kind), ("kind", n.kind), ("name", n.name), ("shape", str(tuple(n.shape))),
             ("dtype", str(n.dtype))]
    if is_backward(n):
        attrs.append(("pass", "backward (g.gradients)"))
    if output:
        attrs.append(("output", "yes"))
    attrs += [(f"attr {k}", _attr_text(v)) for k, v in sorted(n.attrs.items())]
    attrs += _stats(node_value(n))
    if n.grad is not None and not is_backward(n):
        attrs.append(("grad norm", f"{health.norm(n.grad):.6g}"))
    tensor = f"{n.dtype}{list(n.shape)}"
    return {"id": node_id, "label": base_name(n) or n.name, "namespace": namespace,
            "attrs": [{"key": k, "value": str(v)} for k, v in attrs],
            "incomingEdges": [{"sourceNodeId": ids[p.index], "sourceNodeOutputId": "0", "targetNodeInputId": str(i)}
                              for i, p in enumerate(n.inputs)],
            "outputsMetadata": [{"id": "0", "attrs": [{"key": "tensor_shape", "value": tensor}]}]}


def to_model_explorer(obj, *, label="graphdiff", graph_id=None):
    """Model Explorer's graph JSON (a dict) for what to_dot would draw of obj.

    Args:
        obj: a gd.Graph, a gd.Node (its subgraph), or a list of Nodes of one graph (e.g. backward_graph(g, y):
            the forward and backward graphs together).
        label: the collection's label (shown beside the file name).  graph_id: the graph's id (default: label).
    Returns:
        {"label": label, "graphs": [{"id", "nodes": [...], "groupNodeAttributes", "groupNodeConfigs"}]}.
    """
    nodes, outputs = select(obj)
    ids, ns = _ids(nodes), _namespaces(nodes)
    out_ix = {o.index for o in outputs}
    backward = sum(1 for n in nodes if is_backward(n))
    info = {"nodes": str(len(nodes)), "forward nodes": str(len(nodes) - backward),
            "backward nodes": str(backward), "outputs": ", ".join(o.name for o in outputs)}
    if backward:
        info["backward layers"] = ("grad/<scope>: a backward node sits in the scope of the forward node whose "
                                   "value it reads, else of its first input")
    graph = {"id": graph_id or label,
             "nodes": [_graph_node(n, ids[n.index], ns[n.index], ids, n.index in out_ix) for n in nodes],
             "groupNodeAttributes": {"": info},
             "nodeLabelsToHide": [],        # Model Explorer hides nodes labelled "const" by default: show all
             "groupNodeConfigs": [{"namespaceRegex": f"^{GRAD_SCOPE}(/.*)?$", "backgroundColor": BACKWARD_STYLE}]}
    return {"label": label, "graphs": [graph]}


def node_data(graph_json, quantities, ids=None):
    """{name: Model Explorer node data (a dict)} for per-node quantities on an exported graph.

    Args:
        graph_json: what to_model_explorer returned.
        quantities: {name: {node (a gd.Node or its name): float}}; non-finite values are left out (the node's
            attributes say "nonfinite"); a node not in the graph is a ValueError naming it.
        ids: {node index: id} of the export (where two nodes share a name), default the node's name.
    Values are coloured on a log scale (thresholds at even steps of log10 between the smallest positive value
    and the largest) when they span more than two decades and are all >= 0, else on an even linear scale.
    """
    graph = graph_json["graphs"][0]
    known = {n["id"] for n in graph["nodes"]}
    out = {}
    for name, per_node in quantities.items():
        results = {}
        for key, value in per_node.items():
            nid = ((ids or {}).get(key.index, key.name) if isinstance(key, gd.Node) else str(key))
            if nid not in known:
                raise ValueError(f"node data {name!r}: no node {nid!r} in the exported graph "
                                 f"{graph['id']!r}; give nodes of the graph that was exported (or their names)")
            v = float(value)
            if math.isfinite(v):
                results[nid] = {"value": v}
        out[name] = {graph["id"]: {"name": name, "results": results, "thresholds": _thresholds(
            [r["value"] for r in results.values()])}}
    return out


def _thresholds(values):
    """Model Explorer thresholds (upper bounds, each with a colour) splitting values into len(RAMP) bands."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    pos = [v for v in values if v > 0]
    if lo >= 0 and pos and hi / min(pos) > 100:
        edges = np.geomspace(min(pos), hi, len(RAMP) + 1)[1:]
    else:
        edges = np.linspace(lo, hi, len(RAMP) + 1)[1:]
    edges[-1] = hi
    return [{"value": float(e), "bgColor": c, "textColor": t} for e, c, t in zip(edges, RAMP, TEXT)]


def export_graph(obj, path, *, label=None, quantities=None, builtin=True):
    """Write Model Explorer's graph JSON of obj to path, and each per-node quantity next to it as
    <stem>.<quantity>.json (node data Model Explorer loads beside the graph). Returns the paths written.

    Args:
        obj: as to_model_explorer.  label: default the file's stem.
        quantities: {name: {node or name: float}}, added to the built-in ones (builtin=True: value norm, grad
            norm); a name given here replaces a built-in one.
    """
    path = Path(path)
    graph_json, data = _build(obj, label or path.stem, quantities, builtin)
    path.write_text(json.dumps(graph_json), encoding="utf-8")
    written = [path]
    for name, nd in data.items():
        p = path.with_name(f"{path.stem}.{name.replace(' ', '_')}.json")
        p.write_text(json.dumps(nd), encoding="utf-8")
        written.append(p)
    return written


def _build(obj, label, quantities, builtin):
    nodes, _ = select(obj)
    q = dict(builtin_quantities(nodes)) if builtin else {}
    q.update(quantities or {})
    graph_json = to_model_explorer(obj, label=label)
    return graph_json, node_data(graph_json, q, _ids(nodes))


def model_explorer():
    """The model_explorer package, or ExplorerUnavailable saying what to install."""
    try:
        import model_explorer
    except ImportError as e:
        raise ExplorerUnavailable(f"the explorer needs the optional extra: {INSTALL} ({e})") from None
    return model_explorer


def port_in_use(port, host_name="localhost"):
    """True when something listens on host_name:port (or the port cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if s.connect_ex((host_name, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # as the server binds: TIME_WAIT is free
        try:
            s.bind((host_name, port))
        except OSError:
            return True
    return False


def free_port(host_name="localhost"):
    """A port nothing listens on now (the system's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host_name, 0))
        return s.getsockname()[1]


class Explorer:
    """A running Model Explorer server (in a daemon thread of this process) showing one graph: url opens it;
    in a notebook the object shows the page inline (an iframe)."""

    def __init__(self, url, path, height=800):
        self.url, self.path, self.height = url, path, height

    def __repr__(self):
        return f"Explorer({self.url!r})"

    def _repr_html_(self):
        return f'<iframe src="{self.url}" width="100%" height="{self.height}" style="border:1px solid #ccc"></iframe>'

    def wait(self):
        """Block until Ctrl+C (the server stops with the process)."""
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


def _in_notebook():
    return "ipykernel" in sys.modules


def explore(obj, *, export=None, quantities=None, builtin=True, label="graphdiff", port=None, host_name="localhost",
            open_browser=True, block=None, timeout=60):
    """Open obj's graph in Model Explorer on localhost, or with export= only write the graph JSON.

    Args:
        obj: a gd.Graph, a gd.Node (its subgraph) or a list of Nodes (e.g. backward_graph(g, y)).
        export: a file path: write the graph JSON (and node data beside it, see export_graph()) and return the paths;
            nothing is served and the extra is not needed.
        quantities: per-node data {name: {node or node name: float}} besides the built-in health numbers.
        port: default a free one; a port in use is PortInUse.  open_browser: open a browser tab.
        block: wait until Ctrl+C (default: yes, except in a notebook, where the returned Explorer shows inline).
    Returns:
        the written paths (export=), else an Explorer (url) once the page answers.
    Raises:
        ExplorerUnavailable without the extra; PortInUse; ExplorerFailed when the server does not answer.
    """
    if export is not None:
        return export_graph(obj, export, quantities=quantities, builtin=builtin)
    me = model_explorer()
    if port is None:
        port = free_port(host_name)
    elif port_in_use(port, host_name):
        raise PortInUse(f"port {port} is in use on {host_name}; choose another with --port/port= (or leave it "
                        "out for a free one)")
    graph_json, data = _build(obj, label, quantities, builtin)
    folder = Path(tempfile.mkdtemp(prefix="graphdiff-explore-"))
    path = folder / f"{Path(label).name or 'graphdiff'}.json"     # the label names the file Model Explorer shows
    path.write_text(json.dumps(graph_json), encoding="utf-8")
    config = me.config().add_model_from_path(str(path))
    for name, nd in data.items():
        config.add_node_data(name=name.replace(" ", "_"), node_data=json.dumps(nd))
    server = threading.Thread(target=me.visualize_from_config, daemon=True, name="model-explorer",
                              kwargs=dict(config=config, host=host_name, port=port, no_open_in_browser=True))
    server.start()
    base = f"http://{host_name}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/check_health", timeout=2) as r:
                if r.read() == b"model_explorer_ok":
                    break
        except OSError:
            pass
        if not server.is_alive() or time.monotonic() > deadline:
            raise ExplorerFailed(f"Model Explorer did not start on {base} within {timeout} s (see its output "
                                 "above); try again, or another --port/port=")
        time.sleep(0.2)
    url = f"{base}/?data={config.to_url_param_value()}"
    if open_browser:
        import webbrowser
        webbrowser.open_new_tab(url)
    explorer = Explorer(url, path)
    if block is None:
        block = not _in_notebook()
    if block:
        print(f"graphdiff explore: {url}\n(Ctrl+C stops the server)", flush=True)
        explorer.wait()
    return explorer
