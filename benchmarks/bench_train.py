"""Training tokens/s of the default `graphdiff train` model against the same model in PyTorch eager (AdamW,
gradient clipping, the same warm-up + cosine learning rate, the same batches), one process, alternating.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_train.py [--quick]

graphdiff runs Trainer.train_step (what `graphdiff train` runs: sample a batch, loss with backward,
clip_grad_norm, AdamW step) with TRAIN_DEFAULTS on the default corpus and a GPT with the CLI's default
model settings (char tokenizer, block 128, 4 layers, 4 heads, n_embd 128, float32). PyTorch starts from
the same weights, draws the same batches from a Sampler seeded as the Trainer's, and runs
torch.optim.AdamW (same lr, betas, eps, weight decay on every parameter as graphdiff's AdamW),
clip_grad_norm_ and the same learning rate per step. The first step's losses must agree (rtol 1e-4).
Each round times --steps-per-round steps of each engine; tokens/s counts B * T positions per step.
1 BLAS thread and torch.set_num_threads(1), as `graphdiff train --threads 1` (its default).
Writes benchmarks/results/train.json.
"""
import argparse
import sys

import numpy as np

import common


def setup(quick):
    import torch
    from graphdiff.lm import CharTokenizer, GPT, load_corpus
    from graphdiff.lm.data import Sampler
    from graphdiff.lm.train import TRAIN_DEFAULTS, Trainer, prepare_data
    docs, desc = load_corpus(None)
    if quick:
        docs, desc = docs[:20], desc + " (--quick: its first 20 documents)"
    tok = CharTokenizer.train("".join(docs))
    train, val = prepare_data(docs, tok)
    # `graphdiff train`'s model defaults (lm/cli.py MODEL_DEFAULTS); --quick shrinks it
    cfg = dict(vocab_size=tok.vocab_size, block_size=128, n_layer=4, n_head=4, n_embd=128, dropout=0.0,
               pad_id=tok.pad_id, seed=TRAIN_DEFAULTS["seed"])
    hp = {}
    if quick:
        cfg.update(block_size=16, n_layer=1, n_embd=32)
        hp = dict(batch_size=2, eval_batches=1)
    model = GPT(dtype="float32", **cfg)
    trainer = Trainer(model, tok, train, val, **hp)
    H = trainer.hp
    B, T = H["batch_size"], cfg["block_size"]
    sampler = Sampler(train, T, B, tok.pad_id, np.random.default_rng(H["seed"]))   # the Trainer's batches
    P = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(list(P.values()), lr=H["lr"], betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=H["weight_decay"])
    tstate = {"step": 0}

    def torch_step():
        from gpt_peers import torch_loss
        idx, targets, mask = sampler.next()
        opt.zero_grad(set_to_none=True)
        loss = torch_loss(P, cfg, torch.tensor(idx), torch.tensor(targets), torch.tensor(mask), tok.pad_id)
        loss.backward()
        if H["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(list(P.values()), H["grad_clip"])
        for group in opt.param_groups:
            group["lr"] = trainer.lr_at(tstate["step"])
        opt.step()
        tstate["step"] += 1
        return loss.item()

    def gd_step():
        return trainer.train_step()[0]
    return dict(desc=desc, cfg=cfg, hp=H, tokens_per_step=B * T, params=model.num_parameters(),
                fns={"graphdiff": gd_step, "torch": torch_step})


def main():
    p = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), "train")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 10, quick 2)")
    p.add_argument("--steps-per-round", type=int, default=None, help="steps per engine per round (default 5)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch  # noqa: F401
    common.set_threads(args.threads)
    rounds = args.rounds or (2 if args.quick else 10)
    k = args.steps_per_round or (1 if args.quick else 5)
    s = setup(args.quick)
    fns = s["fns"]
    losses = {name: [fn()] for name, fn in fns.items()}            # step 0 of each: the check
    a, b = losses["graphdiff"][0], losses["torch"][0]
    if abs(a - b) > 1e-4 * abs(b):
        sys.exit(f"first-step losses differ: graphdiff {a} vs torch {b}")

    def chunk(name):
        def run():
            for _ in range(k):
                losses[name].append(fns[name]())
        return run
    times = common.alternate({n: chunk(n) for n in fns}, rounds, warmup=1)
    per_tok = k * s["tokens_per_step"]
    rows = [{"case": "train step", "engine": n, "samples": [t / k for t in ts],
             "tokens_per_s": [per_tok / t for t in ts]} for n, ts in times.items()]
    info = common.machine(threads=args.threads)
    print(common.machine_line(info))
    print(f"model: {s['params']:,} parameters {s['cfg']}, batch {s['hp']['batch_size']}; corpus: {s['desc']}")
    common.table(rows)
    for r in rows:
        tps = common.summary(r["tokens_per_s"])
        r["tokens_per_s_summary"] = tps
        print(f"  {r['engine']:10s} tokens/s median {tps['median']:8.0f}  min-max {tps['min']:.0f}-{tps['max']:.0f}")
    gd_tps, t_tps = (np.median(r["tokens_per_s"]) for r in rows)
    print(f"  tokens/s graphdiff / torch: {gd_tps / t_tps:.2f}")
    n = min(len(v) for v in losses.values())
    print(f"  loss after {n} steps: graphdiff {losses['graphdiff'][n - 1]:.4f}, torch {losses['torch'][n - 1]:.4f}")
    common.write("train", {"benchmark": "train", "machine": info, "quick": args.quick, "config": s["cfg"],
                           "hp": s["hp"], "parameters": s["params"], "corpus": s["desc"],
                           "tokens_per_step": s["tokens_per_step"], "steps_per_round": k, "rounds": rounds,
                           "tokens_per_s_ratio": gd_tps / t_tps, "losses": losses, "rows": rows,
                           "timing": "wall clock per optimizer step (perf_counter), alternating rounds of "
                                     "steps_per_round steps; tokens/s = B*T per step / time"}, args.json)


if __name__ == "__main__":
    main()
