"""Per-kernel times at the GPT step's shapes (float32 pre-LN GPT "small": B 32, T 128, C 128, 4 heads, vocab
65): each op's rule, its fused NumPy kernel and PyTorch's equivalent (aten's forward or backward function),
in one process, alternating rounds, one thread.

    python benchmarks/bench_kernels.py [--rounds 30] [--only softmax layer_norm] [--quick]

Writes benchmarks/results/kernels.json.

--backend cupy (a GPU; benchmarks/gpu_check.sh runs it): the fused CuPy kernels (ops/fused_cupy.py) at the
H200 GPT's shapes (B 64, T 256, C 384, 6 heads), first checked against the rules on the device (float32 at
those shapes, float64 at smaller ones; exit 1 on a mismatch or on a kernel CuPy traced with new_fusion), then
timed against the rules with a device sync. Writes benchmarks/results/kernels_cupy.json.
"""
import argparse

import numpy as np

import common
from graphdiff.backend import get_backend
from graphdiff.ops.registry import REGISTRY, run_forward, run_vjps

F = get_backend("numpy")
B, T, C, NH, V = 32, 128, 128, 4, 65


def _impls(name):
    spec = REGISTRY[name]
    return {"rule": spec, "kernel": spec.kernels.get("numpy", spec)}


def _forward(impl, xs, attrs):
    return run_forward(impl, F, xs, attrs)


def _vjp_all(impl, xs, out, res, attrs, g, slots):
    return run_vjps(impl, F, xs, out, res, attrs, g, slots)


def op_cases(name, xs, attrs, slots, torch_fwd, torch_vjp):
    """{case: {engine: fn}}: the forward and the VJP (all slots) of op `name` on inputs xs."""
    fwd, vjp = {}, {}
    out, res = _forward(REGISTRY[name], xs, attrs)
    g = np.random.default_rng(1).standard_normal(np.shape(out)).astype(np.asarray(out).dtype)
    for engine, impl in _impls(name).items():
        fwd[engine] = lambda impl=impl: _forward(impl, xs, attrs)
        r = _forward(impl, xs, attrs)[1]
        vjp[engine] = lambda impl=impl, r=r: _vjp_all(impl, xs, out, r, attrs, g, slots)
    if torch_fwd is not None:
        fwd["torch"] = torch_fwd
    if torch_vjp is not None:
        vjp["torch"] = torch_vjp
    return {f"{name} fwd": fwd, f"{name} vjp": vjp}


