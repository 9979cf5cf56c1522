"""Reverse mode in both textbook variants, numeric and symbolic, and the derivatives built on it.

Both variants visit the nodes y depends on in reverse topological order and call each op's VJP once per
edge (u, i) from node u to its input u.inputs[i]. They differ in who does the summing:

- "children" (the lecture's Version A): at node v, dv = sum over its children (u, i) of vjp_u_i(du).
  v pulls from its children; each adjoint is written once, when it is final. A child's adjoint lives
  until the last of its inputs has pulled from it.
- "parents" (Version B): adjoints start empty (zero) and dy/dy = seed; at node u, for each input slot i,
  d[u.inputs[i]] += vjp_u_i(du). u pushes into its parents; its own adjoint can go right after.

The two loops below are the whole algorithm. What they do with a contribution is the Run's business: a
numeric Run calls the VJP rules on arrays and adds arrays; a symbolic Run calls the same rules on Nodes
with graphdiff's ops, so the backward pass becomes more graph (g.gradients), which can be drawn, run and
differentiated again (hvp, hessian, jvp). Tracing, shape and NaN checks wrap a Run's methods when it is
set up; they are not written into the loops.
"""
from functools import partial
from typing import NamedTuple

import numpy as np

from . import codegen
from .backend import SCALAR
from .errors import DTypeError, GraphError, NonFiniteError, ReleasedError, ShapeError
from .execution import (FLOATS, SCALAR_FAILS, as_arrays, bulk, check_member, compiled_after,  # noqa: F401
                        compute, forward, ranges, runs_on_floats, scalar_graph, state, topological_order)
from .graph import RELEASED, Node, describe, released
from .lifetimes import Lifetimes, release as _release
from .ops import NODES, add_n, sum as _sum
from .ops.registry import KERNELS

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


# --- the two variants ------------------------------------------------------------------------------------
def version_a(plan, seed, run):
    """Version A ("children"): each node v sums the contributions of the children that use it."""
    vjp, total, final, free = run.vjp, run.total, run.final, run.free     # (looked up once, used per edge)
    adj = {}
    y = plan.y
    for v, children, lone in plan.pulls:        # reverse topological order, y first
        if v is y:
            adj[v] = seed
        else:
            parts = []
            for u, i, last in children:         # u.inputs[i] is v
                parts.append(vjp(u, i, adj[u]))
                if last:                        # u's inputs have all pulled from it
                    free(adj, u)
            adj[v] = total(parts)
        final(v)
        if lone:                                # nothing will pull from v
            free(adj, v)
    return adj


def version_b(plan, seed, run):
    """Version B ("parents"): adjoints start at 0; each node u does += into its parents' adjoints."""
    vjp, accumulate, final, free = run.vjp, run.accumulate, run.final, run.free
    adj = {plan.y: seed}
    for u, slots in plan.pushes:                # reverse topological order, y first
        final(u)
        for i, p in slots:                      # u.inputs[i] is p
            adj[p] = accumulate(adj.get(p), vjp(u, i, adj[u]))
        free(adj, u)
    return adj


LOOPS = {"children": version_a, "parents": version_b}


