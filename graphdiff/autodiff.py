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
import gc
from functools import partial, wraps
from typing import NamedTuple

import numpy as np

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


def _bulk(fn):
    """Run fn with Python's cyclic garbage collector paused. Building an order or a plan allocates a few
    small containers per node and no cycles; on a graph of a million nodes the collector would otherwise
    rescan every node several times over (it roughly doubled the first backward of the 1M-node chain)."""
    @wraps(fn)
    def run(*args, **kwargs):
        if not gc.isenabled():
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()
    return run


# --- topological order ---------------------------------------------------------------------------------
@_bulk
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
    if check:
        for n in order:
            if n._op is None:
                check_value(n, F)
    scalar_steps = None if check else _forward_steps(graph, order, scalar=True)
    if scalar_steps is not None:
        for n in order:                     # leaves as Python floats; op nodes get floats from the kernels
            if n._op is None and type(n._value) is not float:
                n._value = float(n._value)
        try:
            _run(scalar_steps, resample, False, F, explain=False)
        except (ArithmeticError, ValueError):   # inf or nan ahead: NumPy's semantics take over
            scalar_steps = None
            _as_arrays(order)
    if scalar_steps is None:
        _run(_forward_steps(graph, order, scalar=False), resample, check, F)
    graph._fwd_version = graph._version
    if single is None:
        return None
    return outs[0].value if single else [o.value for o in outs]


def _run(steps, resample, check, F, explain=True):
    """Compute each step's node from its inputs' values (the forward pass proper). explain: turn an
    exception from an op into a GraphError that names the node (the scalar kernels need the raw one)."""
    n = None
    try:
        for n, fn, ins, random in steps:
            if random and not resample and n._value is not None:
                continue
            k = len(ins)                      # spelled out: a list comprehension costs more than the op
            if k == 2:
                n._value = fn(ins[0]._value, ins[1]._value)
            elif k == 1:
                n._value = fn(ins[0]._value)
            else:
                n._value = fn(*[p._value for p in ins])
            if check:
                check_value(n, F)
    except GraphError:
        raise
    except Exception as e:
        if not explain:
            raise
        raise GraphError(f"forward failed at {_where(n)}: {type(e).__name__}: {e}") from e


def _as_arrays(nodes):
    """Python-float values (from the scalar kernels) back to NumPy float64 scalars."""
    for n in nodes:
        if type(n._value) is float:
            n._value = np.float64(n._value)


def _scalar_graph(graph, order):
    """True when the fused Python-float kernels can run order: NumPy, float64, every node 0-d, every op
    with kernels. (NumPy's per-call overhead dominates on such micrograd-style graphs.)"""
    if graph.backend.name != "numpy":
        return False
    for n in order:
        if n.shape or n.dtype != "float64" or (n._op is not None and n._op.forward_scalar is None):
            return False
    return True


@_bulk
def _forward_steps(graph, order, scalar):
    """(node, forward with F and attrs bound, inputs, random) for each op node of order; cached.
    With scalar=True: the Python-float kernels, or None where the graph cannot use them."""
    key = ("steps", id(order), scalar)
    if key in graph._cache:
        return graph._cache[key]
    F = graph.backend
    steps = []
    if scalar and not _scalar_graph(graph, order):
        steps = None
    else:
        for n in order:
            spec = n._op
            if spec is None:
                continue
            if scalar:
                fn = partial(spec.forward_scalar, **n.attrs) if n.attrs else spec.forward_scalar
            else:
                fn = partial(spec.forward, F, **(dict(n.attrs, ctx=graph) if spec.random else n.attrs))
            steps.append((n, fn, n.inputs, spec.random))
    graph._cache[key] = steps
    return steps


def compute(node, F):
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

    __slots__ = ("order", "active", "edges", "children", "pending", "wrt", "scalar")


@_bulk
def _plan(graph, y, wrt, scalar=False):
    """The backward plan; scalar=True binds the Python-float VJP kernels (None if the graph can't)."""
    key = ("bwd", y.index, None if wrt is None else tuple(n.index for n in wrt), scalar)
    if key in graph._cache:
        return graph._cache[key]
    if scalar and not _scalar_graph(graph, topological_order(graph, [y])):
        graph._cache[key] = None
        return None
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
            spec = u._op
            if scalar:
                vjp = partial(spec.vjp_scalar, **u.attrs) if u.attrs else spec.vjp_scalar
            else:
                vjp = partial(spec.vjp, graph.backend, **u.attrs)
            edges[u.index] = (vjp, slots)
            pending[u.index] = len(slots)
            for i, p in slots:
                children.setdefault(p.index, []).append((u, i, vjp))
    plan = _Plan()
    plan.order, plan.active, plan.edges, plan.children, plan.pending, plan.wrt, plan.scalar = (
        order, active, edges, children, pending, targets, scalar)
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
    check = graph.check_finite if check_finite is None else check_finite
    fast = None if check else _plan(graph, y, wrt, scalar=True)      # None unless a scalar graph
    plan = fast or _plan(graph, y, wrt)
    for n in plan.order:
        if n._value is None:
            raise GraphError(f"backward: '{n.name}' has no value; run g.forward(...) with y among the outputs")
    emit = None if trace is None else (trace.append if hasattr(trace, "append") else trace)
    kept = set(n.index for n in plan.wrt)
    if retain_grads:
        kept.update(n.index for n in plan.active)
    if check:
        _check_grad(F, seed, None, 0, y)
    run = _children if variant == "children" else _parents
    adj = None
    if fast is not None and plan.active:
        events = [] if emit is not None else None   # held back until the run succeeds
        try:
            adj = run(F, y, float(seed), fast, kept, None if events is None else events.append, False)
        except (ArithmeticError, ValueError):       # inf or nan ahead: NumPy's semantics take over
            adj = None
            _as_arrays(plan.order)
            plan = _plan(graph, y, wrt)
        else:
            for e in events or ():
                emit(e)
            adj = {k: np.float64(v) for k, v in adj.items()}
    if adj is None:
        adj = run(F, y, seed, plan, kept, emit, check) if plan.active else {}
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
    from .backend import to_numpy
    F = graph.backend
    if not F.owns(seed):
        seed = F.from_host(to_numpy(seed), y.dtype)
    if tuple(seed.shape) != y.shape:
        raise ShapeError(f"backward: seed has shape {tuple(seed.shape)}, '{y.name}' has shape {y.shape}; "
                         "they must match")
    return seed


def _children(F, y, seed, plan, kept, emit, check):
    """Version A: each node pulls its adjoint from the children that use it."""
    adj = {}
    pending = dict(plan.pending)
    children = plan.children
    shapes = not plan.scalar
    for v in reversed(plan.active):
        vi = v.index
        if v is y:
            gv = seed
        else:
            gv = None
            for u, i, vjp in children[vi]:
                ui = u.index
                c = vjp(i, adj[ui], _values(u.inputs), u._value)
                if shapes and c.shape != v.shape:
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
    shapes = not plan.scalar
    for u in reversed(plan.active):
        ui = u.index
        gu = adj[ui]
        if emit is not None:
            emit(Final(u))
        edge = edges.get(ui)
        if edge is not None:
            vjp, slots = edge
            out = u._value
            xs = _values(u.inputs)
            for i, p in slots:
                c = vjp(i, gu, xs, out)
                if shapes and c.shape != p.shape:
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


def _values(ins):
    k = len(ins)
    if k == 2:
        return (ins[0]._value, ins[1]._value)
    if k == 1:
        return (ins[0]._value,)
    return tuple(p._value for p in ins)


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
