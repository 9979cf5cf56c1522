"""The op registry: each op's shape rule, forward and per-input VJP, side by side.

An op is a class registered with @op. Its functions take the array namespace first:

    shape(*input_shapes, **attrs) -> output shape          (raise ShapeError with the reason and the fix)
    forward(F, *inputs, **attrs) -> array
    vjp(F, i, g, inputs, out, **attrs) -> gradient for input slot i

An op whose input slots share backward work computes it once per node instead (HIPS autograd's two
stages), and may keep what its forward computed anyway (the residuals):

    forward_res(F, *inputs, **attrs) -> (array, residuals)      (instead of forward)
    make_vjp(F, inputs, out, res, **attrs) -> vjp(i, g)         (instead of vjp; res is None when the
                                                                 forward kept none: recompute it)

`F` is a Backend for arrays (numpy, cupy, array_api_strict; Python floats for 0-d float64 graphs) or
graphdiff's own ops on Nodes (ops/nodes.py: gradients as graphs). A VJP uses only operators and `F.<name>`
functions that all of them provide, so one rule serves numeric and symbolic backward alike.
`slots` says what each input must be: "float" (default), "int" (ids), "bool" (masks) or "any".

The registry is explicit: ops/__init__.py imports each module of ops, and each op is listed in REGISTRY.
"""
import builtins

from ..errors import GraphError, ShapeError
from ..graph import Node, as_ints  # noqa: F401  (as_ints: for the shape ops)

REGISTRY = {}


class OpDef:
    """A registered op. Attributes mirror the class given to @op."""

    __slots__ = ("name", "arity", "slots", "shape", "forward", "forward_res", "vjp", "make_vjp", "dtype",
                 "differentiable", "random", "doc", "cls")

    def __init__(self, name, cls, arity, slots, differentiable, random):
        self.name = name
        self.cls = cls
        self.arity = arity
        self.slots = slots
        d = cls.__dict__
        self.shape = d["shape"]
        self.forward_res = d.get("forward_res")
        self.forward = d.get("forward") or _first_of(self.forward_res)
        self.make_vjp = d.get("make_vjp")
        self.vjp = d.get("vjp") or (self.make_vjp and _slot_vjp(self.make_vjp))
        self.dtype = d.get("dtype")
        self.differentiable = differentiable and self.vjp is not None
        self.random = random
        self.doc = (cls.__doc__ or "").strip()

    def __call__(self, *args, name=None, **attrs):
        """Build a node of this op: softplus(x) for an op registered as softplus = gd.op("softplus")(...)."""
        return apply(self, args, attrs, name)

    def slot_kinds(self, n):
        if self.arity is not None and n != self.arity:
            raise GraphError(f"op {self.name} takes {self.arity} inputs, got {n}")
        if isinstance(self.slots, str):
            return (self.slots,) * n
        return self.slots

    def __repr__(self):
        return f"<op {self.name}>"


def _first_of(forward_res):
    def forward(F, *xs, **attrs):
        return forward_res(F, *xs, **attrs)[0]
    return forward


def _slot_vjp(make_vjp):
    def vjp(F, i, g, xs, out, **attrs):
        return make_vjp(F, xs, out, None, **attrs)(i, g)
    return vjp


def op(name, arity=1, slots="float", differentiable=True, random=False):
    """Register an op class; see the module docstring. Public: users add their own ops with it.

    Args:
        name: the op's name (node.op), unique.
        arity: number of inputs; None for a list of inputs (concat, stack).
        slots: "float", "int", "bool" or "any", one for all inputs or a tuple with one per slot.
        differentiable: False for ops whose output has no gradient (comparisons, casts to int).
        random: the forward draws random numbers; it receives ctx= (the Graph) for its rng.
    """
    def register(cls):
        if name in REGISTRY:
            raise GraphError(f"op {name!r} is already registered")
        for fns in (("shape",), ("forward", "forward_res")):
            if not any(fn in cls.__dict__ for fn in fns):
                raise GraphError(f"op {name!r}: class {cls.__name__} needs a '{fns[0]}' function")
        spec = OpDef(name, cls, arity, slots, differentiable, random)
        REGISTRY[name] = spec
        return spec
    return register


def apply(spec, args, attrs=None, name=None):
    """Add a node computing spec(*args) to the graph of the Node arguments; numbers become constants.

    Args:
        spec: a registered op (what @op returns) or its name.
        args: the inputs: a Node, or a list of Nodes, arrays and numbers.
        attrs: the op's static arguments ({"axis": 1}).
    """
    if isinstance(spec, str):
        if spec not in REGISTRY:
            raise GraphError(f"no op named {spec!r}; register it with @gd.op({spec!r}) first")
        spec = REGISTRY[spec]
    if isinstance(args, Node):
        args = (args,)
    if type(args) is tuple:                 # Nodes of one graph, one or two of them: most nodes, at once
        if len(args) == 2:
            a, b = args
            if type(a) is Node and type(b) is Node and a.graph is b.graph:
                return a.graph.add_node(spec, args, attrs or {}, name)
        elif len(args) == 1 and type(args[0]) is Node:
            return args[0].graph.add_node(spec, args, attrs or {}, name)
    graph, wrap = None, False
    for a in args:
        if not isinstance(a, Node):
            wrap = True
        else:
            if graph is None:
                graph = a.graph
            elif a.graph is not graph:
                other = next(b for b in args if isinstance(b, Node) and b.graph is graph)
                raise GraphError(f"{spec.name}: '{other.name}' and '{a.name}' belong to two different graphs; "
                                 "build every node of one computation in the same gd.Graph")
    if graph is None:
        raise GraphError(f"{spec.name} needs at least one Node argument to know its graph; "
                         "wrap numbers with g.constant(...) first")
    if wrap:
        kinds = spec.slot_kinds(len(args))
        args = [a if isinstance(a, Node) else graph.wrap(a, k) for a, k in zip(args, kinds)]
    return graph.add_node(spec, tuple(args), attrs or {}, name)


# --- shape rules shared by many ops ----------------------------------------------------------------
def broadcast_shapes(*shapes, **_):
    """NumPy broadcasting of the input shapes."""
    if len(shapes) == 2 and shapes[0] == shapes[1]:     # the usual case, and every scalar graph's
        return shapes[0]
    ndim = builtins.max(len(s) for s in shapes)   # the star imports below shadow max and sum
    out = []
    for k in range(-ndim, 0):
        dims = {s[k] for s in shapes if len(s) >= -k} - {1}
        if len(dims) > 1:
            raise ShapeError(f"shapes {' and '.join(str(s) for s in shapes)} do not broadcast "
                             f"(axis {k}: sizes {sorted(dims)}); reshape one so that each axis is equal or 1")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def same_shape(shape, **_):
    return shape


def norm_axis(axis, ndim):
    """axis (None, int or tuple) as a sorted tuple of non-negative ints; ShapeError if out of range."""
    if axis is None:
        return tuple(range(ndim))
    axes = as_ints(axis, "axis")
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeError(f"axis {a} is out of range for a {ndim}-d input")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"axis {axis} repeats an axis")
    return tuple(sorted(out))


def reduced_shape(shape, axis, keepdims):
    axes = norm_axis(axis, len(shape))
    if keepdims:
        return tuple(1 if k in axes else n for k, n in enumerate(shape))
    return tuple(n for k, n in enumerate(shape) if k not in axes)
