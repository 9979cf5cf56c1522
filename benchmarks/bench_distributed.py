"""Data-parallel training speed: tokens/s of one process against `mpiexec -n 2` (one BLAS thread per process),
the time per step in the gradient all-reduce, and the scaling efficiency (tokens/s on 2 / (2 x on 1)).

    python benchmarks/bench_distributed.py [--rounds 3] [--steps 20] [--out benchmarks/results/distributed.json]

The two settings run alternately, `--rounds` times each, so that other load on the machine falls on both;
the figures are the median of the rounds and their range. The model is `graphdiff train`'s default GPT
(4 layers, width 128, T = 128, float32), global batch 16, on the default corpus. One process runs the plain
Trainer; two run DataParallelTrainer (8 rows each). The all-reduce time includes the wait for the slower rank.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(steps, batch):
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
    import graphdiff.distributed as D
    from graphdiff.lm import CharTokenizer
    from graphdiff.lm.checkpoint import build_model
    from graphdiff.lm.data import default_corpus
    from graphdiff.lm.train import Trainer, prepare_data
    comm = D.communicator()
    docs, _ = default_corpus(max_chars=400_000)
    tok = CharTokenizer.train("".join(docs))
    train, val = prepare_data(docs, tok)
    cfg = dict(vocab_size=tok.vocab_size, block_size=128, n_layer=4, n_head=4, n_embd=128, pad_id=tok.pad_id, seed=1)
    model = build_model("gpt", cfg, dtype="float32")
    hp = dict(steps=steps + 3, batch_size=batch, eval_every=10 ** 9, eval_batches=1)
    tr = (D.DataParallelTrainer(model, tok, train, val, comm=comm, **hp) if comm.size > 1
          else Trainer(model, tok, train, val, **hp))
    for _ in range(3):                       # warm-up: graphs built, buffers allocated
        tr.train_step()
    comm.barrier()
    comm0 = getattr(tr, "comm_seconds", 0.0)
    t0, tokens = time.perf_counter(), 0
    for _ in range(steps):
        tokens += tr.train_step()[1]
    comm.barrier()
    dt = time.perf_counter() - t0
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "tokens_per_s": tokens / dt, "s_per_step": dt / steps,
                          "comm_s_per_step": (getattr(tr, "comm_seconds", 0.0) - comm0) / steps}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distributed.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.steps, args.batch)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    me = [sys.executable, __file__, "--worker", "--steps", str(args.steps), "--batch", str(args.batch)]
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    runs = {1: [], 2: []}
    for r in range(args.rounds):
        for ranks in (1, 2):
            cmd = me if ranks == 1 else [mpiexec, "-n", "2", *me]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            runs[ranks].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {r + 1}: {ranks} process(es): {runs[ranks][-1]}", flush=True)

    def med(ranks, key):
        values = [x[key] for x in runs[ranks]]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
              "rounds": args.rounds, "steps": args.steps, "global_batch": args.batch,
              "model": "GPT 4 layers, n_embd 128, T 128, float32, char vocabulary",
              "one": {k: med(1, k) for k in ("tokens_per_s", "s_per_step")},
              "two": {k: med(2, k) for k in ("tokens_per_s", "s_per_step", "comm_s_per_step")}, "runs": runs}
    result["speedup"] = result["two"]["tokens_per_s"]["median"] / result["one"]["tokens_per_s"]["median"]
    result["efficiency"] = result["speedup"] / 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("one", "two", "speedup", "efficiency")}, indent=1))


if __name__ == "__main__":
    main()
