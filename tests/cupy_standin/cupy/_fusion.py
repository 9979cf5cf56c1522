"""cupy.fuse of the CuPy stand-in: CuPy 14's old fusion, refusing what it refuses.

Real `cupy.fuse(f)(*args)` (cupy/_core/fusion.pyx, v14.2.0) traces f once per key (each argument's dtype and
ndim, fusion.pyx:833-860) with proxy objects, records each ufunc call, and compiles the record into one
ElementwiseKernel. If that trace raises anything, it retries silently with new_fusion, another code generator
(fusion.pyx:866-872, `except Exception: self.new_fusion = ...`), which needs CUDA grid synchronisation for
some patterns. graphdiff's kernels must stay on the old path, so this stand-in models the old fusion only:

- it traces f with `_Var` proxies that allow what the old fusion's proxies allow (operators, cupy ufuncs,
  cupyx.scipy.special.erf, cupy.where, .dtype, .ndim, .astype, .copy, Python and NumPy scalars) and raises
  where both paths raise, with the error the real call ends with (the new fusion's, after the retry):
  bool()/float()/int() of a traced value, `.shape`, NumPy functions, concrete arrays inside f, reductions
  with keepdims, unknown kwargs, bad argument types, a return value that is not a traced array;
- where only new_fusion would go on (proxy methods such as x.sum(), indexing, dtype=), and for reductions
  (one is old-fusion, not modelled here), it raises a NotImplementedError that says so: stricter than CuPy,
  on purpose;
- it replays the record with NumPy (NumPy 2's dtype rules are CuPy 14's: NEP 50 weak Python scalars), from
  the cached trace, as the compiled kernel does: a closure constant changed after the first call is ignored
  by both; every output gets the broadcast shape of all array arguments, as an ElementwiseKernel's.
"""
import builtins
import threading

import numpy as np

_local = threading.local()
_PY_SCALARS = (int, float, complex, builtins.bool)
_CONVERT = "Cannot convert to Python scalar in cupy.fuse"           # _fusion_interface.py:196-206
_REDUCTIONS = {"sum": "sum", "prod": "prod", "max": "amax", "min": "amin", "all": "all", "any": "any"}


def tracing():
    return getattr(_local, "trace", None) is not None


def _new_fusion_only(what):
    return NotImplementedError(
        f"{what} inside cupy.fuse: CuPy's old fusion (cupy/_core/fusion.pyx) refuses it and real CuPy would "
        "retry silently with new_fusion (fusion.pyx:866-872); the stand-in refuses it, so kernels stay on "
        "the old path")


class _Var:
    """A traced value: an argument, a constant or a ufunc's result (ndim -1 for scalars, as fusion.pyx)."""

    __slots__ = ("_id", "dtype", "ndim", "_sample")
    __array_ufunc__ = None    # NumPy ufuncs and functions refuse it (TypeError), as they refuse real proxies
    __hash__ = None

    def __init__(self, id_, sample, ndim):
        self._id, self._sample, self.ndim = id_, sample, ndim
        self.dtype = np.result_type(sample)

    def __repr__(self):
        return f"<stand-in fusion var {self.dtype} {'scalar' if self.ndim < 0 else f'{self.ndim}-dim array'}>"

    # what real proxies refuse (_fusion_interface.py:193-206; fusion.pyx:289-293 raise first, then the retry)
    @property
    def shape(self):
        raise NotImplementedError("`shape` is not supported, currently.")   # _fusion_interface.py:194

    def __bool__(self):
        raise TypeError(_CONVERT)

    __float__ = __int__ = __complex__ = __index__ = __bool__

    def __getattr__(self, name):
        if name in _REDUCTIONS:
            raise _new_fusion_only(f"the method .{name}()")     # fusion.pyx's proxies have no such method
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __getitem__(self, index):
        raise _new_fusion_only("indexing a traced value")       # fusion.pyx's proxies have no __getitem__

    def __setitem__(self, index, value):
        raise _new_fusion_only("assigning into a traced value")

    def astype(self, dtype, order=None, casting=None, subok=None, copy=True):   # fusion.pyx:302-313
        dtype = np.dtype(dtype)
        for name, value in (("order", order), ("casting", casting), ("subok", subok)):
            if value is not None:
                raise TypeError(f"{name} is not supported yet")
        if not copy and self.dtype == dtype:
            return self
        return _trace().record(lambda a: a.astype(dtype), (self,), {})

    def copy(self):
        return _trace().record(np.copy, (self,), {})


def _operator(name, reflected=False):
    def op(self, other):
        import cupy
        fn = getattr(cupy, name)
        return fn(other, self) if reflected else fn(self, other)
    return op