# --- plans: what the loops visit, computed once per (y, wrt) --------------------------------------------
class Plan:
    """The nodes on a path from wrt to y and the edges between them, in the order each variant visits.

    pushes: (u, [(slot i, parent p)]) in reverse topological order, for Version B; pulls: (v, [(child u,
    slot i, last pull from u)], lone) in the same order, for Version A; active: the nodes with an adjoint,
    in topological order. plan_for builds the one its variant visits in its sweep over the order; the other
    and active are built by a sweep of their own the first time they are asked for (most plans of a fresh
    graph are used once, by one variant). order: every node y depends on; wrt: the targets; src/dst:
    positions in order of each edge, for the staleness check, built the second time the plan is checked (a
    plan used once is checked by a loop)."""

    __slots__ = ("y", "order", "needs", "_active", "_pushes", "_pulls", "wrt", "src", "dst", "checked", "floats",
                 "rules", "compiled", "shapes_ok", "casts")

    def __init__(self):
        self._active = self._pushes = self._pulls = None
        self.src = self.dst = None
        self.checked = False
        self.shapes_ok = set()              # (backend, kernel epoch) whose VJP shapes passed the check once
        self.casts = {}                     # (backend, kernel epoch) -> edges (u, i) whose VJP returns another
        #                                     dtype than its input's (found by that check; cast from then on)

    @property
    def pushes(self):
        if self._pushes is None:
            self.sweep(pushes=True)
        return self._pushes

    @property
    def pulls(self):
        if self._pulls is None:
            self.sweep(pulls=True)
        return self._pulls

    def pushers(self):
        """The nodes that push into an input (have a VJP to call), from whichever edges are built."""
        if self._pushes is not None:
            return [u for u, slots in self._pushes if slots]
        return [v for v, _, lone in self._pulls if not lone]

    @property
    def has_adjoints(self):
        """False when y depends on no node of wrt (and is none): no adjoint, nothing for the loops to visit."""
        return bool(self._pushes if self._pushes is not None else self._pulls)

    @property
    def active(self):
        if self._active is None:
            self._active = [u for u, _, _ in reversed(self.pulls)] if self._pushes is None else \
                [u for u, _ in reversed(self._pushes)]
        return self._active

    @bulk
    def sweep(self, pushes=False, pulls=False):
        """Build the pushes and/or pulls: one sweep over the order from y back. A node is live if it is y or
        a live node pushes into it; a live node pushes into each input that needs a gradient. Version A's pulls
        of v are complete when the sweep reaches v (its children come after it in topological order): they are
        collected in reverse, from the children, and turned around then. u's last pull is from the input that
        Version A reaches last: the earliest of its inputs in topological order (of one used twice, x * x, the
        later slot: children keep slot order)."""
        order, needs, y = self.order, self.needs, self.y
        push, pull, end = [], [], len(needs)
        if needs[y.index]:
            live = bytearray(len(needs))
            live[y.index] = 1
            if pulls:
                pos = [0] * len(needs)          # node index -> position in topological order
                k = 0
                for n in order:
                    pos[n.index] = k
                    k += 1
                # node index -> its (child u, slot i, last pull from u), u in reverse topological order (and
                # the slots of one u in reverse too)
                kids = [None] * len(needs)
            for u in reversed(order):
                j = u.index
                if not live[j]:
                    continue
                spec = u.spec
                slots = [] if pushes else None
                last, first = -1, end           # the slot of u's last pull and its input's position
                if spec is not None and spec.differentiable:
                    i = 0
                    for p in u.inputs:
                        k = p.index
                        if needs[k]:
                            live[k] = 1
                            if pushes:
                                slots.append((i, p))
                            if pulls and pos[k] <= first:
                                last, first = i, pos[k]
                        i += 1
                if pushes:
                    push.append((u, slots))
                if pulls:
                    children = kids[j]
                    if children is None:
                        children = []
                    else:
                        children.reverse()
                    pull.append((u, children, last < 0))
                    if last < 0:
                        continue
                    ins = u.inputs              # its edges, last slot first: reversed with the others at p
                    i = len(ins)
                    while i:
                        i -= 1
                        p = ins[i]
                        if needs[p.index]:
                            edges = kids[p.index]
                            if edges is None:
                                kids[p.index] = [(u, i, i == last)]
                            else:
                                edges.append((u, i, i == last))
        if pushes:
            self._pushes = push
        if pulls:
            self._pulls = pull


@bulk
def plan_for(graph, y, wrt, variant=None):
    """The backward plan of y with respect to wrt (None: params and requires_grad inputs), with the edges
    variant's loop visits built (both when None); kept from its second use on. A plan used once (a graph
    built and run once, as eager users run theirs) is not kept: its pushes, pulls and bound rules would only
    leave the collector more objects to scan and free. What it leaves is its compile counts, so the run
    that compiles is the same either way."""
    st = state(graph)
    key = ("bwd", y.index, None if wrt is None else tuple(n.index for n in wrt))
    kept = st.cache.get(key)
    if type(kept) is Plan:
        return kept
    order = topological_order(graph, [y])
    if wrt is None:
        targets = [n for n in graph.nodes if n.spec is None and n.requires_grad]
    else:
        targets = list(dict.fromkeys(wrt))
    needs = bytearray(len(graph.nodes))
    for n in targets:
        needs[n.index] = 1
    for n in order:                         # forward sweep: a node needs a gradient if an input does
        spec = n.spec
        if spec is not None and spec.differentiable and not needs[n.index] and n.dtype in FLOATS:
            for p in n.inputs:
                if needs[p.index]:
                    needs[n.index] = 1
                    break
    plan = Plan()
    plan.y, plan.order, plan.wrt, plan.needs = y, order, targets, needs
    plan.sweep(pushes=variant != "children", pulls=variant != "parents")
    plan.floats = runs_on_floats(graph, order)
    plan.rules = {}
    if kept is None:                        # its first use
        plan.compiled = st.cache[key] = {}
    else:
        plan.compiled = kept
        st.cache[key] = plan
    return plan


