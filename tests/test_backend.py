"""backend.py: the four ways to choose a backend, device transfer, and the honest CuPy error."""
import subprocess
import sys
import types

import numpy as np
import pytest

import graphdiff as gd
from graphdiff import backend as B


@pytest.fixture(autouse=True)
def clean_default(monkeypatch):
    monkeypatch.delenv("GRAPHDIFF_BACKEND", raising=False)
    yield
    gd.set_backend(None)


def test_explicit_backend_argument():
    assert gd.Graph(backend="numpy").backend.name == "numpy"
    assert gd.Graph(backend="array_api_strict").backend.name == "array_api_strict"


def test_default_is_numpy():
    assert gd.Graph().backend.name == "numpy"


def test_set_backend():
    gd.set_backend("array_api_strict")
    assert gd.Graph().backend.name == "array_api_strict"
    gd.set_backend(None)
    assert gd.Graph().backend.name == "numpy"


def test_use_backend_context_nests_and_restores():
    with gd.use_backend("array_api_strict"):
        assert gd.Graph().backend.name == "array_api_strict"
        with gd.use_backend("numpy"):
            assert gd.Graph().backend.name == "numpy"
        assert gd.Graph().backend.name == "array_api_strict"
    assert gd.Graph().backend.name == "numpy"


def test_environment_variable(monkeypatch):
    monkeypatch.setenv("GRAPHDIFF_BACKEND", "array_api_strict")
    assert gd.Graph().backend.name == "array_api_strict"
    monkeypatch.setenv("GRAPHDIFF_BACKEND", "tpu")
    with pytest.raises(ValueError, match=r"GRAPHDIFF_BACKEND='tpu' is not a backend; choose one of numpy, cupy, "
                                         r"array_api_strict"):
        gd.Graph()


def test_precedence_explicit_then_context_then_set_then_env(monkeypatch):
    monkeypatch.setenv("GRAPHDIFF_BACKEND", "array_api_strict")
    gd.set_backend("numpy")
    assert gd.Graph().backend.name == "numpy"                       # set_backend beats the environment
    with gd.use_backend("array_api_strict"):
        assert gd.Graph().backend.name == "array_api_strict"        # the context beats set_backend
        assert gd.Graph(backend="numpy").backend.name == "numpy"    # the argument beats everything


def test_cli_backend_flag():
    out = subprocess.run([sys.executable, "-m", "graphdiff", "demo", "--backend", "array_api_strict"],
                         capture_output=True, text=True, check=True).stdout
    assert "on backend 'array_api_strict'" in out
    assert "VJP calls: children 9, parents 9" in out


def test_cli_backend_cupy_without_gpu_is_a_clear_error():
    if _cupy_works():
        pytest.skip("this machine has a GPU")
    res = subprocess.run([sys.executable, "-m", "graphdiff", "demo", "--backend", "cupy"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "backend 'cupy' needs" in res.stderr and "Traceback" not in res.stderr


def _cupy_works():
    try:
        gd.get_backend("cupy")
        return True
    except gd.BackendUnavailable:
        return False


def test_numpy_feeds_and_params_move_to_the_device_and_back():
    g = gd.Graph(backend="array_api_strict", dtype="float64")
    x = g.input("x", (2, 2))
    w = g.param("w", np.eye(2) * 2.0)
    y = gd.sum(x @ w)
    assert type(w.value).__module__.startswith("array_api_strict")
    out = g.forward({x: np.ones((2, 2))}, outputs=y)
    assert type(out).__module__.startswith("array_api_strict")
    assert gd.to_numpy(out) == 8.0
    g.backward(y)
    grad = gd.to_numpy(w.grad)
    assert isinstance(grad, np.ndarray)
    np.testing.assert_array_equal(grad, np.full((2, 2), 2.0))
    np.testing.assert_array_equal(w.numpy(), np.eye(2) * 2.0)


def test_cupy_not_installed_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)          # import cupy -> ImportError
    monkeypatch.setattr(B, "_instances", {})
    with pytest.raises(gd.BackendUnavailable, match=r"backend 'cupy' needs CuPy and a CUDA GPU, and CuPy is not "
                                                    r"installed: pip install 'graphdiff\[gpu\]'"):
        gd.Graph(backend="cupy")
    assert issubclass(gd.BackendUnavailable, ImportError)


def test_cupy_without_a_gpu_message(monkeypatch):
    """CuPy installed but no GPU (or no driver): an error, never a silent fall-back to NumPy."""
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(B, "_instances", {})
    with pytest.raises(gd.BackendUnavailable, match=r"backend 'cupy' needs a CUDA GPU, and CuPy found none "
                                                    r"\(RuntimeError: cudaErrorNoDevice.*use backend='numpy'"):
        gd.set_backend("cupy")
    assert B.current_backend_name() == "numpy"               # the failed choice did not stick


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"unknown backend 'torch'; choose one of numpy, cupy, array_api_strict"):
        gd.Graph(backend="torch")


