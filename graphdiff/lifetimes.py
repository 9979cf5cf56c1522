"""When each forward value dies in a forward + backward run (Graph.forward_backward, the nn path).

PyTorch frees a saved tensor once the backward of the node that saved it has run. The graph is known before
it runs, so graphdiff works the same out once per plan, from what each op's VJP reads of the forward: its
`saves` (input positions and "out", per slot when the slots differ; an op that declares nothing reads all of
them):
- a value that no VJP of the plan reads goes right after its last use in the forward (the matmul before a
  bias add, the scores before the causal mask);
- a value some VJP reads goes once the last VJP that reads it has been bound (its values gathered) in the
  backward; a bound VJP holds what it still needs and lets go of it when its node is done;
- leaves and the outputs asked for keep their values; residuals (forward_res) go when their node's VJP is
  bound, or with the value when no VJP of the plan uses them.
A VJP is handed a Shape (shape and dtype, no data) for each value it does not read, so an op whose `saves`
says too little fails loudly, never with a silent wrong answer.

The releasing run (ReleasingRun) and forward_backward, which runs a forward and a backward under one plan of
lifetimes, live here beside that plan.
"""
from .autodiff import NumericRun, backward, check_args
from .errors import GraphError
from .execution import check_member, forward, scalar_graph, state, topological_order
from .graph import RELEASED_STAMP, Node
from .plans import plan_for


class Shape:
    """Stands in for a value a VJP does not read: it has the value's shape, dtype and ndim, nothing else."""

    __slots__ = ("shape", "dtype", "node")
    __array_ufunc__ = None            # NumPy must not turn it into an object array

    def __init__(self, node, dtype):
        self.shape, self.dtype, self.node = node.shape, dtype, node

    @property
    def ndim(self):
        return len(self.shape)

    def _misread(self, *args, **kwargs):
        n = self.node
        raise GraphError(f"a VJP read the value of '{n.name}' ({n.op or n.kind}), which the ops reading it "
                         "declare they do not (their `saves`), so forward_backward released it; add it to the "
                         "`saves` of the op whose VJP reads it")

    __array__ = __bool__ = __float__ = __int__ = __index__ = __len__ = __iter__ = __getitem__ = _misread
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _misread
    __pow__ = __rpow__ = __matmul__ = __rmatmul__ = __neg__ = __abs__ = _misread
    __lt__ = __le__ = __gt__ = __ge__ = _misread

    def __getattr__(self, attr):      # .sum(), .astype(), __array_interface__, ...: all need the data
        self._misread()

    def __repr__(self):
        return f"<Shape of '{self.node.name}' {self.shape}>"


def reads(u, slots):
    """(input positions, reads out) of what u's VJP reads for the input slots `slots` (all of them for a
    two-stage op, whose shared work reads at once what every slot needs)."""
    saves = u.spec.saves
    if saves is None:                 # undeclared (a user's op): everything
        return set(range(len(u.inputs))), True
    if isinstance(saves, dict):
        picked = set()
        for i in (saves if u.spec.make_vjp is not None else slots):
            picked.update(saves.get(i, ()))
        saves = picked
    return {k for k in saves if k != "out"}, "out" in saves


def bind_order(plan, variant):
    """The nodes whose VJPs the variant's loop binds, in the order it binds them: Version B at each node's
    visit, Version A at the first pull from the node."""
    if variant == "parents":
        return [(u, [i for i, _ in slots]) for u, slots in plan.pushes if slots]
    slots, order = {}, []
    for _, children, _ in plan.pulls:
        for u, i, _ in children:
            if u not in slots:
                slots[u] = []
                order.append(u)
            slots[u].append(i)
    return [(u, slots[u]) for u in order]


class Lifetimes:
    """What forward_backward releases, and when, for one forward order, backward plan and variant.

    binds: {u: (xs, fill, out, drops, residuals)}: u's VJP gets list(xs) with fill's (position, node) values put
        in (Shapes elsewhere), and out (None: u's own value); once bound, the nodes in drops are released and
        the residuals of those indices popped.
    after: {node: (drops, residuals)}, the same right after node's forward step."""

    def __init__(self, order, plan, variant, keep, F):
        keep = set(keep)
        bound = bind_order(plan, variant)
        bound_set = {u for u, _ in bound}
        last, binds = {}, {}
        for u, slots in bound:
            positions, out_read = reads(u, slots)
            xs, fill = [], []
            for k, p in enumerate(u.inputs):
                if k in positions:
                    xs.append(None)
                    fill.append((k, p))
                    last[p] = u
                else:
                    xs.append(Shape(p, F.dtypes[p.dtype]))
            if out_read:
                last[u] = u
            binds[u] = [xs, fill, None if out_read else Shape(u, F.dtypes[u.dtype]), [], []]

        def goes(p):
            return p.spec is not None and p not in keep

        def residuals(p):             # a bound node's residuals go at its bind
            return p.spec is not None and p.spec.forward_res is not None and p not in bound_set

        for p, u in last.items():
            if goes(p):
                binds[u][3].append(p)
                if residuals(p):
                    binds[u][4].append(p.index)
        used_last = {}
        for n in order:
            for p in n.inputs:
                used_last[p] = n
        self.after = {}
        for p in order:
            if goes(p) and p not in last and p in used_last:
                drops, res = self.after.setdefault(used_last[p], ([], []))
                drops.append(p)
                if residuals(p):
                    res.append(p.index)
        self.binds = {u: tuple(b) for u, b in binds.items()}
        self.inplace = _in_place(order, self.after, F)
        self._steps = (None, None)

    def run(self, F, kept, residuals, rules, variant):
        """The backward run that releases as this plan says (autodiff.array_backward asks for it)."""
        return ReleasingRun(F, kept, residuals, rules, self.binds, variant)

    def forward_steps(self, steps, residuals, check=False):
        """The forward steps (execution's (node, fn, inputs, random)) with the releases after each, and the
        adds that may write into a dying input doing so (not when values are checked), built once per list
        of steps."""
        if self._steps[0] is not steps:
            after, inplace = self.after, ({} if check else self.inplace)
            built = []
            for n, fn, ins, random in steps:
                if n in inplace:
                    fn = inplace[n]
                built.append((n, releasing(fn, *after[n], residuals) if n in after else fn, ins, random))
            self._steps = (steps, built)
        return self._steps[1]


