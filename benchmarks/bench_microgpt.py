"""microgpt's training run (issue 23) on four engines, side by side in one process: the pure-Python scalar
reference (benchmarks/microgpt_ref.py, microgpt's structure: a Value per number, the graph rebuilt per
document), examples/microgpt.py in scalar mode and in tensor mode, and PyTorch eager (the same model on
float64 tensors, torch.optim.Adam with the same hyperparameters).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_microgpt.py [--steps 1000]
        [--ref-steps N] [--check-steps 50] [--threads 1] [--quick]

Every engine is seeded the same way and trains on the same documents. The steps alternate: step s runs on
every engine (the order rotates each step) before step s + 1 starts, so a slow spell of the machine hits
all of them. Between steps (untimed) gc.freeze() moves every object alive to the collector's permanent
generation, so the collections a step triggers scan only what that step made, not the other engines'
graphs (a scalar-mode graph is some 50,000 nodes; a full collection over them all costs about a second),
much as if each engine ran alone. An engine's ms/step is the sum of its step times over the steps it ran,
over their number: graph building and compiling included, as microgpt.py's own `ms/step` counts them.
The reference, about 100 ms a step, may run only the first --ref-steps steps (its cost per step depends
only on the documents' lengths; the file records how many it ran). Losses of the first --check-steps steps
of both graphdiff modes must equal the reference's to 1e-9 relative (else the benchmark stops); PyTorch's
are reported.
Writes benchmarks/results/microgpt.json.
"""
import argparse
import gc
import os
import sys
import time

import common

sys.path.insert(0, os.path.join(common.ROOT, "examples"))
import microgpt  # noqa: E402
import microgpt_ref  # noqa: E402

TARGETS = {"scalar_speedup": 5.0, "tensor_speedup": 50.0, "tensor_over_torch": 0.7}


class TorchGPT:
    """microgpt's model and run in PyTorch eager, float64: the parameters copied from a microgpt.Run."""

    def __init__(self, run, steps):
        import torch
        self.torch, self.run, self.steps = torch, run, steps
        self.P = {k: torch.tensor(w.copy(), requires_grad=True) for k, w in run.params.items()}
        self.opt = torch.optim.Adam(self.P.values(), lr=0.01, betas=(microgpt.BETA1, microgpt.BETA2),
                                    eps=microgpt.EPS)
        self.mask = torch.tril(torch.ones(microgpt.BLOCK_SIZE, microgpt.BLOCK_SIZE, dtype=torch.bool))

    def loss(self, ids, targets):
        torch, P, n = self.torch, self.P, len(ids)
        H, D = microgpt.N_HEAD, microgpt.HEAD_DIM

        def rmsnorm(x):
            return x * (torch.mean(x * x, dim=-1, keepdim=True) + 1e-5) ** -0.5
        x = rmsnorm(P["wte"][ids] + P["wpe"][:n])                                     # (n, C)
        for i in range(microgpt.N_LAYER):
            W = {w: P[f"layer{i}.{w}"] for w in microgpt.LAYER}
            r = x
            x = rmsnorm(x)
            q, k, v = ((x @ W[w].T).view(n, H, D).transpose(0, 1) for w in ("attn_wq", "attn_wk", "attn_wv"))
            att = (q @ k.transpose(1, 2) / D ** 0.5).masked_fill(~self.mask[:n, :n], float("-inf"))
            y = (torch.softmax(att, dim=-1) @ v).transpose(0, 1).reshape(n, microgpt.N_EMBD)
            x = y @ W["attn_wo"].T + r
            r = x
            x = torch.relu(rmsnorm(x) @ W["mlp_fc1"].T) @ W["mlp_fc2"].T + r
        return torch.nn.functional.cross_entropy(x @ P["lm_head"].T, targets)

    def step(self, s, steps):
        run, torch = self.run, self.torch
        tokens = run.tokens(run.docs[s % len(run.docs)])
        n = min(microgpt.BLOCK_SIZE, len(tokens) - 1)
        ids = torch.tensor(tokens[:n + 1])
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(ids[:-1], ids[1:])
        loss.backward()
        for group in self.opt.param_groups:
            group["lr"] = 0.01 * (1 - s / steps)
        self.opt.step()
        return loss.item()


def engines(docs, seed, steps, which):
    """{name: step(s, steps) -> loss}, each engine seeded and initialised as microgpt is."""
    fns = {}
    if "reference" in which:
        fns["reference"] = microgpt_ref.Model(docs, seed).step
    for mode in ("scalar", "tensor"):
        if mode in which:
            fns[mode] = microgpt.Trainer(docs, seed, mode).step
    if "torch" in which:
        fns["torch"] = TorchGPT(microgpt.Run(docs, seed), steps).step
    return fns


