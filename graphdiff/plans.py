"""Backward plans: what the two loops visit for one (y, wrt), the VJP rules bound for a plan, and the check
that every value a backward reads is current.

A plan is, by definition (plain_edges below, written the plain way):
- the nodes that need a gradient: those in wrt, and every float op node with a differentiable op that has an
  input needing one;
- the live nodes: y, and every input needing a gradient of a live node;
- Version B's pushes: for each live node u in reverse topological order, the slots i whose input needs a
  gradient;
- Version A's pulls: for each live node v in the same order, the edges (u, i) with u.inputs[i] is v, u live,
  in topological order of u and slot order, each flagged when it is the last pull from u (from the earliest
  of u's inputs in topological order, its last slot if used twice); and v flagged when nothing pulls from it.
Plan.sweep builds the same lists in one sweep over the order per variant (tests check the two agree).
"""
from operator import attrgetter

from .errors import GraphError, ReleasedError
from .execution import FLOATS, gc_paused, order_of, runs_on_floats, state, topological_order
from .graph import RELEASED_STAMP, released

KEEP_FROM_FIRST_USE = 50_000    # plans of this many nodes or more are kept from their first use (plan_for)
_STAMP = attrgetter("stamp")


# --- plans: what the loops visit, computed once per (y, wrt) --------------------------------------------
class Plan:
    """The nodes on a path from wrt to y and the edges between them, in the order each variant visits.

    pushes: (u, [(slot i, parent p)]) in reverse topological order, for Version B; pulls: (v, [(child u,
    slot i, last_pull: the last pull from u)], unpulled: nothing pulls from v) in the same order, for
    Version A; active: the nodes with an adjoint, in topological order. plan_for builds the one its variant
    visits in its sweep over the order; the other and active are built by a sweep of their own the first
    time they are asked for (most plans of a fresh graph are used once, by one variant). order: every node y
    depends on; wrt: the targets."""

    __slots__ = ("y", "order", "needs", "_active", "_pushes", "_pulls", "wrt", "floats", "rules", "compiled",
                 "shapes_ok", "casts")

    def __init__(self):
        self._active = self._pushes = self._pulls = None
        self.shapes_ok = set()              # backends whose VJP shapes passed the check once
        self.casts = {}                     # backend -> edges (u, i) whose VJP returns another
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

    @gc_paused
    def sweep(self, pushes=False, pulls=False):
        """Build the pushes and/or pulls, each by one sweep over the order from y back (_pushes, _pulls)."""
        if pushes:
            self._pushes = _pushes(self.order, self.needs, self.y)
        if pulls:
            self._pulls = _pulls(self.order, self.needs, self.y)


def _pushes(order, needs, y):
    """Version B's pushes, from y back: a node is live if it is y or a live node pushes into it; a live
    node pushes into each input that needs a gradient. (Nodes of one input, most of a scalar graph's
    or a chain's, are spelled out: the general loop costs more than they do.)"""
    push = []
    if not needs[y.index]:
        return push
    live = bytearray(len(needs))
    live[y.index] = 1
    for u in reversed(order):
        if not live[u.index]:
            continue
        spec = u.spec
        if spec is None or not spec.differentiable:
            push.append((u, []))
            continue
        ins = u.inputs
        if len(ins) == 1:
            p = ins[0]
            if needs[p.index]:
                live[p.index] = 1
                push.append((u, [(0, p)]))
            else:
                push.append((u, []))
            continue
        slots = []
        i = 0
        for p in ins:
            k = p.index
            if needs[k]:
                live[k] = 1
                slots.append((i, p))
            i += 1
        push.append((u, slots))
    return push


