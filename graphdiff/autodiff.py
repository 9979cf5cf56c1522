"""Reverse mode in both textbook variants, numeric and symbolic: the part of graphdiff a reader of the lecture
looks for. (Plans: plans.py; the releasing run: lifetimes.py; hvp, hessian and jvp: higher.py; the functions
a Graph calls: engine.py.)

Both variants visit the nodes y depends on in reverse topological order and call each op's VJP once per
edge (u, i) from node u to its input u.inputs[i]. They differ in who does the summing:

- "children" (the lecture's Version A): at node v, dv = sum over its children (u, i) of vjp_u_i(du).
  v pulls from its children; each adjoint is written once, when it is final. A child's adjoint lives
  until the last of its inputs has pulled from it.
- "parents" (Version B): adjoints start empty (zero) and dy/dy = seed; at node u, for each input slot i,
  d[u.inputs[i]] += vjp_u_i(du). u pushes into its parents; its own adjoint can go right after.

A run's final (called when an adjoint is complete) may be None: nothing to call (a numeric run untraced).

The two loops below are the whole algorithm. What they do with a contribution is the run's business: a
NumericRun calls the VJP rules on arrays and adds arrays; a SymbolicRun calls the same rules on Nodes with
graphdiff's ops, so the backward pass becomes more graph (g.gradients), which can be drawn, run and
differentiated again (hvp, hessian, jvp). Tracing, shape and NaN checks are installed on a run's methods
when it is set up; they are not written into the loops.
"""
from typing import NamedTuple

import numpy as np

from . import batched
from .backend import SCALAR
from .errors import DTypeError, GraphError, NonFiniteError, ShapeError
from .execution import (FLOATS, SCALAR_FAILS, as_arrays, check_member, compiled_after, gc_paused, order_of,
                        ranges, state)
from .graph import Node, describe
from .ops import NODES, add_n
from .plans import bound_rules, check_current, plan_for

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
    for v, children, unpulled in plan.pulls:        # reverse topological order, y first
        if v is y:
            adj[v] = seed
        else:
            parts = []
            for u, i, last_pull in children:    # u.inputs[i] is v
                parts.append(vjp(u, i, adj[u]))
                if last_pull:                   # u's inputs have all pulled from it
                    free(adj, u)
            adj[v] = parts[0] if len(parts) == 1 else total(parts)      # (one part: nothing to add)
        if final is not None:
            final(v)
        if unpulled:                            # nothing will pull from v
            free(adj, v)
    return adj


def version_b(plan, seed, run):
    """Version B ("parents"): adjoints start at 0; each node u does += into its parents' adjoints."""
    vjp, accumulate, final, free = run.vjp, run.accumulate, run.final, run.free
    adj = {plan.y: seed}
    for u, slots in plan.pushes:                # reverse topological order, y first
        if final is not None:
            final(u)
        for i, p in slots:                      # u.inputs[i] is p
            adj[p] = accumulate(adj.get(p), vjp(u, i, adj[u]))
        free(adj, u)
    return adj


LOOPS = {"children": version_a, "parents": version_b}


# --- runs: what a contribution is ----------------------------------------------------------------------------
class NumericRun:
    """A numeric backward: each node's VJP rule bound to the backend F (once per plan), its pullback called on
    its values once per run (a two-stage rule's shared work runs then), contributions added as arrays.
    kept: nodes whose adjoints are not freed.

    vjp and free are closures over the run's state rather than methods: they run once per edge and once
    per node, on graphs a million nodes deep, where a bound-method call per use is measurable. A node of
    one or two inputs, without attrs, whose op has a per-slot rule (most nodes of a scalar graph) has
    nothing to bind: its rule is called straight on its input values (rules.slot_rule), with no state kept
    per node. Runs that bind values their own way (bind overridden: symbolic, releasing) bind every node."""

    def __init__(self, F, kept, residuals, rules):
        self.F, self.kept, self.residuals, self.rules = F, kept, residuals, rules
        bound = {}                          # node -> (vjp, xs, out) in this run (OpDef.pullback)
        bound_of, drop, bind = bound.get, bound.pop, self.bind

        def bound_vjp(u, i, g):
            b = bound_of(u)
            if b is None:
                b = bound[u] = bind(u)
            rule, xs, out = b
            return rule(i, g, xs, out)

        if type(self).bind is not NumericRun.bind:
            vjp = bound_vjp
        else:
            direct_of, slot_rule = rules.direct.get, rules.slot_rule

            def vjp(u, i, g):
                if not u.attrs:
                    ins = u.inputs
                    k = len(ins)
                    if k == 2 or k == 1:
                        rule = direct_of(u.spec)
                        if rule is None:
                            rule = slot_rule(u.spec)
                        if rule:
                            return rule(F, i, g, (ins[0].out, ins[1].out) if k == 2 else (ins[0].out,), u.out)
                return bound_vjp(u, i, g)

        def free(adj, u):
            if bound:
                drop(u, None)
            if u not in kept:
                del adj[u]
        self.vjp, self.free = vjp, free

    def bind(self, u):
        """u's (vjp, xs, out) in this run: its pullback at its input values, output and residuals."""
        ins = u.inputs                      # spelled out: a list comprehension costs more than most rules
        xs = [ins[0].out, ins[1].out] if len(ins) == 2 else [ins[0].out] if len(ins) == 1 else [p.out for p in ins]
        return self.rules[u](xs, u.out, self.residuals.get(u.index))

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

    final = None                            # nothing to do when an adjoint is final (tracing does something)


