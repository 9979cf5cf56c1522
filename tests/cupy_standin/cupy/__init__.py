"""A CuPy stand-in for CI (no GPU): NumPy arrays behind CuPy 14's rules, so graphdiff's real CupyBackend runs
on it unchanged and fails wherever it would fail on a GPU. Selected by putting tests/cupy_standin first on
PYTHONPATH (tests/conftest.py does it when GRAPHDIFF_CUPY_STANDIN=1). Test-only; never installed.

What it keeps from CuPy (checked against CuPy v14.2.0's cupy/_core/core.pyx, _kernel.pyx, _scalar.pyx):
- `ndarray` has no `__array_namespace__`; `__array__` raises CuPy's TypeError, so `np.asarray(x)` fails;
- ufuncs and operators refuse NumPy arrays ("Unsupported type"), except 0-d ones next to an operator;
  Python and NumPy scalars are fine; NumPy ufuncs and functions on device arrays dispatch here;
- reductions return 0-d device arrays, never host scalars; `take` wraps out-of-range indices silently;
- `fuse` is CuPy's old fusion, refusing what it refuses (see _fusion.py);
- `.get()`, `asnumpy`, `bool()`, `float()`, `int()`, `.item()`, `.tolist()`, repr and format read the device
  back: each is counted in `standin.syncs` (host -> device copies in `standin.to_device`, and device work,
  the elements of every array an operation produces, in `standin.elements`).
Only what graphdiff, its tests and benchmarks/gpu_check.sh call is here, under CuPy's names and signatures.
"""
import builtins as _builtins
import traceback as _traceback

import numpy as _np
from numpy import bool_, dtype, float32, float64, int32, int64, inf, nan, newaxis  # noqa: F401  (as CuPy)

from . import _fusion, cuda  # noqa: F401
from ._fusion import fuse  # noqa: F401

__version__ = "14.2.0+standin"
bool = _np.bool  # noqa: A001  (CuPy >= 14 with NumPy 2 exports `bool`)

_MESSAGE = ("Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly.")


class _Counters:
    """Device -> host reads (syncs), host -> device copies, elements produced on the device (a measure of
    device work); `trace = True` also keeps where each sync happened."""

    def __init__(self):
        self.trace = False
        self.reset()

    def reset(self):
        self.syncs = 0
        self.to_device = 0
        self.elements = 0
        self.where = []

    def sync(self):
        cuda.check_host_read("a device -> host read")
        self.syncs += 1
        if self.trace:
            self.where.append("".join(_traceback.format_stack(limit=8)[:-2]))


standin = _Counters()


class ndarray:
    """A device array: a NumPy array the host may only read through .get() / asnumpy (counted)."""

    __slots__ = ("_a",)
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, order="C"):
        self._a = _result(lambda: _np.empty(shape, dtype=dtype, order=order))._a

    # --- what CuPy refuses -----------------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_MESSAGE)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__":
            return NotImplemented
        fn = globals().get(ufunc.__name__)
        return fn(*inputs, **kwargs) if fn is not None else NotImplemented

    def __array_function__(self, func, types, args, kwargs):
        fn = globals().get(func.__name__)
        return fn(*args, **kwargs) if callable(fn) else NotImplemented

    # --- explicit reads of device data (each one a sync) -------------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True):
        standin.sync()
        return _np.array(self._a, order=order)

    def item(self):
        standin.sync()
        return self._a.item()

    def tolist(self):
        standin.sync()
        return self._a.tolist()

    def __bool__(self):
        standin.sync()
        return _builtins.bool(self._a)

    def __float__(self):
        return float(self.get())

    def __int__(self):
        return int(self.get())

    def __complex__(self):
        return complex(self.get())

    def __index__(self):
        return self.get().__index__()

    def __repr__(self):
        return repr(self.get())

    def __str__(self):
        return str(self.get())

    def __format__(self, spec):
        return format(self.get(), spec)

    def __reduce__(self):
        return array, (self.get(),)

    # --- attributes and methods (no sync) ---------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    flags = property(lambda self: self._a.flags)

    @property
    def data(self):
        """CuPy's MemoryPointer of the array's memory: .ptr is its address (here the host address of the
        NumPy buffer that models it, registered as device memory, so that cuda.nccl can find the array)."""
        return cuda.MemoryPointer(self)
    T = property(lambda self: _result(lambda: self._a.T))

    @property
    def mT(self):
        if self.ndim < 2:
            raise ValueError("matrix transpose with ndim < 2 is undefined")
        return _result(lambda: _np.swapaxes(self._a, -1, -2))

    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def __getitem__(self, idx):
        idx = _index(idx)
        return _result(lambda: self._a[idx])

    def __setitem__(self, idx, value):
        idx, value = _index(idx), _host_in(value)

        def work():
            self._a[idx] = value
        _mutate(work)

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        return _result(lambda: self._a.astype(dtype, order=order, copy=copy))

    def reshape(self, *shape, order="C"):
        return _result(lambda: self._a.reshape(*shape, order=order))

    def transpose(self, *axes):
        return _result(lambda: self._a.transpose(*axes))

    def copy(self, order="C"):
        return _result(lambda: self._a.copy(order=order))

    def ravel(self, order="C"):
        return _result(lambda: self._a.ravel(order=order))

    def fill(self, value):
        value = _operand(value)
        _mutate(lambda: self._a.fill(value))

    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        return sum(self, axis=axis, dtype=dtype, keepdims=keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        return mean(self, axis=axis, dtype=dtype, keepdims=keepdims)

    def max(self, axis=None, out=None, keepdims=False):
        return max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, out=None, keepdims=False):
        return min(self, axis=axis, keepdims=keepdims)

    def argmax(self, axis=None, out=None, keepdims=False):
        return argmax(self, axis=axis, keepdims=keepdims)

    def take(self, indices, axis=None, out=None):
        return take(self, indices, axis)


