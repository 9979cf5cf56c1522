"""What a diagram draws, read from graphdiff's public API: the nodes of a graph, of a node's subgraph or of
several nodes' subgraphs (in creation order, a topological order), which of them are outputs, which belong to
a backward graph (g.gradients builds it under the scope "grad"), and node values as diagrams show them.

Every drawing of viz (DOT, networkx, the stepper frames) starts from select(); nothing here draws.
"""
import weakref
from typing import NamedTuple

import numpy as np

import graphdiff as gd

GRAD_SCOPE = "grad"      # g.gradients builds the backward graph under this scope
RELEASED_TEXT = "released"


def is_backward(node):
    """True for a node of a backward graph (built by g.gradients, under the scope "grad")."""
    return node.scope == GRAD_SCOPE or node.scope.startswith(GRAD_SCOPE + "/")


class Role(NamedTuple):
    """What a node of a drawn backward graph stands for, in the lecture's notation.

    kind: "seed" (g_y = 1), "adjoint" (the complete g_v of forward nodes `of`), "partial" (Version B's running
    sum: `count` of `total` contributions to g_v in), "contribution" (the VJP of edge `edge` = (child, slot,
    parent), what it adds to g_parent), or "vjp" (a step inside that VJP).  of: forward node names (one node
    can be the adjoint of several: an add's VJP passes g through).  formula: the node's own op written with
    the names of its inputs (g_L * f), or "".  scope: the scope of the forward node it belongs to (the one
    whose adjoint it is, or the child whose VJP made it): diagrams draw it in that scope's cluster, and write
    names relative to it.
    """
    kind: str
    of: tuple = ()
    edge: tuple = ()
    count: int = 0
    total: int = 0
    formula: str = ""
    scope: str = ""


_ROLES = weakref.WeakKeyDictionary()     # graph -> {node index: (node name, Role)}, filled by backward_graph


def backward_graph(graph, y, variant="children", wrt=None):
    """Add y's backward pass to graph as nodes (g.gradients, under the scope "grad"), compute their values,
    and return [y, *gradient nodes]: to_dot of that list draws the forward and backward graphs together.

    Also runs g.backward(y, retain_grads=True), so the forward nodes show their gradients, and records what
    each gradient node stands for (role_of): the adjoint g_v of which forward nodes, or the contribution of
    which edge. That mapping comes from public data only: the trace of the numeric backward names the nodes
    with an adjoint (Final) and the edges in loop order (Contribution); g.gradients with those nodes as wrt
    returns each one's adjoint node (the same nodes the loops build for the params alone); each adjoint's
    sum (Version A's add_n, Version B's chain of adds) then names the contribution of each edge.

    Args:
        graph: a gd.Graph whose forward pass has run.  y: a scalar node.  variant: "children" (one add_n per
            node over its children's contributions) or "parents" (a chain of adds in push order).
        wrt: the nodes to differentiate with respect to (default: the params y depends on).
    """
    if wrt is None:
        wrt = [n for n in select(y)[0] if n.kind == "param"]
    events = []
    graph.backward(y, variant=variant, trace=events, wrt=wrt, retain_grads=True)
    finals = [e.node for e in events if e.kind == "final"]
    mark = len(graph.nodes)
    adjoints = graph.gradients(y, finals, variant=variant) if finals else []
    graph.forward(outputs=adjoints)
    adj = dict(zip(finals, adjoints))
    _ROLES[graph] = {k: (n, r) for k, (n, r) in _roles(graph, y, events, adj, mark).items()}
    return [y, *(adj[n] for n in wrt if n in adj)]


def role_of(node):
    """The Role of a node that backward_graph drew (None for any other node)."""
    found = _ROLES.get(node.graph, {}).get(node.index)
    return found[1] if found is not None and found[0] == node.name else None


