"""Every fused kernel against its op's rule (registry.kernel): forward values, residuals and each slot's
VJP, on shapes that span several blocks, on views, in float32 and float64, and with residuals crossed (the
rule's forward with the kernel's VJP and the other way round, which a switch between them can give).

CuPy's kernels run here twice: in every CI run with each fused function run by NumPy (the maths and the
passes around it, on the CPU), and marked `gpu` on CuPy (the stand-in's cupy.fuse, or a GPU's)."""
import functools

import numpy as np
import pytest

import graphdiff as gd
from graphdiff.backend import get_backend
from graphdiff.ops import fused_cupy, fused_maths, fused_numba, fused_numpy
from graphdiff.ops.registry import REGISTRY, run_forward, run_vjps

F = get_backend("numpy")
BIG = fused_numpy.BLOCK * 2 + 123        # three blocks, the last one partial


def _x(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _noncontiguous(rng, shape, dtype):
    return _x(rng, shape[:-1] + (2 * shape[-1],), dtype)[..., ::2]


def _spread(rng, shape, dtype):
    """Rows whose maxima lie far apart (+-40, some entries masked with -1e9 as attention does): a shift by
    the block's maximum underflows some rows, which the kernels must redo with their own maximum. (Wider
    offsets would test float32 rounding, not the kernels: an ulp of 200 is 1.5e-5.)"""
    x = rng.standard_normal(shape) * 3.0 + rng.uniform(-40, 40, shape[:-1] + (1,))
    x[..., 1:][rng.random(x[..., 1:].shape) < 0.3] = -1e9
    return x.astype(dtype)


def _softmax_cases():
    return [
        ("last-big", lambda r, d: ([_x(r, (300, 257), d)], {"axis": -1})),
        ("last-4d", lambda r, d: ([_x(r, (2, 3, 40, 128), d)], {"axis": 3})),
        ("spread", lambda r, d: ([_spread(r, (3, 500, 64), d)], {"axis": -1})),
        ("low", lambda r, d: ([_x(r, (300, 30), d) - 60.0], {"axis": -1})),      # exp(x) underflows: redone
        ("high", lambda r, d: ([_x(r, (300, 30), d) + 60.0], {"axis": -1})),     # exp(x) overflows: shifted
        ("axis0-big", lambda r, d: ([_x(r, (70, 1000), d)], {"axis": 0})),
        ("middle", lambda r, d: ([_x(r, (5, 300, 60), d)], {"axis": 1})),
        ("middle-spread", lambda r, d: ([_spread(r, (4, 30, 20), d).transpose(0, 2, 1)], {"axis": 1})),
        ("view", lambda r, d: ([_noncontiguous(r, (7, 9), d)], {"axis": -1})),
        ("view-axis0", lambda r, d: ([_noncontiguous(r, (7, 9), d)], {"axis": 0})),
        ("one-row", lambda r, d: ([_x(r, (5,), d)], {"axis": 0})),
        ("wide", lambda r, d: ([_x(r, (2, BIG), d)], {"axis": -1})),
        ("empty-rows", lambda r, d: ([_x(r, (0, 5), d)], {"axis": -1})),
        ("float16", lambda r, d: ([_x(r, (4, 6), "float16")], {"axis": -1})),
    ]


def _ln_inputs(rng, shape, dtype):
    """x with rows of different means and scales, gamma, beta (float32 sums of larger values differ from the
    rule's by more than TOL: the means' rounding depends on the order of the sum)."""
    x = _x(rng, shape, "float64", 1.0) * rng.uniform(0.1, 2, shape[:-1] + (1,)) + rng.uniform(-2, 2, shape[:-1] + (1,))
    return [x.astype(dtype), _x(rng, shape[-1:], dtype, 1.0), _x(rng, shape[-1:], dtype, 1.0)]


def _ids(rng, shape, V, pad=None):
    """int64 ids in [0, V), a quarter of them `pad` (the ignored id) when given."""
    ids = rng.integers(0, V, shape)
    if pad is not None:
        ids[rng.random(shape) < 0.25] = pad
    return ids


# op -> list of (case id, function(rng, dtype) -> (inputs, attrs))
CASES = {
    "gelu": [
        ("tanh-big", lambda r, d: ([_x(r, (BIG,), d)], {"approximate": "tanh"})),
        ("erf-big", lambda r, d: ([_x(r, (3, BIG // 3), d)], {"approximate": "none"})),
        ("tanh-view", lambda r, d: ([_noncontiguous(r, (7, 9), d)], {"approximate": "tanh"})),
        ("erf-0d", lambda r, d: ([_x(r, (), d)], {"approximate": "none"})),
        ("tanh-empty", lambda r, d: ([_x(r, (0, 4), d)], {"approximate": "tanh"})),
    ],
    "softmax": _softmax_cases(),
    "log_softmax": _softmax_cases(),
    "layer_norm": [
        ("big", lambda r, d: (_ln_inputs(r, (3, 700, 64), d), {"eps": 1e-5})),
        ("wide", lambda r, d: (_ln_inputs(r, (3, 40000), d), {"eps": 1e-3})),
        ("1d", lambda r, d: (_ln_inputs(r, (9,), d), {"eps": 1e-5})),
        ("view", lambda r, d: ([_noncontiguous(r, (30, 16), d), _x(r, (16,), d)[::-1], _x(r, (16,), d)],
                               {"eps": 1e-5})),
        ("empty", lambda r, d: (_ln_inputs(r, (0, 8), d), {"eps": 1e-5})),
        ("mixed", lambda r, d: ([_x(r, (5, 8), d), _x(r, (8,), "float32"), _x(r, (8,), d)], {"eps": 1e-5})),
        ("float16", lambda r, d: (_ln_inputs(r, (5, 8), "float16"), {"eps": 1e-3})),
    ],
    "cross_entropy": [
        ("gpt", lambda r, d: ([_x(r, (4096, 65), d), _ids(r, (4096,), 65, pad=0)], {"ignore_index": 0})),
        ("3d-neg-ignore", lambda r, d: ([_x(r, (3, 400, 65), d), _ids(r, (3, 400), 65, pad=-100)],
                                        {"ignore_index": -100})),
        ("no-ignore", lambda r, d: ([_x(r, (600, 70), d), _ids(r, (600,), 70)], {"ignore_index": None})),
        ("spread", lambda r, d: ([_spread(r, (700, 50), d), _ids(r, (700,), 50)], {"ignore_index": None})),
        ("view", lambda r, d: ([_noncontiguous(r, (20, 9), d), _ids(r, (20,), 9)[::-1]], {"ignore_index": 3})),
        ("1-row", lambda r, d: ([_x(r, (9,), d), np.array(4)], {"ignore_index": None})),
        ("all-ignored", lambda r, d: ([_x(r, (5, 9), d), np.full(5, -1)], {"ignore_index": -1})),
        ("out-of-range", lambda r, d: ([_x(r, (5, 9), d), np.array([0, 9, -2, 3, 12])], {"ignore_index": 3})),
        ("checked", lambda r, d: ([_x(r, (5, 9), d), _ids(r, (5,), 9)], {"ignore_index": None, "check_ids": True})),
        ("float16", lambda r, d: ([_x(r, (5, 9), "float16"), _ids(r, (5,), 9)], {"ignore_index": None})),
    ],
    "mean": [
        ("rows-keepdims", lambda r, d: ([_x(r, (7, 16), d)], {"axis": -1, "keepdims": True})),
        ("all", lambda r, d: ([_x(r, (3, 4, 5), d)], {"axis": None, "keepdims": False})),
        ("axes", lambda r, d: ([_x(r, (3, 4, 5), d)], {"axis": (0, 2), "keepdims": False})),
        ("view", lambda r, d: ([_noncontiguous(r, (6, 9), d)], {"axis": 0, "keepdims": True})),
        ("0d", lambda r, d: ([_x(r, (), d)], {"axis": None, "keepdims": False})),
        ("big", lambda r, d: ([_x(r, (3, BIG // 3), d)], {"axis": 1, "keepdims": False})),
        ("float16", lambda r, d: ([_x(r, (4, 6), "float16")], {"axis": -1, "keepdims": True})),
        ("empty-axis", lambda r, d: ([_x(r, (2, 0), d)], {"axis": 1, "keepdims": False})),
    ],
    "power": [
        ("rsqrt", lambda r, d: ([np.abs(_x(r, (7, 1), d)) + 0.1, np.asarray(-0.5, dtype=d)], {})),
        ("square-with-zeros", lambda r, d: ([np.where(_x(r, (5, 6), d) > 1, 0, _x(r, (5, 6), d)),
                                              np.asarray(2.0, dtype=d)], {})),
        ("zero-exponent", lambda r, d: ([_x(r, (5, 6), d), np.asarray(0.0, dtype=d)], {})),
        ("array-exponent", lambda r, d: ([np.abs(_x(r, (5, 6), d)) + 0.1, _x(r, (6,), d, 1.0)], {})),
    ],
}

TOL = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=2e-5, atol=2e-6)}
# float32 results that are sums where terms cancel, farther apart than TOL allows though both are as close to
# the float64 answer: layer_norm's xhat * gamma + beta (rule and kernel ~3e-6 from it on the cases below),
# and gamma's and beta's gradients, sums over 2100 rows (the rule's row-by-row sum ~9e-5 from it, the
# kernel's ~1.4e-5). The first prefix of `what` that matches wins.
# log_softmax's x - logsumexp(x) with both near +-60 (the high, low and spread cases): an ulp of 60 is 4e-6.
OP_TOL = {("log_softmax forward", "float32"): dict(rtol=2e-5, atol=1e-5),
          ("layer_norm vjp slot 1", "float32"): dict(rtol=2e-5, atol=3e-4),
          ("layer_norm vjp slot 2", "float32"): dict(rtol=2e-5, atol=3e-4),
          ("layer_norm", "float32"): dict(rtol=2e-5, atol=1e-5)}


def _kernels():
    return [(name, be) for name, spec in REGISTRY.items() for be in spec.kernels]


def test_every_kernel_has_cases():
    missing = [(name, be) for name, be in _kernels() if be in ("numpy", "cupy") and name not in CASES]
    assert not missing, f"kernels without a case in test_kernels.CASES: {missing}"


def _forward(impl, xs, attrs, B=F):
    return run_forward(impl, B, xs, attrs)


def _vjps(impl, xs, out, res, attrs, g, n, B=F):
    return run_vjps(impl, B, xs, out, res, attrs, g, range(n))


def _close(a, b, dtype, what):
    if isinstance(a, tuple):
        for k, (u, v) in enumerate(zip(a, b)):
            _close(u, v, dtype, f"{what}[{k}]")
        return
    a, b = gd.to_numpy(a), gd.to_numpy(b)
    assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
    tol = next((t for (w, d), t in OP_TOL.items() if d == dtype and what.startswith(w)), TOL[dtype])
    np.testing.assert_allclose(a, b, err_msg=what, **tol)


@pytest.fixture(params=["numba", "numpy"])
def rows(request, monkeypatch):
    """Each kernel's row loops by Numba (where it has them and Numba is installed) and by NumPy blocks."""
    if request.param == "numba" and not fused_numba.available:
        pytest.skip("Numba is not installed")
    monkeypatch.setitem(fused_numpy.NUMBA, "on", request.param == "numba")
    return request.param


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,case,make", [(n, c, m) for n, cases in CASES.items() for c, m in cases],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_kernel_matches_rule(name, case, make, dtype, rows):
    _check_kernel(name, "numpy", F, make, dtype)


def _check_kernel(name, backend, B, make, dtype, device=lambda a: a):
    """The kernel of `name` for `backend` against the op's rule, both on backend B (inputs moved by device)."""
    spec = REGISTRY[name]
    kern = spec.kernels[backend]
    rng = np.random.default_rng(0)
    xs, attrs = make(rng, dtype)
    xs = [device(x) for x in xs]
    out_r, res_r = _forward(spec, xs, attrs, B)
    out_k, res_k = _forward(kern, xs, attrs, B)
    _close(out_k, out_r, dtype, f"{name} forward")
    if res_r is not None:
        _close(res_k, res_r, dtype, f"{name} residuals")
    g = device(rng.standard_normal(out_r.shape).astype(str(out_r.dtype)))
    slots = [i for i, k in enumerate(spec.slot_kinds(len(xs))) if k == "float"]
    want = _vjps(spec, xs, out_r, res_r, attrs, g, len(xs), B)
    for res in ([res_k, res_r, None] if res_r is not None else [None]):   # crossed and recomputed residuals
        got = _vjps(kern, xs, out_r, res, attrs, g, len(xs), B)
        for i in slots:
            _close(got[i], want[i], dtype, f"{name} vjp slot {i}")


CUPY_CASES = [(n, c, m) for n, cases in CASES.items() if "cupy" in REGISTRY[n].kernels for c, m in cases]


@pytest.fixture
def numpy_fused(monkeypatch):
    """CuPy's kernels with each fused function run by NumPy (fused_maths with NumPy's exp, erf, ...), as
    cupy.fuse would run it compiled: the same maths, tested on the CPU."""
    m = fused_maths.numpy_maths()
    for f in fused_cupy.ALL:
        monkeypatch.setattr(f, "fused", functools.partial(f.maths, m))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,case,make", CUPY_CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_cupy_kernel_maths_on_numpy(name, case, make, dtype, numpy_fused):
    _check_kernel(name, "cupy", F, make, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,case,make", CUPY_CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_cupy_kernel_matches_rule(name, case, make, dtype):
    """On CuPy: the stand-in's cupy.fuse (tests/cupy_standin) or a GPU's; each fused function stays on
    CuPy's old fusion (real CuPy switches silently to new_fusion where the old one refuses a trace)."""
    import cupy
    _check_kernel(name, "cupy", get_backend("cupy"), make, dtype, device=cupy.asarray)
    on_new = [f.name for f in fused_cupy.ALL if f.fused is not None and f.fused.new_fusion is not None]
    assert not on_new, f"traced by CuPy's new_fusion, not the old fusion: {on_new}"


def test_switch_runs_the_rule_and_rebinds():
    """fused_kernels(False) binds the rules; steps bound under one setting are not reused under the other."""
    g = gd.Graph(dtype="float64")
    x = g.param("x", np.linspace(-3, 3, 50))
    y = gd.sum(gd.gelu(x, approximate="tanh") ** 2.0)
    seen = []
    kern = REGISTRY["gelu"].kernels["numpy"]
    orig = kern.forward_res
    kern.forward_res = lambda *a, **k: (seen.append(1), orig(*a, **k))[1]
    try:
        for on in (True, False, True):
            with gd.fused_kernels(on):
                before = len(seen)
                g.forward()
                g.backward(y)
                assert (len(seen) > before) == on
    finally:
        kern.forward_res = orig
    with gd.fused_kernels(False):
        g.forward()
        ref = g.backward(y)
    g.forward()
    np.testing.assert_allclose(g.backward(y)[x], ref[x], rtol=1e-12)


def test_kernel_must_keep_the_rules_residuals():
    with pytest.raises(gd.GraphError, match="same functions"):
        @gd.kernel("gelu", "test")
        class Bad:
            def forward(F, x, approximate="none"):
                return x


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2), (0,), (1,), (2, 1), (1, 0)])
def test_layer_norm_vjp_any_slot_order(order, monkeypatch):
    """The kernel computes the three slots' work once per cotangent; any order and subset the engine asks for
    gives each slot its own gradient, and a new cotangent is never answered from the last one's."""
    passes = []
    one_pass = fused_numpy._layer_norm_vjp
    monkeypatch.setattr(fused_numpy, "_layer_norm_vjp", lambda *a: (passes.append(1), one_pass(*a))[1])
    spec = REGISTRY["layer_norm"]
    rng = np.random.default_rng(1)
    xs = _ln_inputs(rng, (4, 300, 48), "float64")
    out, res = spec.forward_res(F, *xs)
    per_slot = spec.kernels["numpy"].make_vjp(F, xs, out, res)
    for _ in range(2):
        g = rng.standard_normal(out.shape)
        want = spec.make_vjp(F, xs, out, res)
        for i in order:
            _close(per_slot(i, g), want(i, g), "float64", f"layer_norm vjp slot {i}")
    assert len(passes) == 2, "one pass per cotangent"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rows,n,c", [(65, 4096, 128), (128, 4096, 128), (5, 40, 3), (3000, 50, 7), (4, 1, 1),
                                      (4, 0, 5), (0, 0, 5), (6, 7, 0), (10, 5000, 4)])
def test_numpy_scatter_rows_matches_add_at(rows, n, c, dtype):
    """NumpyBackend.scatter_rows (embedding's VJP) against np.add.at: repeated ids add up, unused rows stay 0."""
    rng = np.random.default_rng(2)
    g = rng.standard_normal((n, c)).astype(dtype)
    ids = rng.integers(0, max(rows, 1), n) if rows else np.zeros(0, dtype=np.int64)
    if n > 3:
        ids[: n // 3] = ids[0]                       # one id many times
    for gg, ii in ((g, ids), (np.asfortranarray(g), ids.astype(np.int32)), (g[::-1], ids[::-1]),
                   (g, ids.astype(np.uint64))):
        want = np.zeros((rows, c), dtype=dtype)
        np.add.at(want, ii, gg)
        got = F.scatter_rows(gg, ii, rows)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, **TOL[dtype], err_msg=f"scatter_rows {gg.shape} into {rows}")


def test_numpy_scatter_rows_keeps_add_at_semantics_for_odd_ids():
    """Negative ids count from the end, as np.add.at's; ids past the table raise."""
    g = np.arange(6.0).reshape(3, 2)
    want = np.zeros((4, 2))
    np.add.at(want, np.array([-1, 0, -1]), g)
    np.testing.assert_array_equal(F.scatter_rows(g, np.array([-1, 0, -1]), 4), want)
    with pytest.raises(IndexError):
        F.scatter_rows(g, np.array([0, 4, 1]), 4)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("gshape,shape", [((32, 128, 384), (384,)), ((4096, 128), (128,)), ((5, 3, 4), (3, 4)),
                                          ((5, 3, 4), (1, 4)), ((5, 3, 4), (3, 1)), ((5, 3, 4), ()),
                                          ((5, 3, 4), (5, 3, 4)), ((0, 4), (4,)), ((3, 0), (0,))])
def test_numpy_unbroadcast_matches_the_generic_one(gshape, shape, dtype):
    """NumpyBackend.unbroadcast (the GEMV for sums over leading axes) against backend.unbroadcast."""
    from graphdiff.backend import unbroadcast
    g = np.random.default_rng(3).standard_normal(gshape).astype(dtype)
    for gg in (g, np.asfortranarray(g)):
        got, want = F.unbroadcast(gg, shape), unbroadcast(F, gg, shape)
        assert got.shape == want.shape == shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-12 if dtype == "float64" else 2e-5,
                                   atol=1e-11 if dtype == "float64" else 3e-4)


def test_numba_rows_run_from_min_size_on(monkeypatch):
    """The Numba row loops take layer norm and the softmax VJP from MIN_SIZE numbers on (so the "numba" cases
    above do exercise them), and small arrays never import Numba."""
    if not fused_numba.available:
        pytest.skip("Numba is not installed")
    monkeypatch.setitem(fused_numpy.NUMBA, "on", True)
    calls = []
    loops = fused_numba.loops
    monkeypatch.setattr(fused_numba, "loops", lambda: calls.append(1) or loops())
    rng = np.random.default_rng(0)
    ln, sm = REGISTRY["layer_norm"].kernels["numpy"], REGISTRY["softmax"].kernels["numpy"]
    for rows, want in ((8, 0), (fused_numba.MIN_SIZE // 64, 3)):
        calls.clear()
        x, gamma, beta = _x(rng, (rows, 64), "float32"), _x(rng, (64,), "float32"), _x(rng, (64,), "float32")
        out, res = ln.forward_res(F, x, gamma, beta)
        ln.make_vjp(F, [x, gamma, beta], out, res)(0, np.ones_like(x))
        s = sm.forward(F, x)
        sm.vjp(F, 0, np.ones_like(s), [x], s)
        assert len(calls) == want, (rows, calls)


def test_numba_warm_compiles_every_loop():
    if not fused_numba.available:
        assert fused_numba.warm() is False
        return
    assert fused_numba.warm("float64") is True


def _gelu_graph(backend):
    g = gd.Graph(backend=backend, dtype="float32")
    x = g.param("x", np.linspace(-3, 3, 50))
    return g, x, gd.sum(gd.gelu(x, approximate="tanh") ** 2.0)


@pytest.mark.gpu
def test_cupy_kernels_are_opt_in(monkeypatch):
    """CuPy's kernels bind only with GRAPHDIFF_CUPY_KERNELS=1 or fused_kernels(cupy=True); the result is the
    rule's either way."""
    import os
    from graphdiff.ops.registry import KERNELS
    assert KERNELS["backends"]["cupy"] == (os.environ.get("GRAPHDIFF_CUPY_KERNELS", "0") == "1")
    calls = []
    kern = REGISTRY["gelu"].kernels["cupy"]
    monkeypatch.setattr(kern, "forward_res", lambda *a, _f=kern.forward_res, **k: (calls.append(1), _f(*a, **k))[1])
    g, x, y = _gelu_graph("cupy")
    grads = {}
    for on in (False, True):
        with gd.fused_kernels(cupy=on):
            before = len(calls)
            g.forward()
            grads[on] = gd.to_numpy(g.backward(y)[x])
            assert (len(calls) > before) == on
    np.testing.assert_allclose(grads[True], grads[False], rtol=2e-5, atol=1e-6)


class _CompileError(Exception):
    """Stands for cupy.cuda.compiler.CompileException (NVRTC's log as its message)."""


@pytest.mark.gpu
def test_cupy_kernel_failure_names_the_kernel_and_the_switch(monkeypatch):
    import cupy

    def broken_fuse(*args, **kwargs):
        def compile_(f):
            def run(*a):
                raise _CompileError("nvrtc: error: identifier \"type_in0_raw\" is undefined\n(the kernel's code)")
            run.new_fusion = None
            return run
        return compile_
    monkeypatch.setattr(cupy, "fuse", broken_fuse)
    for f in fused_cupy.ALL:
        monkeypatch.setattr(f, "fused", None)
    g, x, y = _gelu_graph("cupy")
    with gd.fused_kernels(cupy=True), pytest.raises(gd.KernelError) as info:
        g.forward()
    text = str(info.value)
    assert "graphdiff_gelu_tanh" in text and "GRAPHDIFF_CUPY_KERNELS" in text and "fused_kernels(cupy=False)" in text
    assert "type_in0_raw" in text and isinstance(info.value.__cause__, _CompileError)
    with gd.fused_kernels(cupy=False):                   # the switch the message names: the rule runs
        g.forward()


def test_cupy_out_of_memory_is_not_a_kernel_error(monkeypatch):
    f = fused_cupy.GELU_TANH
    monkeypatch.setattr(f, "fused", lambda *a: (_ for _ in ()).throw(MemoryError("out of memory allocating")))
    with pytest.raises(MemoryError) as info:
        f(np.ones(3))
    assert not isinstance(info.value, gd.KernelError)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,case,make", [(n, c, m) for n in ("mean", "power") for c, m in CASES[n]],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_small_kernels_equal_the_rule_bitwise(name, case, make, dtype):
    """mean's and power's kernels do the rule's arithmetic in the rule's order: equal, not just close."""
    spec = REGISTRY[name]
    xs, attrs = make(np.random.default_rng(1), dtype)
    out_r, _ = _forward(spec, xs, attrs)
    out_k, _ = _forward(spec.kernels["numpy"], xs, attrs)
    assert np.asarray(out_k).dtype == np.asarray(out_r).dtype
    np.testing.assert_array_equal(out_k, out_r)
    g = np.random.default_rng(2).standard_normal(np.shape(out_r)).astype(np.asarray(out_r).dtype)
    want = _vjps(spec, xs, out_r, None, attrs, g, len(xs))
    got = _vjps(spec.kernels["numpy"], xs, out_r, None, attrs, g, len(xs))
    for w, k in zip(want, got):
        assert np.shape(k) == np.shape(w) and np.asarray(k).dtype == np.asarray(w).dtype
        np.testing.assert_array_equal(k, w)


@pytest.mark.parametrize("gshape,shape", [((5, 7), (5, 1)), ((5, 7), (1, 7)), ((2, 5, 7), (2, 1, 1)),
                                          ((2, 5, 7), (1, 5, 1)), ((4, 3), (4, 3))])
def test_numpy_unbroadcast_keepdims_path_is_exact(gshape, shape):
    """The same-rank path (one add.reduce with keepdims) equals the generic sum and reshape bitwise."""
    from graphdiff.backend import unbroadcast
    g = np.random.default_rng(3).standard_normal(gshape)
    np.testing.assert_array_equal(F.unbroadcast(g, shape), unbroadcast(F, g, shape))
