"""Array backends: NumPy on the CPU, CuPy on a GPU, array_api_strict as the CPU stand-in for a foreign device.

Op code is written once against the array API standard (NumPy >= 2, CuPy >= 14 and array_api_strict all
provide its names in their main namespace). What the standard lacks lives here and nowhere else:

- scatter-add (the gradient of embedding lookups and integer-array indexing),
- erf (exact GELU; NumPy has none, SciPy and CuPy do),
- integer-array indexing mixed with slices (NumPy semantics; the standard only allows a restricted form),
- random numbers (dropout masks, initialisation) and host <-> device transfer,
- "is this one of mine?": each backend owns its array type (``Backend.owns``); ``backend_of`` and
  ``to_numpy`` ask the backends, so no other module looks at array types or module names.

Selecting a backend, strongest first: ``Graph(backend=...)``, ``use_backend(...)`` / ``set_backend(...)``,
the ``GRAPHDIFF_BACKEND`` environment variable, else ``"numpy"``.
"""
import builtins
import contextlib
import math
import os
import sys
import threading

import numpy as np

from . import threads
from .errors import BackendUnavailable

BACKENDS = ("numpy", "cupy", "array_api_strict")
FLOAT_DTYPES = ("float32", "float64")
DTYPES = ("float32", "float64", "int32", "int64", "bool")

# Array API functions the ops use, copied onto each Backend so that `F.exp(x)` is one attribute lookup.
_STANDARD = (
    "abs", "all", "any", "arange", "argmax", "asarray", "astype", "broadcast_to", "clip", "concat",
    "cos", "equal", "exp", "expand_dims", "full", "greater", "greater_equal", "isfinite", "isnan",
    "less", "less_equal", "log", "log1p", "logical_and", "logical_not", "matmul", "matrix_transpose",
    "max", "maximum", "mean", "min", "minimum", "not_equal", "ones", "ones_like", "permute_dims", "reshape", "sign",
    "sin", "sqrt", "squeeze", "stack", "sum", "take", "tanh", "where", "zeros", "zeros_like",
)


def unbroadcast(F, g, shape):
    """Sum g (an array or a Node) down to `shape`, undoing NumPy broadcasting: the exact VJP of broadcast_to."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = len(g.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + k for k, n in enumerate(shape) if n == 1 and g.shape[lead + k] != 1)
    if axes:
        g = F.sum(g, axis=axes, keepdims=False)
    return F.reshape(g, shape) if tuple(g.shape) != shape else g


def canonical_index(idx, shape, clamp=True):
    """idx (from ops.shape.normalize_index) spelled out for an array of `shape`: one entry per axis, no Ellipsis,
    slices clamped to the axis. NumPy means the same by the short form; the array API standard only
    specifies this explicit one (array_api_strict rejects out-of-range slice stops, for one).
    clamp=False leaves slices as given (only the number of axes is used): what a getitem node keeps, so
    that x[1:] of a batch axis means rows 1.. of whatever batch is fed (Graph.resize); the backends that
    need clamped slices clamp at run time, against the array's shape then."""
    n_axes = sum(1 for k in idx if k is not None and k is not Ellipsis)
    if n_axes > len(shape):
        return idx                          # too many indices: let the shape rule report it
    out, axis = [], 0
    for k in idx:
        if k is Ellipsis:
            fill = len(shape) - n_axes
            out.extend([slice(None)] * fill)
            axis += fill
        elif k is None:
            out.append(None)
        else:
            if isinstance(k, slice):
                start, stop, step = k.indices(shape[axis])       # ValueError for a zero step
                if clamp:
                    k = slice(start, None if step < 0 and stop < 0 else stop, step)
            out.append(k)
            axis += 1
    out.extend([slice(None)] * (len(shape) - axis))
    return tuple(out)


def _has_array(idx):
    return not all(k is None or isinstance(k, (int, slice)) for k in idx)