def cases():
    import torch
    rng = np.random.default_rng(0)
    f32 = np.float32
    out = {}

    att = (rng.standard_normal((B, NH, T, T)) * 2).astype(f32)
    att[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] = -1e9     # the causal mask's NEG
    ta = torch.tensor(att)
    ts = torch.softmax(ta, -1)
    tg = torch.randn(ta.shape)
    out.update(op_cases("softmax", [att], {"axis": -1}, [0], lambda: torch.softmax(ta, -1),
                        lambda: torch._softmax_backward_data(tg, ts, -1, torch.float32)))

    logits = rng.standard_normal((B * T, V)).astype(f32)
    tl = torch.tensor(logits)
    tls = torch.log_softmax(tl, -1)
    tgl = torch.randn(tl.shape)
    out.update(op_cases("log_softmax", [logits], {"axis": -1}, [0], lambda: torch.log_softmax(tl, -1),
                        lambda: torch._log_softmax_backward_data(tgl, tls, -1, torch.float32)))

    x = rng.standard_normal((B, T, C)).astype(f32)
    gamma, beta = (rng.standard_normal(C).astype(f32) for _ in range(2))
    tx, tw, tb = torch.tensor(x), torch.tensor(gamma), torch.tensor(beta)
    _, tmean, trstd = torch.native_layer_norm(tx, (C,), tw, tb, 1e-5)
    tgx = torch.randn(tx.shape)
    out.update(op_cases("layer_norm", [x, gamma, beta], {"eps": 1e-5}, [0, 1, 2],
                        lambda: torch.native_layer_norm(tx, (C,), tw, tb, 1e-5),
                        lambda: torch.ops.aten.native_layer_norm_backward(tgx, tx, (C,), tmean, trstd, tw, tb,
                                                                          [True, True, True])))

    h = rng.standard_normal((B, T, 4 * C)).astype(f32)                      # the MLP's hidden layer
    th = torch.tensor(h)
    tgh = torch.randn(th.shape)
    out.update(op_cases("gelu", [h], {"approximate": "tanh"}, [0],
                        lambda: torch.nn.functional.gelu(th, approximate="tanh"),
                        lambda: torch.ops.aten.gelu_backward(tgh, th, approximate="tanh")))

    ids = rng.integers(0, V, B * T)
    ids[rng.random(B * T) < 0.05] = 0                  # pad targets (ignore_index)
    ti = torch.tensor(ids)
    t_ls = torch.log_softmax(tl, -1)
    t_loss, t_total = torch.ops.aten.nll_loss_forward(t_ls, ti, None, 1, 0)
    one = torch.tensor(1.0)

    def torch_ce_vjp():
        d = torch.ops.aten.nll_loss_backward(one, t_ls, ti, None, 1, 0, t_total)
        return torch._log_softmax_backward_data(d, t_ls, -1, torch.float32)
    out.update(op_cases("cross_entropy", [logits, ids], {"ignore_index": 0}, [0],
                        lambda: torch.nn.functional.cross_entropy(tl, ti, ignore_index=0), torch_ce_vjp))

    from graphdiff.backend import Backend, unbroadcast
    for n in (128, 512):
        gb = rng.standard_normal((B, T, n)).astype(f32)
        tgb = torch.tensor(gb)
        out[f"add vjp (bias {n})"] = {
            "rule": lambda gb=gb, n=n: unbroadcast(F, gb, (n,)),          # Backend.unbroadcast: np.sum
            "kernel": lambda gb=gb, n=n: F.unbroadcast(gb, (n,)),
            "torch": lambda tgb=tgb: tgb.sum((0, 1))}
    gx = rng.standard_normal((B * T, C)).astype(f32)
    tgx2 = torch.tensor(gx)
    for rows, what in ((V, "wte"), (T, "wpe")):
        ids_e = rng.integers(0, V, B * T) if what == "wte" else np.tile(np.arange(T), B)
        ti_e = torch.tensor(ids_e)
        out[f"embedding vjp ({what})"] = {
            "rule": lambda ids_e=ids_e, rows=rows: Backend.scatter_rows(F, gx, ids_e, rows),   # np.add.at
            "kernel": lambda ids_e=ids_e, rows=rows: F.scatter_rows(gx, ids_e, rows),
            "torch": lambda ti_e=ti_e, rows=rows: torch.ops.aten.embedding_dense_backward(tgx2, ti_e, rows, -1,
                                                                                          False)}
    return out


# --- CuPy: the fused CuPy kernels against the rules, checked and timed on the device ---------------------
def cupy_inputs(B_, T_, C_, NH_, dtype, rng):
    """{op: (inputs, attrs, slots)} at a GPT's shapes, on the host."""
    def x(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)
    att = x(B_, NH_, T_, T_, scale=2.0)
    att[..., np.triu_indices(T_, 1)[0], np.triu_indices(T_, 1)[1]] = -1e9       # the causal mask's NEG
    return {"gelu tanh": ("gelu", [x(B_, T_, 4 * C_, scale=3.0)], {"approximate": "tanh"}, [0]),
            "gelu erf": ("gelu", [x(B_, T_, 4 * C_, scale=3.0)], {"approximate": "none"}, [0]),
            "softmax": ("softmax", [att], {"axis": -1}, [0]),
            "log_softmax": ("log_softmax", [x(B_ * T_, V, scale=3.0)], {"axis": -1}, [0]),
            "layer_norm": ("layer_norm", [x(B_, T_, C_) * 2.0 + 0.5, x(C_), x(C_)], {"eps": 1e-5}, [0, 1, 2])}