def _pulls(order, needs, y):
    """Version A's pulls, from y back (live as in _pushes). The pulls of v are complete when the sweep
    reaches v (its children come after it in topological order): they are collected in reverse, from the
    children, and turned around then. u's last pull is from the input that Version A reaches last: the
    earliest of its inputs in topological order (of one used twice, x * x, the later slot: children keep
    slot order). Nodes of one or two inputs are spelled out, as in _pushes."""
    pull = []
    if not needs[y.index]:
        return pull
    live = bytearray(len(needs))
    live[y.index] = 1
    pos = [0] * len(needs)                  # node index -> position in topological order
    k = 0
    for n in order:
        pos[n.index] = k
        k += 1
    # node index -> its (child u, slot i, last pull from u), u in reverse topological order (and the slots
    # of one u in reverse too)
    kids = [[] if f else None for f in needs]        # (lists for the nodes that need a gradient)
    end = len(needs)
    for u in reversed(order):
        j = u.index
        if not live[j]:
            continue
        children = kids[j]
        children.reverse()
        spec = u.spec
        if spec is None or not spec.differentiable:
            pull.append((u, children, True))
            continue
        ins = u.inputs
        n = len(ins)
        if n == 1:
            k = ins[0].index
            if needs[k]:
                live[k] = 1
                pull.append((u, children, False))
                kids[k].append((u, 0, True))
            else:
                pull.append((u, children, True))
            continue
        if n == 2:
            ka, kb = ins[0].index, ins[1].index
            na, nb = needs[ka], needs[kb]
            if not (na or nb):
                pull.append((u, children, True))
                continue
            pull.append((u, children, False))
            last = (0 if pos[ka] < pos[kb] else 1) if na and nb else (0 if na else 1)
            if nb:                          # slot 1 first: reversed with the others at its input
                live[kb] = 1
                kids[kb].append((u, 1, last == 1))
            if na:
                live[ka] = 1
                kids[ka].append((u, 0, last == 0))
            continue
        last, first = -1, end               # the slot of u's last pull and its input's position
        i = 0
        for p in ins:
            k = p.index
            if needs[k]:
                live[k] = 1
                if pos[k] <= first:
                    last, first = i, pos[k]
            i += 1
        pull.append((u, children, last < 0))
        if last < 0:
            continue
        i = n                               # its edges, last slot first: reversed with the others at p
        while i:
            i -= 1
            k = ins[i].index
            if needs[k]:
                kids[k].append((u, i, i == last))
    return pull


@gc_paused
def plan_for(graph, y, wrt, variant=None):
    """The backward plan of y with respect to wrt (None: params and requires_grad inputs), with the edges
    variant's loop visits built (both when None); kept from its second use on. A plan used once (a graph
    built and run once, as eager users run theirs) is not kept: its pushes, pulls and bound rules would only
    leave the collector more objects to scan and free. What it leaves is its compile counts, so the run
    that compiles is the same either way. A plan of KEEP_FROM_FIRST_USE nodes or more is kept from its first
    use: so big a graph is not built to be run once, and sweeping it again would cost seconds."""
    plans = state(graph).cache.plans
    key = (y.index, None if wrt is None else tuple(n.index for n in wrt))
    kept = plans.get(key)
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
            ins = n.inputs
            k = len(ins)
            if k == 2:                      # (most nodes: spelled out)
                if needs[ins[0].index] or needs[ins[1].index]:
                    needs[n.index] = 1
            elif k == 1:
                if needs[ins[0].index]:
                    needs[n.index] = 1
            else:
                for p in ins:
                    if needs[p.index]:
                        needs[n.index] = 1
                        break
    plan = Plan()
    plan.y, plan.order, plan.wrt, plan.needs = y, order, targets, needs
    plan.sweep(pushes=variant != "children", pulls=variant != "parents")
    plan.floats = runs_on_floats(graph, order)
    plan.rules = {}
    if kept is None and len(order) < KEEP_FROM_FIRST_USE:      # its first use
        plan.compiled = plans[key] = {}
    elif kept is None:                      # a big graph is not built to be run once: keep it now
        plan.compiled = {}
        plans[key] = plan
    else:
        plan.compiled = kept
        plans[key] = plan
    return plan