class Backend:
    """One array library and the few extras the ops need beyond the standard. Ops receive it as `F`.

    Attributes:
        xp: the array namespace.  array_type: the class (or tuple of classes) of this backend's arrays.
    """

    name = "base"
    array_type = ()

    def __init__(self, xp):
        self.xp = xp
        for fname in _STANDARD:
            setattr(self, fname, getattr(xp, fname))
        self.dtypes = {d: getattr(xp, d) for d in DTYPES}
        self.transpose = xp.permute_dims
        self.pow = getattr(xp, "pow", None) or xp.power

    def __repr__(self):
        return f"<graphdiff backend {self.name!r}>"

    def owns(self, x):
        """True when x is an array of this backend (used as is, never converted)."""
        return isinstance(x, self.array_type)

    # --- the standard, under the names VJP rules use for arrays and Nodes alike ----------------
    @staticmethod
    def shape(x):
        return tuple(x.shape)

    def unbroadcast(self, g, like):
        """g summed down to `like` (a shape, or an array whose shape it takes): the VJP of broadcasting."""
        return unbroadcast(self, g, like if isinstance(like, tuple) else like.shape)

    def gather_rows(self, table, ids):
        """table[ids] for 1-d ids: the rows picked (the forward of embedding on flat ids)."""
        return self.take(table, ids, axis=0)

    def scatter_rows(self, g, ids, rows):
        """zeros((rows, C)) with row g[k] added at row ids[k] (repeats add up): the VJP of a row gather."""
        return self.index_add((rows,) + tuple(g.shape[1:]), (ids,), g)

    def getitem(self, x, idx):
        """x[idx] with NumPy semantics; idx comes from canonical_index (slices, ints, None, int arrays)."""
        return x[idx]

    def index_add(self, shape, idx, g):
        """zeros(shape) with g added at x[idx] (repeated integer indices add up): the VJP of getitem."""
        z = self.xp.zeros(shape, dtype=g.dtype)
        if _has_array(idx):
            return self._scatter(z, idx, g)
        if None in idx:                 # setitem takes no new axes: drop them from g and the index
            keep, pos = [], 0
            for k in idx:
                if k is None:
                    pos += 1
                elif isinstance(k, slice):
                    keep.append(pos)
                    pos += 1
            g = self.reshape(g, tuple(g.shape[p] for p in keep))
            idx = tuple(k for k in idx if k is not None)
        z[idx] = g
        return z

    def _scatter(self, z, idx, g):
        raise NotImplementedError

    def copy(self, x):
        """A new array with x's values (feeds and assigned values are copied: graph state is owned)."""
        return self.xp.asarray(x, copy=True)

    def astype_like(self, x, like):
        """x cast to the dtype of `like` (a no-op when they agree)."""
        return x if x.dtype == like.dtype else self.astype(x, like.dtype)

    def one_hot(self, ids, n, dtype):
        """(..., n) array that is 1 where the last index equals ids."""
        return self.astype(self.equal(self.expand_dims(ids, axis=-1), self.arange(n, dtype=ids.dtype)),
                           dtype)

    def erf(self, x):
        raise NotImplementedError

    # --- host <-> device ----------------------------------------------------------------------
    def from_host(self, value, dtype):
        """Move a NumPy array (or Python number) to this backend with the given dtype name."""
        return self.xp.asarray(np.asarray(value, dtype=dtype), copy=True)

    def to_numpy(self, x):
        """One of this backend's arrays as a NumPy array: the one explicit device -> host transfer."""
        return np.asarray(x)

    def rng(self, seed=None):
        """A random generator on this backend: .uniform(shape, dtype) and .normal(shape, dtype)."""
        return _HostRNG(self, seed)

    def dtype_name(self, x):
        """'float32', 'int64', ... for an array of this backend."""
        for name, dt in self.dtypes.items():
            if x.dtype == dt:
                return name
        raise TypeError(f"unsupported dtype {x.dtype}; graphdiff uses {', '.join(DTYPES)}")


class _HostRNG:
    """Draws on the host with NumPy's PCG64, then moves the numbers over: reproducible on every backend."""

    def __init__(self, backend, seed):
        self.backend = backend
        self.gen = np.random.default_rng(seed)

    def uniform(self, shape, dtype):
        return self.backend.from_host(self.gen.random(shape), dtype)

    def normal(self, shape, dtype):
        return self.backend.from_host(self.gen.standard_normal(shape), dtype)

    @property
    def state(self):
        """The generator's state as a JSON-able dict (checkpoints save it to resume the same stream)."""
        return self.gen.bit_generator.state

    @state.setter
    def state(self, value):
        self.gen.bit_generator.state = value


