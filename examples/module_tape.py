"""The lecture's object-oriented, module-based autodiff in a few dozen lines of NumPy.

Each module has forward(x) and backward(g). apply_fwd runs a module's forward and pushes the module onto a
global tape; tape_bwd pops the tape and calls each module's backward with the gradient of its output.
The gradients are then checked against graphdiff's on the same network.

Why no topological sort: a module is pushed onto the tape when its forward *runs*, and it can only run after
the modules that produced its inputs have run. So creation order is already a topological order, and
popping the tape (reverse creation order) visits every module after all the modules that consume its
output -- exactly the reverse topological order backprop needs. (This tape handles a chain, where each
output feeds the next module; a graph with fan-out would also sum the gradients flowing into a shared
value, as graphdiff's two backward variants do.)
"""
import argparse

import numpy as np

import graphdiff as gd

TAPE = []


def apply_fwd(module, x):
    y = module.forward(x)
    TAPE.append(module)                  # creation order = a topological order
    return y


def tape_bwd(g):
    while TAPE:
        g = TAPE.pop().backward(g)       # reverse creation order: every consumer before its producer
    return g


class Linear:
    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, g):
        self.dW, self.db = self.x.T @ g, g.sum(0)
        return g @ self.W.T


class Tanh:
    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, g):
        return g * (1 - self.y ** 2)


class SoftmaxCrossEntropy:
    def __init__(self, targets):
        self.t = targets

    def forward(self, z):
        z = z - z.max(1, keepdims=True)
        self.p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        return -np.log(self.p[np.arange(len(self.t)), self.t]).mean()

    def backward(self, g):
        d = self.p.copy()
        d[np.arange(len(self.t)), self.t] -= 1
        return g * d / len(self.t)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default=None, help="numpy, cupy or array_api_strict (default: $GRAPHDIFF_BACKEND, else numpy)")
    gd.set_backend(p.parse_args().backend)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 5)), rng.integers(0, 3, 8)
    W1, b1, W2, b2 = rng.standard_normal((5, 4)), rng.standard_normal(4), rng.standard_normal((4, 3)), np.zeros(3)

    l1, act, l2, ce = Linear(W1, b1), Tanh(), Linear(W2, b2), SoftmaxCrossEntropy(y)
    loss = apply_fwd(ce, apply_fwd(l2, apply_fwd(act, apply_fwd(l1, X))))
    tape_bwd(1.0)

    g = gd.Graph(dtype="float64")
    x = g.input("x", X.shape)
    P = {n: g.param(n, v) for n, v in dict(W1=W1, b1=b1, W2=W2, b2=b2).items()}
    out = gd.cross_entropy(gd.tanh(x @ P["W1"] + P["b1"]) @ P["W2"] + P["b2"], y)
    g.forward({x: X})
    g.backward(out)

    print(f"loss: tape {loss:.12f}   graphdiff {out.item():.12f}")
    for name, tape_grad in dict(W1=l1.dW, b1=l1.db, W2=l2.dW, b2=l2.db).items():
        err = np.abs(tape_grad - gd.to_numpy(P[name].grad)).max()      # on the host
        print(f"d{name}: max |tape - graphdiff| = {err:.2e}")
        assert err < 1e-12
    assert abs(loss - out.item()) < 1e-12


if __name__ == "__main__":
    main()
