"""The CuPy stand-in fails where CuPy 14 fails, so CI catches what would break on a GPU.

Runs with GRAPHDIFF_CUPY_STANDIN=1 (marker `gpu`); on a real GPU the same checks run against real CuPy,
except the sync counters, which only the stand-in has.
"""
import re
import sys

import numpy as np
import pytest

import graphdiff as gd

from .conftest import standin_active

pytestmark = pytest.mark.gpu
MESSAGE = "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array"


@pytest.fixture
def cp():
    import cupy
    return cupy


def test_no_implicit_host_conversion(cp):
    x = cp.asarray(np.arange(6.0).reshape(2, 3))
    assert not hasattr(x, "__array_namespace__")
    for convert in (np.asarray, np.array, lambda a: np.float64(0) + np.add(np.ones(3), a)):
        with pytest.raises(TypeError, match="Implicit conversion|Unsupported type"):
            convert(x)
    with pytest.raises(TypeError, match=re.escape(MESSAGE)):
        np.asarray(x)


def test_numpy_operands_are_refused_scalars_are_not(cp):
    x = cp.asarray(np.ones((2, 3)))
    for bad in (lambda: x + np.ones(3), lambda: np.ones(3) * x, lambda: cp.exp(np.ones(3)),
                lambda: cp.where(x > 0, np.ones((2, 3)), x), lambda: x @ np.ones((3, 2))):
        with pytest.raises(TypeError, match="Unsupported type"):
            bad()
    for ok in (x + 1.0, 2 * x, np.float64(2.0) * x, x > np.array(0.5), np.exp(x)):
        assert isinstance(ok, cp.ndarray)


def test_reductions_stay_on_the_device_and_take_wraps(cp):
    x = cp.asarray(np.arange(5.0))
    s = cp.sum(x)
    assert isinstance(s, cp.ndarray) and s.shape == ()
    assert cp.asnumpy(cp.take(x, cp.asarray(np.array([7, -1])), axis=0)).tolist() == [2.0, 4.0]


def test_device_reads_are_counted(cp):
    if not standin_active():
        pytest.skip("only the stand-in counts syncs")
    c = cp.standin
    x = cp.asarray(np.arange(4.0))
    c.reset()
    bool(x[1] > 0), float(x[2]), int(x[3]), x[0].item(), x.get(), cp.asnumpy(x), gd.to_numpy(x)
    assert c.syncs == 7
    y = (x * 2 + 1).sum()
    assert c.syncs == 7 and isinstance(y, cp.ndarray)
    assert cp.cuda.runtime.getDeviceCount() == 1
    cp.cuda.Device().synchronize()


def test_the_cupy_backend_owns_cupy_arrays_only(cp):
    B = gd.get_backend("cupy")
    x = cp.asarray(np.ones(3))
    assert B.owns(x) and not B.owns(np.ones(3)) and not gd.get_backend("numpy").owns(x)
    assert gd.backend.backend_of(x) is B
    assert isinstance(gd.to_numpy(x), np.ndarray)


def test_a_graph_on_cupy_takes_any_array_and_never_converts_implicitly(cp):
    g = gd.Graph(backend="cupy", dtype="float64")
    w = g.param("w", np.ones((3, 3)))
    c = g.constant(cp.asarray(np.eye(3)))                # a device constant
    x = g.input("x", (3, 3))
    y = gd.sum(gd.tanh(x @ w) * c * 2.0)
    g.forward({x: cp.asarray(np.ones((3, 3)))}, outputs=y)
    g.backward(y, seed=cp.asarray(np.array(1.0)))
    assert isinstance(w.grad, cp.ndarray)
    w.value = np.zeros((3, 3))                            # host values move over
    assert isinstance(w.value, cp.ndarray)
    assert sys.modules["cupy"] is cp


