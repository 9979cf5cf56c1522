"""Generation tokens/s: graphdiff.lm.generate (greedy) with and without the KV cache, and PyTorch eager greedy
decoding without a cache (full recompute of the context each token, under no_grad) for reference; one
process, alternating rounds.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_generate.py [--quick]

The model has the size of `graphdiff train`'s default GPT (block 128, 4 layers, 4 heads, n_embd 128,
float32; vocab 65), freshly initialised (speed does not depend on the weights); PyTorch gets the same
weights. Each round generates --new tokens after a 4-token prompt with each method; the first round of
each is a warm-up (graphs built). graphdiff's recompute pads the context to a multiple of 16 positions
(one graph per bucket); PyTorch recomputes exactly the context. The greedy tokens of the three are
compared and the agreement reported (float32 near-ties may differ; not a failure).
1 BLAS thread, torch.set_num_threads(1). Writes benchmarks/results/generate.json.
"""
import argparse

import numpy as np

import common


def main():
    p = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), "generate")
    p.add_argument("--new", type=int, default=None, help="tokens per generation (default 120, quick 8)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 7, quick 2)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch
    from gpt_peers import torch_greedy_logits
    from graphdiff.lm import GPT, generate
    common.set_threads(args.threads)
    new = args.new or (8 if args.quick else 120)
    rounds = args.rounds or (2 if args.quick else 7)
    cfg = dict(vocab_size=65, block_size=128, n_layer=4, n_head=4, n_embd=128, dropout=0.0, pad_id=0, seed=0)
    if args.quick:
        cfg.update(block_size=16, n_layer=1, n_embd=32)
    model = GPT(dtype="float32", **cfg)
    P = {k: torch.tensor(v) for k, v in model.state_dict().items()}
    prompt = [5, 6, 7, 8]
    out = {}

    def torch_generate():
        ids = list(prompt)
        with torch.no_grad():
            for _ in range(new):
                ctx = torch.tensor([ids[-cfg["block_size"]:]])
                row = torch_greedy_logits(P, cfg, ctx)[0, -1]
                row[cfg["pad_id"]] = -float("inf")                  # as generate: never <pad>
                ids.append(int(row.argmax()))
        return ids[len(prompt):]

    def run(name, fn):
        def go():
            out[name] = fn()
        return go
    fns = {"graphdiff KV cache": run("kv", lambda: generate(model, prompt, new, greedy=True, use_cache=True)),
           "graphdiff recompute": run("re", lambda: generate(model, prompt, new, greedy=True, use_cache=False)),
           "torch recompute": run("torch", torch_generate)}
    times = common.alternate(fns, rounds, warmup=1)
    agree = {f"{a}~{b}": float(np.mean(np.array(out[a]) == np.array(out[b])))
             for a, b in (("kv", "re"), ("re", "torch"), ("kv", "torch"))}
    rows = [{"case": f"{new} new tokens", "engine": n, "samples": [t / new for t in ts],
             "tokens_per_s": [new / t for t in ts]} for n, ts in times.items()]
    info = common.machine(threads=args.threads)
    print(common.machine_line(info))
    print(f"ms per token; ratio = graphdiff KV cache / engine (time); model {cfg}")
    common.table(rows, baseline="graphdiff KV cache")
    tps = {}
    for r in rows:
        s = r["tokens_per_s_summary"] = common.summary(r["tokens_per_s"])
        tps[r["engine"]] = s["median"]
        print(f"  {r['engine']:20s} tokens/s median {s['median']:8.1f}  min-max {s['min']:.1f}-{s['max']:.1f}")
    ratios = {"graphdiff KV cache / torch recompute (tokens/s)": tps["graphdiff KV cache"] / tps["torch recompute"],
              "graphdiff recompute / torch recompute (tokens/s)": tps["graphdiff recompute"] / tps["torch recompute"]}
    for k, v in ratios.items():
        print(f"  {k}: {v:.2f}")
    print(f"  greedy token agreement: {agree}")
    common.write("generate", {"benchmark": "generate", "machine": info, "quick": args.quick, "config": cfg,
                              "new_tokens": new, "prompt": prompt, "rounds": rounds, "rows": rows,
                              "tokens_per_s_ratios": ratios, "token_agreement": agree,
                              "timing": "wall clock per generate() call / new tokens (perf_counter), "
                                        "alternating rounds after one warm-up call each"}, args.json)


if __name__ == "__main__":
    main()
