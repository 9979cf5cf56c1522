"""Ops that move elements around: reshape, transpose, broadcast_to, concat, stack, getitem, and matmul."""
import numpy as np

from .registry import REGISTRY, apply, broadcast_shapes, builds, norm_axis, op
from ..backend import canonical_index
from ..errors import ShapeError
from ..graph import Node, describe
from ..values import as_ints

__all__ = ["reshape", "transpose", "matrix_transpose", "broadcast_to", "expand_dims", "concat", "stack",
           "getitem", "index_add", "matmul"]


def _same_dtype(dtype, **attrs):
    """Moving elements around keeps their dtype (ids stay ints: reshaping them is no cast)."""
    return dtype


# --- reshape / transpose / broadcast ----------------------------------------------------------------
def _reshape_shape(shape, newshape):
    """newshape with its -1 (if any) resolved for an input of `shape`: kept as -1 in the node, so a reshape
    of a batch axis follows the batch size fed (Graph.resize)."""
    size = int(np.prod(shape, dtype=np.int64))
    if -1 in newshape:
        rest = int(np.prod([n for n in newshape if n != -1], dtype=np.int64))
        if rest == 0 or size % rest:
            raise ShapeError(f"cannot infer -1 in {newshape} for {size} elements (input shape {shape})")
        newshape = tuple(size // rest if n == -1 else n for n in newshape)
    if int(np.prod(newshape, dtype=np.int64)) != size:
        raise ShapeError(f"input shape {shape} has {size} elements, shape {newshape} has "
                         f"{int(np.prod(newshape, dtype=np.int64))}; sizes must match")
    return newshape


@op("reshape", slots="any")
class Reshape:
    """x with a new shape of the same size"""
    shape = _reshape_shape
    saves = ()
    dtype = _same_dtype

    def forward(F, x, newshape):
        return F.reshape(x, newshape)

    def vjp(F, i, g, xs, out, newshape):
        return F.reshape(g, xs[0].shape)


def _transpose_shape(shape, axes):
    return tuple(shape[a] for a in axes)


@op("transpose", slots="any")
class Transpose:
    """x with its axes permuted"""
    shape = _transpose_shape
    saves = ()
    dtype = _same_dtype

    def forward(F, x, axes):
        return F.transpose(x, axes)

    def vjp(F, i, g, xs, out, axes):                # the inverse permutation (no NumPy call: ~8x cheaper)
        return F.transpose(g, tuple(sorted(range(len(axes)), key=axes.__getitem__)))


def _broadcast_shape(shape, newshape):
    lead = len(newshape) - len(shape)
    if lead < 0 or any(n != 1 and n != m for n, m in zip(shape, newshape[lead:])):
        raise ShapeError(f"cannot broadcast {shape} to {newshape}; each axis must be equal or 1")
    return newshape


@op("broadcast_to", slots="any")
class BroadcastTo:
    """x repeated along size-1 and new leading axes"""
    shape = _broadcast_shape
    saves = ()
    dtype = _same_dtype

    def forward(F, x, newshape):
        return F.broadcast_to(x, newshape)

    def vjp(F, i, g, xs, out, newshape):
        return F.unbroadcast(g, xs[0].shape)


# --- concat / stack -----------------------------------------------------------------------------------
def _concat_shape(*shapes, axis):
    first = shapes[0]
    if not first:
        raise ShapeError("cannot concatenate 0-d inputs; use stack")
    ax = norm_axis(axis, len(first))[0]
    for s in shapes[1:]:
        if len(s) != len(first) or any(n != m for k, (n, m) in enumerate(zip(s, first)) if k != ax):
            raise ShapeError(f"shapes {', '.join(str(t) for t in shapes)} differ outside axis {axis}; "
                             "all axes but the concatenated one must match")
    return first[:ax] + (sum(s[ax] for s in shapes),) + first[ax + 1:]


@op("concat", arity=None)
class Concat:
    """inputs joined along an existing axis"""
    shape = _concat_shape
    saves = ()

    def forward(F, *xs, axis):
        return F.concat(xs, axis=axis)

    def vjp(F, i, g, xs, out, axis):
        ax = norm_axis(axis, len(out.shape))[0]
        start = 0
        for x in xs[:i]:
            start += x.shape[ax]
        idx = [slice(None)] * len(out.shape)
        idx[ax] = slice(start, start + xs[i].shape[ax])
        return F.getitem(g, tuple(idx))


def _stack_shape(*shapes, axis):
    if any(s != shapes[0] for s in shapes):
        raise ShapeError(f"stack needs equal shapes, got {', '.join(str(s) for s in shapes)}")
    ax = norm_axis(axis, len(shapes[0]) + 1)[0]
    return shapes[0][:ax] + (len(shapes),) + shapes[0][ax:]


@op("stack", arity=None)
class Stack:
    """inputs joined along a new axis"""
    shape = _stack_shape
    saves = ()

    def forward(F, *xs, axis):
        return F.stack(xs, axis=axis)

    def vjp(F, i, g, xs, out, axis):
        ax = norm_axis(axis, len(out.shape))[0]
        return F.getitem(g, (slice(None),) * ax + (i,) + (slice(None),) * (len(out.shape) - ax - 1))


# --- indexing -------------------------------------------------------------------------------------------
def _index_shape(shape, idx):
    try:
        return np.broadcast_to(np.empty((), dtype=np.bool_), shape)[idx].shape
    except IndexError as e:
        raise ShapeError(f"index {_show_index(idx)} does not fit shape {shape}: {e}") from None


def _show_index(idx):
    parts = []
    for k in idx:
        if isinstance(k, slice):
            parts.append(":".join("" if v is None else str(v) for v in (k.start, k.stop, k.step)).rstrip(":")
                         or ":")
        elif k is Ellipsis:
            parts.append("...")
        elif isinstance(k, np.ndarray):
            parts.append(f"int[{','.join(map(str, k.shape))}]")
        else:
            parts.append(str(k))
    return "[" + ", ".join(parts) + "]"


@op("getitem", slots="any")
class GetItem:
    """x[idx] with ints, slices, None, ... and integer arrays (NumPy semantics)"""
    shape = _index_shape
    saves = ()
    dtype = _same_dtype

    def forward(F, x, idx):
        return F.getitem(x, idx)

    def vjp(F, i, g, xs, out, idx):            # repeated integer indices add up
        return F.index_add(xs[0].shape, idx, g)


def _index_add_shape(g_shape, shape, idx):
    want = _index_shape(shape, idx)
    if tuple(g_shape) != tuple(want):
        raise ShapeError(f"values of shape {g_shape} do not fit x{_show_index(idx)} of shape {want}")
    return shape


@op("index_add")
class IndexAdd:
    """zeros(shape) with g added at [idx]: the adjoint of getitem"""
    shape = _index_add_shape
    saves = ()

    def forward(F, g, shape, idx):
        return F.index_add(shape, idx, g)

    def vjp(F, i, g, xs, out, shape, idx):
        return F.getitem(g, idx)


# --- matmul ------------------------------------------------------------------------------------------------
def _matmul_shape(a, b):
    if not a or not b:
        raise ShapeError("matmul needs inputs with at least one axis; use multiply for scalars")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ShapeError(f"a{a} @ b{b}: inner dims differ ({a2[-1]} != {b2[-2]}); "
                         f"b needs shape ({a2[-1]}, ...) or a needs (..., {b2[-2]})")
    try:
        batch = broadcast_shapes(a2[:-2], b2[:-2]) if (a2[:-2] or b2[:-2]) else ()
    except ShapeError:
        raise ShapeError(f"a{a} @ b{b}: batch axes {a2[:-2]} and {b2[:-2]} do not broadcast; each must be "
                         "equal or 1 (reshape one, e.g. add a size-1 axis)") from None
    return batch + a2[-2:-1] * (len(a) > 1) + b2[-1:] * (len(b) > 1)


@op("matmul", arity=2)
class Matmul:
    """a @ b (NumPy semantics: 1-d operands, broadcast batch axes)"""
    shape = _matmul_shape
    saves = {0: (1,), 1: (0,)}

    def forward(F, a, b):
        if len(b.shape) == 2 and len(a.shape) > 2:   # (..., k) @ (k, m): one 2-d GEMM, not a batched loop
            return F.reshape(F.matmul(F.reshape(a, (-1, a.shape[-1])), b), tuple(a.shape[:-1]) + b.shape[-1:])
        return F.matmul(a, b)

    def vjp(F, i, g, xs, out):                    # dA = dC B^T, dB = A^T dC (on the 2-d view)
        a, b = xs
        if len(b.shape) == 2 and len(a.shape) > 2:   # fold the batch axes into rows: dB = A2^T dC2
            k, m = b.shape
            if i == 0:                             # dA = dC B^T as one 2-d GEMM too
                return F.reshape(F.matmul(F.reshape(g, (-1, m)), F.matrix_transpose(b)), a.shape)
            return F.matmul(F.matrix_transpose(F.reshape(a, (-1, k))), F.reshape(g, (-1, m)))
        # a 1-d operand as a matrix: (k,) @ ... as (1, k), ... @ (k,) as (k, 1); only the operand this slot
        # reads is reshaped (the other may be a shape-only stand-in: forward_backward releases it)
        sa = (1,) + tuple(a.shape) if len(a.shape) == 1 else tuple(a.shape)
        sb = tuple(b.shape) + (1,) if len(b.shape) == 1 else tuple(b.shape)
        if len(a.shape) == 1 or len(b.shape) == 1:
            g = F.reshape(g, tuple(g.shape[:len(g.shape) - (len(a.shape) > 1) - (len(b.shape) > 1)])
                          + sa[-2:-1] + sb[-1:])
        if i == 0:
            b2 = F.reshape(b, sb) if len(b.shape) == 1 else b
            return F.reshape(F.unbroadcast(F.matmul(g, F.matrix_transpose(b2)), sa), a.shape)
        a2 = F.reshape(a, sa) if len(a.shape) == 1 else a
        return F.reshape(F.unbroadcast(F.matmul(F.matrix_transpose(a2), g), sb), b.shape)


# --- public functions ----------------------------------------------------------------------------------------
@builds(Reshape)
def reshape(x, shape, name=None):
    """x with a new shape; one entry may be -1. Args: x: a Node; shape: a tuple of ints."""
    shape = as_ints(shape, f"reshape '{x.name}': shape")
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape '{x.name}': only one -1 allowed in {shape}")
    try:
        resolved = _reshape_shape(x.shape, shape)
    except ShapeError as e:
        raise ShapeError(f"reshape '{x.name}': {e}") from None
    if resolved == x.shape and not x.graph.batch_inputs():   # on a batch axis, (1, 3) is not x for every batch
        return x
    return apply(REGISTRY["reshape"], (x,), {"newshape": shape}, name)


@builds(Transpose)
def transpose(x, axes=None, name=None):
    """x with axes permuted (reversed when axes is None, as x.T)."""
    nd = len(x.shape)
    given = tuple(range(nd))[::-1] if axes is None else as_ints(axes, f"transpose '{x.name}': axes")
    axes = tuple(a % nd if -nd <= a < nd else a for a in given)
    if sorted(axes) != list(range(nd)):
        raise ShapeError(f"transpose '{x.name}': axes {given} are not a permutation of the axes of shape "
                         f"{x.shape}; give each of {tuple(range(nd))} once (negative counts from the end)")
    if axes == tuple(range(nd)):
        return x
    return apply(REGISTRY["transpose"], (x,), {"axes": axes}, name)


def matrix_transpose(x, name=None):
    """Swap the last two axes (x.mT)."""
    nd = len(x.shape)
    if nd < 2:
        raise ShapeError(f"matrix_transpose '{x.name}': needs at least 2 axes, got shape {x.shape}")
    return transpose(x, tuple(range(nd - 2)) + (nd - 1, nd - 2), name)


@builds(BroadcastTo)
def broadcast_to(x, shape, name=None):
    """x broadcast to shape."""
    shape = as_ints(shape, f"broadcast_to '{x.name}': shape")
    if shape == x.shape and not x.graph.batch_inputs():
        return x
    return apply(REGISTRY["broadcast_to"], (x,), {"newshape": shape}, name)


def expand_dims(x, axis, name=None):
    """x with a new size-1 axis at `axis`."""
    nd = len(x.shape) + 1
    if not -nd <= axis < nd:
        raise ShapeError(f"expand_dims '{x.name}': axis {axis} out of range for result with {nd} axes")
    ax = axis % nd
    if x.graph.batch_inputs():                # sizes would fix a batch axis: x[:, None] follows it
        return getitem(x, (slice(None),) * ax + (None,), name)
    return reshape(x, x.shape[:ax] + (1,) + x.shape[ax:], name)


@builds(Concat)
def concat(xs, axis=0, name=None):
    """Join nodes along an existing axis. Args: xs: a list of Nodes; axis: int."""
    xs = list(xs)
    if not xs:
        raise ValueError("concat needs at least one input")
    return apply(REGISTRY["concat"], xs, {"axis": as_ints(axis, "concat: axis")[0]}, name)


@builds(Stack)
def stack(xs, axis=0, name=None):
    """Join equal-shaped nodes along a new axis. Args: xs: a list of Nodes; axis: int."""
    xs = list(xs)
    if not xs:
        raise ValueError("stack needs at least one input")
    return apply(REGISTRY["stack"], xs, {"axis": as_ints(axis, "stack: axis")[0]}, name)


def normalize_index(idx):
    """Return idx as a tuple of ints, slices, None, Ellipsis and int NumPy arrays (one Ellipsis at most)."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    out = []
    for k in idx:
        if isinstance(k, (bool, np.bool_)):
            raise TypeError(f"boolean scalar index {k!r} is not supported; use gd.where for masking")
        if isinstance(k, (int, np.integer)):
            out.append(int(k))
        elif k is None or k is Ellipsis or isinstance(k, slice):
            out.append(k)
        elif isinstance(k, (list, np.ndarray)):
            a = np.asarray(k)
            if isinstance(k, list) and a.size == 0:
                a = a.astype(np.int64)          # x[[]]: NumPy reads an empty list as an empty int index
            if a.dtype == np.bool_:
                raise TypeError("boolean-mask indexing gives a data-dependent shape; use gd.where instead")
            if not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"index arrays must hold integers, got dtype {a.dtype}")
            out.append(a.astype(np.int64))
        else:
            raise TypeError(f"unsupported index {k!r} of type {type(k).__name__}; "
                            "use ints, slices, None, ... or integer NumPy arrays")
    if sum(k is Ellipsis for k in out) > 1:
        raise TypeError("an index can only have a single ellipsis ('...')")
    return tuple(out)


@builds(GetItem)
def getitem(x, idx, name=None):
    """x[idx]: ints, slices, None, ... and integer arrays (NumPy semantics, repeated indices add grads)."""
    raw = idx if isinstance(idx, tuple) else (idx,)
    if any(isinstance(k, Node) for k in raw):
        raise TypeError(f"getitem '{x.name}': indexing with a Node is not supported; "
                        "use gd.embedding(table, ids) to gather rows by integer ids")
    try:
        idx = canonical_index(normalize_index(idx), x.shape, clamp=False)   # slices follow a batch axis
    except TypeError as e:
        raise TypeError(f"getitem '{x.name}': {e}") from None
    except ValueError as e:                   # x[::0]
        raise ShapeError(f"getitem '{x.name}' {describe(x.shape, x.dtype)}: {e}; use a non-zero step") from None
    return apply(REGISTRY["getitem"], (x,), {"idx": idx}, name)


@builds(IndexAdd)
def index_add(g, shape, idx, name=None):
    """zeros(shape) with g added at [idx] (the adjoint of getitem)."""
    shape = as_ints(shape, f"index_add '{g.name}': shape")
    idx = canonical_index(normalize_index(idx), shape)
    return apply(REGISTRY["index_add"], (g,), {"shape": shape, "idx": idx}, name)


@builds(Matmul)
def matmul(a, b, name=None):
    """a @ b with NumPy semantics. Args: a (..., n, k), b (..., k, m); 1-d operands allowed."""
    return apply(REGISTRY["matmul"], (a, b), name=name)
