"""The lecture's module-based autodiff, as its object-oriented pseudo-code writes it, checked against graphdiff.

Each module has forward() and backward(). A module's inputs and output are Values, each holding a
`value` and an `in_gradient` (the adjoint, starting at 0). `apply_fwd` runs a module's forward and pushes
the module onto the tape; `tape_bwd` pops the tape and runs each module's backward, which does `+=` into
the `in_gradient` of every input. Creation order is a topological order (a module can only run after the
modules that made its inputs), so popping the tape visits every module after all of its consumers.

The network uses one Value twice: the hidden layer h feeds both the output layer and a skip term, so h's
`in_gradient` receives two contributions; with `=` instead of `+=` one of them would be lost (the script
shows by how much). Sigmoid and softmax/cross-entropy are separate modules, as in the lecture.

    z = W1 x;  h = sigmoid(z);  b = W2 h + W3 h;  y_hat = softmax(b);  J = -sum y log y_hat
"""
import argparse

import numpy as np

import graphdiff as gd
from graphdiff.cli import add_backend_argument

TAPE = []


class Value:
    """A quantity flowing between modules: its value and the adjoint accumulated into it."""

    def __init__(self, value):
        self.value = np.asarray(value, dtype=np.float64)
        self.in_gradient = np.zeros_like(self.value)


def apply_fwd(module, *inputs):
    """Run the module forward and push it onto the tape."""
    module.inputs = inputs
    module.out = Value(module.forward(*(v.value for v in inputs)))
    TAPE.append(module)
    return module.out


def tape_bwd(output, accumulate=True):
    """Seed dJ/dJ = 1, then pop the tape: each module's backward adds into its inputs' in_gradients."""
    output.in_gradient = np.ones_like(output.value)
    while TAPE:
        m = TAPE.pop()
        for v, g in zip(m.inputs, m.backward(m.out.in_gradient)):
            if accumulate:
                v.in_gradient += g
            else:                            # the bug accumulation prevents: the last write wins
                v.in_gradient = g


class Linear:
    """out = W @ x (no bias); W is a Value too, so it gets an in_gradient like any input."""

    def forward(self, W, x):
        self.W, self.x = W, x
        return W @ x

    def backward(self, g):
        return np.outer(g, self.x), self.W.T @ g            # (dW, dx)


class Add:
    def forward(self, a, b):
        return a + b

    def backward(self, g):
        return g, g


class Sigmoid:
    def forward(self, z):
        self.s = 1.0 / (1.0 + np.exp(-z))
        return self.s

    def backward(self, g):
        return (g * self.s * (1.0 - self.s),)


class Softmax:
    def forward(self, b):
        e = np.exp(b - b.max())
        self.y_hat = e / e.sum()
        return self.y_hat

    def backward(self, g):                                   # Jacobian diag(y_hat) - y_hat y_hat^T
        return ((np.diag(self.y_hat) - np.outer(self.y_hat, self.y_hat)).T @ g,)


class CrossEntropy:
    def forward(self, y_hat, y):
        self.y_hat, self.y = y_hat, y
        return -np.sum(y * np.log(y_hat))

    def backward(self, g):
        return g * (-self.y / self.y_hat), np.zeros_like(self.y)


def run_tape(x0, y0, W, accumulate=True):
    """NNForward through apply_fwd, then tape_bwd; returns the Values."""
    v = {"x": Value(x0), "y": Value(y0), **{k: Value(w) for k, w in W.items()}}
    z = apply_fwd(Linear(), v["W1"], v["x"])
    h = apply_fwd(Sigmoid(), z)
    b = apply_fwd(Add(), apply_fwd(Linear(), v["W2"], h), apply_fwd(Linear(), v["W3"], h))   # h used twice
    y_hat = apply_fwd(Softmax(), b)
    J = apply_fwd(CrossEntropy(), y_hat, v["y"])
    order = [type(m).__name__ for m in reversed(TAPE)]       # the order tape_bwd will pop them in
    tape_bwd(J, accumulate)
    v.update(z=z, h=h, b=b, y_hat=y_hat, J=J, order=order)
    return v


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_argument(p)
    gd.set_backend(p.parse_args().backend)
    rng = np.random.default_rng(0)
    x0, y0 = rng.standard_normal(4), np.eye(3)[2]
    W = {"W1": rng.standard_normal((5, 4)) * 0.5, "W2": rng.standard_normal((3, 5)), "W3": rng.standard_normal((3, 5))}
    v = run_tape(x0, y0, W)
    print(f"tape_bwd popped (reverse creation order): {', '.join(v['order'])}")

    g = gd.Graph(dtype="float64")
    x, y = g.input("x", (4,)), g.input("y", (3,))
    P = {k: g.param(k, w) for k, w in W.items()}
    h = gd.sigmoid(gd.matmul(P["W1"], x), name="h")
    out = -gd.sum(y * gd.log(gd.softmax(gd.matmul(P["W2"], h) + gd.matmul(P["W3"], h))))
    g.forward({x: x0, y: y0})
    print(f"J: tape {float(v['J'].value):.12f}   graphdiff {float(gd.to_numpy(out.value)):.12f}")
    assert abs(float(v["J"].value) - float(gd.to_numpy(out.value))) < 1e-12
    for variant in gd.VARIANTS:
        g.backward(out, variant=variant, retain_grads=True)
        for name in ("W1", "W2", "W3", "h"):
            node = h if name == "h" else P[name]
            err = np.abs(v[name].in_gradient - gd.to_numpy(node.grad)).max()      # on the host
            print(f"{variant:8s} d{name}: max |tape - graphdiff| = {err:.2e}")
            assert err < 1e-12
    lost = run_tape(x0, y0, W, accumulate=False)
    print(f"h is used twice: its in_gradient gets two contributions. With '=' instead of '+=', "
          f"dW1 is off by {np.abs(lost['W1'].in_gradient - v['W1'].in_gradient).max():.3f} "
          f"(|dW1| = {np.abs(v['W1'].in_gradient).max():.3f})")


if __name__ == "__main__":
    main()
