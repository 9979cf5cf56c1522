"""Reductions (sum, mean, max over axes) and the n-ary sum add_n."""
import numpy as np

from .registry import REGISTRY, apply, broadcast_shapes, builds, norm_axis, op, reduced_shape
from ..values import as_ints

__all__ = ["sum", "mean", "max", "add_n"]


def _reduce_shape(shape, axis=None, keepdims=False):
    return reduced_shape(shape, axis, keepdims)


def _spread(F, g, x_shape, axis, keepdims):
    """g (the reduced shape) broadcast back to x_shape."""
    if not x_shape:                         # 0-d: nothing was reduced (and Python floats have no shape)
        return g
    if not keepdims:
        g = F.reshape(g, reduced_shape(x_shape, axis, True))
    return F.broadcast_to(g, x_shape)


def _count(shape, axis):
    n = 1
    for k in norm_axis(axis, len(shape)):
        n *= shape[k]
    return n


@op("sum")
class Sum:
    """sum of x over axis"""
    shape = _reduce_shape
    saves = ()

    def forward(F, x, axis=None, keepdims=False):
        return F.sum(x, axis=axis, keepdims=keepdims)

    def vjp(F, i, g, xs, out, axis=None, keepdims=False):
        return _spread(F, g, F.shape(xs[0]), axis, keepdims)


@op("mean")
class Mean:
    """mean of x over axis"""
    shape = _reduce_shape
    saves = ()

    def forward(F, x, axis=None, keepdims=False):
        return F.mean(x, axis=axis, keepdims=keepdims)

    def vjp(F, i, g, xs, out, axis=None, keepdims=False):
        shape = F.shape(xs[0])
        n = _count(shape, axis)                 # 0 for an empty axis: the gradient is empty too
        return _spread(F, g, shape, axis, keepdims) * (1.0 / n if n else 0.0)


@op("max")
class Max:
    """max of x over axis; tied maxima share the gradient equally (as torch.amax does)"""
    shape = _reduce_shape
    saves = (0, "out")

    def forward(F, x, axis=None, keepdims=False):
        return F.max(x, axis=axis, keepdims=keepdims)

    def vjp(F, i, g, xs, out, axis=None, keepdims=False):
        x = xs[0]
        shape = F.shape(x)
        top = out if keepdims else F.reshape(out, reduced_shape(shape, axis, True))
        mask = F.astype_like(F.equal(x, top), x)
        count = F.sum(mask, axis=axis, keepdims=True)
        return _spread(F, g, shape, axis, keepdims) * mask / count


@op("add_n", arity=None)
class AddN:
    """x_0 + x_1 + ... + x_{n-1} as one node (broadcasting): n-ary sums keep a graph's depth honest"""
    shape = broadcast_shapes
    saves = ()

    def forward(F, *xs):
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total

    def vjp(F, i, g, xs, out):
        return F.unbroadcast(g, xs[i])


def _norm_axis_arg(axis):
    if axis is None:
        return None
    axes = as_ints(axis, "axis")
    return axes[0] if isinstance(axis, (int, np.integer)) else axes


def _reduction(spec_name, doc):
    """The builder of reduction `spec_name` (the op's, OpDef.builder): axis and keepdims checked here."""
    spec = REGISTRY[spec_name]

    def fn(x, axis=None, keepdims=False, name=None):
        return apply(spec, (x,), {"axis": _norm_axis_arg(axis), "keepdims": bool(keepdims)}, name)
    fn.__name__ = fn.__qualname__ = spec_name
    spec.builder = fn
    fn.__doc__ = (f"{doc}.\n\n    Args:\n        x: a float Node.\n        axis: None (all), an int or a tuple.\n"
                  "        keepdims: keep reduced axes as size 1.\n        name: optional node name.\n")
    return fn


sum = _reduction("sum", "Sum over axis, as numpy.sum")
mean = _reduction("mean", "Mean over axis, as numpy.mean")
max = _reduction("max", "Max over axis, as numpy.max (ties share the gradient)")


@builds(AddN)
def add_n(xs, name=None):
    """Sum of a list of nodes in a single n-ary node (inputs broadcast)."""
    xs = list(xs)
    if not xs:
        raise ValueError("add_n needs at least one input")
    return apply(REGISTRY["add_n"], xs, name=name)
