"""Per-kernel times at the GPT step's shapes (float32 pre-LN GPT "small": B 32, T 128, C 128, 4 heads, vocab
65): each op's rule, its fused NumPy kernel and PyTorch's equivalent (aten's forward or backward function),
in one process, alternating rounds, one thread.

    python benchmarks/bench_kernels.py [--rounds 30] [--only softmax layer_norm] [--quick]

Writes benchmarks/results/kernels.json.
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


def main():
    p = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), "kernels")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 30; quick 2)")
    p.add_argument("--only", nargs="*", help="op names to time (default: all)")
    args = p.parse_args()
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
    main()
