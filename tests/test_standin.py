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