def cupy_check(cases, F, tol):
    """Each kernel's forward, residuals and VJPs against the rule's, on the device; the failures' lines."""
    import cupy
    bad = []
    for case, (name, xs, attrs, slots) in cases.items():
        spec = REGISTRY[name]
        kern = spec.kernels["cupy"]
        dxs = [cupy.asarray(a) for a in xs]
        out_r, res_r = run_forward(spec, F, dxs, attrs)
        out_k, res_k = run_forward(kern, F, dxs, attrs)
        g = cupy.asarray(np.random.default_rng(1).standard_normal(out_r.shape).astype(out_r.dtype))
        pairs = [("forward", out_k, out_r)]
        if res_r is not None:
            both = [r if isinstance(r, tuple) else (r,) for r in (res_k, res_r)]
            pairs += [(f"residual {k}", a, b) for k, (a, b) in enumerate(zip(*both))]
        want = run_vjps(spec, F, dxs, out_r, res_r, attrs, g, slots)
        got = run_vjps(kern, F, dxs, out_r, res_k, attrs, g, slots)
        pairs += [(f"vjp slot {i}", a, b) for i, a, b in zip(slots, got, want)]
        bad += [line for what, a, b in pairs if (line := compare(case, what, a, b, tol))]
    return bad


def compare(case, what, a, b, tol):
    """Print how far device arrays a and b are apart (in tolerances); a line for the failures, or None."""
    import cupy
    a, b = cupy.asnumpy(a), cupy.asnumpy(b)
    err = float(np.max(np.abs(a - b) / (tol["atol"] + tol["rtol"] * np.abs(b)))) if a.size else 0.0
    ok = a.shape == b.shape and a.dtype == b.dtype and err <= 1.0
    print(f"  check {case:12s} {str(a.dtype):8s} {what:12s} error/tolerance {err:8.3f} {'ok' if ok else 'MISMATCH'}")
    return None if ok else f"{case} {a.dtype} {what}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}, {err:.3g}x tol"


def adamw_group(F_, n, dtype, seed=0):
    """An AdamW over one flat parameter of n elements on the device, after one step (moments non-zero)."""
    import cupy
    from graphdiff import nn
    rng = np.random.default_rng(seed)
    p = nn.Parameter(cupy.asarray(rng.standard_normal(n).astype(dtype)))
    opt = nn.AdamW([("w", p)], lr=1e-3, weight_decay=0.1)
    p.grad = cupy.asarray(rng.standard_normal(n).astype(dtype))
    opt.step(scalars={("cupy", dtype): cupy.asarray(np.asarray(opt.scalar_values(), dtype=dtype))})
    return p, opt


def adamw_check(F_, quick):
    """The fused AdamW update (one kernel) against the unfused operations: values and moments after 3 steps."""
    import cupy
    import graphdiff as gd
    bad = []
    for dtype, tol in (("float32", {"rtol": 1e-5, "atol": 1e-6}), ("float64", {"rtol": 1e-12, "atol": 1e-14})):
        out = {}
        for fused in (False, True):
            p, opt = adamw_group(F_, 1000 if quick else 1_000_003, dtype)
            rng = np.random.default_rng(1)
            with gd.fused_kernels(cupy=fused):
                for _ in range(3):
                    p.grad = cupy.asarray(rng.standard_normal(p.data.shape).astype(dtype))
                    opt.step()
            out[fused] = [p.data, opt.state["w"]["exp_avg"], opt.state["w"]["exp_avg_sq"]]
        bad += [line for what, a, b in zip(("values", "exp_avg", "exp_avg_sq"), out[True], out[False])
                if (line := compare("adamw", what, a, b, tol))]
    return bad


def adamw_rows(F_, args):
    """AdamW's update of one flat group of the H200 GPT's size (10.8M float32 parameters): the unfused
    operations (a dozen kernels) against the fused kernel, the step's numbers read from a device array."""
    import cupy
    import graphdiff as gd
    p, opt = adamw_group(F_, 100_000 if args.quick else 10_800_000, "float32")
    scalars = {("cupy", "float32"): cupy.asarray(np.asarray(opt.scalar_values(), dtype="float32"))}

    def step(fused):
        with gd.fused_kernels(cupy=fused):
            opt.step(scalars=scalars)
    fns = {"rule": lambda: step(False), "kernel": lambda: step(True)}
    times = common.alternate(fns, args.rounds or (2 if args.quick else 20), sync=cupy.cuda.Device().synchronize)
    return [{"case": "adamw update (flat)", "engine": e, "samples": s} for e, s in times.items()]