SCATTER_CSR_MIN = 1 << 14      # NumpyBackend.scatter_rows: elements of g from which the CSR product pays


def _reshape(x, shape):
    return x.reshape(shape)


def _matmul(a, b):
    """np.matmul; two stacks of matrices with the same first axis are split along it over graphdiff's threads
    (gd.set_threads): OpenBLAS runs an attention's small GEMMs on one thread, whatever its own count. Each
    matrix goes through the same BLAS call either way, so the numbers are the same."""
    if a.ndim < 3 or b.ndim < 3 or a.shape[0] != b.shape[0] or a.shape[0] < 2:
        return np.matmul(a, b)
    n = a.shape[0]
    ranges = threads.parts(n, (a.size + b.size) // n)
    if len(ranges) == 1:
        return np.matmul(a, b)
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    out = np.empty(shape, dtype=np.result_type(a, b))
    threads.run(lambda lo, hi: np.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi]), ranges)
    return out


def _permute_dims(x, axes):
    return x.transpose(axes)


def _matrix_transpose(x):
    if x.ndim < 2:
        raise ValueError(f"matrix_transpose needs at least 2 axes, got shape {x.shape}")
    return x.swapaxes(-1, -2)


class NumpyBackend(Backend):
    name = "numpy"
    array_type = (np.ndarray, np.generic)

    def __init__(self):
        # NumPy >= 2's main namespace is an array API namespace; using it directly skips a wrapper layer
        super().__init__(np)
        # the array methods, without np.reshape's and np.matrix_transpose's Python layers (about a
        # microsecond a call, several times over per op at small sizes): the same results
        self.reshape, self.matrix_transpose = _reshape, _matrix_transpose
        self.transpose = self.permute_dims = _permute_dims
        self.matmul = _matmul

    def getitem(self, x, idx):
        return x[idx]

    def _scatter(self, z, idx, g):
        np.add.at(z, idx, g)
        return z

    def unbroadcast(self, g, like):
        """g summed down to `like`; a sum over leading axes only (a bias's gradient) as a GEMV, ones @ g on
        g's 2-d view: ~2x NumPy's reduction over the leading axes of a (4096, 128) float32 array."""
        shape = like if isinstance(like, tuple) else tuple(like.shape)
        if g.shape == shape:                # most calls: nothing was broadcast
            return g
        if g.ndim == len(shape) and g.dtype in (np.float32, np.float64):   # size-1 axes summed (keepdims)
            axes = tuple(k for k, n in enumerate(shape) if n == 1 and g.shape[k] != 1)
            if axes:
                return np.add.reduce(g, axis=axes, keepdims=True)
        lead = g.ndim - len(shape)
        if (lead > 0 and shape and tuple(g.shape[lead:]) == shape and g.size > 0
                and g.dtype in (np.float32, np.float64)):
            rows = g.reshape(-1, math.prod(shape))
            return (np.ones(rows.shape[0], dtype=g.dtype) @ rows).reshape(shape)
        return super().unbroadcast(g, like)

    def scatter_rows(self, g, ids, rows):
        """zeros((rows, C)) with row g[k] added at row ids[k]: a sparse (rows, N) 0/1 matrix times g (SciPy's
        CSR product, one pass over g; np.add.at's element loop takes ~20x longer on (4096, 128)). Small g
        keeps np.add.at, which is as fast there, and spares small models scipy.sparse's import (0.16 s)."""
        ids = np.asarray(ids)
        n = ids.shape[0] if ids.ndim == 1 else -1
        if not (g.ndim == 2 and g.shape[0] == n and g.size >= SCATTER_CSR_MIN and ids.dtype.kind in "iu"
                and g.dtype in (np.float32, np.float64) and 0 <= ids.min() and ids.max() < rows):
            return super().scatter_rows(g, ids, rows)       # small, another dtype, or ids np.add.at wraps
        from scipy.sparse import csr_array
        ids = ids.astype(np.intp, copy=False)               # bincount takes no uint64
        starts = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(ids, minlength=rows), out=starts[1:])
        picks = csr_array((np.ones(n, dtype=g.dtype), np.argsort(ids, kind="stable"), starts), shape=(rows, n))
        return np.ascontiguousarray(picks @ g, dtype=g.dtype)

    def from_host(self, value, dtype):
        return np.array(value, dtype=dtype)     # always a copy, as a transfer to a device would be

    def erf(self, x):
        from scipy.special import erf
        return erf(x)


