"""SGD with momentum, AdamW, gradient clipping and the schedule against PyTorch."""
import math

import numpy as np
import pytest
import torch

from graphdiff import nn


def pair(seed=0):
    rng = np.random.default_rng(seed)
    vals = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    ps = [nn.Parameter(v.copy()) for v in vals]
    ts = [torch.tensor(v.copy(), requires_grad=True) for v in vals]
    return ps, ts, rng


def steps(opt, topt, ps, ts, rng, n=5, clip=None):
    for _ in range(n):
        grads = [rng.standard_normal(p.shape) for p in ps]
        for p, t, gr in zip(ps, ts, grads):
            p.grad = gr.copy()
            t.grad = torch.tensor(gr.copy())
        if clip:
            a = nn.clip_grad_norm([("a", ps[0]), ("b", ps[1])], clip)
            b = torch.nn.utils.clip_grad_norm_(ts, clip)
            assert a == pytest.approx(b.item(), rel=1e-12)
        opt.step()
        topt.step()
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_sgd_momentum_weight_decay_matches_torch():
    ps, ts, rng = pair()
    opt = nn.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01)
    steps(opt, torch.optim.SGD(ts, lr=0.1, momentum=0.9, weight_decay=0.01), ps, ts, rng)


def test_adamw_matches_torch_with_clipping():
    ps, ts, rng = pair(1)
    opt = nn.AdamW(ps, lr=0.01, weight_decay=0.1)
    steps(opt, torch.optim.AdamW(ts, lr=0.01, weight_decay=0.1), ps, ts, rng, n=6, clip=1.0)


def test_optimizer_state_round_trip_continues_identically():
    ps, _, rng = pair(2)
    opt = nn.AdamW([("a", ps[0]), ("b", ps[1])], lr=0.01)
    for p in ps:
        p.grad = np.ones(p.shape)
    opt.step()
    state = opt.state_dict()
    ps2 = [nn.Parameter(p.data.copy()) for p in ps]
    opt2 = nn.AdamW([("a", ps2[0]), ("b", ps2[1])], lr=0.5).load_state_dict(state)
    for o, pp in ((opt, ps), (opt2, ps2)):
        for p in pp:
            p.grad = np.full(p.shape, 0.3)
        o.step()
    for a, b in zip(ps, ps2):
        np.testing.assert_array_equal(a.data, b.data)


def test_warmup_cosine():
    lr = [nn.warmup_cosine(s, 1.0, 10, 110, 0.1) for s in range(120)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)
    assert lr[60] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lr[110] == lr[119] == 0.1
    assert all(a >= b for a, b in zip(lr[9:110], lr[10:110]))


@pytest.mark.parametrize("opt_cls", [nn.AdamW, nn.SGD])
def test_training_steps_agree_on_every_backend(backend, opt_cls):
    from graphdiff.lm import GPT, make_batch
    import graphdiff as gd
    batch = make_batch([[1, 2, 3, 4, 5, 6], [3, 2, 1]], 5, 0)
    models = [GPT(vocab_size=7, block_size=5, n_layer=1, n_head=2, n_embd=4, dtype="float64", backend=b)
              for b in ("numpy", backend)]
    for m in models:
        opt = opt_cls(m, lr=0.05)
        for _ in range(3):
            m.loss(*batch, backward=True)
            nn.clip_grad_norm(m, 0.5)
            opt.step()
        state = opt.state_dict()
        opt_cls(m, lr=0.05).load_state_dict(state)          # state arrays come back on the model's backend
    # atol: the key bias's gradient is zero in exact arithmetic (softmax ignores a shift shared by every key),
    # so its entries are rounding noise (~1e-13 after Adam), which NumPy's fused kernels round differently
    for (n, p), q in zip(models[0].named_parameters(), models[1].parameters()):
        np.testing.assert_allclose(gd.to_numpy(q.data), p.data, rtol=1e-12, atol=1e-12, err_msg=n)