# --- runs: what a contribution is ----------------------------------------------------------------------------
class Run:
    """A numeric backward: each node's VJP rule bound to the backend F (once per plan), its input values
    gathered once per run (two-stage rules compute their shared work then), contributions added as arrays.
    kept: nodes whose adjoints are not freed.

    vjp and free are closures over the run's state rather than methods: they run once per edge and once
    per node, on graphs a million nodes deep, where a bound-method call per use is measurable."""

    def __init__(self, F, kept, residuals, rules):
        self.F, self.kept, self.residuals, self.rules = F, kept, residuals, rules
        stages = {}
        stage_of, drop, bind = stages.get, stages.pop, self.bind

        def vjp(u, i, g):
            stage = stage_of(u)
            if stage is None:
                stage = stages[u] = bind(u)
            rule, xs, out = stage
            return rule(i, g, xs, out)

        def free(adj, u):
            drop(u, None)
            if u not in kept:
                del adj[u]
        self.vjp, self.free = vjp, free

    def bind(self, u):
        """(rule, input values, output value) for u in this run; a two-stage rule's shared work runs here."""
        rule = self.rules[u]
        ins = u.inputs                      # spelled out: a list comprehension costs more than most rules
        xs = [ins[0].out, ins[1].out] if len(ins) == 2 else [ins[0].out] if len(ins) == 1 else [p.out for p in ins]
        if u.spec.make_vjp is None:
            return rule, xs, u.out
        per_slot = rule(xs, u.out, self.residuals.get(u.index))
        return (lambda i, g, xs, out: per_slot(i, g)), None, None

    @staticmethod
    def total(parts):
        if len(parts) == 1:
            return parts[0]
        total = parts[0]
        for c in parts[1:]:
            total = total + c
        return total

    @staticmethod
    def accumulate(prev, c):
        return c if prev is None else prev + c

    @staticmethod
    def final(v):
        pass


class ReleasingRun(Run):
    """A numeric backward that lets go of the forward's values as it goes (forward_backward): each VJP gets
    the values its op reads (a lifetimes.Shape for the others), and once it is bound, the values and
    residuals that no later VJP reads are released (binds: Lifetimes.binds)."""

    def __init__(self, F, kept, residuals, rules, binds, variant="parents"):
        self.binds = binds
        super().__init__(F, kept, residuals, rules)
        if variant != "parents":            # Version A's sums are new by construction (total below)
            return
        # Version B adds into a sum it made itself (never into what a VJP returned: add's VJP returns g, a
        # reshape a view of it). A sum is ours until the loop hands it to a VJP as g, or frees it.
        ours = set()
        vjp, free = self.vjp, self.free

        def handing_out(u, i, g):
            ours.discard(id(g))
            return vjp(u, i, g)

        def freeing(adj, u):
            ours.discard(id(adj.get(u)))
            free(adj, u)

        def accumulate(prev, c):
            if prev is None:
                return c
            if id(prev) in ours and prev.dtype == c.dtype:
                total = prev
                total += c                  # an ndarray adds in place; a NumPy scalar makes a new one
                if total is prev:
                    return prev
                ours.discard(id(prev))
                return total
            ours.discard(id(prev))
            total = prev + c
            ours.add(id(total))
            return total
        self.vjp, self.free, self.accumulate = handing_out, freeing, accumulate

    @staticmethod
    def total(parts):                       # Version A: the first sum is new, the others add into it
        total = parts[0]
        if len(parts) > 1:
            total = total + parts[1]
            for c in parts[2:]:
                if c.dtype == total.dtype:
                    total += c
                else:
                    total = total + c
        return total

    def bind(self, u):
        rule = self.rules[u]
        xs, fill, out, drops, indices = self.binds[u]
        xs = list(xs)
        for k, p in fill:
            xs[k] = p.out
            if xs[k] is None:
                raise GraphError(f"backward: the VJP of {u.op} '{u.name}' needs the value of '{p.name}', which "
                                 "has none; run the forward again")
        if out is None:
            out = u.out
        if u.spec.make_vjp is None:
            stage = rule, xs, out
        else:
            per_slot = rule(xs, out, self.residuals.pop(u.index, None))
            stage = (lambda i, g, xs, out: per_slot(i, g)), None, None
        _release(drops, indices, self.residuals)
        return stage