class StrictBackend(Backend):
    """array_api_strict: fails on any call outside the standard, so the CuPy path stays honest in CI."""

    name = "array_api_strict"

    def __init__(self, xp):
        super().__init__(xp)
        self.array_type = type(xp.asarray(0))

    def getitem(self, x, idx):
        if _has_array(idx):
            # the standard's integer-array indexing is narrower than NumPy's: NumPy semantics via the host
            return self.from_host(np.asarray(x)[self._host(idx)], self.dtype_name(x))
        return x[canonical_index(idx, tuple(x.shape))]      # slices clamped to the size fed this time

    def index_add(self, shape, idx, g):
        return super().index_add(shape, canonical_index(idx, tuple(shape)), g)

    def _scatter(self, z, idx, g):
        host = np.asarray(z).copy()
        np.add.at(host, self._host(idx), np.asarray(g))
        return self.from_host(host, self.dtype_name(z))

    @staticmethod
    def _host(idx):
        return tuple(k if k is None or isinstance(k, (int, slice, np.ndarray)) else np.asarray(k) for k in idx)

    def erf(self, x):
        from scipy.special import erf
        return self.from_host(erf(np.asarray(x)), self.dtype_name(x))


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self):
        try:
            import cupy
        except ImportError as e:
            raise BackendUnavailable(
                "backend 'cupy' needs CuPy and a CUDA GPU, and CuPy is not installed: "
                "pip install 'graphdiff[gpu]' (CUDA 12.x), or use backend='numpy'") from e
        try:
            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # CUDARuntimeError without a driver, for one
            raise BackendUnavailable(
                f"backend 'cupy' needs a CUDA GPU, and CuPy found none ({type(e).__name__}: {e}); "
                "use backend='numpy' on this machine") from e
        if n < 1:
            raise BackendUnavailable("backend 'cupy' needs a CUDA GPU, and CuPy found none; "
                                     "use backend='numpy' on this machine")
        # CuPy >= 14 has the standard's names (concat, permute_dims, astype, ...) in its main namespace,
        # so it is the namespace itself: no array-api-compat wrapper, nothing to install on a GPU machine
        self.cupy = cupy
        self.array_type = cupy.ndarray
        super().__init__(cupy)

    def getitem(self, x, idx):
        return x[tuple(self.cupy.asarray(k) if isinstance(k, np.ndarray) else k for k in idx)]

    def _scatter(self, z, idx, g):
        import cupyx
        cupyx.scatter_add(z, tuple(self.cupy.asarray(k) if isinstance(k, np.ndarray) else k
                                   for k in idx), g)
        return z

    def from_host(self, value, dtype):
        return self.cupy.asarray(np.asarray(value, dtype=dtype))

    def copy(self, x):
        return x.copy()                     # cupy.asarray has no copy= argument

    def to_numpy(self, x):
        return self.cupy.asnumpy(x)

    def erf(self, x):
        from cupyx.scipy.special import erf
        return erf(x)

    def unbroadcast(self, g, like):
        """As Backend.unbroadcast; a sum over leading axes only (bias and layer-norm gradients) runs as one
        GEMM with a ones row, which cuBLAS does several times faster than CuPy's column-sum kernel."""
        shape = like if isinstance(like, tuple) else tuple(like.shape)
        lead = g.ndim - len(shape)
        if lead > 0 and tuple(g.shape[lead:]) == shape and g.size and g.dtype.kind == "f":
            rows = self.reshape(g, (-1, math.prod(shape)))
            return self.reshape(self.matmul(self.ones((1, rows.shape[0]), dtype=g.dtype), rows), shape)
        return super().unbroadcast(g, like)


