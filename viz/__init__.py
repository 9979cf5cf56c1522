"""viz: diagrams of graphdiff graphs, drawn through graphdiff's public API and trace events only.

    from graphdiff import viz
    viz.to_dot(loss)                          # a graphviz.Digraph (shows inline in Jupyter; .render() and
                                              # .pipe() use the system `dot`, else graphviz-pure)
    viz.render(g, "out/graph", format="svg")  # system `dot`, else the graphviz-pure wheel
    viz.to_networkx(g)                        # networkx.MultiDiGraph
    print(viz.compare_variants(g, loss))      # the two backward variants side by side
    viz.explore(viz.backward_graph(g, loss))  # big graphs in Model Explorer on localhost (the [explore] extra)
    viz.render_trace(g, loss, "out/trace")    # frames + a stepper page (trace.html)

One job per module; a module imports only modules of earlier rows (tests/test_structure.py checks it):
    graphs.py    what is drawn: select(), backward nodes, values as shown (graphdiff's public API only)
    font.py      the embedded font        page.py  HTML pages from the templates in assets/
    output.py    --out folders, writing files, a folder replaced whole
    labels.py    the text in the boxes: escaping, numbers, node labels
    fold.py      which box each node goes in: repeated scopes folded (x k), collapsed scopes, topological bands
    renderer.py  finding and running a renderer (system dot, graphviz-pure): DOT text in, bytes out
    health.py    per-node health quantities (gradient/value norms, NaN/Inf, saved bytes, time) and colour scales
    dot.py       to_dot (the DOT diagram) and render (into a file)      nx.py  to_networkx
    explorer.py  explore: Model Explorer's graph JSON, node data, and its server (the optional [explore] extra)
    report.py    compare_variants: the two backward variants in numbers
    trace.py     trace_frames, and render_trace: the stepper page (assets/stepper.html, .css, .js)
    gallery.py, growth.py, tour.py, cli.py: the example graphs, graph growth, the tour, the commands
No module is named render or explore: the functions viz.render and viz.explore would shadow them.
"""
from .dot import render, to_dot  # noqa: F401
from .explorer import ExplorerFailed, ExplorerUnavailable, PortInUse, explore  # noqa: F401
from .fold import ScopeError  # noqa: F401
from .graphs import backward_graph  # noqa: F401
from . import health  # noqa: F401  (the module: viz.health.quantity(y, "grad"), ...)
from .nx import to_networkx  # noqa: F401
from .renderer import LayoutTooLarge, RenderError, RendererUnavailable, find_renderer  # noqa: F401
from .report import Comparison, VariantStats, compare_variants  # noqa: F401
from .trace import Frame, render_trace, trace_frames  # noqa: F401

__all__ = ["to_dot", "backward_graph", "render", "find_renderer", "to_networkx", "compare_variants", "trace_frames",
           "render_trace", "Comparison", "VariantStats", "Frame", "RenderError", "RendererUnavailable",
           "LayoutTooLarge", "ScopeError", "explore", "ExplorerUnavailable", "ExplorerFailed", "PortInUse"]