def bound_rules(plan, F):
    """{node: its VJP rule with F and the node's attrs bound}, for the nodes of plan that push or are pulled
    from; cached on the plan per backend (binding is per node, and plans are reused run after run)."""
    key = (F.name, KERNELS["epoch"])
    rules = plan.rules.get(key)
    if rules is None:
        rules = plan.rules[key] = {}
        shared = {}                         # op -> its rule bound to F, for the nodes without attrs
        for u in plan.pushers():
            if u.attrs:
                rules[u] = _bind_rule(u.spec, F, u.attrs)
            else:
                rule = shared.get(u.spec)
                if rule is None:
                    rule = shared[u.spec] = _bind_rule(u.spec, F, u.attrs)
                rules[u] = rule
    return rules


def _bind_rule(spec, F, attrs):
    spec = spec.impl(F)                     # a fused kernel has make_vjp exactly where the op has it
    return partial(spec.vjp if spec.make_vjp is None else spec.make_vjp, F, **attrs)


class SymbolicRun(Run):
    """A symbolic backward: the same rules on Nodes, with graphdiff's ops as F. Version A gives each node
    one add_n over its children's contributions, Version B a chain of adds in push order."""

    def __init__(self, plan, kept):
        super().__init__(NODES, kept, {}, bound_rules(plan, NODES))

    def bind(self, u):
        rule = self.rules[u]
        if u.spec.make_vjp is None:
            return rule, u.inputs, u
        per_slot = rule(u.inputs, u, None)
        return (lambda i, g, xs, out: per_slot(i, g)), None, None

    @staticmethod
    def total(parts):
        return parts[0] if len(parts) == 1 else add_n(parts)


def checked(run, shapes, finite, casts=None):
    """Wrap run.vjp: each contribution must have its parent's shape (shapes) and be finite (finite). With
    shapes, one of another dtype than its parent's is cast to it (PyTorch's rule: a gradient has its input's
    dtype), and its edge (u, i) is added to casts, for the runs that no longer check (cast)."""
    if not (shapes or finite):
        return
    vjp, F = run.vjp, run.F
    dtypes = F.dtypes
    casts = set() if casts is None else casts

    def checked_vjp(u, i, g):
        c = vjp(u, i, g)
        p = u.inputs[i]
        if shapes:
            if tuple(c.shape) != p.shape:
                raise ShapeError(f"backward: the VJP of {u.op} '{u.name}' for input {i} ('{p.name}') returned "
                                 f"shape {tuple(c.shape)}, expected {p.shape}; a VJP must un-broadcast to its "
                                 "input's shape (F.unbroadcast(g, x))")
            if c.dtype != dtypes[p.dtype]:
                casts.add((u, i))
                c = F.astype(c, dtypes[p.dtype])
        if finite:
            _check_grad(F, c, u, i, p)
        return c
    run.vjp = checked_vjp


def cast(run, edges):
    """Wrap run.vjp: the contributions of edges (u, i) are cast to the dtype of u.inputs[i] (their VJPs return
    another; checked found them on the plan's first run, so only plans with such edges pay for this)."""
    vjp, F = run.vjp, run.F

    def cast_vjp(u, i, g):
        c = vjp(u, i, g)
        return F.astype(c, F.dtypes[u.inputs[i].dtype]) if (u, i) in edges else c
    run.vjp = cast_vjp


def traced(run, emit):
    """Wrap run's vjp, final and free to emit Contribution, Final and Freed events, in loop order."""
    vjp, final, free = run.vjp, run.final, run.free
    reached = set()

    def traced_vjp(u, i, g):
        c = vjp(u, i, g)
        p = u.inputs[i]
        emit(Contribution(u, i, p, p not in reached))
        reached.add(p)
        return c

    def traced_final(v):
        final(v)
        emit(Final(v))

    def traced_free(adj, u):
        freed = u in adj and u not in run.kept
        free(adj, u)
        if freed:
            emit(Freed(u))
    run.vjp, run.final, run.free = traced_vjp, traced_final, traced_free