class SymbolicRun(NumericRun):
    """A symbolic backward: the same rules on Nodes, with graphdiff's ops as F. Version A gives each node
    one add_n over its children's contributions, Version B a chain of adds in push order."""

    def __init__(self, plan, kept):
        super().__init__(NODES, kept, {}, bound_rules(plan, NODES))

    def bind(self, u):
        return self.rules[u](u.inputs, u, None)

    @staticmethod
    def total(parts):
        return parts[0] if len(parts) == 1 else add_n(parts)


def install_checks(run, shapes, finite, casts=None):
    """Replace run.vjp (in place): each contribution must have its parent's shape (shapes) and be finite (finite). With
    shapes, one of another dtype than its parent's is cast to it (PyTorch's rule: a gradient has its input's
    dtype), and its edge (u, i) is added to casts, for the runs that no longer check (install_casts)."""
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


def install_casts(run, edges):
    """Replace run.vjp (in place): the contributions of edges (u, i) are cast to the dtype of u.inputs[i]
    (their VJPs return another; install_checks found them on the plan's first run, so only plans with such
    edges pay for this)."""
    vjp, F = run.vjp, run.F

    def cast_vjp(u, i, g):
        c = vjp(u, i, g)
        return F.astype(c, F.dtypes[u.inputs[i].dtype]) if (u, i) in edges else c
    run.vjp = cast_vjp


def install_tracing(run, emit):
    """Replace run's vjp, final and free (in place) with ones that also emit Contribution, Final and Freed
    events, in loop order."""
    vjp, final, free = run.vjp, run.final, run.free
    reached = set()

    def traced_vjp(u, i, g):
        c = vjp(u, i, g)
        p = u.inputs[i]
        emit(Contribution(u, i, p, p not in reached))
        reached.add(p)
        return c

    def traced_final(v):
        if final is not None:
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
def check_args(graph, y, variant, wrt, what):
    """wrt as a list (None stays None), after checking y, variant and wrt for `what` (backward, gradients)."""
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


@gc_paused
def backward(graph, y, variant="children", seed=None, trace=None, wrt=None, retain_grads=False,
             check_finite=None, release=None):
    """See Graph.backward. release: the Lifetimes of the forward that forward_backward just ran (values
    go as it says, and nothing can be stale). The strategy is one choice: a plan of Python floats runs on
    floats (compiled after a few runs) unless values are checked or released; everything else, and a float
    run that meets inf or NaN, runs on arrays (releasing as it goes under forward_backward)."""
    wrt = check_args(graph, y, variant, wrt, "backward")
    seed = _seed(graph, y, seed)
    check = graph.check_finite if check_finite is None else check_finite
    plan = plan_for(graph, y, wrt, variant)
    if release is None:
        check_current(y, plan)
    kept = set(plan.wrt)
    if retain_grads:
        kept.update(plan.active)
    if check:
        _check_grad(graph.backend, seed, None, 0, y)
    emit = None if trace is None else (trace.append if hasattr(trace, "append") else trace)
    adj = None
    if plan.floats and not check and plan.has_adjoints and release is None:
        adj = float_backward(plan, variant, seed, kept, emit, retain_grads, state(graph).residuals)
    if adj is None:
        adj = array_backward(plan, variant, seed, kept, emit, check, graph, release)
    return _set_grads(graph, plan, adj, retain_grads)


