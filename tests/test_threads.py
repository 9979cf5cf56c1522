"""gd.set_threads: the NumPy kernels split large arrays over threads and give the same numbers as one
thread (bitwise where each element is computed alone; layer norm's column sums to rounding)."""
import numpy as np
import pytest

import graphdiff as gd
from graphdiff import threads
from graphdiff.backend import get_backend
from graphdiff.ops import fused_numba, fused_numpy
from graphdiff.ops.registry import REGISTRY, run_forward, run_vjps

F = get_backend("numpy")


@pytest.fixture
def restore_threads():
    before = gd.get_threads()
    yield
    gd.set_threads(before)


def test_set_threads_returns_the_previous_count_and_refuses_bad_counts(restore_threads):
    gd.set_threads(1)
    assert gd.set_threads(3) == 1 and gd.get_threads() == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="set_threads"):
            gd.set_threads(bad)


def test_threads_from_the_environment(restore_threads, monkeypatch):
    monkeypatch.setitem(threads._state, "n", None)
    monkeypatch.setenv("GRAPHDIFF_THREADS", "4")
    assert gd.get_threads() == 4
    monkeypatch.setitem(threads._state, "n", None)
    monkeypatch.setenv("GRAPHDIFF_THREADS", "two")
    with pytest.raises(ValueError, match="GRAPHDIFF_THREADS"):
        gd.get_threads()


@pytest.mark.parametrize("n,count,per_item", [(1, 1000, 10 ** 6), (2, 1000, 10 ** 6), (3, 10, 10 ** 6),
                                              (4, 3, 10 ** 6), (2, 1000, 1), (8, 5, threads.MIN_PART)])
