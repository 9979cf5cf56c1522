"""Peak memory of the CPU GPT step (forward + backward, float32), graphdiff against PyTorch eager (and the
hand-written NumPy step and HIPS autograd), measured as RSS growth in a fresh subprocess per engine.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_memory.py [--quick]

Method (Linux): each engine runs in its own fresh process, alternating engines over --repeats rounds. Once
the model and the batch exist, the process reads VmRSS (the base); before a measured step it writes "5"
to /proc/self/clear_refs (which resets the peak RSS, VmHWM), and after it reads VmHWM: the figure is
VmHWM - base, the peak the step needs on top of the model. "first" is the first step (graphdiff builds
and plans its graph in it); "steady" is the 5th, when caches, compiled plans and the allocator are warm;
"retained" is VmRSS - base after it (what stays between steps); "steady faults" counts the minor page
faults of the steady step (getrusage): memory the step touches for the first time (a fresh mmap'd
buffer), where reused memory causes none. graphdiff reuses memory across steps through the allocator: it
releases each value at its last use, so glibc hands the same blocks out again, as PyTorch's caching
allocator does. Libraries load before the base: torch's at import, Numba's (graphdiff's row loops,
imported at the first large array) by fused_numba.warm(), whose
RSS growth is reported apart as "libraries". RSS counts what malloc holds, so NumPy
temporaries that glibc keeps for reuse count as much as PyTorch's own allocator's blocks: it is what the
OS sees (not tracemalloc, not torch's allocator statistics).
Writes benchmarks/results/memory.json.
"""
import argparse
import json
import os
import resource
import subprocess
import sys

import common
from gpt_peers import CONFIGS


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024          # kB -> bytes
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(engine, config, quick):
    """In this (fresh) process: {"first", "steady"} RSS growth over one step in bytes, and the RSS before."""
    import numpy as np
    import torch
    import common as c
    c.set_threads(1)
    cfg = dict(CONFIGS[config])
    if quick:
        cfg.update(batch_size=2, block_size=min(cfg["block_size"], 16))
    # only the measured engine is built here (bench_gpt_step checks that the engines agree)
    from gpt_peers import NumpyGPT, autograd_loss, batch, model_config, torch_loss
    from graphdiff.lm import GPT
    m = GPT(dtype="float32", dropout=0.0, seed=0, **model_config(cfg))
    idx, targets, mask = batch(cfg)
    if engine == "graphdiff":
        def step():
            m.loss(idx, targets, mask, backward=True)
    elif engine == "torch":
        P = {k: torch.tensor(v, requires_grad=True) for k, v in m.state_dict().items()}
        ti, tt, tm = torch.tensor(idx), torch.tensor(targets), torch.tensor(mask)

        def step():
            for t in P.values():
                t.grad = None
            torch_loss(P, cfg, ti, tt, tm).backward()
    elif engine == "numpy":
        npm = NumpyGPT(m.state_dict(), cfg)

        def step():
            npm.step(idx, targets, mask)
    elif engine == "autograd":
        from autograd import value_and_grad
        vg = value_and_grad(lambda P: autograd_loss(P, cfg, idx, targets, mask))
        Pa = {k: np.asarray(v) for k, v in m.state_dict().items()}

        def step():
            vg(Pa)
    else:
        raise ValueError(engine)
    libraries = 0
    if engine == "graphdiff":           # Numba and its compiled loops load at the first large array: load them
        from graphdiff.ops import fused_numba     # now, as torch's load at import, and report them apart
        before = _status("VmRSS")
        fused_numba.warm("float32")
        libraries = _status("VmRSS") - before
    base = _status("VmRSS")             # the model, its weights and the batch exist; no step has run
    out = {"rss_before": base, "libraries": libraries}
    for label, before_steps in (("first", 0), ("steady", 3)):
        for _ in range(before_steps):
            step()
        _reset_peak()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        out[label] = _status("VmHWM") - base
        out[f"{label} faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    out["retained"] = _status("VmRSS") - base
    return out


def main():
    p = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), "memory")
    p.add_argument("--configs", nargs="+", default=["tiny", "small"], choices=sorted(CONFIGS))
    p.add_argument("--engines", nargs="+", default=["graphdiff", "torch", "numpy", "autograd"])
    p.add_argument("--repeats", type=int, default=None, help="fresh processes per engine (default 3, quick 1)")
    p.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args.quick)))
        return
    if not os.path.exists("/proc/self/clear_refs"):
        sys.exit("bench_memory needs Linux's /proc/self/clear_refs (peak RSS reset)")
    repeats = args.repeats or (1 if args.quick else 3)
    rows, faults = [], []
    for config in args.configs:
        got = {e: [] for e in args.engines}
        for r in range(repeats):
            for e in args.engines:
                cmd = [sys.executable, os.path.abspath(__file__), "--measure", e, config] + (
                    ["--quick"] if args.quick else [])
                res = subprocess.run(cmd, capture_output=True, text=True, check=True)
                got[e].append(json.loads(res.stdout.strip().splitlines()[-1]))
        for phase in ("first", "steady", "retained"):
            rows += [{"case": f"{config} {phase}", "config": config, "phase": phase, "engine": e,
                      "samples": [x[phase] for x in got[e]], "rss_before": [x["rss_before"] for x in got[e]],
                      "libraries": [x.get("libraries", 0) for x in got[e]]}
                     for e in args.engines]
        faults += [{"case": f"{config} steady faults", "config": config, "phase": "steady faults", "engine": e,
                    "samples": [x["steady faults"] for x in got[e]]} for e in args.engines]
    import numpy  # noqa: F401
    import torch  # noqa: F401
    common.set_threads(1)        # as in the measuring processes, so the machine line says so
    info = common.machine(threads=1)
    print(common.machine_line(info))
    common.table(rows, unit="MB", scale=1 / 2 ** 20)
    print("minor page faults in the steady (5th) step: memory touched for the first time")
    common.table(faults, unit="faults", scale=1.0)
    libs = [v for r in rows if r["engine"] == "graphdiff" for v in r["libraries"]]
    if libs:
        print(f"graphdiff's Numba row loops, loaded before the base: {max(libs) / 2 ** 20:.0f} MB of RSS")
    common.write("memory", {"benchmark": "memory", "machine": info, "quick": args.quick, "repeats": repeats,
                            "method": "peak RSS over one step above the RSS once the model and batch exist (VmHWM - "
                                      "base, peak reset through /proc/self/clear_refs) in a fresh subprocess "
                                      "per engine; first and 5th (steady) step; retained = RSS after - base; bytes",
                            "configs": {c: CONFIGS[c] for c in args.configs}, "rows": rows + faults}, args.json)


if __name__ == "__main__":
    main()