def test_op_code_uses_only_the_standard_on_array_api_strict():
    """A NumPy-only call in op code would fail here (array_api_strict rejects NumPy arrays and functions)."""
    g = gd.Graph(backend="array_api_strict", dtype="float32")
    ids = g.input("ids", (2, 3), dtype="int64")
    wte = g.param("wte", np.random.default_rng(0).standard_normal((5, 4)))
    gamma, beta = g.param("gamma", np.ones(4)), g.param("beta", np.zeros(4))
    h = gd.layer_norm(gd.embedding(wte, ids), gamma, beta)
    att = gd.softmax(h @ h.mT / 2.0)                           # (2, 3, 3)
    logits = gd.gelu(att @ h) @ wte.T                          # (2, 3, 5)
    loss = gd.cross_entropy(logits, ids, ignore_index=0)
    g.forward({ids: np.array([[1, 2, 0], [3, 4, 4]])})
    for variant in gd.VARIANTS:
        g.backward(loss, variant=variant)
        assert gd.to_numpy(wte.grad).dtype == np.float32


def test_each_backend_owns_its_arrays_only():
    import array_api_strict as xp
    N, S = gd.get_backend("numpy"), gd.get_backend("array_api_strict")
    a, s = np.ones(2), xp.asarray([1.0, 2.0])
    assert N.owns(a) and N.owns(np.float64(1.0)) and not N.owns(s) and not N.owns([1.0])
    assert S.owns(s) and not S.owns(a)
    assert gd.backend.backend_of(s) is S and gd.backend.backend_of(a) is N and gd.backend.backend_of(3.0) is None
    assert gd.to_numpy(s).tolist() == [1.0, 2.0]


def test_another_backends_array_is_moved_not_duck_typed():
    import array_api_strict as xp
    g = gd.Graph(backend="numpy", dtype="float64")
    x = g.input("x", (2,))
    y = gd.sum(x * g.constant(xp.asarray([2.0, 3.0])))
    assert float(g.forward({x: xp.asarray([1.0, 1.0])}, outputs=y)) == 5.0


@pytest.mark.gpu
def test_cupy_sums_over_leading_axes_as_a_gemm():
    """CuPy's unbroadcast sums leading axes with a ones-row GEMM; the other reductions take the generic path.
    Both agree with NumPy's sums."""
    F = B.get_backend("cupy")
    rng = np.random.default_rng(0)
    for gshape, like in [((4, 5, 3), (3,)), ((4, 5, 3), (5, 3)), ((4, 5, 3), (1, 3)), ((4, 5, 3), (4, 1, 3)),
                         ((2, 3), (2, 3)), ((0, 3), (3,)), ((6,), ())]:
        g = rng.standard_normal(gshape)
        want = B.unbroadcast(B.get_backend("numpy"), g, like)
        got = F.to_numpy(F.unbroadcast(F.from_host(g, "float64"), like))
        assert got.shape == tuple(like)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
