"""Running a graph: the engine's state per graph, topological order and the forward pass.

The engine owns everything about execution, kept per graph in a State: per batch size one Caches, which
holds an Order object per forward order (its node lists, bound forward steps, compiled run) and the backward
plans (plans.py), valid while graph.version and the kernel switch (KERNELS["epoch"]) are unchanged; and the
residuals ops keep for their VJPs. graph.py knows none of it. Everything is a loop over lists: graphs a
million nodes deep need no recursion.

Two backends run the steps: the graph's (NumPy, CuPy, array_api_strict) and, for micrograd-style graphs
whose every node is a 0-d float64 on NumPy, Python floats (backend.SCALAR), where NumPy's per-call cost would
dominate. The ops' own rules run on both; where floats meet inf or NaN, the pass reruns on NumPy.
"""
import gc
from functools import partial, wraps

import numpy as np

from . import batched
from .backend import SCALAR
from .errors import GraphError, NonFiniteError, ShapeError
from .graph import Node, describe
from .ops.registry import KERNELS

FLOATS = ("float32", "float64")
SCALAR_FAILS = (ArithmeticError, ValueError, TypeError, AttributeError)   # floats gave up: rerun on NumPy


class State:
    """What the engine keeps for one graph."""

    def __init__(self, version):
        self.version = version    # the graph.version the caches were built for
        self.epoch = KERNELS["epoch"]   # ... and the kernel switch (steps and rules bind kernels or rules)
        self.caches = {}          # graph.batch -> its Caches: a graph with a None axis has one per batch size
        self.cache = None         # the current batch size's Caches
        self.residuals = {}       # node index -> what its forward kept for its VJP (forward_res)
        self.built = {}           # hvp / jvp graphs, built once (nodes are never removed, so never stale)
        self.with_grad = []       # nodes whose .grad the last backward set


class Caches:
    """What the engine keeps for one batch size of a graph. orders: outputs' indices -> Order; by_nodes:
    id(order's node list) -> Order (graph.nodes included); plans: (y index, wrt indices or None) -> Plan, or
    its compile counts after its first use (plans.plan_for); lifetimes: (outputs, y, variant, backend) ->
    lifetimes.Lifetimes, or False where nothing is worth releasing (forward_backward)."""

    __slots__ = ("orders", "by_nodes", "plans", "lifetimes")

    def __init__(self):
        self.orders, self.by_nodes, self.plans, self.lifetimes = {}, {}, {}, {}


class Order:
    """A forward order (nodes: each after its inputs) and what is kept with it: its leaves, op nodes, nodes
    with residuals and random nodes (built when first asked for); floats: scalar_graph of it (None until
    known); scalar_leaves: the leaves a float run may leave as Python floats; steps: (backend name, check)
    -> the bound forward steps, or False after their first use (_steps); shapes_ok: backends whose run of
    it passed the shape check; compiled: the compile count or compiled function (compiled_after)."""

    __slots__ = ("nodes", "_leaves", "_ops", "_keepers", "_random", "scalar_leaves", "floats", "steps", "shapes_ok",
                 "compiled")

    def __init__(self, nodes):
        self.nodes = nodes
        self._leaves = self._ops = self._keepers = self._random = self.scalar_leaves = self.floats = None
        self.steps, self.shapes_ok, self.compiled = {}, set(), {}

    @property
    def leaves(self):
        if self._leaves is None:
            self._leaves = [n for n in self.nodes if n.spec is None]
        return self._leaves

    @property
    def ops(self):
        if self._ops is None:
            self._ops = [n for n in self.nodes if n.spec is not None]
        return self._ops

    @property
    def keepers(self):
        """The nodes whose op keeps residuals for its VJP (forward_res)."""
        if self._keepers is None:
            self._keepers = [n for n in self.nodes if n.spec is not None and n.spec.forward_res is not None]
        return self._keepers

    @property
    def random(self):
        if self._random is None:
            self._random = [n for n in self.nodes if n.spec is not None and n.spec.random]
        return self._random