def _check_grad(F, c, u, i, p):
    if bool(F.all(F.isfinite(c))):
        return
    if u is None:
        raise NonFiniteError(f"backward: the seed for '{p.name}' holds NaN or Inf")
    raise NonFiniteError(f"backward: the VJP of {u.op} '{u.name}' for input {i} ('{p.name}') produced NaN or "
                         f"Inf ({ranges(u, F)}); a VJP like 1/x or log(x) at 0, or an adjoint that overflowed "
                         "upstream, causes this")


# --- numeric backward ----------------------------------------------------------------------------------------
def _check_args(graph, y, variant, wrt, what):
    check_member(graph, y, what)
    if variant not in VARIANTS:
        raise ValueError(f"{what}: unknown variant {variant!r}; use 'children' (Version A: each node sums "
                         "over its children) or 'parents' (Version B: each node increments its parents)")
    if y.dtype not in FLOATS:
        raise DTypeError(f"{what}: '{y.name}' is {describe(y.shape, y.dtype)}; only float outputs have "
                         "gradients")
    if wrt is None:
        return None
    wrt = list(wrt) if isinstance(wrt, (list, tuple)) else [wrt]
    for n in wrt:
        check_member(graph, n, what)
        if n.dtype not in FLOATS:
            raise DTypeError(f"{what}: cannot differentiate with respect to '{n.name}' "
                             f"({describe(n.shape, n.dtype)}): integer ids and bool masks have no "
                             "gradient; differentiate with respect to the embedding table instead")
    return wrt


@bulk
def backward(graph, y, variant="children", seed=None, trace=None, wrt=None, retain_grads=False,
             check_finite=None, release=None):
    """See Graph.backward. release: the Lifetimes of the forward that forward_backward just ran (values
    go as it says, and nothing can be stale)."""
    wrt = _check_args(graph, y, variant, wrt, "backward")
    F = graph.backend
    if y.out is None:
        raise GraphError(f"backward: '{y.name}' has no value; run g.forward(feeds) first")
    if seed is None:
        if y.shape != ():
            raise GraphError(f"backward: '{y.name}' has shape {y.shape}; pass seed= (an array of that shape) "
                             "or reduce it to a scalar first, e.g. gd.sum(y)")
        seed = F.ones_like(y.value)
    else:
        seed = graph.as_value(y, seed, what=f"backward: the seed for '{y.name}'")
    check = graph.check_finite if check_finite is None else check_finite
    plan = plan_for(graph, y, wrt, variant)
    if release is None:
        check_current(y, plan)
    st = state(graph)
    kept = set(plan.wrt)
    if retain_grads:
        kept.update(plan.active)
    if check:
        _check_grad(F, seed, None, 0, y)
    emit = None if trace is None else (trace.append if hasattr(trace, "append") else trace)
    loop = LOOPS[variant]
    adj = None
    if plan.floats and not check and plan.has_adjoints and release is None:
        adj = _float_backward(plan, variant, seed, kept, emit, retain_grads, st)
    if adj is None:
        # values a float run left (this plan's or, on 0-d nodes of a graph that is not all floats, an eager
        # node's or a forward's of other outputs): NumPy's rules take arrays
        as_arrays(plan.order)
        if release is None:
            run = Run(F, kept, st.residuals, bound_rules(plan, F))
        else:
            run = ReleasingRun(F, kept, st.residuals, bound_rules(plan, F), release.binds, variant)
        key = (F.name, KERNELS["epoch"])
        shapes = key not in plan.shapes_ok  # a plan's shapes (and dtypes) are fixed: check one run
        casts = plan.casts.setdefault(key, set())
        if casts and not shapes:
            cast(run, casts)
        checked(run, shapes=shapes, finite=check, casts=casts)
        if emit is not None:
            traced(run, emit)
        adj = loop(plan, seed, run) if plan.has_adjoints else {}
        plan.shapes_ok.add(key)
    for n in st.with_grad:
        n.grad = None
    holders = list(plan.wrt)
    for n in plan.wrt:
        g = adj.get(n)
        n.grad = g if g is not None else F.zeros(n.shape, dtype=F.dtypes[n.dtype])
    if retain_grads:
        for n in plan.active:
            n.grad = adj[n]
        holders += plan.active
    st.with_grad = holders
    return {n: n.grad for n in plan.wrt}


