"""Batched runs of big, wide float graphs (every node a 0-d float64): a level at a time, one NumPy call per op.

A micrograd-style graph of tens of thousands of scalar nodes is mostly wide: microgpt's 16 products of a row
of W with x do not depend on each other, nor do its positions' embeddings. Give every node its level, its
depth from the leaves (a leaf 0; an op node 1 + the deepest of its inputs): the nodes of one level depend
only on lower levels, so they can all be computed at once. Within a level, group the nodes by op (and
attributes and number of inputs); then a group is one call of the op's OWN forward rule with NumPy on 1-D
arrays, one entry per node:

    vals[out] = rule(vals[in_0], vals[in_1])      # vals: one float64 per node; out, in_i: positions

A 7-position microgpt graph is ~34,000 nodes in a few hundred such groups: a few hundred NumPy calls instead
of 34,000 Python-level steps (or 34,000 lines of generated Python, codegen.py).

The backward runs the levels in reverse (every consumer of a node is on a higher level, so a node's adjoint
is complete when its level comes) and calls each group's pullback rule on arrays once per input slot, which
gives the contributions of all the group's edges (u, i) at once. The two textbook variants stay what they are:

- Version B ("parents"): adjoints start at 0; each group adds its contributions into its inputs' adjoints,
  `np.add.at(adj, targets, contributions)` (a target used twice, as in x * x, gets both).
- Version A ("children"): contributions are kept per edge, in an array sorted by target; when a node's
  level comes it sums its incoming edges, one `np.add.reduceat` per level, and its adjoint is written once.

The edges are the backward plan's (plans.Plan: pushes for B, pulls for A, in the order each variant visits
them), so both variants keep their summation order per node (NumPy may add long sums pairwise). The rules see
a namespace, VECTOR, that is NumPy's (backend.NumpyBackend) except where a rule asks about a value's shape:
a 0-d value has nothing to reduce, broadcast or reshape, so those are the identity, as on Python floats
(backend.SCALAR). inf and NaN follow NumPy's semantics, as the engine's NumPy path does.

The choice between this and codegen: batched where a graph is big (BATCH_MIN_NODES) and wide (its op nodes
per group, BATCH_MIN_WIDTH); codegen for small graphs and long thin chains, where a group would hold a
node or two and a NumPy call costs ten times a line of Python. An op whose rule is not elementwise on 0-d
values (anything but the elementwise ops, add_n and the reductions sum, mean and max of a 0-d value) is
refused, and the graph goes to codegen (or is interpreted) as before. The forward is built on an order's
first run (building costs less than one interpreted run), and the backward of a batched order with it,
sharing its layout; the look at a thin graph stops early (PROBE), so a chain pays little for it.
"""
from functools import partial

import numpy as np

from . import codegen
from .backend import SCALAR, get_backend

BATCH_MIN_NODES = 5_000     # smaller graphs: codegen (its compile time is small, its runs fast enough)
BATCH_MIN_WIDTH = 32        # op nodes per group (level, op) needed: a group costs some 5 to 15 us, a node of
#                             codegen some 0.1 us a run (but 40 to 70 us to compile, and it compiles later)
PROBE = (1024, 8)           # a graph with fewer than 8 nodes per level at the 1024th, 2048th, 4096th ... node of
#                             its order is thin (a chain): the look at it stops there (a wide graph's order, a
#                             depth-first one, shows some 20 to 90 nodes per level by its 1024th node)
REDUCTIONS = ("add_n", "sum", "mean", "max")    # besides the elementwise ops: rules that serve 0-d values


class Vector:
    """F for the batched run: NumPy's functions on 1-D arrays (one entry per node of a group), and for the
    functions that ask about shapes, the answers for one 0-d value: nothing to reduce, broadcast or reshape."""

    name = "vector"
    shape, unbroadcast = staticmethod(SCALAR.shape), staticmethod(SCALAR.unbroadcast)
    reshape = broadcast_to = staticmethod(SCALAR.reshape)
    sum = mean = max = staticmethod(SCALAR.sum)

    def __init__(self):
        numpy = get_backend("numpy")
        for fname in ("exp", "log", "sqrt", "tanh", "erf", "pow", "abs", "sign", "maximum", "minimum", "where",
                      "equal", "logical_and"):
            setattr(self, fname, getattr(numpy, fname))

    @staticmethod
    def astype_like(x, like):
        return np.asarray(x, dtype=np.float64)