def state(graph):
    """The engine's State for graph, its caches cleared if the graph's structure or the kernel switch changed
    since (the one place the kernel epoch is checked), and its cache the Caches of the graph's current batch
    size. It lives on the graph (graph.engine_state), so it dies with it: a registry keyed by graph would hold
    the graph's nodes, and through them the graph, for ever."""
    st = graph.engine_state
    if st is None:
        st = graph.engine_state = State(graph.version)
    elif st.version != graph.version or st.epoch != KERNELS["epoch"]:
        st.caches.clear()
        st.version, st.epoch = graph.version, KERNELS["epoch"]
    cache = st.caches.get(graph.batch)
    if cache is None:
        cache = st.caches[graph.batch] = Caches()
    st.cache = cache
    return st


def order_of(st, nodes):
    """The Order object of a node list that topological_order returned (or graph.nodes)."""
    got = st.cache.by_nodes.get(id(nodes))
    if got is None:
        got = st.cache.by_nodes[id(nodes)] = Order(nodes)
    return got


def gc_paused(fn):
    """Run fn with Python's cyclic garbage collector paused. Building an order or a plan, and running a
    forward or backward pass, allocate a few small containers per node and no cycles (reference counting
    frees them); on a graph of a million nodes the collector would otherwise rescan every node several
    times over (it roughly doubled the first backward of the 1M-node chain), and on a scalar graph built
    and run once, as eager users do, its scans of the pass's short-lived containers cost about as much as
    the pass."""
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
@gc_paused
def topological_order(graph, outputs):
    """The nodes `outputs` depend on, each after all of its inputs (iterative depth-first post-order).

    Cached per graph and set of outputs; adding a node clears the cache.
    """
    st = state(graph)
    key = tuple(o.index for o in outputs)
    got = st.cache.orders.get(key)
    if got is not None:
        return got.nodes
    seen = bytearray(len(graph.nodes))
    order = []
    for root in outputs:
        if seen[root.index]:
            continue
        seen[root.index] = 1
        nodes, pending = [root], [iter(root.inputs)]    # the path explored, each node with its inputs left
        while pending:
            for parent in pending[-1]:
                if not seen[parent.index]:
                    seen[parent.index] = 1
                    if parent.inputs:
                        nodes.append(parent)
                        pending.append(iter(parent.inputs))
                        break
                    order.append(parent)            # a leaf follows nothing
            else:                       # all inputs placed: the node can follow them
                pending.pop()
                order.append(nodes.pop())
    st.cache.orders[key] = st.cache.by_nodes[id(order)] = Order(order)
    return order


def check_member(graph, node, what):
    if not isinstance(node, Node):
        raise TypeError(f"{what}: expected a Node, got {type(node).__name__}")
    if node.graph is not graph:
        raise GraphError(f"{what}: node '{node.name}' belongs to another graph; "
                         "call forward/backward on the graph that built it")


def _as_outputs(graph, outputs):
    if outputs is None:
        return None, graph.nodes
    single = isinstance(outputs, (Node, str))
    outs = [outputs] if single else list(outputs)
    outs = [graph.node(o) if isinstance(o, str) else o for o in outs]
    for o in outs:
        check_member(graph, o, "forward")
    return single, outs