def test_adamw_flat_step_is_the_per_parameter_update_bit_for_bit():
    """AdamW.step updates each (backend, dtype) group as one flat array; it must equal update() run on
    every parameter, bit for bit, over several steps, with a parameter whose gradient is missing."""
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,), (2, 2, 2), ()]

    def params():
        return [(f"p{k}", nn.Parameter(rng.standard_normal(s).astype(np.float32))) for k, s in enumerate(shapes)]
    a = params()
    b = [(n, nn.Parameter(p.data.copy())) for n, p in a]
    flat, ref = nn.AdamW(a, lr=0.1, weight_decay=0.1), nn.AdamW(b, lr=0.1, weight_decay=0.1)
    for step in range(4):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        for k, ((_, p), (_, q)) in enumerate(zip(a, b)):
            p.grad = q.grad = None if (step == 1 and k == 2) else grads[k]
        flat.step()
        ref.t += 1
        for name, q in b:
            if q.grad is not None:
                q.data = ref.update(q, q.grad, ref.state[name])
        for (n, p), (_, q) in zip(a, b):
            assert p.data.dtype == np.float32 and p.data.shape == q.data.shape
            np.testing.assert_array_equal(p.data, q.data, err_msg=n)
            for k in ("exp_avg", "exp_avg_sq"):
                np.testing.assert_array_equal(flat.state[n][k], ref.state[n][k], err_msg=f"{k}.{n}")


def test_adamw_keeps_its_flat_buffers_and_reads_numbers_from_an_array():
    """What a recorded step (graphdiff.lm.capture) needs: p.data and the moments stay the same arrays from step
    to step (updated in place), and the step's numbers read from an array give the same bits as Python
    numbers; a replaced p.data (load_state_dict) starts new buffers from its values."""
    rng = np.random.default_rng(1)
    shapes = [(3, 4), (5,)]
    a = [(f"p{k}", nn.Parameter(rng.standard_normal(s).astype(np.float32))) for k, s in enumerate(shapes)]
    b = [(n, nn.Parameter(p.data.copy())) for n, p in a]
    plain, arrays = nn.AdamW(a, lr=0.1, weight_decay=0.1), nn.AdamW(b, lr=0.1, weight_decay=0.1)
    held = None
    for step in range(4):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        for (_, p), (_, q), g in zip(a, b, grads):
            p.grad, q.grad = g, g.copy()
        plain.lr = arrays.lr = 0.1 / (step + 1)
        plain.step()
        key = ("numpy", "float32")
        arrays.step(scalars={key: np.asarray(arrays.scalar_values(), dtype=np.float32)})
        now = [q.data for _, q in b] + [arrays.state[n][k] for n, _ in b for k in ("exp_avg", "exp_avg_sq")]
        if held is not None:
            assert all(x is y for x, y in zip(now, held))
        held = now
        for (n, p), (_, q) in zip(a, b):
            np.testing.assert_array_equal(p.data, q.data, err_msg=n)
    b[0][1].data = b[0][1].data + 1.0                      # replaced: new buffers, from the new values
    want = b[0][1].data.copy()
    arrays.step()
    assert b[0][1].data is not held[0]
    assert np.abs(b[0][1].data - want).max() < 0.2


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("weight_decay", [0.1, 0.0])
def test_adamw_fused_cupy_kernel_matches_the_unfused_update(dtype, weight_decay):
    """On CuPy with its fused kernels on, each group's update is one kernel (fused_maths.adamw compiled by
    cupy.fuse, on CuPy's old fusion): it must give the unfused operations' values and moments, with the
    numbers as Python floats and read from a device array (what a recorded step does). A GPU may contract
    a * b + c into one rounding (FMA), so the two agree to a few float32 ulps rather than bit for bit."""
    import cupy
    import graphdiff as gd
    from graphdiff.ops import fused_cupy
    rng = np.random.default_rng(3)
    shapes = [(3, 4), (7,), ()]
    start = [rng.standard_normal(s).astype(dtype) for s in shapes]
    runs = {}
    for fused in (False, True):
        ps = [(f"p{k}", nn.Parameter(cupy.asarray(v))) for k, v in enumerate(start)]
        opt = nn.AdamW(ps, lr=0.05, weight_decay=weight_decay)
        grad_rng = np.random.default_rng(4)
        with gd.fused_kernels(cupy=fused):
            for step in range(5):
                for _, p in ps:
                    p.grad = cupy.asarray(grad_rng.standard_normal(p.data.shape).astype(dtype))
                if step % 2:
                    key = ("cupy", dtype)
                    opt.step(scalars={key: cupy.asarray(np.asarray(opt.scalar_values(), dtype=dtype))})
                else:
                    opt.step()
        runs[fused] = [gd.to_numpy(p.data) for _, p in ps] + \
            [gd.to_numpy(opt.state[n][k]) for n, _ in ps for k in ("exp_avg", "exp_avg_sq")]
    assert fused_cupy.ADAMW.fused is not None and fused_cupy.ADAMW.fused.new_fusion is None
    tol = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-14)}[dtype]
    for a, b in zip(runs[True], runs[False]):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, **tol)