# --- stream capture (CUDA graphs), as CuPy's tests/cupy_tests/cuda_tests/test_graph.py shows it --------------
def test_capture_records_work_and_launch_replays_it(cp):
    x = cp.asarray(np.arange(4.0))
    acc = cp.asarray(np.zeros(4))
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        assert s.is_capturing() and not cp.cuda.Stream.null.is_capturing()
        y = x * 2.0 + 1.0                     # recorded, not run: garbage until the launch
        acc += y                              # an in-place update: not done at capture
        g = s.end_capture()
    assert not s.is_capturing()
    assert np.isnan(y.get()).all() and (acc.get() == 0).all()
    g.launch(stream=s)
    np.testing.assert_array_equal(y.get(), [1, 3, 5, 7])
    np.testing.assert_array_equal(acc.get(), [1, 3, 5, 7])
    x[...] = cp.asarray(np.ones(4))           # new data in the same array, outside the graph
    g.launch(stream=s)                        # replays on the arrays' current contents
    np.testing.assert_array_equal(y.get(), [3, 3, 3, 3])
    np.testing.assert_array_equal(acc.get(), [4, 6, 8, 10])


def test_capture_refuses_host_reads_and_copies(cp):
    """As CuPy's memory.pyx: a copy to or from the host on a capturing stream raises before reaching CUDA (the
    capture goes on); a synchronize reaches CUDA, which refuses it and invalidates the capture."""
    x = cp.asarray(np.ones(3))
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        for bad, err in ((lambda: float(x.sum()), "D2H transfers are disallowed"),
                         (lambda: x.get(), "D2H transfers are disallowed"),
                         (lambda: cp.asarray(np.ones(3)), "H2D transfers are disallowed"),
                         (lambda: x.__setitem__(slice(None), np.zeros(3)), "H2D transfers are disallowed")):
            with pytest.raises(RuntimeError, match=err):
                bad()
        y = x + 1.0
        g = s.end_capture()
    g.launch()
    np.testing.assert_array_equal(y.get(), [2, 2, 2])
    with s:
        s.begin_capture()
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="cudaErrorStreamCaptureUnsupported"):
            s.synchronize()
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="cudaErrorStreamCaptureInvalidated"):
            s.end_capture()
    assert not s.is_capturing()
    with pytest.raises(RuntimeError, match="default"):
        cp.cuda.Stream.null.begin_capture()


def test_capture_leaves_other_streams_alone(cp):
    x = cp.asarray(np.ones(3))
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        with cp.cuda.Stream.null:
            z = x + 1.0                       # issued on another stream: runs now
        g = s.end_capture()
    np.testing.assert_array_equal(z.get(), [2, 2, 2])
    g.launch()


# --- cupy.fuse: the stand-in models CuPy 14's old fusion (tests/cupy_standin/cupy/_fusion.py) ------------
# On a GPU the same tests run against real cupy.fuse: each refusal below is one real CuPy makes too.
def _traced(cp):
    x = cp.asarray(np.linspace(-2, 2, 12).reshape(3, 4).astype(np.float32))
    return x, cp.asarray(np.array([[1.0], [2.0], [3.0]], dtype=np.float32))


def test_fuse_runs_operators_ufuncs_and_scalars(cp):
    from cupyx.scipy.special import erf
    x, m = _traced(cp)

    @cp.fuse(kernel_name="standin_check")
    def f(x, m, c):
        y = cp.exp(x - m) * c + erf(x) - cp.where(x > 0.5, x, 0.25 * x)
        return y, (m + 1.0).astype("float64")       # a tuple of outputs; the second broadcast to (3, 4)

    y, z = f(x, m, 2.0)
    hx, hm = cp.asnumpy(x), cp.asnumpy(m)
    from scipy.special import erf as host_erf
    want = np.exp(hx - hm) * np.float32(2.0) + host_erf(hx) - np.where(hx > 0.5, hx, np.float32(0.25) * hx)
    assert y.dtype == np.float32 and z.dtype == np.float64
    assert y.shape == z.shape == (3, 4)              # an ElementwiseKernel's outputs: the arguments' shape
    np.testing.assert_allclose(cp.asnumpy(y), want, rtol=1e-5)
    np.testing.assert_allclose(cp.asnumpy(z), np.broadcast_to(hm + 1.0, (3, 4)))
    assert f.new_fusion is None                      # CuPy's old fusion took it (fusion.pyx:866-872)