# --- forward ---------------------------------------------------------------------------------------------
@gc_paused
def forward(graph, feeds=None, outputs=None, check_finite=None, resample=True, release=None):
    """See Graph.forward. release: a lifetimes.Lifetimes for this order (forward_backward): values go after
    their last use as it says."""
    graph.feed(feeds or {})
    single, outs = _as_outputs(graph, outputs)
    st = state(graph)
    order = graph.nodes if single is None else topological_order(graph, outs)
    kept = order_of(st, order)
    check = graph.check_finite if check_finite is None else check_finite
    leaves = kept.leaves
    missing = [n for n in leaves if n.out is None]
    if missing:
        names = ", ".join(f"'{n.name}' {describe(n.shape, n.dtype)}" for n in missing)
        raise GraphError(f"forward: no value for input {names}; pass it in feeds, "
                         f"e.g. g.forward({{'{missing[0].name}': array}})")
    if check:
        as_arrays(leaves)                 # a float run may have left Python floats: NumPy checks arrays
        for n in leaves:
            check_value(n, graph.backend)
    stamp = max((n.stamp for n in leaves), default=0)   # every value computed now is from these leaves
    if not check and release is None and runs_on_floats(graph, order):     # (nothing random)
        try:
            _float_forward(graph, st, kept, stamp, resample)
        except SCALAR_FAILS:                # inf or nan ahead: NumPy's semantics take over
            as_arrays(order)
        else:
            return _result(single, outs)
    elif not check:                         # a float run of other outputs may have left Python floats in
        as_arrays(_scalar_leaves(kept, graph))          # leaves: NumPy's rules and kernels read .shape
    draws = kept.random
    if draws:                               # and from random draws (dropout masks)
        stamp = _stamp_with_draws(graph, draws, stamp, resample)
    steps = _steps(graph, st, kept, graph.backend, check)
    if release is not None:
        steps = release.forward_steps(steps, st.residuals, check)
    if graph.backend.name in kept.shapes_ok:
        _run(steps, stamp, resample)
    else:                                   # an order's shapes are fixed: its first run checks them
        _run(((n, _shape_checked(fn, n), ins, random) for n, fn, ins, random in steps), stamp, resample)
        kept.shapes_ok.add(graph.backend.name)
    return _result(single, outs)


def _shape_checked(fn, node):
    """fn, refusing a value of another shape than its node's: an op whose forward breaks its own shape rule
    is named where it happens, not by the op or VJP that trips over the value later (or by none)."""
    def checked(*xs):
        out = fn(*xs)
        shape = tuple(getattr(out, "shape", ()))
        if shape != node.shape:
            raise ShapeError(f"forward: {where(node)} returned shape {shape}, but its shape rule says "
                             f"{node.shape}; fix the op's forward or its shape rule")
        return out
    return checked


def runs_on_floats(graph, order):
    """scalar_graph(graph, order), kept with the order (forward and backward of one output share it)."""
    kept = order_of(state(graph), order)
    if kept.floats is None:
        kept.floats = scalar_graph(graph, order)
    return kept.floats


def _float_forward(graph, st, kept, stamp, resample):
    """The forward on Python floats: the steps one by one, or one compiled function: batched.py's groups for
    a big, wide graph (from its first run), else codegen's straight-line Python (from its third)."""
    run = compiled_after(kept.compiled, "forward", batched.forward_run, kept.nodes)
    if run:
        for n, v in zip(kept.ops, run(kept.nodes)):
            n.out, n.stamp = v, stamp
        for n in kept.keepers:              # the compiled run keeps no residuals: drop the older ones
            st.residuals.pop(n.index, None)
        return
    for n in kept.leaves:                   # leaves as Python floats; op nodes get floats from the rules
        if type(n.out) is not float:
            n.out = float(n.out)
    _run(_steps(graph, st, kept, SCALAR, False), stamp, resample, explain=False)


def compiled_after(counts, key, build, *args):
    """The compiled function kept in counts[key]: build(calls, *args) on each call until it gives one, or
    False (it cannot be compiled); before that it gives None (not yet) and counts[key] counts the calls."""
    got = counts.get(key, 0)
    if type(got) is int:                    # (not False, a bool: what cannot be compiled is not tried again)
        built = build(got + 1, *args)
        got = counts[key] = got + 1 if built is None else built
    return None if type(got) is int else got


def _stamp_with_draws(graph, nodes, stamp, resample):
    """The stamp of a run that reads the random draws of nodes: a new tick where it draws (resample, or a
    draw not made yet), newer than every value so far, so that a value that read the old draws and is not
    recomputed now is stale; else no older than the draws it keeps."""
    for n in nodes:
        if resample or n.out is None:
            return graph.tick()
        if n.stamp > stamp:
            stamp = n.stamp
    return stamp


