"""The lecture's two-layer network, twice: procedural NNForward / NNBackward by hand in NumPy, and the
same network as a graphdiff graph differentiated by both backward variants. All gradients agree.

    a = alpha x        (x with a leading 1 for the bias)      J = - sum_k y_k log y_hat_k
    z = sigmoid(a)     (then a leading 1 is put on z)
    b = beta z
    y_hat = softmax(b)

    python examples/lecture_mlp.py [--backend cupy]
"""
import argparse

import numpy as np

import graphdiff as gd

M, D, K = 4, 5, 3          # input features, hidden units, classes


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def nn_forward(x, y, alpha, beta):
    """Procedural forward: every intermediate is returned, because backward needs them."""
    a = alpha @ x                          # (D,)
    z = np.concatenate([[1.0], sigmoid(a)])   # (D+1,)
    b = beta @ z                           # (K,)
    y_hat = np.exp(b - b.max()) / np.exp(b - b.max()).sum()
    J = -np.sum(y * np.log(y_hat))
    return a, z, b, y_hat, J


def nn_backward(x, y, alpha, beta, a, z, b, y_hat, J):
    """Procedural backward: the chain rule written out in reverse order of the forward."""
    g_J = 1.0
    g_b = g_J * (y_hat - y)                # softmax + cross-entropy together
    g_beta = np.outer(g_b, z)              # (K, D+1)
    g_z = beta[:, 1:].T @ g_b              # the bias unit gets no gradient back
    g_a = g_z * sigmoid(a) * (1.0 - sigmoid(a))
    g_alpha = np.outer(g_a, x)             # (D, M+1)
    return g_alpha, g_beta


def build_graph(alpha0, beta0):
    """The same network as a graph: leaves, then one node per line of the lecture's forward."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (M + 1,))
    y = g.input("y", (K,))                 # one-hot label
    alpha = g.param("alpha", alpha0)
    beta = g.param("beta", beta0)
    a = gd.matmul(alpha, x, name="a")
    z = gd.concat([g.constant(np.ones(1), name="bias"), gd.sigmoid(a, name="sigma")], name="z")
    b = gd.matmul(beta, z, name="b")
    y_hat = gd.softmax(b, name="y_hat")
    J = gd.negative(gd.sum(y * gd.log(y_hat)), name="J")
    return g, x, y, alpha, beta, J


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default=None, help="numpy, cupy or array_api_strict (default: $GRAPHDIFF_BACKEND, else numpy)")
    gd.set_backend(p.parse_args().backend)
    rng = np.random.default_rng(0)
    alpha0 = rng.uniform(-0.5, 0.5, (D, M + 1))
    beta0 = rng.uniform(-0.5, 0.5, (K, D + 1))
    g, x, y, alpha, beta, J = build_graph(alpha0, beta0)
    print(f"graph: {len(g.nodes)} nodes on backend '{g.backend.name}': " + ", ".join(n.name for n in g.nodes))
    worst = 0.0
    for example in range(5):
        xv = np.concatenate([[1.0], rng.standard_normal(M)])
        yv = np.eye(K)[rng.integers(K)]
        fwd = nn_forward(xv, yv, alpha0, beta0)
        g_alpha, g_beta = nn_backward(xv, yv, alpha0, beta0, *fwd)
        g.forward({x: xv, y: yv})
        line = [f"example {example}: J = {fwd[-1]:.6f} (graph {J.item():.6f})"]
        for variant in gd.VARIANTS:
            g.backward(J, variant=variant)
            # compared on the host: the graph's gradients live on its backend (a GPU for cupy)
            err = max(np.max(np.abs(gd.to_numpy(alpha.grad) - g_alpha)),
                      np.max(np.abs(gd.to_numpy(beta.grad) - g_beta)))
            worst = max(worst, err)
            line.append(f"{variant}: max |grad - by hand| = {err:.1e}")
        print("   ".join(line))
    assert worst < 1e-12, worst
    print(f"all gradients agree: hand-written NNBackward, Version A (children) and Version B (parents) "
          f"(max difference {worst:.1e})")


if __name__ == "__main__":
    main()
