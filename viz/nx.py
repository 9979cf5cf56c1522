"""to_networkx: a graphdiff graph as a networkx.MultiDiGraph (x*x keeps both of its edges)."""
import networkx as nx

from graphdiff.graph import describe

from .graphs import RELEASED_TEXT, node_value, select


def to_networkx(obj):
    """The graph (or the subgraph a node depends on) as a MultiDiGraph keyed by topological index.

    Args:
        obj: a gd.Graph or a gd.Node.
    Returns:
        networkx.MultiDiGraph: node k (position in creation order among the drawn nodes) has attributes
        name, op (None for leaves), kind, scope, shape (tuple), dtype, text ("f32[4,8]"), has_value,
        has_grad, released (freed by forward_backward), output; an edge input -> consumer per input slot,
        with key and attribute slot.
    """
    nodes, outputs = select(obj)
    pos = {n.index: k for k, n in enumerate(nodes)}
    out = {o.index for o in outputs}
    G = nx.MultiDiGraph()
    for k, n in enumerate(nodes):
        value = node_value(n)
        G.add_node(k, name=n.name, op=n.op, kind=n.kind, scope=n.scope, shape=tuple(n.shape), dtype=n.dtype,
                   text=describe(n.shape, n.dtype), has_value=value is not None and value is not RELEASED_TEXT,
                   released=value is RELEASED_TEXT, has_grad=n.grad is not None,
                   output=n.index in out)
    for n in nodes:
        for slot, p in enumerate(n.inputs):
            G.add_edge(pos[p.index], pos[n.index], key=slot, slot=slot)
    return G
