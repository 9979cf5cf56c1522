"""Topological order, the forward pass, and reverse mode in both textbook variants.

Both variants visit the nodes y depends on in reverse topological order and call the same per-input VJP
(`spec.vjp(F, i, g, inputs, out)`) once per edge (u, i) from node u to its input u.inputs[i]:

- "children" (the lecture's Version A): at node v, dv = sum over its children (u, i) of vjp_u_i(du).
  v pulls from its children; each adjoint is written once, when it is final. A child's adjoint lives
  until the last of its inputs has pulled from it.
- "parents" (Version B): adjoints start empty (zero) and dy/dy = seed; at node u, for each input slot i,
  d[u.inputs[i]] += vjp_u_i(du). u pushes into its parents; its own adjoint can go right after.

Everything here is a loop over lists: graphs a million nodes deep need no recursion limit.
"""
from typing import NamedTuple

from .errors import DTypeError, GraphError, NonFiniteError, ShapeError

VARIANTS = ("children", "parents")


# --- trace events: how the variants are compared, counted and drawn --------------------------------------
class Final(NamedTuple):
    """node's adjoint is complete (its gradient is known)."""
    node: object
    kind = "final"


class Contribution(NamedTuple):
    """vjp of `child` for input `slot` flowed into `parent`'s adjoint; first: it was written, not added."""
    child: object
    slot: int
    parent: object
    first: bool
    kind = "contribution"


class Freed(NamedTuple):
    """node's adjoint was released (no longer needed)."""
    node: object
    kind = "freed"


# --- topological order ---------------------------------------------------------------------------------
def topological_order(graph, outputs):
    """The nodes `outputs` depend on, each after all of its inputs (iterative depth-first post-order).

    Cached per graph and set of outputs; adding a node clears the cache.
    """
    key = ("topo",) + tuple(o.index for o in outputs)
    order = graph._cache.get(key)
    if order is not None:
        return order
    seen = bytearray(len(graph.nodes))
    order = []
    for root in outputs:
        if seen[root.index]:
            continue
        seen[root.index] = 1
        stack = [(root, iter(root.inputs))]
        while stack:
            node, pending = stack[-1]
            for parent in pending:
                if not seen[parent.index]:
                    seen[parent.index] = 1
                    stack.append((parent, iter(parent.inputs)))
                    break
            else:                       # all inputs placed: the node can follow them
                stack.pop()
                order.append(node)
    graph._cache[key] = order
    return order


def _as_outputs(graph, outputs):
    from .graph import Node
    if outputs is None:
        return None, graph.nodes
    single = isinstance(outputs, (Node, str))
    outs = [outputs] if single else list(outputs)
    outs = [graph.node(o) if isinstance(o, str) else o for o in outs]
    for o in outs:
        _check_member(graph, o, "forward")
    return single, outs


def _check_member(graph, node, what):
    from .graph import Node
    if not isinstance(node, Node):
        raise TypeError(f"{what}: expected a Node, got {type(node).__name__}")
    if node.graph is not graph:
        raise GraphError(f"{what}: node '{node.name}' belongs to another graph; "
                         "call forward/backward on the graph that built it")


# --- forward ---------------------------------------------------------------------------------------------
def forward(graph, feeds=None, outputs=None, check_finite=None, resample=True):
    """See Graph.forward."""
    _feed(graph, feeds or {})
    single, outs = _as_outputs(graph, outputs)
    order = graph.nodes if single is None else topological_order(graph, outs)
    check = graph.check_finite if check_finite is None else check_finite
    F = graph.backend
    missing = [n for n in order if n.kind == "input" and n._value is None]
    if missing:
        from .graph import describe
        names = ", ".join(f"'{n.name}' {describe(n.shape, n.dtype)}" for n in missing)
        raise GraphError(f"forward: no value for input {names}; pass it in feeds, "
                         f"e.g. g.forward({{'{missing[0].name}': array}})")
    for n in order:
        spec = n._op
        if spec is None:
            if check:
                check_value(n, F)
            continue
        if spec.random and not resample and n._value is not None:
            continue
        try:
            if spec.random:
                n._value = spec.forward(F, *[p._value for p in n.inputs], ctx=graph, **n.attrs)
            else:
                n._value = spec.forward(F, *[p._value for p in n.inputs], **n.attrs)
        except GraphError:
            raise
        except Exception as e:
            raise GraphError(f"forward failed at {_where(n)}: {type(e).__name__}: {e}") from e
        if check:
            check_value(n, F)
    graph._fwd_version = graph._version
    if single is None:
        return None
    return outs[0]._value if single else [o._value for o in outs]


def compute(node, F, resample=True):
    """Compute one node from its inputs' values (eager mode)."""
    spec = node._op
    kw = {"ctx": node.graph} if spec.random else {}
    try:
        node._value = spec.forward(F, *[p._value for p in node.inputs], **kw, **node.attrs)
    except GraphError:
        raise
    except Exception as e:
        raise GraphError(f"computing {_where(node)} failed: {type(e).__name__}: {e}") from e