def test_fuse_keeps_cupys_dtype_rules(cp):
    x, _ = _traced(cp)
    scale = cp.fuse(lambda x, c: x * c)
    assert scale(x, 2.0).dtype == np.float32                      # Python scalars are weak (NEP 50)
    assert scale(x, np.float64(2.0)).dtype == np.float64           # NumPy scalars are not
    assert cp.fuse(lambda x: x * np.float64(2.0))(x).dtype == np.float64
    assert cp.fuse(lambda x: x * 2.0 + 1)(x).dtype == np.float32


def test_fuse_compiles_once_per_dtype_and_ndim(cp):
    """A closure constant is compiled into the kernel, which is cached by the arguments' dtypes and ndims
    (fusion.pyx:833-860): a new value is ignored until a new key traces again. Constants that change are
    arguments."""
    x, _ = _traced(cp)
    k = {"c": 2.0}
    f = cp.fuse(lambda x: x * k["c"])
    assert float(f(x)[0, 0]) == -4.0
    k["c"] = 3.0
    assert float(f(x)[0, 0]) == -4.0                               # the cached kernel
    assert float(f(x.astype(np.float64))[0, 0]) == -6.0             # a new key: traced again


def test_fuse_writes_arguments_in_place_and_capture_defers_it(cp):
    """A fused function may update its array arguments in place and return None (fusion.pyx:330-364 and
    712-714: the kernel declares them _non_const); under stream capture nothing runs until each launch, the
    in-place writes included (run at capture time too, they would update twice per launch)."""
    x, m = _traced(cp)
    acc = cp.asarray(np.zeros((3, 4), dtype=np.float32))

    @cp.fuse(kernel_name="standin_inplace")
    def f(acc, x, m, c):
        acc *= c
        acc += x * m
        return None

    assert f(acc, x, m, 0.5) is None
    want = cp.asnumpy(x) * cp.asnumpy(m)
    np.testing.assert_array_equal(cp.asnumpy(acc), want)
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        out = cp.fuse(lambda a, b: a + b)(x, m)
        f(acc, x, m, 0.5)
        g = s.end_capture()
    np.testing.assert_array_equal(cp.asnumpy(acc), want)           # recorded, not run
    assert np.isnan(cp.asnumpy(out)).all()
    g.launch(stream=s)
    g.launch(stream=s)
    np.testing.assert_array_equal(cp.asnumpy(acc), (want * np.float32(0.5) + want) * np.float32(0.5) + want)
    np.testing.assert_array_equal(cp.asnumpy(out), cp.asnumpy(x) + cp.asnumpy(m))


def test_fuse_without_device_arrays_is_plain_python(cp):
    f = cp.fuse(lambda x: cp.exp(x))
    assert float(f(1.0)) == pytest.approx(np.e)                    # Python scalars: cupy.exp(1.0)
    with pytest.raises(TypeError, match="Unsupported type"):       # NumPy arrays reach cupy.exp as they are
        f(np.ones(3))