def test_parts_cover_the_range_in_order(n, count, per_item, restore_threads):
    gd.set_threads(n)
    ranges = threads.parts(count, per_item)
    assert ranges[0][0] == 0 and ranges[-1][1] == count
    assert all(a < b for a, b in ranges) and all(p[1] == q[0] for p, q in zip(ranges, ranges[1:]))
    assert len(ranges) == max(1, min(n, count, count * per_item // threads.MIN_PART))


def test_one_thread_makes_no_pool(restore_threads, monkeypatch):
    monkeypatch.setitem(threads._state, "pool", None)
    monkeypatch.setitem(threads._state, "size", 0)
    gd.set_threads(1)
    x = np.linspace(-3, 3, 5 * threads.MIN_PART)
    run_forward(REGISTRY["gelu"].kernels["numpy"], F, [x], {"approximate": "tanh"})
    assert threads._state["pool"] is None


def _rng_x(shape, dtype, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 3).astype(dtype)


CASES = [
    ("gelu", lambda d: [_rng_x((700, 300), d)], {"approximate": "tanh"}),
    ("gelu", lambda d: [_rng_x((5, 70001), d)], {"approximate": "none"}),
    ("softmax", lambda d: [_rng_x((3, 500, 130), d)], {"axis": -1}),
    ("layer_norm", lambda d: [_rng_x((2100, 96), d), _rng_x((96,), d, 1), _rng_x((96,), d, 2)], {"eps": 1e-5}),
]


@pytest.mark.parametrize("numba", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,make,attrs", CASES, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("n", [2, 3])
def test_kernels_on_threads_equal_one_thread(name, make, attrs, dtype, numba, n, restore_threads, monkeypatch):
    if numba and not fused_numba.available:
        pytest.skip("Numba is not installed")
    monkeypatch.setitem(fused_numpy.NUMBA, "on", numba)
    monkeypatch.setattr(threads, "MIN_PART", 1 << 14)        # several parts on arrays a test can afford
    kern = REGISTRY[name].kernels["numpy"]
    xs = make(dtype)
    results = []
    for k in (1, n):
        gd.set_threads(k)
        out, res = run_forward(kern, F, xs, attrs)
        g = _rng_x(out.shape, dtype, 9)
        results.append((out, res, run_vjps(kern, F, xs, out, res, attrs, g, range(len(xs)))))
    (o1, r1, v1), (o2, r2, v2) = results
    np.testing.assert_array_equal(o2, o1)
    if r1 is not None:
        for a, b in zip(r2 if isinstance(r2, tuple) else (r2,), r1 if isinstance(r1, tuple) else (r1,)):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(v2[0], v1[0])              # element- and row-wise: the same numbers
    for a, b in zip(v2[1:], v1[1:]):                          # layer norm's column sums: parts added
        np.testing.assert_allclose(a, b, **(dict(rtol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-11)))


def test_a_gpt_step_on_two_threads_equals_one(restore_threads, monkeypatch):
    from graphdiff.lm import GPT
    monkeypatch.setattr(threads, "MIN_PART", 1 << 10)      # small blocks and parts, Numba's loops from 1024
    monkeypatch.setattr(fused_numpy, "BLOCK", 1 << 9)     # numbers on: every kernel of the step splits
    monkeypatch.setattr(fused_numba, "MIN_SIZE", 1 << 10)
    rng = np.random.default_rng(0)
    idx = rng.integers(1, 40, (4, 33))
    mask = np.ones((4, 32), dtype=bool)
    runs = []
    for k in (1, 2):
        gd.set_threads(k)
        m = GPT(vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=64, dtype="float64", dropout=0.0,
                seed=0)
        loss = m.loss(idx[:, :-1], idx[:, 1:], mask, backward=True)
        runs.append((loss, {k_: np.array(p.grad) for k_, p in m.named_parameters()}))
    (l1, g1), (l2, g2) = runs
    assert l2 == pytest.approx(l1, rel=1e-14)
    for k_ in g1:
        np.testing.assert_allclose(g2[k_], g1[k_], rtol=1e-12, atol=1e-14, err_msg=k_)


@pytest.mark.parametrize("ashape,bshape", [((8, 4, 64, 16), (8, 4, 16, 64)), ((8, 1, 64, 16), (8, 4, 16, 32)),
                                           ((6, 64, 48), (6, 48, 40)), ((5, 3, 7), (1, 7, 2))])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_stacked_matmul_on_threads_equals_one_thread(ashape, bshape, dtype, restore_threads, monkeypatch):
    """F.matmul splits two stacks along their first axis; the same BLAS call per matrix: the same numbers,
    transposed views (a VJP's) included."""
    monkeypatch.setattr(threads, "MIN_PART", 1 << 8)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(ashape).astype(dtype), rng.standard_normal(bshape).astype(dtype)
    for x, y in ((a, b), (a, np.swapaxes(b, -1, -2).copy().swapaxes(-1, -2))):
        gd.set_threads(1)
        want = F.matmul(x, y)
        for n in (2, 3):
            gd.set_threads(n)
            got = F.matmul(x, y)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def _softmax_inputs(rng, dtype):
    """Rows the one-part fast path takes (small scores, masked entries, a fully masked row, a NaN) and rows
    that need a shift in some blocks only (large scores): every branch of the softmax's parts."""
    small = rng.standard_normal((700, 64)) * 3
    small[rng.random(small.shape) < 0.2] = -np.inf
    small[5] = small[600] = -np.inf
    small[9, 3] = np.nan
    spread = rng.standard_normal((700, 64)) * 3
    spread[300:320] += 60.0
    spread[400:410] -= 200.0
    return [x.astype(dtype) for x in (small, spread, rng.standard_normal((701, 64)) * 3)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [2, 3])
def test_softmax_forward_on_threads_equals_one_thread(dtype, n, restore_threads, monkeypatch):
    monkeypatch.setattr(threads, "MIN_PART", 1 << 10)
    monkeypatch.setattr(fused_numpy, "BLOCK", 1 << 10)        # 16 rows of 64 a block: many blocks a part
    kern = REGISTRY["softmax"].kernels["numpy"]
    for x in _softmax_inputs(np.random.default_rng(0), dtype):
        gd.set_threads(1)
        with np.errstate(invalid="ignore"):
            want = kern.forward(F, x, axis=-1)
            gd.set_threads(n)
            got = kern.forward(F, x, axis=-1)
        np.testing.assert_array_equal(got, want)
