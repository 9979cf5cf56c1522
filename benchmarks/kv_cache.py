"""KV-cache decoding vs recomputing the whole prefix: tokens/s and the largest logit difference.

    python benchmarks/kv_cache.py [--checkpoint benchmarks/results/train_gpt/ckpt.npz]

Without a checkpoint it uses a freshly initialised GPT of the default size (speed does not depend on
the weights). Graphs are built in a warm-up run first, so only decoding is timed.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from graphdiff.lm import GPT  # noqa: E402
from graphdiff.lm.generate import Decoder  # noqa: E402
from graphdiff.lm.checkpoint import load_checkpoint  # noqa: E402


def decode(model, ids, new, use_cache):
    dec = Decoder(model, use_cache)
    logits = [dec.start(ids)]
    for k in range(new):
        logits.append(dec.push(int(np.argmax(logits[-1][1:])) + 1))
    return np.stack(logits)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--new", type=int, default=120, help="tokens generated after a 4-token prompt")
    args = p.parse_args()
    for dtype in ("float32", "float64"):
        if args.checkpoint:
            model = load_checkpoint(args.checkpoint)[0]
            if dtype != model.dtype:
                m2 = GPT(dtype=dtype, **model.config)
                m2.load_state_dict(model.state_dict())
                model = m2
        else:
            model = GPT(vocab_size=97, block_size=128, n_layer=4, n_head=4, n_embd=128, dtype=dtype)
        prompt = [5, 6, 7, 8]
        times = {}
        outs = {}
        for cache in (True, False):
            decode(model, prompt, args.new, cache)                     # warm-up: builds the graphs
            t0 = time.perf_counter()
            outs[cache] = decode(model, prompt, args.new, cache)
            times[cache] = time.perf_counter() - t0
        diff = np.abs(outs[True] - outs[False]).max()
        print(f"{dtype}: {args.new} tokens  KV cache {args.new / times[True]:7.1f} tok/s   full recompute "
              f"{args.new / times[False]:6.1f} tok/s   speed-up {times[False] / times[True]:4.1f}x   "
              f"max |logit difference| {diff:.1e}")


if __name__ == "__main__":
    main()
