"""The GPU GPT step (one forward + backward, no optimizer, fp32): graphdiff on backend "cupy" against PyTorch
eager CUDA (fp32, and TF32 matmuls), one process, alternating rounds; sized to finish in under 3 minutes.

    python benchmarks/bench_gpu.py                      # configs "gpu" and "small" on a CUDA GPU
    GRAPHDIFF_CUPY_STANDIN=1 python benchmarks/bench_gpu.py --smoke   # anywhere: the CuPy stand-in, torch on CPU

Both engines start from the same weights and get the same host batch each step (both pay its transfer);
the losses must agree with torch fp32 to rtol 1e-4 (1e-2 with --tf32) before timing. Every timed call ends
with a device synchronize.
Memory: CuPy's default memory pool total bytes after the steps (what graphdiff holds) against PyTorch's
torch.cuda.max_memory_allocated (its peak). --smoke (or --quick) runs a shrunken "tiny" config on the
stand-in (tests/cupy_standin: NumPy on the host behind CuPy's interface) with torch on the CPU: it tests
the script, not the GPU. Writes benchmarks/results/gpu.json.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if os.environ.get("GRAPHDIFF_CUPY_STANDIN") == "1":       # as tests/conftest.py: the stand-in first
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "cupy_standin"))

import common  # noqa: E402
from gpt_peers import CONFIGS, batch, model_config, torch_loss  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", "--quick", dest="smoke", action="store_true",
                   help="a smoke run on the CuPy stand-in (GRAPHDIFF_CUPY_STANDIN=1) with torch on the CPU")
    p.add_argument("--json", default=None, help="result file (default benchmarks/results/gpu.json)")
    p.add_argument("--configs", nargs="+", default=None, choices=sorted(CONFIGS),
                   help="default: gpu small (smoke: tiny, shrunk)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 30, smoke 2)")
    p.add_argument("--no-tf32", action="store_true", help="leave out the PyTorch TF32 row")
    p.add_argument("--tf32", action="store_true",
                   help="graphdiff with TF32 products too (CuPy's CUPY_TF32=1, as `graphdiff train --tf32`: CuPy "
                        "reads it once per process, so this is a run of its own); writes gpu_tf32.json")
    p.add_argument("--train-step", action="store_true",
                   help="time whole training steps (loss, backward, clipping, AdamW) instead: graphdiff plain, "
                        "graphdiff recorded as a CUDA graph (graphdiff.lm.capture), PyTorch eager with its AdamW; "
                        "writes gpu_train.json")
    args = p.parse_args()
    if args.train_step:
        return train_steps(args)
    if args.tf32:
        os.environ["CUPY_TF32"] = "1"           # before CuPy's first float32 product
    import torch
    import cupy
    from graphdiff.lm import GPT
    standin = hasattr(cupy, "standin")
    if args.smoke and not standin and not torch.cuda.is_available():
        sys.exit("--smoke without a GPU needs GRAPHDIFF_CUPY_STANDIN=1 (the CuPy stand-in)")
    if not args.smoke and standin:
        sys.exit("the CuPy stand-in is on the path: timings would be NumPy's; run with --smoke, or on a GPU")
    device = "cuda" if torch.cuda.is_available() and not standin else "cpu"
    configs = args.configs or (["tiny"] if args.smoke else ["gpu", "small"])
    rounds = args.rounds or (2 if args.smoke else 30)
    tf32 = device == "cuda" and not args.no_tf32
    if device == "cpu":
        common.set_threads(1)

    def sync():
        cupy.cuda.Device().synchronize()
        if device == "cuda":
            torch.cuda.synchronize()

    GD = "graphdiff cupy tf32" if args.tf32 else "graphdiff cupy fp32"
    rows, checks, memory = [], {}, {}
    for name in configs:
        cfg = dict(CONFIGS[name])
        if args.smoke:
            cfg.update(batch_size=2, block_size=16)
        m = GPT(dtype="float32", dropout=0.0, seed=0, backend="cupy", **model_config(cfg))
        idx, targets, mask = batch(cfg)
        P = {k: torch.tensor(v, device=device, requires_grad=True) for k, v in m.state_dict().items()}

        def gd_step():
            return m.loss(idx, targets, mask, backward=True)

        def torch_step(allow_tf32=False):
            torch.backends.cuda.matmul.allow_tf32 = allow_tf32
            torch.backends.cudnn.allow_tf32 = allow_tf32
            try:
                for t in P.values():
                    t.grad = None
                ti, tt, tm = (torch.from_numpy(a).to(device, non_blocking=True) for a in (idx, targets, mask))
                loss = torch_loss(P, cfg, ti, tt, tm)
                loss.backward()
                return loss
            finally:
                torch.backends.cuda.matmul.allow_tf32 = False
                torch.backends.cudnn.allow_tf32 = False
        a, b = gd_step(), torch_step().item()
        checks[name] = {"graphdiff_loss": a, "torch_loss": b, "rel_diff": abs(a - b) / abs(b)}
        tol = 1e-2 if args.tf32 else 1e-4       # TF32 products carry 10-bit mantissas
        if abs(a - b) > tol * abs(b):
            sys.exit(f"{name}: graphdiff loss {a} vs torch fp32 {b} disagree (rtol {tol})")
        fns = {GD: gd_step, "torch fp32": torch_step}
        if tf32:
            checks[name]["torch_tf32_loss"] = torch_step(True).item()
            fns["torch tf32"] = lambda: torch_step(True)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = common.alternate(fns, rounds, warmup=1 if args.smoke else 3, sync=sync)
        rows += [{"case": name, "config": name, "engine": e, "samples": s} for e, s in times.items()]
        pool = getattr(cupy, "get_default_memory_pool", None)
        memory[name] = {"cupy_pool_total_bytes": int(pool().total_bytes()) if pool else None,
                        "torch_max_allocated_bytes": int(torch.cuda.max_memory_allocated())
                        if device == "cuda" else None}
        m = P = None            # the next config gets the memory (fns still hold the closures)
        if pool:
            pool().free_all_blocks()
        if device == "cuda":
            torch.cuda.empty_cache()
    info = common.machine(threads=1 if device == "cpu" else None)
    info["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    info["standin"] = standin
    info["torch_device"] = device
    if device == "cuda":
        info["torch_cuda"] = torch.version.cuda
        info["torch_gpu"] = torch.cuda.get_device_name(0)
    print(common.machine_line(info) + f"; GPU: {info['gpu']}; torch on {device}")
    common.table(rows, baseline=GD)
    for name, mem in memory.items():
        gdm, tm = mem["cupy_pool_total_bytes"], mem["torch_max_allocated_bytes"]
        if gdm is not None and tm:
            print(f"  {name}: memory CuPy pool {gdm / 2**20:.0f} MB, torch peak {tm / 2**20:.0f} MB "
                  f"(ratio {gdm / tm:.2f})")
    common.write("gpu_tf32" if args.tf32 else "gpu",
                 {"benchmark": "gpu", "graphdiff_tf32": args.tf32, "machine": info, "smoke": args.smoke,
                  "quick": args.smoke, "configs": {c: CONFIGS[c] for c in configs}, "rounds": rounds,
                  "checks": checks, "memory": memory, "rows": rows,
                  "timing": "wall clock per step with a device sync (perf_counter), alternating rounds; "
                            "ratio = graphdiff median / engine median"},
                 args.json)


def train_steps(args):
    """Whole training steps: graphdiff's Trainer step plain and as a CUDA graph, PyTorch eager with AdamW."""
    import torch
    import cupy
    from graphdiff.lm import GPT
    from graphdiff.lm.capture import CapturedStep
    from graphdiff.nn.optim import AdamW, clip_grad_norm
    standin = hasattr(cupy, "standin")
    if args.smoke != standin:
        sys.exit("--train-step: --smoke runs on the CuPy stand-in (GRAPHDIFF_CUPY_STANDIN=1), timings on a GPU")
    device = "cuda" if torch.cuda.is_available() and not standin else "cpu"
    configs = args.configs or (["tiny"] if args.smoke else ["gpu", "small"])
    rounds = args.rounds or (3 if args.smoke else 30)
    lr, clip = 1e-3, 1.0

    def sync():
        cupy.cuda.Device().synchronize()
        if device == "cuda":
            torch.cuda.synchronize()

    rows, checks = [], {}
    for name in configs:
        cfg = dict(CONFIGS[name])
        if args.smoke:
            cfg.update(batch_size=2, block_size=16)
        idx, targets, mask = batch(cfg)
        plain = GPT(dtype="float32", dropout=0.0, seed=0, backend="cupy", **model_config(cfg))
        graphed = GPT(dtype="float32", dropout=0.0, seed=0, backend="cupy", **model_config(cfg))
        opt_plain, opt_graphed = AdamW(plain, lr=lr), AdamW(graphed, lr=lr)
        captured = CapturedStep(graphed, opt_graphed, cfg["batch_size"], cfg["block_size"], grad_clip=clip)
        P = {k: torch.tensor(v, device=device, requires_grad=True) for k, v in plain.state_dict().items()}
        topt = torch.optim.AdamW(P.values(), lr=lr, weight_decay=0.01)

        def plain_step():
            loss = plain.loss(idx, targets, mask, backward=True)
            clip_grad_norm(plain, clip)
            opt_plain.step()
            return loss

        def graphed_step():
            return captured(idx, targets, mask)

        def torch_step():
            topt.zero_grad(set_to_none=True)
            ti, tt, tm = (torch.from_numpy(a).to(device, non_blocking=True) for a in (idx, targets, mask))
            loss = torch_loss(P, cfg, ti, tt, tm)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(P.values(), clip)
            topt.step()
            return loss
        # the same first steps: plain and recorded bit for bit (after the recording), PyTorch to rtol 1e-3
        first = [(plain_step(), graphed_step(), torch_step().item()) for _ in range(4)]
        checks[name] = {"losses (plain, cuda graph, torch)": first}
        for a, b, c in first:
            if a != b or abs(a - c) > 1e-3 * abs(c):
                sys.exit(f"{name}: training losses disagree (plain, CUDA graph, torch): {first}")
        fns = {"graphdiff cuda graph": graphed_step, "graphdiff plain": plain_step, "torch eager": torch_step}
        times = common.alternate(fns, rounds, warmup=1, sync=sync)
        rows += [{"case": name, "config": name, "engine": e, "samples": s} for e, s in times.items()]
        plain = graphed = captured = P = topt = fns = None
    info = common.machine(threads=1 if device == "cpu" else None)
    info["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    info["standin"], info["torch_device"] = standin, device
    print(common.machine_line(info) + f"; GPU: {info['gpu']}; torch on {device}")
    print(f"training steps (loss, backward, clip {clip}, AdamW lr {lr}); ratio = CUDA graph / engine")
    common.table(rows, baseline="graphdiff cuda graph")
    common.write("gpu_train", {"benchmark": "gpu_train", "machine": info, "smoke": args.smoke, "quick": args.smoke,
                               "configs": {c: CONFIGS[c] for c in configs}, "rounds": rounds, "checks": checks,
                               "rows": rows, "timing": "wall clock per step with a device sync, alternating rounds"},
                 args.json)


if __name__ == "__main__":
    main()