def _seed(graph, y, seed):
    """The seed of a backward from y as a value of the graph's backend (ones for a scalar y)."""
    if y.out is None:
        raise GraphError(f"backward: '{y.name}' has no value; run g.forward(feeds) first")
    if seed is None:
        if y.shape != ():
            raise GraphError(f"backward: '{y.name}' has shape {y.shape}; pass seed= (an array of that shape) "
                             "or reduce it to a scalar first, e.g. gd.sum(y)")
        return graph.backend.ones_like(y.value)
    return graph.as_value(y, seed, what=f"backward: the seed for '{y.name}'")


def array_backward(plan, variant, seed, kept, emit, check, graph, release=None):
    """The backward on the graph's backend: a NumericRun (a releasing one from release, the Lifetimes of
    forward_backward), its first run per backend checked for shapes and dtypes, every run for NaN with
    check."""
    F = graph.backend
    residuals = state(graph).residuals
    # values a float run left (this plan's or, on 0-d nodes of a graph that is not all floats, an eager
    # node's or a forward's of other outputs): NumPy's rules take arrays
    as_arrays(plan.order)
    if release is None:
        run = NumericRun(F, kept, residuals, bound_rules(plan, F))
    else:
        run = release.run(F, kept, residuals, bound_rules(plan, F), variant)
    shapes = F.name not in plan.shapes_ok   # a plan's shapes (and dtypes) are fixed: check one run
    casts = plan.casts.setdefault(F.name, set())
    if casts and not shapes:
        install_casts(run, casts)
    install_checks(run, shapes=shapes, finite=check, casts=casts)
    if emit is not None:
        install_tracing(run, emit)
    adj = LOOPS[variant](plan, seed, run) if plan.has_adjoints else {}
    plan.shapes_ok.add(F.name)
    return adj


def _set_grads(graph, plan, adj, retain_grads):
    """Write .grad of plan.wrt (zeros where y does not depend on one) and, with retain_grads, of every node
    with an adjoint; clear the .grad the last backward set elsewhere."""
    F, st = graph.backend, state(graph)
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


def float_backward(plan, variant, seed, kept, emit, retain_grads, residuals):
    """The backward on Python floats: the variant loop compiled (batched.py's groups for a big, wide graph,
    else codegen's trace of the loop) or, when traced, run with the float backend; None where floats meet inf
    or NaN (NumPy takes over)."""
    loop = LOOPS[variant]
    compiled = None
    if emit is None:
        forward = order_of(state(plan.y.graph), plan.order).compiled.get("forward")    # (its layout)
        compiled = compiled_after(plan.compiled, (variant, retain_grads), batched.backward_run, plan, loop,
                                  variant, kept, forward)
    events = []                                 # held back until the float run succeeds
    try:
        if compiled:
            adj = compiled(plan.order, float(seed))
        else:
            run = NumericRun(SCALAR, kept, residuals, bound_rules(plan, SCALAR))
            if emit is not None:
                install_tracing(run, events.append)
            adj = loop(plan, float(seed), run)
    except SCALAR_FAILS:
        as_arrays(plan.order)
        return None
    for e in events:
        emit(e)
    if isinstance(compiled, batched.Backward):  # NumPy's float64s already
        return adj
    return {k: np.float64(v) for k, v in adj.items()}


# --- symbolic backward: gradients as graph nodes ------------------------------------------------------------
def gradients(graph, y, wrt, variant="children", seed=None):
    """See Graph.gradients."""
    single = isinstance(wrt, Node)
    wrt = check_args(graph, y, variant, wrt, "gradients")
    require_fixed_shapes(graph, "gradients")
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
        install_checks(run, shapes=True, finite=False)
        adj = LOOPS[variant](plan, seed, run) if plan.has_adjoints else {}
        grads = [adj.get(n) for n in wrt]
        grads = [g if g is not None else graph.constant(np.zeros(n.shape, dtype=n.dtype), name="zero")
                 for g, n in zip(grads, wrt)]
    return grads[0] if single else grads


def require_fixed_shapes(graph, what):
    """Refuse `what` on a graph with a None batch axis: gradient nodes fix their shapes when built."""
    batch = graph.batch_inputs()
    if batch:
        raise GraphError(f"{what}: input '{batch[0].name}' has a None batch axis, and gradient nodes fix their "
                         "shapes when built; give the input a fixed shape")
