"""Gradient health: one number per node, and the colour scale a diagram paints them with.

    health.quantity(y, "grad")          # {node name: float}: the gradient's L2 norm (after backward)
    health.quantity(y, "value")         # the value's L2 norm
    health.quantity(y, "nonfinite")     # how many elements of the value (and gradient) are NaN or Inf
    health.quantity(y, "memory")        # bytes each op keeps for the backward: what its VJP reads
    health.quantity(y, "time")          # seconds per node, forward + backward, from a profiled run
    health.first_nonfinite(y)           # the first node whose op made a NaN/Inf out of finite inputs
    health.Scale(values, log=True)      # value -> fill colour, and the colour bar's stops and labels

A node the quantity does not apply to (a leaf's VJP reads nothing; no gradient kept) is left out of the dict;
the diagram draws it white, "no data". Everything is read through graphdiff's public API: node values and
gradients, the op registry (gd.REGISTRY: each op's declared `saves`, its forward) and backward trace events.
"""
import math
import time

import numpy as np

import graphdiff as gd

from .graphs import host, is_backward, node_value, select
from .labels import number

QUANTITIES = ("grad", "value", "nonfinite", "memory", "time")
LOG_SCALE = {"grad": True, "value": True, "nonfinite": False, "memory": True, "time": True}
TITLES = {"grad": "gradient norm \u2016dL/dx\u2016", "value": "value norm \u2016x\u2016",
          "nonfinite": "NaN/Inf elements", "memory": "bytes kept for the backward",
          "time": "time per node (forward + backward)"}
NONFINITE_COLOR = "#d62728"      # a NaN or Inf: red in every colouring
NO_DATA_COLOR = "#ffffff"
# viridis at 9 stops: perceptually even, readable in grey, and no red (red means NaN/Inf)
STOPS = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725")


# --- the quantities ----------------------------------------------------------------------------------------
def norm(x):
    """The L2 norm of an array or scalar as a float (inf or nan when it holds one)."""
    a = host(x).astype(np.float64, copy=False)
    if not np.all(np.isfinite(a)):
        return float("nan") if np.any(np.isnan(a)) else float("inf")
    return float(np.sqrt(np.sum(a * a)))


def grad_norms(nodes):
    """{name: L2 norm of node.grad} for the nodes whose gradient is kept (g.backward(y, retain_grads=True)
    keeps every node's; without it, the params')."""
    return {n.name: norm(n.grad) for n in nodes if n.grad is not None}


def value_norms(nodes):
    """{name: L2 norm of the value} for the nodes holding one (not before a forward, not once released)."""
    out = {}
    for n in nodes:
        v = node_value(n)
        if v is not None and not isinstance(v, str) and np.issubdtype(host(v).dtype, np.number):
            out[n.name] = norm(v)
    return out


def nonfinite_counts(nodes):
    """{name: number of NaN or Inf elements in the value and the gradient} for the nodes holding a value."""
    out = {}
    for n in nodes:
        v = node_value(n)
        if v is None or isinstance(v, str):
            continue
        count = 0
        for x in (v, n.grad):
            a = host(x) if x is not None else None
            if a is not None and np.issubdtype(a.dtype, np.inexact):
                count += int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        out[n.name] = float(count)
    return out


def first_nonfinite(obj):
    """The first node (in creation order, a topological order) whose value holds a NaN or Inf while all of
    its inputs are finite: the op that produced the first one. None when every value is finite.

    Args:
        obj: what to_dot draws: a gd.Graph, a gd.Node (its subgraph) or a list of Nodes.
    """
    nodes, _ = select(obj)
    bad = set()
    for n in nodes:
        v = node_value(n)
        if v is None or isinstance(v, str):
            continue
        a = host(v)
        if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
            if not any(p.index in bad for p in n.inputs):
                return n
            bad.add(n.index)
    return None