def _scalar_leaves(kept, graph):
    """The leaves of an order that a float run may leave holding Python floats: 0-d float64 on NumPy."""
    if kept.scalar_leaves is None:
        numpy = graph.backend.name == "numpy"
        kept.scalar_leaves = [n for n in kept.leaves if numpy and not n.shape and n.dtype == "float64"]
    return kept.scalar_leaves


def _result(single, outs):
    if single is None:
        return None
    return outs[0].value if single else [o.value for o in outs]


def _run(steps, stamp, resample, explain=True):
    """Compute each step's node from its inputs' values (the forward pass proper) and stamp it. explain:
    turn an exception from an op into a GraphError that names the node (the float run needs the raw one).
    A run that fails part-way leaves new values with the new stamp and old ones with old stamps, so a
    backward that would mix them sees an input newer than its consumer and refuses."""
    n = None
    try:
        for n, fn, ins, random in steps:
            if random and not resample and n.out is not None:
                continue
            k = len(ins)                      # spelled out: a list comprehension costs more than the op
            if k == 2:
                n.out = fn(ins[0].out, ins[1].out)
            elif k == 1:
                n.out = fn(ins[0].out)
            else:
                n.out = fn(*[p.out for p in ins])
            n.stamp = stamp
    except GraphError:
        raise
    except Exception as e:
        if not explain:
            raise
        raise GraphError(f"forward failed at {where(n)}: {type(e).__name__}: {e}") from e


@gc_paused
def _steps(graph, st, kept, F, check):
    """(node, its forward bound to F and its attrs, inputs, random) for each op node of the Order kept; kept
    from the order's second run on. Its first run binds them one by one and keeps none: a graph built and
    run once, as eager users run theirs, would only leave the collector more objects to scan (and free)."""
    key = (F.name, check)
    steps = kept.steps.get(key)
    if steps is None:
        kept.steps[key] = False
        return _bound(graph, st, kept.nodes, F, check)
    if steps is False:
        steps = kept.steps[key] = list(_bound(graph, st, kept.nodes, F, check))
    return steps


def _bound(graph, st, order, F, check):
    """The steps of _steps, one by one. Nodes of an op without attrs, residuals or randomness share one
    bound function (a scalar graph's nodes: one per op instead of one per node)."""
    shared = {}
    for n in order:
        spec = n.spec
        if spec is None:
            continue
        if n.attrs or spec.random or spec.forward_res is not None or check:
            fn = _bind_forward(graph, st, n, F, check)
        else:
            fn = shared.get(spec)
            if fn is None:
                fn = shared[spec] = partial(spec.impl(F).forward, F)
        yield n, fn, n.inputs, spec.random


def _bind_forward(graph, st, n, F, check):
    attrs = dict(n.attrs, ctx=graph) if n.spec.random else n.attrs
    spec = n.spec.impl(F)                   # the backend's fused kernel, or the op's rule
    if spec.forward_res is None:
        fn = partial(spec.forward, F, **attrs)
    else:                                   # the op keeps residuals for its VJP
        keep, residuals, index = partial(spec.forward_res, F, **attrs), st.residuals, n.index

        def fn(*xs):
            out, residuals[index] = keep(*xs)
            return out
    if check:
        fn = _checked_forward(fn, n, F)
    return fn


def _checked_forward(fn, node, F):
    def checked(*xs):
        node.out = fn(*xs)
        check_value(node, F)
        return node.out
    return checked


def scalar_graph(graph, order):
    """True when Python floats can run order: NumPy, every node a 0-d float64, nothing random."""
    if graph.backend.name != "numpy":
        return False
    for n in order:
        if n.shape or n.dtype != "float64" or (n.spec is not None and n.spec.random):
            return False
    return True


def as_arrays(nodes):
    """Python-float values (from the float run) back to NumPy float64 scalars."""
    for n in nodes:
        if type(n.out) is float:
            n.out = np.float64(n.out)