def _float_backward(plan, variant, seed, kept, emit, retain_grads, st):
    """The backward on Python floats: the variant loop compiled into one function (codegen) or, when
    traced, run with the float backend; None where floats meet inf or NaN (NumPy takes over)."""
    loop = LOOPS[variant]
    compiled = None
    if emit is None:
        compiled = compiled_after(plan.compiled, (variant, retain_grads), codegen.compile_backward, plan, loop,
                                  kept)
    events = []                                 # held back until the float run succeeds
    try:
        if compiled:
            adj = compiled(plan.order, float(seed))
        else:
            run = Run(SCALAR, kept, st.residuals, bound_rules(plan, SCALAR))
            if emit is not None:
                traced(run, events.append)
            adj = loop(plan, float(seed), run)
    except SCALAR_FAILS:
        as_arrays(plan.order)
        return None
    for e in events:
        emit(e)
    return {k: np.float64(v) for k, v in adj.items()}


def forward_backward(graph, feeds, outputs, y, variant="children", seed=None, trace=None):
    """See Graph.forward_backward."""
    _check_args(graph, y, variant, None, "forward_backward")
    if isinstance(outputs, (Node, str)):
        raise TypeError("forward_backward: outputs must be a list of Nodes or names")
    outs = [graph.node(o) if isinstance(o, str) else o for o in outputs]
    for o in outs:
        check_member(graph, o, "forward_backward")
    want = outs if y in outs else outs + [y]
    graph.feed(feeds or {})                 # first: a feed of another batch size resizes the graph, and the
    st = state(graph)                       # release plan is that size's (its Shapes, its order)
    key = ("lifetimes", tuple(n.index for n in want), y.index, variant, graph.backend.name)
    life = st.cache.get(key)
    if life is None:
        plan = plan_for(graph, y, None, variant)
        order = topological_order(graph, want)
        # Python floats (0-d float64 graphs) hold nothing worth releasing: the plain passes run them
        life = st.cache[key] = False if plan.floats or scalar_graph(graph, order) else Lifetimes(
            order, plan, variant, want, graph.backend)
    if not life or graph.eager:             # an eager graph's values stay: later nodes compute from them
        values = forward(graph, None, want)
        backward(graph, y, variant, seed=seed, trace=trace)
    else:
        values = forward(graph, None, want, release=life)
        backward(graph, y, variant, seed=seed, trace=trace, release=life)
    return values[:len(outs)]


def check_current(y, plan):
    """Raise unless every value backward will read comes from the current feeds and params: no value may
    be older than one of its inputs' (an input fed or a param assigned since, or an input recomputed by a
    later forward for other outputs), and none may be missing. An input newer than its consumer is only a
    suspect: a forward for other outputs (or hvp's) recomputes shared nodes with its own stamp from the same
    values; _stale_edge keeps those whose sources (leaves, random draws) did change."""
    order = plan.order
    if plan.src is None and not plan.checked:     # the plan's first check: one loop (most plans of
        plan.checked = True                        # a fresh graph are used once)
        empty, suspects = None, []
        for u in order:
            s = u.stamp
            if s == RELEASED:                      # a second backward after forward_backward (the nn path)
                raise ReleasedError("backward: " + released(u, f"backward through it to '{y.name}'"))
            for p in u.inputs:
                if p.stamp > s or s < 0:
                    suspects.append((u, p))
            if empty is None and u.out is None:
                empty = u
        if suspects:
            stale = _stale_edge(order, suspects)
            if stale is not None:
                raise _stale(y, *stale)
        if empty is not None:
            raise GraphError(f"backward: '{empty.name}' has no value; run g.forward(...) first")
        return
    if plan.src is None:                           # used again: the edges as arrays, checked at once
        pos = np.zeros(len(y.graph.nodes), dtype=np.int64)      # node index -> position in order
        pos[np.fromiter((n.index for n in order), dtype=np.int64, count=len(order))] = np.arange(len(order))
        plan.src = pos[np.fromiter((p.index for u in order for p in u.inputs), dtype=np.int64)]
        plan.dst = pos[np.fromiter((u.index for u in order for _ in u.inputs), dtype=np.int64)]
    stamps = np.fromiter((n.stamp for n in order), dtype=np.int64, count=len(order))
    gone = np.flatnonzero(stamps == RELEASED)
    if len(gone):                           # a second backward after forward_backward (the nn path)
        raise ReleasedError("backward: " + released(order[gone[0]], f"backward through it to '{y.name}'"))
    bad = np.flatnonzero((stamps[plan.src] > stamps[plan.dst]) | (stamps[plan.dst] < 0))
    if len(bad):
        stale = _stale_edge(order, ((order[plan.dst[k]], order[plan.src[k]]) for k in bad))
        if stale is not None:
            raise _stale(y, *stale)
    for n in order:                         # leaves and input-less ops: no edge says they have a value
        if n.out is None:
            raise GraphError(f"backward: '{n.name}' has no value; run g.forward(...) first")


