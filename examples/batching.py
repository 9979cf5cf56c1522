"""The lecture's batching, printed as a table: a handful of short sentences, a word vocabulary, each
sentence truncated or padded to a block of T + 1 tokens, the tokens turned into ids, and the (B, T) inputs
and next-token targets the model trains on (graphdiff.lm.make_batch; then each id is embedded).

    python examples/batching.py [--block-size 5]
"""
import argparse

import numpy as np

from graphdiff.lm import make_batch

SENTENCES = ("the cat sat on the mat", "a dog ran", "the dog sat", "my cat ate the fish on the mat", "birds sing")
PAD = "<pad>"


def word_vocabulary(sentences):
    """{word: id}, <pad> first (id 0), then the words in order of first appearance."""
    vocab = {PAD: 0}
    for s in sentences:
        for w in s.split():
            vocab.setdefault(w, len(vocab))
    return vocab


def table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--block-size", type=int, default=5, help="T: inputs per row (each row holds T + 1 tokens)")
    p.add_argument("--backend", default=None, help="accepted like every example's; batching runs on the host "
                   "(ids are checked there before any transfer)")
    T = p.parse_args().block_size
    vocab = word_vocabulary(SENTENCES)
    words = {i: w for w, i in vocab.items()}
    print("vocabulary: " + ", ".join(f"{w}={i}" for w, i in vocab.items()) + "\n")
    ids = [[vocab[w] for w in s.split()] for s in SENTENCES]
    idx, targets, key_mask = make_batch(ids, T, vocab[PAD])
    rows = np.concatenate([idx, targets[:, -1:]], axis=1)         # the T + 1 tokens of each row
    print(f"1. truncate or pad each sentence to T + 1 = {T + 1} tokens")
    print(table(["sentence", *[f"t{t}" for t in range(T + 1)], "note"],
                [[s, *[words[int(i)] for i in r],
                  f"truncated ({len(s.split())} words)" if len(s.split()) > T + 1
                  else f"padded ({T + 1 - len(s.split())} x {PAD})" if len(s.split()) < T + 1 else "fits"]
                 for s, r in zip(SENTENCES, rows)]))
    print("\n2. the same through the vocabulary: ids (B, T + 1)")
    print(table(["row", *[f"t{t}" for t in range(T + 1)]], [[b, *map(int, r)] for b, r in enumerate(rows)]))
    print(f"\n3. inputs idx = ids[:, :-1] {idx.shape}, targets = ids[:, 1:] {targets.shape} "
          f"(a {PAD} target is ignored by the loss, a {PAD} key is masked in attention)")
    print(table(["row", "inputs", "targets", "key mask"],
                [[b, " ".join(f"{int(i):2d}" for i in idx[b]), " ".join(f"{int(i):2d}" for i in targets[b]),
                  " ".join("1" if m else "0" for m in key_mask[b])] for b in range(len(SENTENCES))]))
    print(f"\n4. each id becomes a row of the embedding table: the model's input is (B, T, C) = "
          f"({len(SENTENCES)}, {T}, C)")


if __name__ == "__main__":
    main()