# fusion.pyx:186-287: these operators and no others (no __abs__, __pos__, __rpow__, __matmul__)
for _dunder, _name in [("add", "add"), ("sub", "subtract"), ("mul", "multiply"), ("truediv", "true_divide"),
                       ("floordiv", "floor_divide"), ("mod", "remainder"), ("and", "bitwise_and"),
                       ("or", "bitwise_or"), ("xor", "bitwise_xor")]:
    setattr(_Var, f"__{_dunder}__", _operator(_name))
    setattr(_Var, f"__r{_dunder}__", _operator(_name, reflected=True))
for _dunder, _name in [("pow", "power"), ("lt", "less"), ("le", "less_equal"), ("eq", "equal"),
                       ("ne", "not_equal"), ("gt", "greater"), ("ge", "greater_equal")]:
    setattr(_Var, f"__{_dunder}__", _operator(_name))
for _dunder, _name in [("iadd", "add"), ("isub", "subtract"), ("imul", "multiply"), ("itruediv", "true_divide")]:
    def _inplace(self, other, _name=_name):                     # fusion.pyx:330-364 (arrays only)
        import cupy
        if self.ndim < 0:
            return getattr(cupy, _name)(self, other)
        return getattr(cupy, _name)(self, other, self)
    setattr(_Var, f"__{_dunder}__", _inplace)
_Var.__neg__ = lambda self: __import__("cupy").negative(self)
_Var.__invert__ = lambda self: __import__("cupy").invert(self)


class _Trace:
    """The record of one trace: ops on value slots; replayed with NumPy for each call of its key."""

    def __init__(self):
        self.ops = []          # (fn, operand slots or constants, kwargs, out slot)
        self.count = 0

    def slot(self, sample, ndim):
        var = _Var(self.count, sample, ndim)
        self.count += 1
        return var

    def operand(self, x):
        if isinstance(x, _Var):
            return x
        if isinstance(x, _PY_SCALARS + (np.generic,)):
            return x                                             # a constant, kept as Python gave it
        import cupy
        if isinstance(x, (np.ndarray, cupy.ndarray)):
            raise TypeError("Concrete ndarray is not supported in fusion.")   # _fusion_trace.pyx:277
        raise TypeError(f"Unsupported type {type(x)}")           # fusion.pyx:518

    def record(self, fn, args, kwargs, out=None):
        args = [self.operand(a) for a in args]
        samples = [a._sample if isinstance(a, _Var) else a for a in args]
        with np.errstate(all="ignore"):
            sample = fn(*samples, **kwargs)                      # the result's dtype, by NumPy 2's rules
        ndims = [a.ndim for a in args if isinstance(a, _Var)]
        ndim = max(ndims) if ndims else -1
        if out is not None:
            if not isinstance(out, _Var) or out.ndim < 0:
                raise TypeError("return arrays must be of ArrayType")    # fusion.pyx:549
            if out.ndim < ndim:
                raise ValueError("non-broadcastable output operand")     # fusion.pyx:554
            if not np.can_cast(np.result_type(sample), out.dtype, "same_kind"):
                raise TypeError(f"output operand: cannot cast {np.result_type(sample)} to {out.dtype}")
            self.ops.append((fn, args, kwargs, out._id))      # in place: into an argument's array too
            return out
        var = self.slot(np.asarray(sample) if ndim >= 0 else sample, ndim)
        self.ops.append((fn, args, kwargs, var._id))
        return var

    def run(self, values, outputs, shape):
        """Replay on `values` (one per slot so far: the arguments' NumPy arrays and scalars)."""
        env = list(values) + [None] * (self.count - len(values))
        with np.errstate(all="ignore"):
            for fn, args, kwargs, out in self.ops:
                value = fn(*[env[a._id] if isinstance(a, _Var) else a for a in args], **kwargs)
                if out < len(values) and isinstance(env[out], np.ndarray):
                    np.copyto(env[out], value, casting="same_kind")     # an argument written in place
                else:
                    env[out] = value
        return [np.array(np.broadcast_to(env[v._id], shape), dtype=v.dtype) for v in outputs]


def _trace():
    return _local.trace


def call_ufunc(name, fn, args, kwargs):
    """A cupy ufunc called on traced values (fusion.pyx:520-593)."""
    kwargs = dict(kwargs)
    out = kwargs.pop("out", None)
    if "dtype" in kwargs:                                         # new_fusion takes dtype=, fusion.pyx does not
        raise _new_fusion_only(f"cupy.{name}(..., dtype=)")
    if kwargs:
        raise TypeError(f"Wrong arguments {kwargs}")              # fusion.pyx:546
    if name == "matmul":                                          # cupy.matmul is a gufunc, not a ufunc
        raise TypeError("Unsupported type: cupy.matmul is not an element-wise ufunc; cupy.fuse cannot trace it")
    nin = fn.nin if isinstance(fn, np.ufunc) else len(args)
    if len(args) > nin:
        if out is not None:
            raise ValueError("cannot specify 'out' as both a positional and keyword argument")
        args, out = args[:nin], args[nin]
    return _trace().record(fn, args, {}, out=out)