def _stale_edge(order, suspects):
    """The first (u, p) of suspects (p, an input of u, newer than u, or u without a value) along which u's
    value is stale: u has none, or a leaf or random draw that p's value comes from is newer than u (fed,
    assigned or redrawn since). None when every suspect is p recomputed from the values u read."""
    newest = None
    for u, p in suspects:
        if u.stamp < 0:
            return u, p
        if newest is None:
            newest = _newest_sources(order)
        if newest[p.index] > u.stamp:
            return u, p
    return None


def _newest_sources(order):
    """{node index: the newest stamp of the leaves and random draws its value is computed from}: their
    stamps say when each was set, where an op node's stamp only says when it was computed."""
    newest = {}
    for n in order:
        s = n.stamp if n.spec is None or n.spec.random else -1
        for p in n.inputs:
            t = newest[p.index]
            if t > s:
                s = t
        newest[n.index] = s
    return newest


def _stale(y, u, p):
    """The error for the edge from p into u, whose value is older than p's or missing."""
    if u.out is None:
        why = "has no value"
    else:
        since = {"input": "was fed a new value", "param": "was assigned a new value"}.get(p.kind)
        if since is None:
            since = ("drew new random numbers in a later forward" if p.spec is not None and p.spec.random else
                     "was recomputed by a later forward (for other outputs, or one that failed part-way)")
        why = f"is stale: its input '{p.name}' {since} after it was computed"
    who = f"'{u.name}' ({u.op})" + ("" if u is y else f", which '{y.name}' depends on,")
    return GraphError(f"backward: {who} {why}; run g.forward(feeds, outputs={y.name!r}) again right "
                      "before backward")


# --- symbolic backward: gradients as graph nodes ------------------------------------------------------------
def gradients(graph, y, wrt, variant="children", seed=None):
    """See Graph.gradients."""
    single = isinstance(wrt, Node)
    wrt = _check_args(graph, y, variant, wrt, "gradients")
    _fixed_shapes(graph, "gradients")
    plan = plan_for(graph, y, wrt, variant)
    with graph.atomic(), graph.scope("grad"):
        if isinstance(seed, Node):
            if seed.shape != y.shape:
                raise ShapeError(f"gradients: seed '{seed.name}' has shape {seed.shape}, '{y.name}' has shape "
                                 f"{y.shape}; they must match")
        elif seed is None:
            if y.shape != ():
                raise GraphError(f"gradients: '{y.name}' has shape {y.shape}; pass seed= (a Node or array of "
                                 "that shape) or reduce it to a scalar first, e.g. gd.sum(y)")
            seed = graph.constant(np.ones((), dtype=y.dtype), name="seed")
        else:
            host = np.asarray(seed, dtype=y.dtype)
            if host.shape != y.shape:                 # as backward: a seed is never broadcast
                raise ShapeError(f"gradients: the seed has shape {host.shape}, '{y.name}' has shape {y.shape}; "
                                 "pass a seed of that shape")
            seed = graph.constant(host, name="seed")
        run = SymbolicRun(plan, set(plan.wrt))
        checked(run, shapes=True, finite=False)
        adj = LOOPS[variant](plan, seed, run) if plan.has_adjoints else {}
        grads = [adj.get(n) for n in wrt]
        grads = [g if g is not None else graph.constant(np.zeros(n.shape, dtype=n.dtype), name="zero")
                 for g, n in zip(grads, wrt)]
    return grads[0] if single else grads


def _fixed_shapes(graph, what):
    batch = graph.batch_inputs()
    if batch:
        raise GraphError(f"{what}: input '{batch[0].name}' has a None batch axis, and gradient nodes fix their "
                         "shapes when built; give the input a fixed shape")