# ops whose forward always returns a new array that nothing else refers to (no view of an input)
_FRESH = ("matmul", "add")


def _in_place(order, after, F):
    """{add node: its forward writing into one of its inputs}: allowed where that input is the output of a
    fresh-array op, read by this add alone (one edge), dies right after it (no VJP reads it: it is in the
    add's releases) and has the add's shape and dtype. A training step's bias adds (onto a matmul's output),
    the attention mask's add (onto the scores) and the residual adds qualify; writing in place saves the
    allocation and half the memory traffic. NumPy and CuPy only (the array API has no out=)."""
    if F.name not in ("numpy", "cupy"):
        return {}
    uses = {}
    for n in order:
        for p in n.inputs:
            uses[p] = uses.get(p, 0) + 1
    xp, out = F.xp, {}
    for n, (drops, _) in after.items():
        if n.spec is None or n.spec.name != "add":
            continue
        for k, p in enumerate(n.inputs):
            if (p in drops and uses[p] == 1 and p.spec is not None and p.spec.name in _FRESH and p.shape
                    and p.shape == n.shape and p.dtype == n.dtype):      # (0-d values may be NumPy scalars)
                out[n] = _add_into(xp, k)
                break
    return out


def _add_into(xp, k):
    if k == 0:
        return lambda a, b: xp.add(a, b, out=a)
    return lambda a, b: xp.add(a, b, out=b)


def releasing(fn, drops, indices, residuals):
    """fn, then release the values of drops and pop the residuals of indices."""
    def step(*xs):
        out = fn(*xs)
        release(drops, indices, residuals)
        return out
    return step


def release(drops, indices, residuals):
    for p in drops:
        p.out, p.stamp = None, RELEASED_STAMP
    for k in indices:
        residuals.pop(k, None)


# --- the releasing backward and forward_backward -----------------------------------------------------------
class ReleasingRun(NumericRun):
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
        xs, fill, out, drops, indices = self.binds[u]
        xs = list(xs)
        for k, p in fill:
            xs[k] = p.out
            if xs[k] is None:
                raise GraphError(f"backward: the VJP of {u.op} '{u.name}' needs the value of '{p.name}', which "
                                 "has none; run the forward again")
        if out is None:
            out = u.out
        bound = self.rules[u](xs, out, self.residuals.pop(u.index, None))
        release(drops, indices, self.residuals)
        return bound


def forward_backward(graph, feeds, outputs, y, variant="children", seed=None, trace=None):
    """See Graph.forward_backward."""
    check_args(graph, y, variant, None, "forward_backward")
    if isinstance(outputs, (Node, str)):
        raise TypeError("forward_backward: outputs must be a list of Nodes or names")
    outs = [graph.node(o) if isinstance(o, str) else o for o in outputs]
    for o in outs:
        check_member(graph, o, "forward_backward")
    want = outs if y in outs else outs + [y]
    graph.feed(feeds or {})                 # first: a feed of another batch size resizes the graph, and the
    st = state(graph)                       # release plan is that size's (its Shapes, its order)
    key = (tuple(n.index for n in want), y.index, variant, graph.backend.name)
    life = st.cache.lifetimes.get(key)
    if life is None:
        plan = plan_for(graph, y, None, variant)
        order = topological_order(graph, want)
        # Python floats (0-d float64 graphs) hold nothing worth releasing: the plain passes run them
        life = st.cache.lifetimes[key] = False if plan.floats or scalar_graph(graph, order) else Lifetimes(
            order, plan, variant, want, graph.backend)
    if not life or graph.eager:             # an eager graph's values stay: later nodes compute from them
        values = forward(graph, None, want)
        backward(graph, y, variant, seed=seed, trace=trace)
    else:
        values = forward(graph, None, want, release=life)
        backward(graph, y, variant, seed=seed, trace=trace, release=life)
    return values[:len(outs)]