VECTOR = Vector()


def batchable(n):
    """Whether n's rule runs on 1-D arrays as on 0-d values (a leaf has no rule to run)."""
    spec = n.spec
    return spec is None or spec.elementwise or spec.name in REDUCTIONS


class Layout:
    """An order as arrays: pos (node -> position), level, kind (0 for a leaf, else a number per (op, number of
    inputs, attrs): kinds[kind - 1]) and the inputs' positions (ins[start[k]:start[k] + arity[k]])."""

    def __init__(self, order, pos, level, kind, kinds, ins, ends):
        self.order, self.pos, self.kinds = order, pos, kinds
        self.level, self.kind = np.array(level, dtype=np.intp), np.array(kind, dtype=np.intp)
        self.ins, ends = np.array(ins, dtype=np.intp), np.array(ends, dtype=np.intp)
        self.arity = np.array([0] + [a for _, a, _ in kinds], dtype=np.intp)[self.kind]
        self.start = ends - self.arity

    def inputs(self, members, slots=None):
        """The input positions of members (one kind), one row per slot (slots: all of them)."""
        slots = np.arange(self.arity[members[0]]) if slots is None else np.asarray(slots, dtype=np.intp)
        return self.ins[self.start[members][None, :] + slots[:, None]]

    def census(self):
        """(op nodes, groups of the forward): what suits() weighs."""
        ops = np.flatnonzero(self.kind)
        return len(ops), len(np.unique(self.level[ops] * (len(self.kinds) + 1) + self.kind[ops]))

    def groups(self, members, *keys):
        """members split by (level, kind, *keys), levels ascending; each group's members in order."""
        if not len(members):
            return [], []
        key = self.level[members] * (len(self.kinds) + 1) + self.kind[members]
        for k in keys:
            key = key * (int(k.max()) + 1) + k
        at = np.lexsort((members, key))
        cuts = np.flatnonzero(np.diff(key[at])) + 1
        return np.split(members[at], cuts), np.split(at, cuts)


def layout(order):
    """order's Layout, or None as soon as the order turns out thin (PROBE) or holds an op the batched run
    refuses: a chain of a million nodes costs a look at its first 1024."""
    pos, level, kind, kinds, ins, ends = {}, [], [], {}, [], []
    top = 0
    probe, per_level = PROBE
    for k, n in enumerate(order):
        pos[n] = k
        if n.spec is None:
            level.append(0)
            kind.append(0)
        else:
            if not batchable(n):
                return None
            ps = [pos[p] for p in n.inputs]
            d = 1 + max([level[q] for q in ps]) if ps else 1
            level.append(d)
            if d > top:
                top = d
            key = (n.spec, len(ps), tuple(sorted(n.attrs.items())) if n.attrs else ())
            try:
                kid = kinds.get(key)
            except TypeError:                   # an attribute that cannot be a key: no group to share
                return None
            if kid is None:
                kid = kinds[key] = len(kinds) + 1
            kind.append(kid)
            ins += ps
        ends.append(len(ins))
        if k == probe:
            if k < per_level * top:
                return None
            probe *= 2
    return Layout(order, pos, level, kind, list(kinds), ins, ends)


def suits(order, ops, groups):
    """Batched beats codegen: the graph is big and its groups are wide."""
    return len(order) >= BATCH_MIN_NODES and ops >= BATCH_MIN_WIDTH * groups