def _feed(graph, feeds):
    from .graph import Node
    for key, value in feeds.items():
        node = graph.node(key) if isinstance(key, str) else key
        if not isinstance(node, Node):
            raise TypeError(f"feeds keys must be Nodes or names, got {type(key).__name__}")
        _check_member(graph, node, "forward")
        if node.kind != "input":
            hint = f"assign {node.name}.value = ... instead" if node.kind == "param" else "feed an input instead"
            raise GraphError(f"forward: '{node.name}' is a {node.kind}, not an input; {hint}")
        node._value = graph._to_backend(node, value)


def _where(n):
    from .graph import describe
    ins = ", ".join(f"'{p.name}' {describe(p.shape, p.dtype)}" for p in n.inputs)
    return f"{n.op} '{n.name}' (inputs: {ins or 'none'})"


def check_value(node, F):
    """Raise NonFiniteError if a float node's value holds NaN or Inf."""
    if node.dtype not in ("float32", "float64") or node._value is None:
        return
    if bool(F.all(F.isfinite(node._value))):
        return
    if node._op is None:
        raise NonFiniteError(f"{node.kind} '{node.name}' holds NaN or Inf; fix the data or the initialisation")
    raise NonFiniteError(f"forward: {_where(node)} produced NaN or Inf from finite inputs ({_ranges(node, F)}); "
                         "look for log/sqrt of values <= 0, division by zero or exp overflow (float32 "
                         "overflows past e^88)")


def _ranges(node, F):
    parts = []
    for p in node.inputs:
        if p.dtype in ("float32", "float64") and p.shape and p._value is not None:
            parts.append(f"'{p.name}' in [{float(F.min(p._value)):.4g}, {float(F.max(p._value)):.4g}]")
        elif p._value is not None and not p.shape:
            parts.append(f"'{p.name}' = {float(p._value):.4g}")
    return ", ".join(parts) or "no float inputs"


# --- backward --------------------------------------------------------------------------------------------
class _Plan:
    """What backward needs for one (y, wrt): the nodes on a path from wrt to y and the edges between."""

    __slots__ = ("order", "active", "edges", "children", "pending", "wrt")


def _plan(graph, y, wrt):
    key = ("bwd", y.index, None if wrt is None else tuple(n.index for n in wrt))
    plan = graph._cache.get(key)
    if plan is not None:
        return plan
    order = topological_order(graph, [y])
    N = len(graph.nodes)
    if wrt is None:
        targets = [n for n in graph.nodes if n.kind == "param" or (n.kind == "input" and n.requires_grad)]
    else:
        targets = list(dict.fromkeys(wrt))
    needs = bytearray(N)
    for n in targets:
        needs[n.index] = 1
    floats = ("float32", "float64")
    for n in order:                         # forward sweep: a node needs a gradient if an input does
        spec = n._op
        if spec is not None and spec.differentiable and not needs[n.index] and n.dtype in floats:
            for p in n.inputs:
                if needs[p.index]:
                    needs[n.index] = 1
                    break
    live = bytearray(N)                     # backward sweep: ... and if it leads to y
    live[y.index] = needs[y.index]
    for u in reversed(order):
        if live[u.index] and u._op is not None and u._op.differentiable:
            for p in u.inputs:
                if needs[p.index]:
                    live[p.index] = 1
    active = [n for n in order if live[n.index]]
    edges, children, pending = {}, {}, {}
    for u in active:
        if u._op is None or not u._op.differentiable:
            continue
        slots = [(i, p) for i, p in enumerate(u.inputs) if live[p.index]]
        if slots:
            edges[u.index] = slots
            pending[u.index] = len(slots)
            for i, p in slots:
                children.setdefault(p.index, []).append((u, i))
    plan = _Plan()
    plan.order, plan.active, plan.edges, plan.children, plan.pending, plan.wrt = (
        order, active, edges, children, pending, targets)
    graph._cache[key] = plan
    return plan