def _refusals(cp):
    """(what, function of x, error, match): what real cupy.fuse refuses, on both of its paths."""
    return [
        # _fusion_interface.py:196 (the retry after fusion.pyx:290 raised): no Python branch on a traced value
        ("if", lambda x: x if x > 0 else -x, TypeError, "Python scalar"),
        ("float()", lambda x: x * float(x), TypeError, "Python scalar"),
        # _fusion_interface.py:194: no .shape
        (".shape", lambda x: x * x.shape[0], NotImplementedError, "shape"),
        # NumPy cannot convert a traced value
        ("np.exp", lambda x: np.exp(x), TypeError, None),
        # cupy/_math/sumprod.py:30-33: no keepdims
        ("keepdims", lambda x: x - cp.sum(x, axis=-1, keepdims=True), NotImplementedError, "keepdims"),
        ("max keepdims", lambda x: x - cp.max(x, axis=-1, keepdims=True), NotImplementedError, "keepdims"),
        # _fusion_trace.pyx:277 (fusion.pyx:518 first): no concrete array inside
        ("captured array", lambda x: x + cp.ones(4, dtype=x.dtype), TypeError, None),
        # fusion.pyx:186-287, _fusion_interface.py:47-145: no __abs__, __pos__, __rpow__
        ("abs", lambda x: abs(x), TypeError, None),
        ("rpow", lambda x: 2.0 ** x, TypeError, None),
        # fusion.pyx:546, _fusion_trace.pyx:330: unknown ufunc kwargs
        ("kwarg", lambda x: cp.exp(x, casting="unsafe"), TypeError, "Wrong arguments"),
        # cupy.mean calls a.mean(): neither proxy has it
        ("mean", lambda x: x - cp.mean(x), AttributeError, "mean"),
        # _fusion_trace.pyx:563 (fusion.pyx:715 first): return arrays
        ("return float", lambda x: 3.0, (ValueError, TypeError), None),
    ]


@pytest.mark.parametrize("case", range(12))
def test_fuse_refuses_what_cupy_refuses(cp, case):
    what, fn, error, match = _refusals(cp)[case]
    x, _ = _traced(cp)
    with pytest.raises(error, match=match):
        cp.fuse(fn)(x)


def test_fuse_refuses_bad_calls(cp):
    x, _ = _traced(cp)
    f = cp.fuse(lambda x, c: x * c)
    with pytest.raises(TypeError):                                 # fusion.pyx:809: positional arguments only
        f(x, c=2.0)
    with pytest.raises(TypeError, match="Invalid argument type"):  # fusion.pyx:826-831
        f(x, [2.0])
    with pytest.raises((TypeError, AssertionError)):               # fusion.pyx:856 `assert False`: NumPy array
        f(x, np.ones(4, dtype=np.float32))


def _leaves_old_fusion(cp):
    """What only CuPy's new_fusion traces (the old fusion raises and real CuPy retries silently: fusion.pyx:
    866-872). The stand-in refuses these; on a GPU they must run, on new_fusion."""
    return [("x.sum()", lambda x: x.sum()), ("index", lambda x: x[0] * 2.0),
            ("dtype=", lambda x: cp.exp(x, dtype="float64"))]


@pytest.mark.parametrize("case", range(3))
def test_fuse_new_fusion_only_is_refused_on_the_standin(cp, case):
    what, fn = _leaves_old_fusion(cp)[case]
    x, _ = _traced(cp)
    f = cp.fuse(fn)
    if standin_active():
        with pytest.raises(NotImplementedError, match="new_fusion"):
            f(x)
    else:
        f(x)
        assert f.new_fusion is not None, f"{what}: real CuPy kept it on the old fusion; update the stand-in"


def test_fuse_single_reduction_is_not_modelled(cp):
    """One reduction without keepdims is the old fusion's; the stand-in refuses it (graphdiff's kernels reduce
    with CuPy's own functions), so on a GPU it must run on the old fusion."""
    x, _ = _traced(cp)
    f = cp.fuse(lambda x: cp.sum(x * 2.0, axis=-1))
    if standin_active():
        with pytest.raises(NotImplementedError, match="does not model fused reductions"):
            f(x)
    else:
        np.testing.assert_allclose(cp.asnumpy(f(x)), cp.asnumpy(x).sum(-1) * 2.0, rtol=1e-5)
        assert f.new_fusion is None