def _nbytes(node):
    """The bytes of node's value: from its value's shape when it holds one (a None batch axis is the fed
    size), else from its declared shape; None when that has a None axis and no value says its size."""
    v = node_value(node)
    shape = getattr(v, "shape", ()) if v is not None and not isinstance(v, str) else node.shape   # float: ()
    if any(d is None for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(node.dtype).itemsize


def _needs_grad(nodes):
    """The indices of the nodes a gradient flows through: params and the differentiable ops on them."""
    needs = set()
    for n in nodes:                                  # creation order: inputs come first
        if n.kind == "param" or (n.op is not None and gd.REGISTRY[n.op].differentiable
                                 and any(p.index in needs for p in n.inputs)):
            needs.add(n.index)
    return needs


def saved_bytes(nodes):
    """{name: bytes} that each forward op's VJP reads of the forward, for the ops a gradient flows through:
    the inputs and output its op declares in `saves` (per input slot when the slots differ: only the slots
    that need a gradient count), plus the residuals a two-stage op's forward keeps (measured by running its
    forward on the node's inputs). An op declaring nothing reads all its inputs and its output. A value read
    by two VJPs counts in both (each keeps it alive). Backward-graph nodes (scope "grad") are left out.
    """
    needs = _needs_grad(nodes)
    out = {}
    for n in nodes:
        if n.op is None or n.index not in needs or is_backward(n):
            continue
        spec = gd.REGISTRY[n.op]
        saves = spec.saves
        slots = [i for i, p in enumerate(n.inputs) if p.index in needs]
        if saves is None:
            saves = (*range(len(n.inputs)), "out")
        elif isinstance(saves, dict):
            picked = set()
            for i in (saves if spec.make_vjp is not None else slots):    # two-stage: every slot's at once
                picked.update(saves.get(i, ()))
            saves = picked
        sizes = [_nbytes(n if k == "out" else n.inputs[k]) for k in set(saves)]
        if None in sizes:                            # a batch axis of unknown size: no number to give
            continue
        total = sum(sizes)
        if spec.forward_res is not None and all(not isinstance(node_value(p), (str, type(None)))
                                                for p in n.inputs):
            _, res = _run_forward(n)
            total += sum(int(getattr(r, "nbytes", 0)) for r in _flat(res))
        out[n.name] = float(total)
    return out


def _flat(res):
    """The arrays in a residuals object (None, an array, or nested tuples/lists/dicts of them)."""
    stack, out = [res], []
    while stack:
        r = stack.pop()
        if isinstance(r, (tuple, list)):
            stack.extend(r)
        elif isinstance(r, dict):
            stack.extend(r.values())
        elif r is not None:
            out.append(r)
    return out


def _run_forward(n):
    """Run node n's op on its inputs' current values, as the engine would: (output, residuals or None)."""
    graph = n.graph
    F = graph.backend
    spec = gd.REGISTRY[n.op].impl(F)
    xs = [np.float64(v) if type(v) is float else v for v in (p.value for p in n.inputs)]
    kw = dict(n.attrs, ctx=graph) if gd.REGISTRY[n.op].random else dict(n.attrs)
    if spec.forward_res is not None:
        return spec.forward_res(F, *xs, **kw)
    return spec.forward(F, *xs, **kw), None


def _syncer(graph):
    """A function that waits for the device (CuPy), so that a timing covers the work, not just its launch."""
    if graph.backend.name == "cupy":
        import cupy
        return cupy.cuda.Device().synchronize
    return lambda: None


def profile(obj, y=None, *, repeats=5, variant="children"):
    """Forward and backward seconds per node from a profiled run: ({name: forward s}, {name: backward s}).

    Forward: each op node's forward (gd.REGISTRY's, the backend's fused kernel where one is bound) run on its
    inputs' values, `repeats` times; the median. Backward: g.backward(y, trace=...) `repeats` times with a
    clock read at each trace event; the time since the previous event goes to the event's node (a
    Contribution: the VJP of its child that just ran; a Final: summing the node's adjoint), the median per
    node over the runs. The values must be computed (a forward); every node's .grad is left as it was.

    Args:
        obj: a gd.Graph, a gd.Node or a list of Nodes (what to_dot draws).  y: the scalar output to
            differentiate (default: the one output of obj, when it is a scalar).
        repeats: timed runs (at least 1).  variant: "children" or "parents".
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"profile: repeats={repeats!r}; give a number of runs >= 1")
    nodes, outputs = select(obj)
    y = _scalar_output(outputs, y, "profile")
    graph = y.graph
    sync = _syncer(graph)
    forward = {}
    for n in nodes:
        if n.op is None or is_backward(n) or n.value is None:
            continue
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            _run_forward(n)
            sync()
            runs.append(time.perf_counter() - t0)
        forward[n.name] = float(np.median(runs))
    runs, kept = [], [(n, n.grad) for n in graph.nodes]
    try:
        for _ in range(repeats):
            runs.append(_timed_backward(graph, y, variant, sync))
    finally:                                         # the gradients a diagram shows stay the caller's
        for n, grad in kept:
            n.grad = grad
    names = {k for r in runs for k in r}
    backward = {k: float(np.median([r.get(k, 0.0) for r in runs])) for k in names}
    return forward, backward


def _timed_backward(graph, y, variant, sync):
    """One backward pass with the clock read at each trace event: {name: seconds} (see profile)."""
    stamps = []

    def stamp(e):
        sync()
        stamps.append((e, time.perf_counter()))
    graph.backward(y, variant=variant, trace=stamp)
    per = {}
    last = stamps[0][1] if stamps else 0.0      # before the first event: the plan and the seed, no node's work
    for e, t in stamps:
        node = e.child if e.kind == "contribution" else e.node
        per[node.name] = per.get(node.name, 0.0) + (t - last)
        last = t
    return per


def times(obj, y=None, *, repeats=5, variant="children"):
    """{name: forward + backward seconds} from profile()."""
    forward, backward = profile(obj, y, repeats=repeats, variant=variant)
    return {k: forward.get(k, 0.0) + backward.get(k, 0.0) for k in {*forward, *backward}}


def _scalar_output(outputs, y, what):
    if y is None:
        scalars = [o for o in outputs if o.shape == () and not is_backward(o)]   # not the gradient nodes
        if len(scalars) != 1:
            raise gd.GraphError(f"{what}: timing the backward needs one scalar output to differentiate; the "
                                f"diagram has {[o.name for o in outputs]}: pass y=")
        y = scalars[0]
    if not isinstance(y, gd.Node) or y.shape != ():
        raise gd.GraphError(f"{what}: y must be a scalar gd.Node, got {getattr(y, 'shape', y)!r}")
    return y


def quantity(obj, what, *, y=None, repeats=5):
    """{node name: float} of one health quantity for the nodes of obj (those without it are left out).

    Args:
        obj: a gd.Graph, a gd.Node (its subgraph) or a list of Nodes.
        what: "grad", "value", "nonfinite", "memory" or "time" (see the module's docstring).
        y, repeats: for "time": the output to differentiate and the timed runs (see profile()).
    """
    if what not in QUANTITIES:
        raise ValueError(f"unknown health quantity {what!r}; choose from {', '.join(QUANTITIES)}")
    nodes, _ = select(obj)
    if what == "time":
        return times(obj, y, repeats=repeats)
    return {"grad": grad_norms, "value": value_norms, "nonfinite": nonfinite_counts,
            "memory": saved_bytes}[what](nodes)


def program_gradients(program, feeds, output="loss"):
    """Run an nn/lm Program (model.programs(("loss", B, T)), ...) forward and backward on feeds with its
    module's current parameters, keeping every node's value and gradient (the training path releases them),
    and return its output node: to_dot(node, color_by="grad") then shows where the gradient is large.
    Nothing is stepped: the parameters and their .grad are left as they were.

    Args:
        program: a graphdiff.nn Program.  feeds: {input name: array}.  output: the scalar output's name.
    """
    unknown = sorted(set(feeds) - set(program.inputs))
    if unknown or output not in program.outputs:
        raise gd.GraphError(f"program_gradients: the program has inputs {sorted(program.inputs)} and outputs "
                            f"{sorted(program.outputs)}; got feeds {sorted(feeds)} and output {output!r}")
    for node, p in program.bindings:
        node.value = p.data
    y = program.outputs[output]
    g = program.graph
    g.forward({program.inputs[k]: v for k, v in feeds.items()}, outputs=y)
    g.backward(y, retain_grads=True)
    return y


# --- the colour scale --------------------------------------------------------------------------------------
def _hex(rgb):
    return "#" + "".join(f"{max(0, min(255, round(c))):02x}" for c in rgb)


def _rgb(color):
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def ramp(t):
    """The colour at t in [0, 1] along STOPS (viridis), linearly between stops."""
    t = min(1.0, max(0.0, float(t))) * (len(STOPS) - 1)
    k = min(int(t), len(STOPS) - 2)
    a, b = _rgb(STOPS[k]), _rgb(STOPS[k + 1])
    return _hex(tuple(x + (y - x) * (t - k) for x, y in zip(a, b)))


def text_color(fill):
    """Black or white, whichever reads better on fill (relative luminance)."""
    r, g, b = (c / 255 for c in _rgb(fill))
    return "#000000" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "#ffffff"


class Scale:
    """Maps a quantity's values to colours: its finite values span the ramp, min to max, on a log scale
    when asked (values <= 0 then sit at the bottom with the smallest positive one); NaN and Inf are red.

    Attributes:
        lo, hi: the smallest and largest finite value (None when there is none).  log: log scale.
        zero: some value <= 0 was clamped to the bottom of a log scale.
    """

    def __init__(self, values, log=False):
        self.log = log
        finite = [v for v in values if math.isfinite(v)]
        positive = [v for v in finite if v > 0]
        self.zero = log and len(positive) < len(finite)
        pool = positive if log else finite
        self.lo, self.hi = (min(pool), max(pool)) if pool else (None, None)

    def position(self, v):
        """Where v sits on the ramp, 0 to 1."""
        if self.lo is None or self.hi == self.lo:
            return 1.0 if self.lo is not None and v >= self.lo else 0.0
        if self.log:
            if v <= 0:
                return 0.0
            return (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return (v - self.lo) / (self.hi - self.lo)

    def color(self, v):
        """The fill colour of value v (NaN or Inf: red)."""
        return NONFINITE_COLOR if not math.isfinite(v) else ramp(self.position(v))

    def stops(self, k=12):
        """k colours from the bottom of the scale to its top, for the colour bar."""
        return [ramp(i / (k - 1)) for i in range(k)]


def format_value(what, v):
    """A quantity's value as label text: bytes as B/KiB/MiB, seconds as us/ms/s, counts as integers."""
    if not math.isfinite(v):
        return "NaN" if math.isnan(v) else "Inf"
    if what == "memory":
        for unit, size in (("MiB", 2 ** 20), ("KiB", 2 ** 10)):
            if v >= size:
                return f"{v / size:.1f} {unit}"
        return f"{int(v)} B"
    if what == "time":
        return f"{v * 1e6:.1f} \u00b5s" if v < 1e-3 else f"{v * 1e3:.2f} ms" if v < 1 else f"{v:.2f} s"
    if what == "nonfinite":
        return f"{int(v)}"
    return number(v) if v == 0 or 1e-3 <= abs(v) < 1e5 else f"{v:.3g}"
