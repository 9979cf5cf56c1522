"""What the causal mask and the position embeddings do, shown on one transformer block (graphdiff.nn.Block).

1. Position embeddings. Attention sums over the keys it sees, and a sum does not care about order: without
   positions, swapping two earlier tokens leaves a later token's output exactly unchanged; with learned
   position embeddings added to the token embeddings, it changes.
2. The causal mask. A causal block (GPT's: position t sees positions <= t) does not let a token's output
   depend on later tokens; the standard block (causal=False, as in an encoder) does.

    python examples/attention_positions.py
"""
import argparse

import numpy as np

import graphdiff as gd
from graphdiff.cli import add_backend_argument
from graphdiff import nn

T, C, V = 5, 16, 10                   # positions, width, vocabulary


def block_outputs(block, X):
    """The block's output (T, C) for one sequence of input vectors X (T, C)."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (1, T, C))
    prog = nn.Program(block, g, {"x": x}, {"out": block(x)})
    (out,) = prog.run({"x": X[None]}, ("out",))
    return gd.to_numpy(out)[0]


def embed(ids, wte, wpe=None):
    """Token embeddings, plus position embeddings when given: the block's input (T, C)."""
    x = wte[ids]
    return x if wpe is None else x + wpe[: len(ids)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_argument(p)
    gd.set_backend(p.parse_args().backend)
    rng = np.random.default_rng(0)
    wte, wpe = rng.standard_normal((V, C)), rng.standard_normal((T, C))
    # std 0.3 rather than GPT-2's 0.02: attention weights far from uniform, so the differences are plain to see
    causal = nn.Block(C, n_head=2, std=0.3, rng=np.random.default_rng(1), dtype="float64")
    standard = nn.Block(C, n_head=2, std=0.3, rng=np.random.default_rng(1), dtype="float64", causal=False)
    ids = np.array([3, 7, 1, 4, 2])
    swapped = ids.copy()
    swapped[[0, 1]] = swapped[[1, 0]]                  # swap the first two tokens
    last = T - 1
    print(f"tokens {ids.tolist()} vs {swapped.tolist()} (tokens 0 and 1 swapped); "
          f"output of the last position ({last}), max |difference|:")
    for name, block in (("causal block", causal), ("standard block", standard)):
        for pos_name, table in (("no positions", None), ("with positions", wpe)):
            a = block_outputs(block, embed(ids, wte, table))[last]
            b = block_outputs(block, embed(swapped, wte, table))[last]
            diff = float(np.max(np.abs(a - b)))
            print(f"  {name:15s} {pos_name:15s} {diff:.2e}  {'unchanged' if diff < 1e-12 else 'changed'}")
    later = ids.copy()
    later[last] = 9                                    # change only the last token
    print(f"\ntokens {ids.tolist()} vs {later.tolist()} (the last token changed); output of position 1:")
    for name, block in (("causal block", causal), ("standard block", standard)):
        a = block_outputs(block, embed(ids, wte, wpe))[1]
        b = block_outputs(block, embed(later, wte, wpe))[1]
        diff = float(np.max(np.abs(a - b)))
        what = ("unchanged: position 1 cannot see position 4" if diff < 1e-12
                else "changed: position 1 attends to position 4")
        print(f"  {name:15s} {diff:.2e}  {what}")


if __name__ == "__main__":
    main()