def backward(graph, y, variant="children", seed=None, trace=None, wrt=None, retain_grads=False,
             check_finite=None):
    """See Graph.backward."""
    from .graph import describe
    _check_member(graph, y, "backward")
    if variant not in VARIANTS:
        raise ValueError(f"backward: unknown variant {variant!r}; use 'children' (Version A: each node sums "
                         "over its children) or 'parents' (Version B: each node increments its parents)")
    if y.dtype not in ("float32", "float64"):
        raise DTypeError(f"backward: '{y.name}' is {describe(y.shape, y.dtype)}; only float outputs have "
                         "gradients")
    if wrt is not None:
        wrt = [wrt] if not isinstance(wrt, (list, tuple)) else list(wrt)
        for n in wrt:
            _check_member(graph, n, "backward")
            if n.dtype not in ("float32", "float64"):
                raise DTypeError(f"backward: cannot differentiate with respect to '{n.name}' "
                                 f"({describe(n.shape, n.dtype)}): integer ids and bool masks have no "
                                 "gradient; differentiate with respect to the embedding table instead")
    F = graph.backend
    if y._value is None:
        raise GraphError(f"backward: '{y.name}' has no value; run g.forward(feeds) first")
    if graph._version != graph._fwd_version:
        raise GraphError("backward: an input or param value changed after the last forward, so the stored "
                         "values are stale; run g.forward(...) again first")
    if seed is None:
        if y.shape != ():
            raise GraphError(f"backward: '{y.name}' has shape {y.shape}; pass seed= (an array of that shape) "
                             "or reduce it to a scalar first, e.g. gd.sum(y)")
        seed = F.ones_like(y._value)
    else:
        seed = _seed_value(graph, y, seed)
    plan = _plan(graph, y, wrt)
    for n in plan.order:
        if n._value is None:
            raise GraphError(f"backward: '{n.name}' has no value; run g.forward(...) with y among the outputs")
    check = graph.check_finite if check_finite is None else check_finite
    emit = None if trace is None else (trace.append if hasattr(trace, "append") else trace)
    kept = set(n.index for n in plan.wrt)
    if retain_grads:
        kept.update(n.index for n in plan.active)
    if check:
        _check_grad(F, seed, None, 0, y)
    if not plan.active:
        adj = {}
    elif variant == "children":
        adj = _children(F, y, seed, plan, kept, emit, check)
    else:
        adj = _parents(F, y, seed, plan, kept, emit, check)
    for n in graph._with_grad:
        n.grad = None
    holders = list(plan.wrt)
    for n in plan.wrt:
        g = adj.get(n.index)
        n.grad = g if g is not None else F.zeros(n.shape, dtype=F.dtypes[n.dtype])
    if retain_grads:
        for n in plan.active:
            n.grad = adj[n.index]
        holders += plan.active
    graph._with_grad = holders
    return {n: n.grad for n in plan.wrt}


def _seed_value(graph, y, seed):
    from .graph import _is_backend_array
    F = graph.backend
    if not _is_backend_array(seed, F):
        seed = F.from_host(seed, y.dtype)
    if tuple(seed.shape) != y.shape:
        raise ShapeError(f"backward: seed has shape {tuple(seed.shape)}, '{y.name}' has shape {y.shape}; "
                         "they must match")
    return seed


def _children(F, y, seed, plan, kept, emit, check):
    """Version A: each node pulls its adjoint from the children that use it."""
    adj = {}
    pending = dict(plan.pending)
    children = plan.children
    for v in reversed(plan.active):
        vi = v.index
        if v is y:
            gv = seed
        else:
            gv = None
            for u, i in children[vi]:
                ui = u.index
                c = u._op.vjp(F, i, adj[ui], [p._value for p in u.inputs], u._value, **u.attrs)
                if c.shape != v.shape:
                    _bad_vjp(u, i, v, c)
                if check:
                    _check_grad(F, c, u, i, v)
                if emit is not None:
                    emit(Contribution(u, i, v, gv is None))
                gv = c if gv is None else gv + c
                pending[ui] -= 1
                if not pending[ui] and ui not in kept:
                    del adj[ui]
                    if emit is not None:
                        emit(Freed(u))
        adj[vi] = gv
        if emit is not None:
            emit(Final(v))
        if vi not in pending and vi not in kept:    # an input-less active node: nothing will pull
            del adj[vi]
            if emit is not None:
                emit(Freed(v))
    return adj


def _parents(F, y, seed, plan, kept, emit, check):
    """Version B: each node pushes (+=) into the adjoints of its inputs."""
    adj = {y.index: seed}
    edges = plan.edges
    for u in reversed(plan.active):
        ui = u.index
        gu = adj[ui]
        if emit is not None:
            emit(Final(u))
        slots = edges.get(ui)
        if slots:
            vjp, attrs, out = u._op.vjp, u.attrs, u._value
            xs = [p._value for p in u.inputs]
            for i, p in slots:
                c = vjp(F, i, gu, xs, out, **attrs)
                if c.shape != p.shape:
                    _bad_vjp(u, i, p, c)
                if check:
                    _check_grad(F, c, u, i, p)
                pi = p.index
                prev = adj.get(pi)
                if emit is not None:
                    emit(Contribution(u, i, p, prev is None))
                adj[pi] = c if prev is None else prev + c
        if ui not in kept:
            del adj[ui]
            if emit is not None:
                emit(Freed(u))
    return adj


def _bad_vjp(u, i, p, c):
    raise ShapeError(f"backward: the VJP of {u.op} '{u.name}' for input {i} ('{p.name}') returned shape "
                     f"{tuple(c.shape)}, expected {p.shape}; a VJP must un-broadcast to its input's shape "
                     "(F.unbroadcast(g, x.shape))")


def _check_grad(F, c, u, i, p):
    if bool(F.all(F.isfinite(c))):
        return
    if u is None:
        raise NonFiniteError(f"backward: the seed for '{p.name}' holds NaN or Inf")
    raise NonFiniteError(f"backward: the VJP of {u.op} '{u.name}' for input {i} ('{p.name}') produced NaN or "
                         f"Inf ({_ranges(u, F)}); a VJP like 1/x or log(x) at 0, or an adjoint that overflowed "
                         "upstream, causes this")
