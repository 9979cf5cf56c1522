"""Train the default GPT on the default corpus for a fixed wall-clock budget; log validation loss and
tokens/s over time, and print samples along the way.

    python benchmarks/train_gpt.py --minutes 10 --out benchmarks/results/train_gpt

Writes <out>/log.jsonl (one line per evaluation), <out>/samples.txt and <out>/ckpt.npz (+ .json).
"""
import os

# one BLAS thread: these matrices are small, and OpenBLAS's busy-waiting threads collapse (10x slower,
# measured) when the 2 cores are shared with other work
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

from graphdiff.lm import CharTokenizer, GPT, generate, load_corpus
from graphdiff.lm.train import Trainer, prepare_data


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=1100, help="cosine schedule length (training stops at "
                   "whichever of --steps and --minutes comes first)")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--sample-every-s", type=float, default=150.0)
    p.add_argument("--out", default="benchmarks/results/train_gpt")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, "log.jsonl")
    if os.path.exists(log_path):
        os.unlink(log_path)
    docs, desc = load_corpus(None)
    tok = CharTokenizer.train("".join(docs))
    train, val = prepare_data(docs, tok)
    # the defaults of `graphdiff train`
    model = GPT(vocab_size=tok.vocab_size, block_size=128, n_layer=4, n_head=4, n_embd=128, pad_id=tok.pad_id)
    trainer = Trainer(model, tok, train, val, steps=args.steps, eval_every=args.eval_every)
    print(f"corpus: {desc}\nmodel: {model.num_parameters():,} parameters, vocab {tok.vocab_size}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    samples = open(os.path.join(args.out, "samples.txt"), "w")
    last_sample = [time.perf_counter()]

    def on_eval(entry):
        now = time.perf_counter()
        if now - last_sample[0] >= args.sample_every_s:
            last_sample[0] = now
            ids = generate(model, tok.encode("\n"), 300, temperature=0.8, seed=0)
            text = tok.decode(ids)
            samples.write(f"=== step {entry['step']}, {entry['time']:.0f}s, val {entry['val_loss']:.3f}\n"
                          f"{text}\n")
            samples.flush()
    trainer.fit(time_limit=args.minutes * 60, checkpoint=os.path.join(args.out, "ckpt.npz"), progress=False,
                log=log_path, on_eval=on_eval)
    ev = trainer.evaluate()
    hist = trainer.history
    print(f"\n{'step':>6} {'time s':>7} {'train':>7} {'val':>7} {'tok/s':>7}")
    for e in hist:
        if "val_loss" in e:
            print(f"{e['step']:6d} {e['time']:7.0f} {e['loss']:7.3f} {e['val_loss']:7.3f} {e['tokens_per_s']:7.0f}")
    tps = trainer.tokens / max(trainer.elapsed, 1e-9)
    print(f"final: step {trainer.step}, {trainer.elapsed:.0f}s, val loss {ev:.3f}, "
          f"{trainer.tokens:,} tokens, mean {tps:,.0f} tokens/s")
    for temp, seed in ((0.8, 0), (0.8, 1)):
        ids = generate(model, tok.encode("\n"), 500, temperature=temp, seed=seed)
        text = tok.decode(ids)
        print(f"--- sample (temperature {temp}, seed {seed}) ---\n{text}")
        samples.write(f"=== final, temperature {temp}, seed {seed}\n{text}\n")
    samples.close()
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"steps": trainer.step, "seconds": trainer.elapsed, "val_loss": ev, "tokens": trainer.tokens,
                   "tokens_per_s": tps}, f, indent=1)


if __name__ == "__main__":
    main()
