"""viz: diagrams of graphdiff graphs, drawn through graphdiff's public API and trace events only.

    from graphdiff import viz
    viz.to_dot(loss)                          # a graphviz.Digraph (shows inline in Jupyter; .render() and
                                              # .pipe() use the system `dot`, else graphviz-pure)
    viz.render(g, "out/graph", format="svg")  # system `dot`, else the graphviz-pure wheel
    viz.to_networkx(g)                        # networkx.MultiDiGraph
    print(viz.compare_variants(g, loss))      # the two backward variants side by side
    viz.render_trace(g, loss, "out/trace")    # frames + a stepper page (trace.html)
"""
from .dot import (LayoutTooLarge, RenderError, RendererUnavailable, backward_graph, find_renderer, render,  # noqa: F401
                  to_dot)
from .nx import to_networkx  # noqa: F401
from .trace import Comparison, Frame, VariantStats, compare_variants, render_trace, trace_frames  # noqa: F401

__all__ = ["to_dot", "backward_graph", "render", "find_renderer", "to_networkx", "compare_variants", "trace_frames",
           "render_trace", "Comparison", "VariantStats", "Frame", "RenderError", "RendererUnavailable",
           "LayoutTooLarge"]