class Forward:
    """The forward of an order as groups: run(nodes) -> the values of its op nodes, in order (codegen's
    compile_forward's contract). Leaves are read from the nodes; op nodes' values come from the groups."""

    def __init__(self, lay):
        self.layout = lay                       # for the backward of the same order (backward_run)
        self.size = len(lay.order)
        self.last, self.clock = None, None
        self.leaf_pos = np.flatnonzero(lay.kind == 0)
        self.leaves = [lay.order[k] for k in self.leaf_pos.tolist()]
        self.op_pos = np.flatnonzero(lay.kind)
        self.steps = []
        for ks in lay.groups(self.op_pos)[0]:
            spec, _, attrs = lay.kinds[lay.kind[ks[0]] - 1]
            self.steps.append((partial(spec.forward, VECTOR, **dict(attrs)), ks, lay.inputs(ks)))

    def values(self):
        """The value vector of a run: every node's value, by position in order. Kept as `last`, with the
        graph's clock then: while the clock stands still no leaf was fed or assigned since (each such change
        ticks it), so a backward whose staleness check passed may read these values instead of the nodes'."""
        vals = np.empty(self.size)
        vals[self.leaf_pos] = np.fromiter((n.out for n in self.leaves), dtype=np.float64, count=len(self.leaves))
        for fn, out, ins in self.steps:
            vals[out] = fn(*vals[ins])
        self.last, self.clock = vals, self.layout.order[0].graph.clock
        return vals

    def current(self):
        """The values of the last run, or None where a leaf may have changed since."""
        return self.last if self.clock == self.layout.order[0].graph.clock else None

    def __call__(self, nodes):
        return self.values()[self.op_pos].tolist()


class Backward:
    """The backward of a plan as groups, for one variant: run(nodes, seed) -> {node: adjoint} for the nodes of
    kept with an adjoint (codegen's compile_backward's contract). Values are read from the nodes."""

    def __init__(self, plan, variant, kept, lay, forward=None):
        self.forward = forward                  # the batched Forward of the same order: its values
        pos = lay.pos
        self.size, self.variant, self.y = len(lay.order), variant, pos[plan.y]
        # the plan's edges (u, slot i) in the order the variant visits them
        if variant == "parents":
            flat = [x for u, slots in plan.pushes for i, _ in slots for x in (pos[u], i)]
        else:
            flat = [x for _, children, _ in plan.pulls for u, i, _ in children for x in (pos[u], i)]
        eu, ei = np.array(flat, dtype=np.intp).reshape(-1, 2).T
        target = lay.ins[lay.start[eu] + ei]
        if variant == "children":               # by target level, top first; stable: each target's edges
            by_level = np.argsort(-lay.level[target], kind="stable")    # stay together, in A's order
            eu, ei, target = eu[by_level], ei[by_level], target[by_level]
        self.edges = len(eu)
        by_u = np.lexsort((ei, eu))             # each pusher's edges, by slot
        us, first, count = np.unique(eu[by_u], return_index=True, return_counts=True)
        used = np.zeros(len(us), dtype=np.intp)     # 0: every slot; else a number per tuple of slots
        tuples = {}
        for j in np.flatnonzero(count != lay.arity[us]).tolist():
            slots = tuple(ei[by_u[first[j]:first[j] + count[j]]].tolist())
            used[j] = tuples.setdefault(slots, len(tuples) + 1)
        slot_sets = [None] + list(tuples)
        self.steps = []
        for ks, js in zip(*lay.groups(us, used)):
            spec, arity, attrs = lay.kinds[lay.kind[ks[0]] - 1]
            slots = slot_sets[used[js[0]]] or tuple(range(arity))
            ids = by_u[first[js][None, :] + np.arange(len(slots))[:, None]].ravel()      # slot-major
            self.steps.append((int(lay.level[ks[0]]), spec.pullback(VECTOR, **dict(attrs)), ks, lay.inputs(ks),
                               slots, ids if variant == "children" else target[ids]))
        self.steps.reverse()                    # top level first
        self.sums = []                          # Version A: per level, (level, targets, lo, hi, starts)
        if variant == "children" and self.edges:
            starts = np.flatnonzero(np.concatenate([[1], np.diff(target)]))
            heads = target[starts]              # each target once, in edge order (levels descending)
            lv = lay.level[heads]
            cuts = np.flatnonzero(np.diff(lv)) + 1
            ends = np.append(starts[1:], self.edges)
            for sel in np.split(np.arange(len(heads)), cuts):
                lo, hi = int(starts[sel[0]]), int(ends[sel[-1]])
                self.sums.append((int(lv[sel[0]]), heads[sel], lo, hi, starts[sel] - lo))
        self.held = [n for n in plan.active if n in kept]
        self.held_pos = np.array([pos[n] for n in self.held], dtype=np.intp)

    def __call__(self, nodes, seed):
        vals = None if self.forward is None else self.forward.current()
        if vals is None:
            vals = np.fromiter((n.out for n in nodes), dtype=np.float64, count=self.size)
        if self.variant == "parents":
            adj = np.full(self.size, -0.0)      # -0.0 + c is c, for every c (0.0 + -0.0 is 0.0)
            adj[self.y] = seed
            for _, pullback, us, ins, used, targets in self.steps:
                np.add.at(adj, targets, _contributions(pullback, us, ins, used, vals, adj))
        else:
            adj = np.empty(self.size)
            adj[self.y] = seed
            contrib = np.empty(self.edges)
            sums, k = self.sums, 0
            for lv, pullback, us, ins, used, ids in self.steps:
                while k < len(sums) and sums[k][0] >= lv:       # the adjoints of this level are complete
                    _, heads, lo, hi, starts = sums[k]
                    adj[heads] = np.add.reduceat(contrib[lo:hi], starts)
                    k += 1
                contrib[ids] = _contributions(pullback, us, ins, used, vals, adj)
            for _, heads, lo, hi, starts in sums[k:]:           # the leaves (and inputs no step reads)
                adj[heads] = np.add.reduceat(contrib[lo:hi], starts)
        return dict(zip(self.held, adj[self.held_pos]))       # NumPy float64s, as the engine hands out