def _wrap(a):
    """A device array holding the NumPy result a, computed now: never while the current stream captures (work
    there goes through _result / _results / _mutate, which record it)."""
    if cuda.recording() is not None:
        raise AssertionError("CuPy stand-in: this device work is not modelled under stream capture; route it "
                             "through _result, _results or _mutate")
    return _new(a)


def _new(a):
    out = ndarray.__new__(ndarray)
    out._a = _np.asarray(a)           # reductions give NumPy scalars; CuPy gives 0-d device arrays
    standin.elements += out._a.size
    return out


_GARBAGE = {"f": _np.nan, "c": _np.nan, "b": False}


def _result(compute):
    """The device array compute() gives (NumPy work on the operands' current data). While the current stream
    captures, the work is recorded instead: the array holds garbage until the graph is launched, and each
    launch computes it again into the same array (a view stays a view of the same memory)."""
    if cuda.recording() is None:
        return _wrap(compute())
    return _results(lambda: (compute(),))[0]


def _results(compute, like=None):
    """_result for work with several outputs: compute() gives a tuple of NumPy results. like: their (shape,
    dtype) when known, for work that must not run at capture (it writes its arguments in place): the
    outputs are then made from it, and compute() runs only at each launch."""
    work = cuda.recording()
    if work is None:
        return [_wrap(r) for r in compute()]
    if like is not None:
        outs = [_new(_np.empty(shape, dtype=dtype)) for shape, dtype in like]
    else:
        with _np.errstate(all="ignore"):
            outs = [_new(r) for r in compute()]
    for out in outs:
        if out._a.flags.owndata:              # not a view of an existing array: not written until launch
            out._a.fill(_GARBAGE.get(out._a.dtype.kind, 0))

    def replay():
        with _np.errstate(all="ignore"):
            for out, r in zip(outs, compute()):
                _np.copyto(out._a, r, casting="unsafe")
    work.append(replay)
    return outs


def _mutate(work_fn):
    """An in-place update of device arrays: done now, or, while the current stream captures, recorded and
    done at each launch only."""
    work = cuda.recording()
    if work is None:
        work_fn()
    else:
        work.append(work_fn)