def compute(node):
    """Compute one node from its inputs' values as it is added (eager mode). A 0-d float64 node of a
    NumPy graph whose inputs are too is computed on Python floats, as a forward of a scalar graph is (where
    floats give up, on NumPy)."""
    graph = node.graph
    spec = node.spec
    ins = node.inputs
    out = None
    if (not node.shape and node.dtype == "float64" and not spec.random and not graph.check_finite
            and graph.backend.name == "numpy"):
        k = len(ins)
        a = ins[0].out if k else None
        try:
            if k == 2 and type(a) is float and not node.attrs:      # most nodes: spelled out, no list
                b = ins[1].out
                out = spec.forward(SCALAR, a, b) if type(b) is float else _float_forward_of(node)
            elif k == 1 and type(a) is float and not node.attrs:
                out = spec.forward(SCALAR, a)
            else:
                out = _float_forward_of(node)
        except Exception:                     # inf or nan ahead: NumPy's semantics take over
            out = None
        if type(out) is not float:
            out = None
    if out is None:
        kw = {"ctx": graph} if spec.random else {}
        try:
            xs = [np.float64(v) if type(v) is float else v for v in (p.out for p in ins)]
            out = spec.impl(graph.backend).forward(graph.backend, *xs, **kw, **node.attrs)
        except GraphError:
            raise
        except Exception as e:
            raise GraphError(f"computing {where(node)} failed: {type(e).__name__}: {e}") from e
    node.out = out
    if len(ins) == 2:                       # the newest of its inputs'
        stamp, other = ins[0].stamp, ins[1].stamp
        if other > stamp:
            stamp = other
    else:
        stamp = ins[0].stamp if ins else 0
        for p in ins:
            if p.stamp > stamp:
                stamp = p.stamp
    node.stamp = stamp
    if spec.forward_res is not None:      # computed without residuals: none may be older
        state(graph).residuals.pop(node.index, None)
    if graph.check_finite:
        check_value(node, graph.backend)


def _float_forward_of(node):
    """node's value computed on Python floats (compute), or None when an input is not a 0-d float64."""
    xs = _floats(node.inputs)
    if xs is None:
        return None
    return node.spec.forward(SCALAR, *xs, **node.attrs)


def _floats(ins):
    """The values of ins as Python floats, or None unless each is a 0-d float64 (a leaf keeps its float, as
    a float forward leaves it)."""
    k = len(ins)
    if k == 2:                              # most nodes: one or two inputs whose values are floats already
        a, b = ins[0].out, ins[1].out
        if type(a) is float and type(b) is float:
            return a, b
    elif k == 1:
        a = ins[0].out
        if type(a) is float:
            return (a,)
    xs = []
    for p in ins:
        v = p.out
        if p.shape != () or p.dtype != "float64":
            return None
        if type(v) is not float:
            v = float(v)
            if p.spec is None:
                p.out = v
        xs.append(v)
    return xs


def where(n):
    ins = ", ".join(f"'{p.name}' {describe(p.shape, p.dtype)}" for p in n.inputs)
    return f"{n.op} '{n.name}' (inputs: {ins or 'none'})"


def check_value(node, F):
    """Raise NonFiniteError if a float node's value holds NaN or Inf."""
    if node.dtype not in FLOATS or node.out is None:
        return
    if bool(F.all(F.isfinite(node.out))):
        return
    if node.spec is None:
        raise NonFiniteError(f"{node.kind} '{node.name}' holds NaN or Inf; fix the data or the initialisation")
    raise NonFiniteError(f"forward: {where(node)} produced NaN or Inf from finite inputs ({ranges(node, F)}); "
                         "look for log/sqrt of values <= 0, division by zero or exp overflow (float32 "
                         "overflows past e^88)")


def ranges(node, F):
    parts = []
    for p in node.inputs:
        if p.dtype in FLOATS and p.shape and p.out is not None:
            parts.append(f"'{p.name}' in [{float(F.min(p.out)):.4g}, {float(F.max(p.out)):.4g}]")
        elif p.out is not None and not p.shape:
            parts.append(f"'{p.name}' = {float(p.out):.4g}")
    return ", ".join(parts) or "no float inputs"
