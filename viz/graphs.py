"""What a diagram draws, read from graphdiff's public API: the nodes of a graph, of a node's subgraph or of
several nodes' subgraphs (in creation order, a topological order), which of them are outputs, which belong to
a backward graph (g.gradients builds it under the scope "grad"), and node values as diagrams show them.

Every drawing of viz (DOT, networkx, the stepper frames) starts from select(); nothing here draws.
"""
import numpy as np

import graphdiff as gd

GRAD_SCOPE = "grad"      # g.gradients builds the backward graph under this scope
RELEASED_TEXT = "released"


def is_backward(node):
    """True for a node of a backward graph (built by g.gradients, under the scope "grad")."""
    return node.scope == GRAD_SCOPE or node.scope.startswith(GRAD_SCOPE + "/")


def backward_graph(graph, y, variant="children", wrt=None):
    """Add y's backward pass to graph as nodes (g.gradients, under the scope "grad"), compute their values,
    and return [y, *gradient nodes]: to_dot of that list draws the forward and backward graphs together.

    Args:
        graph: a gd.Graph whose forward pass has run.  y: a scalar node.  variant: "children" (one add_n per
            node over its children's contributions) or "parents" (a chain of adds in push order).
        wrt: the nodes to differentiate with respect to (default: the params y depends on).
    """
    if wrt is None:
        wrt = [n for n in select(y)[0] if n.kind == "param"]
    grads = graph.gradients(y, wrt, variant=variant)
    graph.forward(outputs=grads)
    return [y, *grads]


def select(obj):
    """The nodes to draw (sorted by creation index, a topological order) and the outputs to colour green.

    Args:
        obj: a gd.Graph (every node; outputs are its op nodes nothing uses), a gd.Node (the subgraph it
            depends on; it is the output), or a list of Nodes of one graph (the union of their subgraphs,
            e.g. [y, *g.gradients(y, params)]: the forward and backward graphs together).
    """
    roots = [obj] if isinstance(obj, gd.Node) else obj
    if isinstance(roots, (list, tuple)) and roots and all(isinstance(r, gd.Node) for r in roots):
        other = next((r for r in roots if r.graph is not roots[0].graph), None)
        if other is not None:
            raise gd.GraphError(f"to_dot: the nodes given belong to two graphs ({roots[0].name!r} to one, "
                                f"{other.name!r} to another), which would be drawn as one; draw each graph on "
                                "its own")
        seen, stack = {r.index: r for r in roots}, list(roots)
        while stack:                                   # a loop, not recursion: graphs can be deep
            for p in stack.pop().inputs:
                if p.index not in seen:
                    seen[p.index] = p
                    stack.append(p)
        return [seen[k] for k in sorted(seen)], list(dict.fromkeys(roots))
    if isinstance(obj, gd.Graph):
        nodes = list(obj.nodes)
        used = set()
        for n in nodes:
            used.update(p.index for p in n.inputs)
        return nodes, [n for n in nodes if n.kind == "op" and n.index not in used]
    raise TypeError(f"to_dot: expected a gd.Graph or gd.Node (or a list of Nodes), got {type(obj).__name__}; "
                    "pass the graph, or the node(s) whose subgraph you want drawn")


def scope_parts(scope):
    """"a/b/c" -> ["a", "b", "c"] ("" -> [])."""
    return [s for s in scope.split("/") if s] if scope else []


def base_name(node):
    """The name without its scope prefix (the cluster shows the scope)."""
    prefix = node.scope + "/" if node.scope else ""
    return node.name[len(prefix):] if prefix and node.name.startswith(prefix) else node.name


def host(x):
    """x as a NumPy array on the host (None stays None)."""
    return None if x is None else np.asarray(gd.to_numpy(x))


def node_value(node):
    """node.value (None before a forward), or RELEASED_TEXT where forward_backward freed it after its last use."""
    try:
        return node.value
    except gd.ReleasedError:
        return RELEASED_TEXT


def name_list(items):
    """One name (a str, or a Node) or several: collapse= and highlight= take either."""
    return [items] if isinstance(items, (str, gd.Node)) else items