def call_routine(name, args, kwargs):
    """A cupy function that is not a ufunc, called on traced values."""
    if name in _REDUCTIONS:
        if kwargs.get("keepdims"):                                # cupy/_math/sumprod.py:30-33, _statistics/order.py
            raise NotImplementedError(f"cupy.{_REDUCTIONS[name]} does not support `keepdims` in fusion yet.")
        raise NotImplementedError(                                # stricter than CuPy, on purpose
            f"cupy.{name} inside cupy.fuse: the stand-in does not model fused reductions (CuPy's old fusion "
            "takes one, without keepdims, and sends a second, or a reduced value mixed with an unreduced array, "
            "to new_fusion: fusion.pyx:505-512, 936-941); reduce with CuPy's own functions between fused passes")
    if name == "mean":                                            # cupy.mean calls a.mean(): no such method
        raise AttributeError("'_FusionVarArray' object has no attribute 'mean'")
    raise TypeError(f"cupy.{name} takes arrays, not values traced by cupy.fuse")


def _key(args):
    """The old fusion's cache key (fusion.pyx:833-858): dtype and ndim of arrays, the type of scalars."""
    import cupy
    key = []
    for a in args:
        if isinstance(a, cupy.ndarray):
            key += [a.dtype.char, a.ndim]
        elif isinstance(a, np.generic):
            key.append(a.dtype.char)
        elif a is None:
            key.append(None)
        elif isinstance(a, float):
            key += ["d", float]
        elif isinstance(a, int):                                  # bool is an int here, as in fusion.pyx
            key += ["l", int]
        elif isinstance(a, complex):
            key += ["D", complex]
        else:                                                     # fusion.pyx:856 `assert False` (a NumPy array)
            raise TypeError(f"Unsupported input type {type(a)}.")     # new_fusion.pyx:114
    return tuple(key)


class Fusion:
    """What cupy.fuse returns (fusion.pyx:790-884)."""

    def __init__(self, func, name=None):
        self.func = func
        self.name = name or func.__name__
        self._memo = {}
        self.new_fusion = None            # real CuPy sets it when the old trace fails; the stand-in never does

    def __repr__(self):
        return f"<Fusion '{self.name}'>"

    def __call__(self, *args):            # positional only, as fusion.pyx:809
        import cupy
        if tracing():
            return self.func(*args)       # a fused function called inside another: inlined
        if not any(isinstance(a, cupy.ndarray) for a in args):
            return self.func(*args)       # no device array: plain Python on whatever was given
        acceptable = (cupy.ndarray, np.ndarray, np.generic) + _PY_SCALARS + (type(None),)
        if not all(isinstance(a, acceptable) for a in args):
            raise TypeError(f"Invalid argument type for '{self.name}': ({', '.join(repr(type(a)) for a in args)})")
        key = _key(args)
        if key not in self._memo:
            self._memo[key] = self._trace(args)
        trace, outputs, kind = self._memo[key]
        arrays = [a._a for a in args if isinstance(a, cupy.ndarray)]
        shape = np.broadcast_shapes(*[a.shape for a in arrays])
        values = [a._a if isinstance(a, cupy.ndarray) else a for a in args if a is not None]
        # under capture nothing runs (no output, no argument written in place) until each launch
        results = cupy._results(lambda: trace.run(values, outputs, shape), like=[(shape, v.dtype) for v in outputs])
        return None if kind == "none" else results[0] if kind == "single" else tuple(results)

    def _trace(self, args):
        import cupy
        trace = _Trace()
        proxies = []
        for a in args:
            if a is None:
                proxies.append(None)
            elif isinstance(a, cupy.ndarray):
                proxies.append(trace.slot(np.ones((1,) * a.ndim, dtype=a.dtype), a.ndim))
            else:
                proxies.append(trace.slot(type(a)(1), -1))       # weak for Python scalars, as fusion.pyx:660
        _local.trace = trace
        try:
            result = self.func(*proxies)
        finally:
            _local.trace = None
        if result is None:
            return trace, [], "none"
        outputs = result if isinstance(result, tuple) else (result,)
        if not all(isinstance(v, _Var) for v in outputs):
            raise ValueError("The return value of fused functions must be `None`, ndarray or a tuple of "
                             "ndarays.")                          # _fusion_trace.pyx:563
        return trace, list(outputs), "tuple" if isinstance(result, tuple) else "single"

    def clear_cache(self):
        self._memo = {}


def fuse(*args, **kwargs):
    """cupy.fuse: @fuse, @fuse() or @fuse(kernel_name=...)."""
    import functools

    def wrapper(f, kernel_name=None):
        return Fusion(f, kernel_name)

    if len(args) == 1 and not kwargs and callable(args[0]):
        return functools.update_wrapper(wrapper(args[0]), args[0])
    return lambda f: functools.update_wrapper(wrapper(f, *args, **kwargs), f)