def _operand(x, op_scalar_ok=False):
    """A ufunc operand: device arrays and Python / NumPy scalars; NumPy arrays are refused as by CuPy's
    kernel argument check (an operator lets a 0-d NumPy array through as a scalar)."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _np.ndarray):
        if op_scalar_ok and x.ndim == 0:
            return x[()]
        raise TypeError(f"Unsupported type {type(x)}")
    if isinstance(x, (_builtins.bool, int, float, complex, _np.generic)):
        return x
    raise TypeError(f"Unsupported type {type(x)}")


def _index(idx):
    """Indices: device arrays as they are; NumPy arrays and lists are copied to the device (as CuPy does)."""
    parts = idx if isinstance(idx, tuple) else (idx,)
    out = []
    for k in parts:
        if isinstance(k, ndarray):
            k = k._a
        elif isinstance(k, (_np.ndarray, list)):
            cuda.check_host_copy("indexing with a host array")
            standin.to_device += 1
            k = _np.asarray(k)
        out.append(k)
    return tuple(out) if isinstance(idx, tuple) else out[0]


def _host_in(value):
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, (_np.ndarray, list)):
        cuda.check_host_copy("assigning a host array")
        standin.to_device += 1
    return value


# --- operators ----------------------------------------------------------------------------------
def _binary(ufunc, reflected=False):
    def op(self, other):
        if getattr(other, "__array_ufunc__", 0) is None:     # e.g. graphdiff Nodes: let them handle it
            return NotImplemented
        a, b = self._a, _operand(other, op_scalar_ok=True)
        return _result(lambda: ufunc(b, a) if reflected else ufunc(a, b))
    return op


for _name, _uf in [("add", _np.add), ("sub", _np.subtract), ("mul", _np.multiply), ("truediv", _np.divide),
                   ("floordiv", _np.floor_divide), ("mod", _np.remainder), ("pow", _np.power),
                   ("matmul", _np.matmul), ("and", _np.bitwise_and),
                   ("or", _np.bitwise_or), ("xor", _np.bitwise_xor)]:
    setattr(ndarray, f"__{_name}__", _binary(_uf))
    setattr(ndarray, f"__r{_name}__", _binary(_uf, reflected=True))
for _name, _uf in [("lt", _np.less), ("le", _np.less_equal), ("eq", _np.equal), ("ne", _np.not_equal),
                   ("gt", _np.greater), ("ge", _np.greater_equal)]:
    setattr(ndarray, f"__{_name}__", _binary(_uf))
for _name, _uf in [("iadd", _np.add), ("isub", _np.subtract), ("imul", _np.multiply), ("itruediv", _np.divide)]:
    def _inplace(self, other, _uf=_uf):
        b = _operand(other, op_scalar_ok=True)
        _mutate(lambda: _uf(self._a, b, out=self._a))
        return self
    setattr(ndarray, f"__{_name}__", _inplace)
ndarray.__neg__ = lambda self: _result(lambda: -self._a)
ndarray.__pos__ = lambda self: self
ndarray.__abs__ = lambda self: _result(lambda: _np.abs(self._a))
ndarray.__invert__ = lambda self: _result(lambda: ~self._a)


# --- functions: CuPy 14's names, NumPy's work, device arrays in and out ----------------------------------
def _elementwise(name):
    fn = getattr(_np, name)

    def kernel(*args, **kwargs):
        if _fusion.tracing():                 # inside cupy.fuse: recorded, not run (_kernel.pyx:1261)
            return _fusion.call_ufunc(name, fn, args, kwargs)
        out = kwargs.pop("out", None)
        xs = [_operand(a) for a in args]
        if out is None:
            return _result(lambda: fn(*xs, **kwargs))
        if not isinstance(out, ndarray):      # CuPy's ufuncs write into a device array only
            raise TypeError(f"Output arrays must be cupy.ndarray, got {type(out)}")
        _mutate(lambda: fn(*xs, out=out._a, **kwargs))
        standin.elements += out._a.size
        return out                            # as CuPy: the out array itself
    kernel.__name__ = name
    return kernel


def _routine(name, fn=None):
    fn = fn or getattr(_np, name)

    def routine(*args, **kwargs):
        if _fusion.tracing() and (name in _fusion._REDUCTIONS or _builtins.any(
                isinstance(a, _fusion._Var) for a in list(args) + list(kwargs.values()))):
            return _fusion.call_routine(name, args, kwargs)
        args = [[_device(x) for x in a] if isinstance(a, (list, tuple)) and name in ("concat", "concatenate",
                                                                                    "stack") else _device(a)
                for a in args]
        kw = {k: _device(v) for k, v in kwargs.items()}
        if cuda.recording() is None:
            out = fn(*args, **kw)
            return _wrap(out) if isinstance(out, (_np.ndarray, _np.generic)) else out
        return _result(lambda: fn(*args, **kw))
    routine.__name__ = name
    return routine


def _device(x):
    """An argument that must be a device array (NumPy arrays refused); other arguments pass through."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}")
    return x


for _name in ("abs", "absolute", "add", "subtract", "multiply", "divide", "true_divide", "power", "negative",
              "exp", "log", "log1p", "sqrt", "tanh", "cos", "sin", "sign", "equal", "not_equal", "greater",
              "greater_equal", "less", "less_equal", "logical_and", "logical_or", "logical_not", "maximum",
              "minimum", "isfinite", "isnan", "isinf", "where", "matmul", "floor_divide", "remainder",
              "bitwise_and", "bitwise_or", "bitwise_xor", "square", "invert"):
    globals()[_name] = _elementwise(_name)
for _name in ("all", "any", "argmax", "argmin", "broadcast_to", "concatenate", "expand_dims", "max", "mean",
              "min", "reshape", "squeeze", "stack", "sum", "prod", "transpose", "swapaxes", "zeros_like",
              "ones_like", "full_like", "empty_like", "matrix_transpose", "astype", "sort", "cumsum", "clip"):
    globals()[_name] = _routine(_name)
concat = _routine("concat", _np.concatenate)
permute_dims = _routine("permute_dims", _np.transpose)
for _name in ("zeros", "ones", "empty", "full", "arange", "linspace", "eye"):
    globals()[_name] = _routine(_name)


def take(a, indices, axis=None, out=None):
    """As CuPy: out-of-range indices wrap around (no error; check ids before they reach the device)."""
    a, indices = _device(a), _index(indices)
    return _result(lambda: _np.take(a, indices, axis=axis, mode="wrap"))


def asarray(a, dtype=None, order=None, *, blocking=False):
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    cuda.check_host_copy("cupy.asarray of host data")
    standin.to_device += 1
    return _wrap(_np.array(a, dtype=dtype, order=order or "K"))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray):
        src = obj._a
        return _result(lambda: _np.array(src, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    cuda.check_host_copy("cupy.array of host data")
    standin.to_device += 1
    return _wrap(_np.array(obj, dtype=dtype, order=order, ndmin=ndmin))


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, ndarray):
        return a.get(order=order)
    return _np.asarray(a, order=order)


def get_array_module(*args):
    return __import__(__name__) if any(isinstance(a, ndarray) for a in args) else _np