def _contributions(pullback, us, ins, used, vals, adj):
    """The group's contributions for its used slots, slot-major: the op's pullback on arrays, once per slot."""
    rule, xs, out = pullback(vals[ins], vals[us], None)
    g = adj[us]
    if len(used) == 1:                      # an array or a number: assignment and np.add.at broadcast it
        return rule(used[0], g, xs, out)
    parts = [rule(i, g, xs, out) for i in used]
    try:
        return np.concatenate(parts)
    except ValueError:                      # a rule gave a number for all the group's nodes
        return np.concatenate([np.broadcast_to(c, g.shape) for c in parts])


def compile_forward(order):
    """The batched forward of order, or False where it does not suit (small, thin, or an op it refuses)."""
    lay = layout(order)
    return Forward(lay) if lay is not None and suits(order, *lay.census()) else False


def compile_backward(plan, variant, kept, forward=None):
    """The batched backward of plan for variant, or False where it does not suit. forward: the batched Forward
    of plan.order, if any (it lends its layout and the values of its runs)."""
    if forward is not None:
        return Backward(plan, variant, kept, forward.layout, forward)
    lay = layout(plan.order)
    return Backward(plan, variant, kept, lay) if lay is not None and suits(plan.order, *lay.census()) else False


def forward_run(calls, order):
    """The compiled forward of a float order on its calls-th run (execution.compiled_after): batched on its
    first where it suits, else codegen's on its codegen.COMPILE_AFTER-th; None: not yet; False: never."""
    if calls == 1 and len(order) >= BATCH_MIN_NODES:
        run = compile_forward(order)
        if run:
            return run
    return codegen.compile_or_none(codegen.compile_forward, order) if calls >= codegen.COMPILE_AFTER else None


def backward_run(calls, plan, loop, variant, kept, forward=None):
    """The compiled backward of a float plan, as forward_run chooses (codegen's is the trace of loop): batched
    from its first run where the forward of plan.order is batched (forward: what the engine compiled for it),
    else tried on its codegen.COMPILE_AFTER-th, as codegen is: a graph built and run once without a forward
    (an eager one) pays for no look at its shape."""
    same = isinstance(forward, Forward) and forward.layout.order is plan.order
    if same or (calls == codegen.COMPILE_AFTER and len(plan.order) >= BATCH_MIN_NODES):
        run = compile_backward(plan, variant, kept, forward if same else None)
        if run:
            return run
    return codegen.compile_or_none(codegen.compile_backward, plan, loop, kept) if calls >= codegen.COMPILE_AFTER else None
