"""Train a tiny character-level GPT with graphdiff, then sample from it.

    python examples/tiny_gpt.py                  # under a minute on a laptop CPU
    python examples/tiny_gpt.py --steps 2000     # better samples

Uses a slice of the Python standard library's source as the corpus (always there, offline).
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # small matrices: one BLAS thread is fastest on shared cores

import argparse  # noqa: E402
import time  # noqa: E402

from graphdiff.cli import add_backend_argument  # noqa: E402
from graphdiff import set_backend  # noqa: E402
from graphdiff.lm import CharTokenizer, GPT, generate  # noqa: E402
from graphdiff.lm.data import default_corpus  # noqa: E402
from graphdiff.lm.train import Trainer, prepare_data  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--chars", type=int, default=400_000, help="corpus size in characters")
    add_backend_argument(p)
    args = p.parse_args()
    set_backend(args.backend)

    docs, desc = default_corpus(max_chars=args.chars)
    tok = CharTokenizer.train("".join(docs))
    train, val = prepare_data(docs, tok)
    model = GPT(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64, pad_id=tok.pad_id)
    print(f"{desc}\nGPT with {model.num_parameters():,} parameters, vocabulary of {tok.vocab_size} characters")
    trainer = Trainer(model, tok, train, val, steps=args.steps, batch_size=16, lr=3e-3, warmup=20,
                      eval_every=max(1, args.steps // 5))
    trainer.fit()

    prompt = tok.encode("def ")
    print("\n--- greedy (a small model's most likely path soon repeats itself; sampling does not) ---")
    print(tok.decode(prompt + generate(model, prompt, 200, greedy=True)))
    print("\n--- ancestral sampling, temperature 0.8, top-k 20 ---")
    print(tok.decode(prompt + generate(model, prompt, 200, temperature=0.8, top_k=20, seed=0)))

    for cache in (True, False):
        generate(model, prompt, 60, greedy=True, use_cache=cache)      # builds the graphs once
        t0 = time.perf_counter()
        generate(model, prompt, 60, greedy=True, use_cache=cache)
        dt = time.perf_counter() - t0
        print(f"{'KV cache' if cache else 'full recompute'}: {60 / dt:.0f} tokens/s")


if __name__ == "__main__":
    main()