def plain_edges(plan):
    """(pushes, pulls) of plan by the definition in the module docstring, with nothing saved: the reference
    that Plan.sweep's one pass must equal (a test compares them). Quadratic in the worst case; not for runs."""
    order, needs, y = plan.order, plan.needs, plan.y
    pos = {n: k for k, n in enumerate(order)}

    def pushes_into(u):
        spec = u.spec
        if spec is None or not spec.differentiable:
            return []
        return [(i, p) for i, p in enumerate(u.inputs) if needs[p.index]]

    live = {y} if needs[y.index] else set()
    for u in reversed(order):
        if u in live:
            live.update(p for _, p in pushes_into(u))
    pushes = [(u, pushes_into(u)) for u in reversed(order) if u in live]
    pulls = []
    for v in reversed(order):
        if v not in live:
            continue
        children = []
        for u in sorted(live, key=pos.get):
            slots = [i for i, p in pushes_into(u) if p is v]
            for i in slots:
                last = min(pushes_into(u), key=lambda e: (pos[e[1]], -e[0]))[0]
                children.append((u, i, i == last))
        pulls.append((v, children, not pushes_into(v)))
    return pushes, pulls


# --- rules: each pushing node's VJP bound to a backend, once per plan ------------------------------------
class Rules:
    """The VJP rules of a plan's nodes bound to one backend F, each bound when first asked for (a plan of a
    fresh graph is run once, and a pass over its nodes to bind them all would cost as much as the run).

    rules[u]: u's pullback with F and u's attrs bound (OpDef.pullback), shared by the nodes of one op
    without attrs. slot_rule(spec): the op's per-slot VJP, called as rule(F, i, g, xs, out) on a node
    without attrs, or False for a two-stage rule (make_vjp): what NumericRun calls directly, the
    pullback's first stage being only (rule, xs, out) for such a rule."""

    __slots__ = ("F", "shared", "per_node", "direct")

    def __init__(self, F):
        self.F = F
        self.shared = {}                    # op -> its pullback bound to F, for the nodes without attrs
        self.per_node = {}                  # node with attrs -> its pullback bound to F and its attrs
        self.direct = {}                    # op -> slot_rule(op)

    def __getitem__(self, u):
        if u.attrs:
            rule = self.per_node.get(u)
            if rule is None:
                rule = self.per_node[u] = _bind_rule(u.spec, self.F, u.attrs)
            return rule
        rule = self.shared.get(u.spec)
        if rule is None:
            rule = self.shared[u.spec] = _bind_rule(u.spec, self.F, {})
        return rule

    def slot_rule(self, spec):
        rule = self.direct.get(spec)
        if rule is None:
            impl = spec.impl(self.F)            # the backend's fused kernel, or the op's rules
            rule = self.direct[spec] = impl.make_vjp is None and impl.vjp is not None and impl.vjp
        return rule


def bound_rules(plan, F):
    """The Rules of plan on backend F (kept with the plan: plans are reused run after run)."""
    rules = plan.rules.get(F.name)
    if rules is None:
        rules = plan.rules[F.name] = Rules(F)
    return rules


def _bind_rule(spec, F, attrs):
    """The op's pullback on F (its fused kernel's while kernels are on) with F and attrs bound."""
    return spec.impl(F).pullback(F, **attrs)


# --- staleness: the values a backward reads are the current ones ----------------------------------------
def check_current(y, plan):
    """Raise unless every value backward will read comes from the current feeds and params: no value may
    be older than one of its inputs' (an input fed or a param assigned since, or an input recomputed by a
    later forward for other outputs), and none may be missing. An input newer than its consumer is only a
    suspect: a forward for other outputs (or hvp's) recomputes shared nodes with its own stamp from the same
    values; _stale_edge keeps those whose sources (leaves, random draws) did change.

    After a forward of the whole order (the usual case) every op node has its stamp and no leaf is newer:
    then no edge can be stale, and a look at the stamps (in C: map, set) says so without a loop over the
    edges. (A value is set before its stamp, so a stamp >= 0 means a value.) Anything else is checked edge
    by edge."""
    order = plan.order
    kept = order_of(state(y.graph), order)
    stamps = set(map(_STAMP, kept.ops))
    if len(stamps) <= 1:
        top = stamps.pop() if stamps else 0
        if top >= 0 and all(0 <= s <= top for s in map(_STAMP, kept.leaves)):
            return
    empty, suspects = None, []
    for u in order:
        s = u.stamp
        if s == RELEASED_STAMP:                # a second backward after forward_backward (the nn path)
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
