"""Pre-train a language model, then fine-tune it on a small new corpus: `graphdiff train --init`.

1. Pre-train a small character GPT on one part of the Python standard library's source.
2. Fine-tune: `graphdiff train --init pre.npz --corpus new.txt`: the pre-trained weights and tokenizer,
   a new optimizer state, a small corpus of *other* standard-library files, a few steps.
3. From scratch: `graphdiff train --corpus new.txt` with the same model sizes, settings and steps.

Both runs are validated on the same held-out end of the new corpus (cross-entropy per character, nats), and
the fine-tuned model, which already knows how Python looks, is far ahead after the same number of steps.

    python examples/finetune_lm.py [--pre-steps 400 --steps 100 --out out/finetune]
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # small matrices: one BLAS thread is fastest on shared cores

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402

from graphdiff.cli import add_backend_argument, main as graphdiff  # noqa: E402
from graphdiff.lm import tokenizers  # noqa: E402
from graphdiff.lm.data import default_corpus  # noqa: E402
from graphdiff.lm.checkpoint import tokenizer_path  # noqa: E402

SIZES = ["--block-size", "64", "--n-layer", "2", "--n-head", "4", "--n-embd", "64"]


def run(*argv):
    """`graphdiff ...` in this process; its output is kept quiet, a failure shows it."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = graphdiff([str(a) for a in argv])
    if rc != 0:
        raise SystemExit(f"graphdiff {' '.join(map(str, argv))} failed ({rc}):\n{out.getvalue()}")
    return out.getvalue()


def val_losses(log):
    with open(log) as f:
        return [(e["step"], e["val_loss"]) for e in map(json.loads, f)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pre-steps", type=int, default=400, help="pre-training steps")
    p.add_argument("--steps", type=int, default=100, help="fine-tuning steps, and from-scratch steps")
    p.add_argument("--pre-chars", type=int, default=300_000, help="pre-training corpus size (characters)")
    p.add_argument("--new-chars", type=int, default=20_000, help="new corpus size (characters)")
    p.add_argument("--out", default="out/finetune", help="folder for the corpora, checkpoints and logs")
    add_backend_argument(p)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    docs, _ = default_corpus()
    pre, new = [], []                  # the first files for pre-training, files from the end for the new task
    for d in docs:
        if sum(map(len, pre)) < args.pre_chars:
            pre.append(d)
    for d in reversed(docs[len(pre):]):
        if sum(map(len, new)) < args.new_chars:
            new.append(d)
    names = ("pre.txt", "new.txt", "pre.npz", "ft.npz", "scratch.npz", "ft.jsonl", "scratch.jsonl")
    path = {k: os.path.join(args.out, k) for k in names}
    with open(path["pre.txt"], "w") as f:
        f.write("".join(pre))
    for k in ("ft.jsonl", "scratch.jsonl"):
        if os.path.exists(path[k]):
            os.remove(path[k])
    common = ["--eval-every", max(1, args.steps // 4), "--sample-chars", 0, "--no-progress", "--warmup", 10,
              *(["--backend", args.backend] if args.backend else [])]
    print(f"1. pre-training on {len(pre)} standard-library files ({sum(map(len, pre)):,} characters), "
          f"{args.pre_steps} steps")
    run("train", "--corpus", path["pre.txt"], "--steps", args.pre_steps, "--out", path["pre.npz"], *SIZES,
        *common)
    # the tokenizer is kept when fine-tuning: the new corpus may only use characters it knows
    tok = tokenizers.load(tokenizer_path(path["pre.npz"]))
    known = set(tok.decode(range(tok.vocab_size)))
    text = "".join(new)[: args.new_chars]
    kept = "".join(c for c in text if c in known)
    with open(path["new.txt"], "w") as f:
        f.write(kept)
    print(f"2. new corpus: the start of {len(new)} other file{'s' * (len(new) > 1)} ({len(kept):,} characters; "
          f"{len(text) - len(kept)} characters the pre-trained tokenizer does not know removed)")
    run("train", "--init", path["pre.npz"], "--corpus", path["new.txt"], "--steps", args.steps,
        "--out", path["ft.npz"], "--log", path["ft.jsonl"], *common)
    run("train", "--corpus", path["new.txt"], "--steps", args.steps, "--out", path["scratch.npz"],
        "--log", path["scratch.jsonl"], *SIZES, *common)
    ft, sc = val_losses(path["ft.jsonl"]), val_losses(path["scratch.jsonl"])
    print(f"\nvalidation loss on the new corpus's held-out end (nats per character), same {args.steps} steps:")
    print(f"{'step':>6s} {'fine-tuned':>11s} {'from scratch':>13s}")
    for (step, a), (_, b) in zip(ft, sc):
        print(f"{step:6d} {a:11.4f} {b:13.4f}")
    print(f"after {args.steps} steps: fine-tuned {ft[-1][1]:.4f}, from scratch {sc[-1][1]:.4f} "
          f"({'fine-tuning ahead' if ft[-1][1] < sc[-1][1] else 'from scratch ahead'} by "
          f"{abs(sc[-1][1] - ft[-1][1]):.4f} nats)")


if __name__ == "__main__":
    main()