def train(fns, steps, ref_steps):
    """Alternating steps; returns ({name: [seconds per step]}, {name: [losses]})."""
    times, losses = {n: [] for n in fns}, {n: [] for n in fns}
    names = list(fns)
    for s in range(steps):
        order = names[s % len(names):] + names[:s % len(names)]
        for name in order:
            if name == "reference" and s >= ref_steps:
                continue
            gc.freeze()                   # no engine's collections scan the objects another one keeps
            t = time.perf_counter()
            loss = fns[name](s, steps)
            times[name].append(time.perf_counter() - t)
            losses[name].append(loss)
        if (s + 1) % 100 == 0:
            print(f"  step {s + 1}: " + ", ".join(f"{n} {sum(t) * 1e3 / len(t):.2f} ms/step" for n, t in times.items()),
                  flush=True)
    return times, losses


def main(argv=None):
    p = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), "microgpt")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 1000, quick 60)")
    p.add_argument("--ref-steps", type=int, default=None, help="steps the reference runs (default: all)")
    p.add_argument("--check-steps", type=int, default=50, help="steps whose losses must equal the reference's")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data", default=microgpt.DEFAULT_DATA)
    p.add_argument("--engines", nargs="+", default=["reference", "scalar", "tensor", "torch"])
    args = p.parse_args(argv)
    steps = args.steps or (60 if args.quick else 1000)
    ref_steps = min(steps, args.ref_steps or steps)
    check = min(args.check_steps, ref_steps if "reference" in args.engines else 0)
    import torch  # noqa: F401  (loaded before the thread limits, so they reach it)
    common.set_threads(args.threads)
    docs = microgpt.load_docs(args.data)
    fns = engines(docs, args.seed, steps, args.engines)
    print(f"microgpt, {steps} steps ({ref_steps} for the reference), {len(docs)} documents, "
          f"engines {', '.join(fns)}", flush=True)
    times, losses = train(fns, steps, ref_steps)

    ref = losses.get("reference", [])
    equal = {}
    for name in fns:
        if name == "reference" or not ref:
            continue
        rel = max(abs(a - b) / abs(b) for a, b in zip(losses[name][:check], ref[:check]))
        equal[name] = {"steps": check, "max_rel_diff": rel, "within_1e-9": rel <= 1e-9}
    ms = {n: sum(t) * 1e3 / len(t) for n, t in times.items()}
    first = {n: sum(t[:ref_steps]) * 1e3 / ref_steps for n, t in times.items()}
    ratios = {}
    if "reference" in ms:
        for mode in ("scalar", "tensor"):
            if mode in ms:
                ratios[f"{mode}_speedup"] = ms["reference"] / ms[mode]
                ratios[f"{mode}_speedup_same_steps"] = first["reference"] / first[mode]
    if "tensor" in ms and "torch" in ms:
        ratios["tensor_over_torch"] = ms["tensor"] / ms["torch"]
    met = {k: (ratios[k] >= t if k.endswith("speedup") else ratios[k] <= t) for k, t in TARGETS.items() if k in ratios}

    info = common.machine(threads=args.threads)
    print(common.machine_line(info))
    print(f"{'engine':12s} {'ms/step':>10s} {'steps':>6s} {'ms/step, first ' + str(ref_steps):>22s} "
          f"{'final loss':>12s}")
    for n in fns:
        print(f"{n:12s} {ms[n]:10.3f} {len(times[n]):6d} {first[n]:22.3f} {losses[n][-1]:12.6f}")
    for name, e in equal.items():
        print(f"{name}: losses of the first {e['steps']} steps within {e['max_rel_diff']:.1e} of the reference's")
    for k, v in ratios.items():
        target = TARGETS.get(k)
        print(f"{k:28s} {v:8.2f}" + ("" if target is None else
                                       f"   target {'>=' if k.endswith('speedup') else '<='} {target}: "
                                       f"{'met' if met[k] else 'NOT met'}"))
    result = {"machine": info, "steps": steps, "reference_steps": ref_steps, "documents": len(docs),
              "seed": args.seed, "ms_per_step": ms, f"ms_per_step_first_{ref_steps}": first,
              "step_seconds": times, "losses": losses, "losses_equal": equal, "ratios": ratios,
              "targets": TARGETS, "targets_met": met,
              "notes": "ms/step: sum of an engine's step times over its steps, graphs built and compiled "
                       "included; speedup = reference ms/step over the mode's (the reference over its "
                       "reference_steps steps, the modes over all steps); *_same_steps: both over the first "
                       "reference_steps steps"}
    common.write("microgpt", result, args.json)
    bad = [n for n, e in equal.items() if n != "torch" and not e["within_1e-9"]]
    if bad:
        sys.exit(f"losses differ from the reference's by more than 1e-9 relative: {', '.join(bad)}")


if __name__ == "__main__":
    main()
