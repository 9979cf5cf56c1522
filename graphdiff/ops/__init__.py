"""The op registry: each op's shape rule, forward and per-input VJP, side by side.

An op is a class registered with @op. Its functions take the array namespace first:

    shape(*input_shapes, **attrs) -> output shape          (raise ShapeError with the reason and the fix)
    forward(F, *inputs, **attrs) -> array
    vjp(F, i, g, inputs, out, **attrs) -> gradient for input slot i

Optionally, `forward_scalar(*inputs, **attrs)` and `vjp_scalar(i, g, inputs, out, **attrs)`: the same
maths on Python floats, which autodiff uses for float64 graphs whose every node is 0-d (micrograd-style
scalar graphs), where NumPy's per-call overhead would dominate. A kernel raises ArithmeticError or
ValueError where NumPy would give inf or nan, and autodiff then reruns the step with forward/vjp.

`F` is a Backend for arrays (numpy, cupy, array_api_strict). A VJP uses only operators and `F.<name>`
functions that graphdiff also provides as ops, so the same rule can run on Nodes (gradients as graphs).
`slots` says what each input must be: "float" (default), "int" (ids), "bool" (masks) or "any".

The registry is explicit: the modules below are imported here, and each op is listed in REGISTRY.
"""
import builtins

from ..errors import GraphError, ShapeError
from ..graph import Node, as_ints  # noqa: F401  (as_ints: for the shape ops)

REGISTRY = {}


class OpDef:
    """A registered op. Attributes mirror the class given to @op."""

    __slots__ = ("name", "arity", "slots", "shape", "forward", "vjp", "dtype", "differentiable", "random",
                 "doc", "cls", "forward_scalar", "vjp_scalar")

    def __init__(self, name, cls, arity, slots, differentiable, random):
        self.name = name
        self.cls = cls
        self.arity = arity
        self.slots = slots
        self.shape = cls.__dict__["shape"]
        self.forward = cls.__dict__["forward"]
        self.vjp = cls.__dict__.get("vjp")
        self.dtype = cls.__dict__.get("dtype")
        self.differentiable = differentiable and self.vjp is not None
        self.random = random
        self.doc = (cls.__doc__ or "").strip()
        # optional fused kernels on Python floats, used when a whole float64 graph is 0-d (scalar graphs);
        # tests/ops/test_scalar_kernels.py checks them against forward/vjp above
        self.forward_scalar = cls.__dict__.get("forward_scalar")
        self.vjp_scalar = cls.__dict__.get("vjp_scalar")

    def slot_kinds(self, n):
        if self.arity is not None and n != self.arity:
            raise GraphError(f"op {self.name} takes {self.arity} inputs, got {n}")
        if isinstance(self.slots, str):
            return (self.slots,) * n
        return self.slots

    def __repr__(self):
        return f"<op {self.name}>"


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
        for fn in ("shape", "forward"):
            if fn not in cls.__dict__:
                raise GraphError(f"op {name!r}: class {cls.__name__} needs a '{fn}' function")
        spec = OpDef(name, cls, arity, slots, differentiable, random)
        REGISTRY[name] = spec
        return spec
    return register


def apply(spec, args, attrs=None, name=None):
    """Add a node computing spec(*args) to the graph of the Node arguments; numbers become constants."""
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
        args = [a if isinstance(a, Node) else graph._wrap(a, k) for a, k in zip(args, kinds)]
    return graph._add(spec, tuple(args), attrs or {}, name)


# --- shape rules shared by many ops ----------------------------------------------------------------
def broadcast_shapes(*shapes, **_):
    """NumPy broadcasting of the input shapes."""
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


from . import elementwise, reduce, shape, nn  # noqa: E402  (modules register their ops on import)
from .elementwise import *  # noqa: E402,F401,F403
from .reduce import *  # noqa: E402,F401,F403
from .shape import *  # noqa: E402,F401,F403
from .nn import *  # noqa: E402,F401,F403

__all__ = (["REGISTRY", "OpDef", "op", "apply", "broadcast_shapes"] + elementwise.__all__ + reduce.__all__
           + shape.__all__ + nn.__all__)
