"""Unsupervised pre-training, then supervised fine-tuning, on scikit-learn's 8x8 digits, with graphdiff.nn.

1. Pre-train: an autoencoder z = h(W x), x' = h(W' z) (h = sigmoid: a non-linear encoder and decoder, as
   in the lecture) learns to reconstruct *all* 1200 training images, no labels.
2. Fine-tune: a classifier z = h(W x), logits = V z whose W starts from the autoencoder's encoder is
   trained on a few labelled images (default 20: two per class).
3. From scratch: the same classifier from a random W, the same labelled images, the same number of steps.

Over several seeds (each: another labelled subset and other initial weights) it prints both test errors
per seed, their mean and standard deviation, and the paired gain. With scarce labels and a fixed budget of
supervised steps the pre-trained encoder starts from features that already describe digits, and the gain
is well beyond the spread between seeds (measured: 0.38 vs 0.50 test error, gain 0.12 +- 0.06 over 5
seeds, standard error 0.03). With many steps and labels both converge to the same error.
"""
import argparse

import numpy as np

try:
    from sklearn.datasets import load_digits       # the digits ship with scikit-learn: the "examples" extra
except ImportError:
    raise SystemExit("pretrain_finetune.py needs scikit-learn for its digits: pip install -e '.[examples]'")

import graphdiff as gd
from graphdiff.cli import add_backend_argument
from graphdiff import nn


class Net(nn.Module):
    """z = h(W x), then a head on z; h = sigmoid. The encoder W is shared between autoencoder and classifier.

    decode=True: the head is the lecture's non-linear decoder, x' = h(W' z); else the head gives logits."""

    def __init__(self, hidden, out, seed, decode=False):
        super().__init__(dtype="float64")
        rng = np.random.default_rng(seed)
        self.decode = decode
        self.enc = nn.Linear(64, hidden, rng=rng, dtype="float64")
        self.head = nn.Linear(hidden, out, rng=rng, dtype="float64")

    def forward(self, x):
        out = self.head(gd.sigmoid(self.enc(x)))
        return gd.sigmoid(out) if self.decode else out


def program(model, X, loss_fn):
    """Build the graph once for the data's shape; returns a function that runs one step's forward+backward."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", X.shape)
    out = model(x)
    loss = loss_fn(g, out)
    return nn.Program(model, g, {"x": x}, {"loss": loss, "out": out})


def train(model, prog, X, steps, lr):
    opt = nn.AdamW(model, lr=lr, weight_decay=1e-4)
    for _ in range(steps):
        prog.run({"x": X}, ("loss",), backward="loss")
        opt.step()


def test_error(model, X, y):
    prog = program(model, X, lambda g, out: gd.sum(out))
    (logits,) = prog.run({"x": X}, ("out",))
    return float(np.mean(np.argmax(gd.to_numpy(logits), 1) != y))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", type=int, default=20, help="labelled training images for fine-tuning")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--pretrain-steps", type=int, default=400, help="autoencoder steps (all training images)")
    p.add_argument("--steps", type=int, default=40, help="supervised steps, fine-tuned and from scratch alike")
    add_backend_argument(p)
    args = p.parse_args()
    gd.set_backend(args.backend)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    perm = np.random.default_rng(0).permutation(len(X))
    tr, te = perm[:1200], perm[1200:]
    Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]
    errs = {"fine-tuned": [], "from scratch": []}
    for seed in range(args.seeds):
        lab = np.random.default_rng(100 + seed).choice(len(Xtr), args.labels, replace=False)
        Xl, yl = Xtr[lab], ytr[lab]
        # 1. unsupervised pre-training on all 1200 training images
        ae = Net(args.hidden, 64, seed, decode=True)
        train(ae, _ae_program(ae, Xtr), Xtr, args.pretrain_steps, 1e-2)
        # 2. fine-tune: encoder from the autoencoder, new head, labelled images only
        ft = Net(args.hidden, 10, 1000 + seed)
        ft.enc.load_state_dict(ae.enc.state_dict())
        train(ft, program(ft, Xl, lambda g, out: gd.cross_entropy(out, yl)), Xl, args.steps, 1e-2)
        # 3. the same classifier and steps from a random first layer
        sc = Net(args.hidden, 10, 1000 + seed)
        train(sc, program(sc, Xl, lambda g, out: gd.cross_entropy(out, yl)), Xl, args.steps, 1e-2)
        errs["fine-tuned"].append(test_error(ft, Xte, yte))
        errs["from scratch"].append(test_error(sc, Xte, yte))
        print(f"seed {seed}: test error  pre-trained + fine-tuned {errs['fine-tuned'][-1]:.3f}   "
              f"from scratch {errs['from scratch'][-1]:.3f}")
    print(f"\n{args.labels} labelled images, {args.steps} supervised steps, {len(Xte)} test images, "
          f"{args.seeds} seeds (mean +- standard deviation):")
    for k, v in errs.items():
        print(f"  {k:>13}: test error {np.mean(v):.3f} +- {np.std(v):.3f}")
    gain = np.array(errs["from scratch"]) - np.array(errs["fine-tuned"])
    se = np.std(gain, ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else float("nan")
    print(f"  gain from pre-training (paired by seed): {np.mean(gain):.3f} +- {np.std(gain):.3f} "
          f"(standard error {se:.3f}; gain / standard error = {np.mean(gain) / se:.1f})")


def _ae_program(ae, X):
    """Autoencoder: x' = h(W' h(W x)) reconstructs the input (squared error); the image is input and target."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", X.shape)
    out = ae(x)
    return nn.Program(ae, g, {"x": x}, {"loss": gd.mean((out - x) ** 2), "out": out})


if __name__ == "__main__":
    main()