# --- higher order ------------------------------------------------------------------------------------------
def _once(graph, key, build, run):
    """run(*build()), keeping what build made for the next calls with this key (state.built). If the first
    call fails, building or running, its nodes go again (Graph.atomic): no unfed 'hvp/v0' is left behind."""
    st = state(graph)
    made = st.built.get(key)
    if made is not None:
        return run(*made)
    mark = len(graph.nodes)
    try:
        with graph.atomic():
            made = build()
            out = run(*made)
    except BaseException:
        for k in [k for k in st.residuals if k >= mark]:    # kept by the failed run for nodes now gone
            del st.residuals[k]
        raise
    st.built[key] = made
    return out


def _free_name(graph, base):
    k = 0
    while (f"{base}{k}") in graph:
        k += 1
    return f"{base}{k}"


def _dot(pairs):
    terms = [_sum(a * b) for a, b in pairs]
    return terms[0] if len(terms) == 1 else add_n(terms)


def _listed(x):
    return (True, [x]) if isinstance(x, Node) else (False, list(x))


def hvp(y, wrt, v, variant="children"):
    """Hessian-vector product H v of a scalar y, from the current feeds and params (arrays).

    Built as graph nodes once per (y, wrt, variant): the gradient g of y, then the gradient of <g, v> with v
    an input fed each call. Args: y: scalar Node; wrt: a Node or list; v: array(s) shaped like wrt.
    """
    graph = y.graph
    _fixed_shapes(graph, "hvp")
    single, ws = _listed(wrt)
    vs = [v] if single else list(v)

    def build():
        vin = [graph.input(_free_name(graph, "hvp/v"), w.shape, dtype=w.dtype) for w in ws]
        grads = gradients(graph, y, ws, variant)
        with graph.scope("hvp"):
            hv = gradients(graph, _dot(zip(grads, vin)), ws, variant)
        return vin, hv

    def run(vin, hv):
        return graph.forward(dict(zip(vin, vs)), outputs=hv, resample=False)

    with graph.lock:                        # built and run as one step (Graph.lock)
        values = _once(graph, ("hvp", y.index, tuple(w.index for w in ws), variant), build, run)
    return values[0] if single else values


def hessian(y, wrt, variant="children"):
    """The Hessian of scalar y with respect to one node (small: one hvp per element): shape wrt.shape * 2."""
    _fixed_shapes(y.graph, "hessian")
    n = int(np.prod(wrt.shape, dtype=np.int64))
    if n == 0:                                # an empty block (the hvp still checks y and wrt)
        hv = hvp(y, wrt, np.zeros(wrt.shape), variant)
        return np.zeros(wrt.shape * 2, dtype=np.asarray(y.graph.backend.to_numpy(hv)).dtype)
    rows = []
    for k in range(n):
        e = np.zeros(n)
        e[k] = 1.0
        rows.append(np.asarray(y.graph.backend.to_numpy(hvp(y, wrt, e.reshape(wrt.shape), variant))))
    return np.stack(rows).reshape(wrt.shape + wrt.shape)


def jvp(outputs, wrt, tangents, variant="children"):
    """Forward mode: J t, the change of each output along tangents t of wrt, from the current values.

    Built once per (outputs, wrt, variant) by transposing the backward pass: J^T u is linear in the
    cotangent u, so J t is the gradient of <J^T u, t> with respect to u (no second copy of any rule).
    Args: outputs: a float Node or list; wrt: a Node or list; tangents: array(s) shaped like wrt.
    """
    single_out, ys = _listed(outputs)
    single, ws = _listed(wrt)
    ts = [tangents] if single else list(tangents)
    graph = ys[0].graph
    _fixed_shapes(graph, "jvp")

    def build():
        us = [graph.input(_free_name(graph, "jvp/u"), y.shape, dtype=y.dtype) for y in ys]
        tin = [graph.input(_free_name(graph, "jvp/t"), w.shape, dtype=w.dtype) for w in ws]
        with graph.scope("jvp"):
            vjps = gradients(graph, _dot(zip(ys, us)), ws, variant)          # J^T u
            jt = gradients(graph, _dot(zip(vjps, tin)), us, variant)         # J t
        return us, tin, jt

    def run(us, tin, jt):
        feeds = {u: np.zeros(u.shape) for u in us}
        feeds.update(zip(tin, ts))
        return graph.forward(feeds, outputs=jt, resample=False)

    with graph.lock:                        # built and run as one step (Graph.lock)
        values = _once(graph, ("jvp", tuple(y.index for y in ys), tuple(w.index for w in ws), variant), build, run)
    return values[0] if single_out else values
