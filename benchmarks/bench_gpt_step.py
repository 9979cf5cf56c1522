"""The CPU GPT step (one forward + backward, no optimizer, float32 pre-LN GPT): graphdiff against PyTorch eager,
HIPS autograd and a hand-written NumPy step (the floor), in one process, alternating rounds.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gpt_step.py [--threads 1 2] [--quick]

Every engine holds the same weights (graphdiff's initialisation, copied by name) and gets the same batch;
before timing, the losses must agree to rtol 1e-4 and the gradients to 1e-3 of their largest entry, else
the benchmark stops. graphdiff: GPT(dtype="float32", dropout=0.0).loss(idx, targets, mask, backward=True).
PyTorch: the same architecture (benchmarks/gpt_peers.py), loss.backward() with grads reset to None.
Writes benchmarks/results/gpt_step.json.
"""
import argparse
import sys

import numpy as np

import common
from gpt_peers import CONFIGS, NumpyGPT, autograd_loss, batch, model_config, torch_loss


def engines(cfg, which):
    """{name: step function}, after checking that every engine's loss and gradients agree with graphdiff's."""
    import torch
    from graphdiff.lm import GPT
    m = GPT(dtype="float32", dropout=0.0, seed=0, **model_config(cfg))
    state = m.state_dict()
    idx, targets, mask = batch(cfg, pad_tail=3)
    named = dict(m.named_parameters())

    def gd_step():
        return m.loss(idx, targets, mask, backward=True)
    loss_gd = gd_step()
    grads_gd = {k: np.asarray(p.grad) for k, p in named.items()}
    fns = {"graphdiff": gd_step}
    checks = {}

    def check(name, loss, grads):
        rel = abs(loss - loss_gd) / abs(loss_gd)
        gerr = max(float(np.abs(grads[k] - grads_gd[k]).max() / (np.abs(grads_gd[k]).max() + 1e-30))
                   for k in grads_gd)
        checks[name] = {"loss": loss, "loss_rel_diff": rel, "grad_max_rel_diff": gerr}
        if not (rel < 1e-4 and gerr < 1e-3):
            sys.exit(f"{name} disagrees with graphdiff: loss {loss} vs {loss_gd} (rel {rel:.1e}), "
                     f"gradients {gerr:.1e} of their largest entry")

    if "torch" in which:
        P = {k: torch.tensor(v, requires_grad=True) for k, v in state.items()}
        ti, tt, tm = torch.tensor(idx), torch.tensor(targets), torch.tensor(mask)

        def torch_step():
            for t in P.values():
                t.grad = None
            loss = torch_loss(P, cfg, ti, tt, tm)
            loss.backward()
            return loss.item()
        check("torch", torch_step(), {k: t.grad.numpy() for k, t in P.items()})
        fns["torch"] = torch_step
    if "autograd" in which:
        from autograd import value_and_grad
        vg = value_and_grad(lambda P: autograd_loss(P, cfg, idx, targets, mask))
        Pa = {k: np.asarray(v) for k, v in state.items()}

        def autograd_step():
            return vg(Pa)
        loss, grads = autograd_step()
        check("autograd", float(loss), grads)
        fns["autograd"] = autograd_step
    if "numpy" in which:
        npm = NumpyGPT(state, cfg)

        def numpy_step():
            return npm.step(idx, targets, mask)
        check("numpy", *numpy_step())
        fns["numpy"] = numpy_step
    return fns, {"graphdiff_loss": loss_gd, **checks}


def main():
    p = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), "gpt_step")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="BLAS/torch thread counts to run")
    p.add_argument("--configs", nargs="+", default=["tiny", "small"], choices=sorted(CONFIGS))
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per engine (default 21; quick 3)")
    p.add_argument("--engines", nargs="+", default=["torch", "autograd", "numpy"])
    args = p.parse_args()
    import torch  # noqa: F401  (loaded before the thread limits, so threadpoolctl sees its libraries too)
    import autograd  # noqa: F401
    rounds = args.rounds or (3 if args.quick else 21)
    rows, checks = [], {}
    for threads in args.threads:
        common.set_threads(threads)
        for name in args.configs:
            cfg = dict(CONFIGS[name])
            if args.quick:
                cfg.update(batch_size=2, block_size=min(cfg["block_size"], 16))
            fns, checks[f"{name}/{threads}"] = engines(cfg, args.engines)
            times = common.alternate(fns, rounds, warmup=1 if args.quick else 4)
            print(f"{name} x{threads} thread: " + ", ".join(
                f"{e} {common.summary(s)['median'] * 1e3:.1f} ms" for e, s in times.items()), flush=True)
            rows += [{"case": f"{name} x{threads} thread", "config": name, "threads": threads, "engine": e,
                      "samples": s} for e, s in times.items()]
    info = common.machine(threads=args.threads)
    print(common.machine_line(info))
    common.table(rows)
    common.write("gpt_step", {"benchmark": "gpt_step", "machine": info, "quick": args.quick,
                              "configs": {c: CONFIGS[c] for c in args.configs}, "rounds": rounds,
                              "checks": checks, "rows": rows,
                              "timing": "wall clock (perf_counter) per step, alternating rounds; ratio = "
                                        "graphdiff median / engine median, paired = per-round ratios"},
                 args.json)


if __name__ == "__main__":
    main()
