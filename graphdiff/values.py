"""Value intake: what enters a graph from outside (feeds, assigned param values, backward seeds, the data of
params and constants), checked against the node it is for and copied onto the graph's backend, and the
dtype names and shapes users give when they build nodes.

A value that is taken is owned: a copy (or a move to the device), so later changes to the caller's array
cannot reach graph state. Anything wrong is a typed error (ShapeError, DTypeError) naming the node and
saying what to pass instead. Nodes are read by their public attributes only (name, kind, shape, dtype,
attrs); building them is graph.py's business.
"""
import operator

import numpy as np

from . import backend as _backend
from .backend import DTYPES
from .errors import DTypeError, ShapeError

_SHORT = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64", "bool": "bool"}


def describe(shape, dtype):
    """'f32[4,8]': the compact shape text used in messages and diagrams."""
    return f"{_SHORT.get(dtype, dtype)}[{','.join(str(n) for n in shape)}]"


def dtype_name(dtype):
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise DTypeError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    return name


def as_ints(values, what):
    """values (an int or a sequence of ints) as a tuple of Python ints. Like NumPy, 2.5 or 2.0 or "3" is
    an error, not a truncation: ShapeError naming `what` ("reshape 'x': shape")."""
    if isinstance(values, (int, np.integer)):
        values = (values,)
    try:
        return tuple(operator.index(n) for n in values)
    except TypeError:
        raise ShapeError(f"{what} must be a tuple of ints, got {values!r}") from None


def check_shape(shape, name):
    """The shape given for node `name` as a tuple of non-negative ints (ShapeError otherwise)."""
    shape = as_ints(shape, f"'{name}': shape")
    if any(n < 0 for n in shape):
        raise ShapeError(f"'{name}': shape {shape} has a negative size")
    return shape


KINDS = {"U": "text", "S": "bytes", "O": "Python objects", "c": "complex numbers", "M": "datetimes",
         "m": "timedeltas", "V": "structured records"}


def host_array(value, what):
    """value as a NumPy array of numbers or bools, or a typed error naming `what` (the node it is for)."""
    try:
        host = _backend.to_numpy(value)
    except ValueError:                        # nested lists of different lengths
        raise ShapeError(f"{what}: the data is ragged (nested lists of different lengths); every row must "
                         "have the same length, "
                         "so pad them (graphdiff.lm.data.make_batch pads token ids)") from None
    if host.dtype.kind not in "biuf":
        raise DTypeError(f"{what}: got {host.dtype} data ({KINDS.get(host.dtype.kind, host.dtype.kind)}); "
                         "feed real numbers or bools as a NumPy array, e.g. np.asarray(x, dtype=np.float32)")
    return host


def check_int_range(host, dtype, what):
    """DTypeError when an integer of host does not fit dtype (a cast would wrap it: 2**31 -> -2**31)."""
    info = np.iinfo(dtype)
    if host.size == 0:
        return
    bad = (host < info.min) | (host > info.max)
    if bad.any():
        pos = tuple(int(k) for k in np.argwhere(bad)[0])
        raise DTypeError(f"{what} holds {dtype}, got {host.dtype} data with {int(host[pos])} at position {pos}, "
                         f"outside [{info.min}, {info.max}]; build the input with dtype='int64' or pass values "
                         f"that fit {dtype}")


def leading_size(value, node):
    """The leading size of a feed for an input with a None axis (as_value checks the rest of the shape)."""
    shape = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
    if len(shape) != len(node.shape):
        raise ShapeError(f"input '{node.name}' expects shape {(None,) + node.shape[1:]} "
                         f"({len(node.shape)} axes), got an array of shape {shape}")
    return int(shape[0])


def as_value(B, node, value, what=None):
    """A copy of a feed or assigned value (or a backward seed) on backend B, checked against the node's shape
    and dtype (the copy means later changes to the caller's array cannot reach graph state), and by the
    node's host checks (ids in range, asked for by the ops using them). what: how messages name the value
    (default: the node)."""
    what = what or f"{node.kind} '{node.name}'"
    on_device = not isinstance(value, (np.ndarray, np.generic)) and B.owns(value)
    if on_device:
        try:
            shape, kind = tuple(value.shape), np.dtype(B.dtype_name(value)).kind
        except TypeError as e:
            raise DTypeError(f"{what}: {e}") from None
    else:                                 # NumPy data, lists, numbers, or another backend's array
        value = host_array(value, what)
        shape, kind = value.shape, value.dtype.kind
    if shape != node.shape:
        raise ShapeError(f"{what} expects shape {node.shape} ({describe(node.shape, node.dtype)}), got "
                         f"an array of shape {shape}; reshape the data or build the graph for this shape")
    accepts = {"f": "biuf", "b": "b"}.get(np.dtype(node.dtype).kind, "iu")
    if kind not in accepts:
        fix = "; pass integer ids (np.asarray(ids, dtype=np.int64))" if accepts == "iu" else ""
        held = "is a bool mask" if node.dtype == "bool" else f"holds {node.dtype}"
        got = B.dtype_name(value) if on_device else value.dtype.name
        raise DTypeError(f"{what} {held}, got {got} data{fix}")
    if accepts == "iu":
        got = np.dtype(B.dtype_name(value) if on_device else value.dtype)
        if not np.can_cast(got, node.dtype):          # a narrowing cast would wrap: check the values
            check_int_range(B.to_numpy(value) if on_device else value, node.dtype, what)
    for check in node.attrs.get("host_checks", ()):   # e.g. ids in range, asked for by the ops using them
        check(B.to_numpy(value) if on_device else value)
    if on_device:
        return B.astype(value, B.dtypes[node.dtype]) if B.dtype_name(value) != node.dtype else B.copy(value)
    return B.from_host(value, node.dtype)
