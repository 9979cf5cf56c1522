"""Greedy decoding is a heuristic, ancestral sampling is sampling: shown on a small trained character GPT.

Greedy decoding takes the most likely next token at every step. That need not give the most likely
sequence: a less likely first token can lead to much more likely tokens after it. The script trains a
small GPT for a few hundred steps, then for several prompts compares the total log-probability
log p(continuation | prompt) of greedy's path with a beam search's (width 4) and with plain ancestral
sampling's paths (temperature 1, no top-k: each token drawn from the model's own distribution), and prints
the cases where another path beats greedy. Then it shows what temperature and top-k do: they change the
distribution that is sampled from (temperature sharpens or flattens it, top-k cuts it to k tokens).

    python examples/decoding.py [--steps 300]
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # small matrices: one BLAS thread is fastest on shared cores

import argparse  # noqa: E402

from graphdiff.cli import add_backend_argument  # noqa: E402
from graphdiff import set_backend  # noqa: E402
from graphdiff.lm import GPT, CharTokenizer, generate  # noqa: E402
from graphdiff.lm.data import default_corpus  # noqa: E402
from graphdiff.lm.generate import beam_search, sequence_logprob  # noqa: E402
from graphdiff.lm.train import Trainer, prepare_data  # noqa: E402

PROMPTS = ("def ", "import ", "self.", "return ", "if not ", "for i in ", "class ", "raise ")


def train_small_gpt(steps, chars, seed=0):
    docs, desc = default_corpus(max_chars=chars)
    tok = CharTokenizer.train("".join(docs))
    train, val = prepare_data(docs, tok)
    model = GPT(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32, pad_id=tok.pad_id,
                seed=seed)
    Trainer(model, tok, train, val, steps=steps, batch_size=16, lr=5e-3, warmup=10, eval_every=steps,
            seed=seed).fit(progress=False)
    return model, tok, desc


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300, help="training steps")
    p.add_argument("--chars", type=int, default=200_000, help="corpus size in characters")
    p.add_argument("--length", type=int, default=12, help="tokens generated per path")
    p.add_argument("--samples", type=int, default=8, help="ancestral samples per prompt")
    add_backend_argument(p)
    args = p.parse_args()
    set_backend(args.backend)
    model, tok, desc = train_small_gpt(args.steps, args.chars)
    print(f"{desc}; GPT with {model.num_parameters():,} parameters trained for {args.steps} steps\n")
    n = args.length
    beaten = 0
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        greedy = generate(model, ids, n, greedy=True)
        lp_greedy = sequence_logprob(model, ids, greedy)
        beam, _ = beam_search(model, ids, n, width=4)
        lp_beam = sequence_logprob(model, ids, beam)           # every path scored by the same function
        samples = [generate(model, ids, n, temperature=1.0, top_k=None, seed=s) for s in range(args.samples)]
        scored = sorted(((sequence_logprob(model, ids, s), s) for s in samples), key=lambda x: -x[0])
        lp_sample, best_sample = scored[0]
        print(f"prompt {prompt!r}")
        print(f"  greedy                         log p = {lp_greedy:8.3f}  {tok.decode(greedy)!r}")
        print(f"  beam search, width 4           log p = {lp_beam:8.3f}  {tok.decode(beam)!r}")
        print(f"  best of {args.samples} ancestral samples     log p = {lp_sample:8.3f}  {tok.decode(best_sample)!r}")
        others = (("beam search", beam, lp_beam), ("a sampled path", best_sample, lp_sample))
        better = [name for name, path, lp in others if path != greedy and lp > lp_greedy]
        if better:
            beaten += 1
            print(f"  -> greedy is not the most likely path: {' and '.join(better)} beat{'s' * (len(better) == 1)} "
                  f"it by {max(lp_beam, lp_sample) - lp_greedy:.3f} nats")
    print(f"\ngreedy was beaten on {beaten} of {len(PROMPTS)} prompts: taking the best token at each step "
          f"is a heuristic, not a search for the most likely sequence")

    ids = tok.encode("def ")
    print("\nsampling from 'def ' (seed 0 each):")
    for label, kw in (("plain ancestral sampling (temperature 1, no top-k)", dict(temperature=1.0)),
                      ("temperature 0.5: a sharpened distribution", dict(temperature=0.5)),
                      ("temperature 1.5: a flattened distribution", dict(temperature=1.5)),
                      ("top-k 5: only the 5 most likely tokens, renormalised", dict(temperature=1.0, top_k=5))):
        out = generate(model, ids, 40, seed=0, **kw)
        print(f"  {label:55s} {tok.decode(ids + out)!r}")


if __name__ == "__main__":
    main()