def cupy_main(args):
    import cupy
    from graphdiff.backend import get_backend
    from graphdiff.ops import fused_cupy
    F_ = get_backend("cupy")
    shape = (4, 32, 64, 4) if args.quick else (64, 256, 384, 6)          # B, T, C, heads
    rng = np.random.default_rng(0)
    bad = cupy_check(cupy_inputs(*shape, "float32", rng), F_, {"rtol": 1e-4, "atol": 1e-5})
    small = (4, 32, 64, 4) if args.quick else (8, 128, 384, 6)
    bad += cupy_check(cupy_inputs(*small, "float64", rng), F_, {"rtol": 1e-10, "atol": 1e-12})
    on_new = [f.name for f in fused_cupy.ALL if f.fused is not None and f.fused.new_fusion is not None]
    if on_new:
        bad.append(f"traced by CuPy's new_fusion, not the old fusion: {on_new}")
    rows = []
    for case, (name, xs, attrs, slots) in cupy_inputs(*shape, "float32", rng).items():
        if args.only and name not in args.only:
            continue
        spec = REGISTRY[name]
        dxs = [cupy.asarray(a) for a in xs]
        out, res = run_forward(spec, F_, dxs, attrs)
        g = cupy.asarray(np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype))
        fwd, vjp = {}, {}
        for engine, impl in (("rule", spec), ("kernel", spec.kernels["cupy"])):
            r = run_forward(impl, F_, dxs, attrs)[1]
            fwd[engine] = lambda impl=impl: run_forward(impl, F_, dxs, attrs)
            vjp[engine] = lambda impl=impl, r=r: run_vjps(impl, F_, dxs, out, r, attrs, g, slots)
        for what, fns in ((f"{case} fwd", fwd), (f"{case} vjp", vjp)):
            times = common.alternate(fns, args.rounds or (2 if args.quick else 20), sync=cupy.cuda.Device().synchronize)
            rows += [{"case": what, "engine": e, "samples": s} for e, s in times.items()]
    if not args.only or "adamw" in args.only:
        bad += adamw_check(F_, args.quick)
        rows += adamw_rows(F_, args)
    info = common.machine()
    print(common.machine_line(info) + f"; GPU: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
    print(f"B, T, C, heads = {shape}, float32")
    common.table(rows, baseline="kernel")
    common.write("kernels_cupy", {"benchmark": "kernels_cupy", "machine": info, "quick": args.quick, "shape": shape,
                                  "rows": rows, "mismatches": bad,
                                  "timing": "wall clock per call with a device sync, alternating rounds; ratio = "
                                            "kernel median / engine median"}, args.json)
    if bad:
        print("FAIL: fused CuPy kernels disagree with the rules:\n  " + "\n  ".join(bad))
        return 1
    print("fused CuPy kernels agree with the rules")
    return 0


def main():
    p = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), "kernels")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 30; quick 2)")
    p.add_argument("--only", nargs="*", help="op names to time (default: all)")
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                   help="cupy: check and time the fused CuPy kernels on the GPU (no PyTorch needed)")
    args = p.parse_args()
    if args.backend == "cupy":
        return cupy_main(args)
    import torch  # noqa: F401  (set_threads limits torch's threads too)
    common.set_threads(1)
    rounds = args.rounds or (2 if args.quick else 30)
    rows = []
    for case, fns in cases().items():
        if args.only and case.split()[0] not in args.only:
            continue
        times = common.alternate(fns, rounds)
        rows += [{"case": case, "engine": e, "samples": s} for e, s in times.items()]
    info = common.machine(threads=[1])
    print(common.machine_line(info))
    common.table(rows, baseline="kernel")
    common.write("kernels", {"benchmark": "kernels", "machine": info, "quick": args.quick, "rounds": rounds,
                             "rows": rows, "timing": "wall clock per call, alternating rounds; ratio = kernel "
                                                     "median / engine median"}, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