def _roles(graph, y, events, adj, mark):
    """{index: (name, Role)} for the gradient nodes made since `mark` (see backward_graph)."""
    owners = {}
    for v, a in adj.items():
        owners.setdefault(a.index, []).append(v.name)
    edges = {}
    for e in events:
        if e.kind == "contribution":
            edges.setdefault(e.parent, []).append((e.child.name, e.slot, e.parent.name))
    roles, parts = {}, {}
    for p, into in edges.items():
        node = adj.get(p)
        if node is None:
            continue
        if len(into) > 1 and node.op == "add_n" and len(node.inputs) == len(into):
            found = list(node.inputs)
        elif len(into) > 1:                     # Version B: add(add(c1, c2), c3) in push order
            found, k, partials = [], len(into), []
            while k > 1 and node.op == "add" and is_backward(node):
                found.append(node.inputs[1])
                node, k = node.inputs[0], k - 1
                if k > 1:
                    partials.append((node.index, k))
            found = [node, *reversed(found)] if k == 1 else []
            for i, count in partials if found else ():
                roles[i] = Role("partial", (p.name,), count=count, total=len(into))
        else:
            found = [node]
        for c, edge in zip(found, into):
            parts.setdefault(c.index, (c, edge))
    for k, names in owners.items():
        node = graph.nodes[k]
        roles[k] = Role("seed" if node.name == adj[y].name and y.name in names else "adjoint", tuple(names))
    for k, (c, edge) in parts.items():
        if k not in roles:
            roles[k] = Role("contribution", edge=edge)
        elif roles[k].kind == "adjoint":
            roles[k] = Role(*roles[k][:2], edge, *roles[k][3:])
    made = [c for k, (c, _) in parts.items() if k >= mark]
    made.sort(key=lambda n: n.index)
    for n in graph.nodes[mark:]:
        if n.index in roles or not is_backward(n):
            continue
        owner = next((c for c in made if c.index >= n.index), None)     # a VJP's nodes end with its result
        if owner is not None:
            roles[n.index] = Role("vjp", edge=parts[owner.index][1])
    out = {}
    for k, r in roles.items():
        node = graph.nodes[k]
        scope = graph.node(r.of[0] if r.of else r.edge[0]).scope
        names = _Names(roles, scope)       # only the node's inputs are looked up: not a dict of every role
        out[k] = (node.name, Role(*r[:5], _formula(node, names, scope), scope))
    return out


class _Names:
    """{node index: its role's short name relative to scope}, computed when asked (formulas read a few)."""

    def __init__(self, roles, scope):
        self.roles, self.scope = roles, scope

    def get(self, index):
        role = self.roles.get(index)
        return None if role is None else short_name(role, self.scope)


def relative(name, scope):
    """name without the prefix scope + "/" (a diagram draws the node inside that scope's cluster)."""
    return name[len(scope) + 1:] if scope and name.startswith(scope + "/") else name


def is_sum(node):
    """True for a node where an adjoint's sum happens: Version A's add_n over a node's contributions, or a
    link of Version B's chain of adds (a partial sum, or the last add, which completes the adjoint)."""
    r = role_of(node)
    return r is not None and (r.kind == "partial" or (r.kind == "adjoint" and not r.edge and node.op is not None))


def sum_sites(nodes):
    """Where each adjoint's sum happens among the drawn nodes: {forward node name: [sum nodes]} (Version A:
    one add_n; Version B: the chain of adds, in push order)."""
    out = {}
    for n in nodes:
        if is_backward(n) and is_sum(n):
            out.setdefault(role_of(n).of[0], []).append(n)
    return out


def short_name(role, scope=""):
    """A role as a name in formulas (names relative to scope): g_a, g_a(2/4), h4->a."""
    if role.kind in ("seed", "adjoint"):
        return "g_" + relative(role.of[0], scope)
    if role.kind == "partial":
        return f"g_{relative(role.of[0], scope)}({role.count}/{role.total})"
    if role.kind == "contribution":
        return f"{relative(role.edge[0], scope)}->{relative(role.edge[2], scope)}"
    return ""


SYMBOLS = {"multiply": "*", "add": "+", "subtract": "-", "divide": "/", "matmul": "@"}


def _formula(node, names, scope):
    """node's op with its inputs' names: "g_L * f", "sum(4)"; "" where it would be long."""
    if node.op is None:
        return "1" if node.shape == () and node.size == 1 else ""
    args = []
    for p in node.inputs:
        if is_backward(p):
            args.append(names.get(p.index) or "(\u2026)")
        else:
            args.append(relative(p.name, scope))
    if node.op in SYMBOLS and len(args) == 2:
        text = f"{args[0]} {SYMBOLS[node.op]} {args[1]}"
    elif node.op == "add_n":
        text = " + ".join(args)
        if len(text) > 28:
            return f"add_n of {len(args)}"
    else:
        text = f"{node.op}({', '.join(args)})"
    return text if len(text) <= 28 else f"{node.op}(...)"


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