class ScalarBackend:
    """Python floats and the math module: the backend of micrograd-style graphs, where every node is a 0-d
    float64 and NumPy's per-call overhead would dominate. The ops run their ordinary rules on floats. Where
    NumPy would give inf or NaN, math raises (OverflowError, ZeroDivisionError, ValueError): the engine then
    reruns the pass on NumPy, whose semantics are the reference."""

    name = "python"
    exp, log, sqrt, tanh, erf, pow = math.exp, math.log, math.sqrt, math.tanh, math.erf, math.pow
    abs = builtins.abs

    def __repr__(self):
        return "<graphdiff backend 'python'>"

    @staticmethod
    def shape(x):
        return ()

    @staticmethod
    def unbroadcast(g, like):
        return g

    @staticmethod
    def reshape(x, shape):
        return x

    broadcast_to = reshape

    @staticmethod
    def sum(x, axis=None, keepdims=False):
        return x

    mean = max = sum

    @staticmethod
    def where(cond, a, b):
        return a if cond else b

    @staticmethod
    def equal(a, b):
        return a == b

    @staticmethod
    def logical_and(a, b):
        return a and b

    @staticmethod
    def maximum(a, b):
        return a if a >= b or a != a else b      # NaN wins, as in NumPy

    @staticmethod
    def minimum(a, b):
        return a if a <= b or a != a else b

    @staticmethod
    def sign(x):
        return 1.0 if x > 0.0 else -1.0 if x < 0.0 else 0.0 * x    # 0 * nan keeps NaN, as NumPy's sign

    @staticmethod
    def astype_like(x, like):
        return float(x)


SCALAR = ScalarBackend()

_FACTORIES = {"numpy": NumpyBackend, "cupy": CupyBackend, "array_api_strict": None}
_instances = {}
_lock = threading.Lock()
_state = threading.local()
_default = [None]   # set_backend's choice; None means "read GRAPHDIFF_BACKEND"


def get_backend(name=None):
    """The Backend for `name` (a Backend passes through); None means the current default."""
    if isinstance(name, Backend):
        return name
    if name is None:
        name = current_backend_name()
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    with _lock:
        if name not in _instances:
            if name == "array_api_strict":
                try:
                    import array_api_strict
                except ImportError as e:
                    raise BackendUnavailable("backend 'array_api_strict' needs the array-api-strict "
                                             "package: pip install 'graphdiff[test]'") from e
                _instances[name] = StrictBackend(array_api_strict)
            else:
                _instances[name] = _FACTORIES[name]()
        return _instances[name]


def current_backend_name():
    """Name of the backend a new Graph gets: use_backend > set_backend > $GRAPHDIFF_BACKEND > numpy."""
    stack = getattr(_state, "stack", None)
    if stack:
        return stack[-1]
    if _default[0] is not None:
        return _default[0]
    env = os.environ.get("GRAPHDIFF_BACKEND", "").strip()
    if env and env not in BACKENDS:
        raise ValueError(f"GRAPHDIFF_BACKEND={env!r} is not a backend; choose one of {', '.join(BACKENDS)}")
    return env or "numpy"


def set_backend(name):
    """Make `name` the default backend of new graphs (checked now: CuPy without a GPU raises here)."""
    if name is not None:
        get_backend(name)
    _default[0] = name


@contextlib.contextmanager
def use_backend(name):
    """Within the block, new graphs use backend `name`."""
    get_backend(name)
    stack = _state.__dict__.setdefault("stack", [])
    stack.append(name)
    try:
        yield get_backend(name)
    finally:
        stack.pop()


def backend_of(x):
    """The Backend that owns array x (NumPy arrays and scalars: numpy's), or None for lists and Python
    numbers. Backends already in use are asked first; a library's backend is only started
    when that library is imported, since its arrays cannot exist otherwise."""
    for B in list(_instances.values()):
        if B.owns(x):
            return B
    for name in BACKENDS:                   # each backend is named after its library's module
        if name in _instances or name not in sys.modules:
            continue
        try:
            B = get_backend(name)
        except BackendUnavailable:
            continue
        if B.owns(x):
            return B
    return None


def to_numpy(x):
    """A NumPy array from any backend's array, a list or a number (gd.to_numpy also takes Nodes)."""
    B = backend_of(x)
    return B.to_numpy(x) if B is not None else np.asarray(x)
