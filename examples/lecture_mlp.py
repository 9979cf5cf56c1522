"""The lecture's network, NNForward and NNBackward written line by line in NumPy, side by side with the same
network as a graphdiff graph differentiated by both backward variants.

    NNForward                        NNBackward
    a = alpha x                      g_J = 1
    z = sigmoid(a)                   g_y_hat = -y / y_hat                  (element-wise)
    b = beta z                       g_b = (dy_hat/db)^T g_y_hat,  dy_hat/db = diag(y_hat) - y_hat y_hat^T
    y_hat = softmax(b)               g_beta = g_b z^T
    J = -sum_k y_k log y_hat_k       g_z = beta^T g_b
                                     g_a = g_z * z * (1 - z)
                                     g_alpha = g_a x^T

No bias units, as in the lecture. The softmax Jacobian is spelled out, not fused into y_hat - y (the
script checks that the two agree, as a footnote). Every line's adjoint is printed beside the graph's, once
for Version A (children) and once for Version B (parents).

    python examples/lecture_mlp.py [--backend cupy]
"""
import argparse

import numpy as np

import graphdiff as gd
from graphdiff.cli import add_backend_argument

M, D, K = 4, 3, 3          # input features, hidden units, classes


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def nn_forward(x, y, alpha, beta):
    """NNForward: every intermediate is kept, because NNBackward reads them."""
    a = alpha @ x                                   # (D,)
    z = sigmoid(a)                                  # (D,)
    b = beta @ z                                    # (K,)
    y_hat = np.exp(b - b.max()) / np.sum(np.exp(b - b.max()))   # (K,) softmax
    J = -np.sum(y * np.log(y_hat))                  # cross-entropy
    return {"a": a, "z": z, "b": b, "y_hat": y_hat, "J": J}


def nn_backward(x, y, alpha, beta, o):
    """NNBackward: the chain rule, one line per forward line, in reverse order."""
    g_J = 1.0
    g_y_hat = g_J * (-y / o["y_hat"])                                   # (K,)
    jacobian = np.diag(o["y_hat"]) - np.outer(o["y_hat"], o["y_hat"])   # (K, K): d y_hat_i / d b_j
    g_b = jacobian.T @ g_y_hat                                          # (K,)
    g_beta = np.outer(g_b, o["z"])                                      # (K, D) = g_b z^T
    g_z = beta.T @ g_b                                                  # (D,)
    g_a = g_z * o["z"] * (1.0 - o["z"])                                 # (D,)
    g_alpha = np.outer(g_a, x)                                          # (D, M) = g_a x^T
    return {"J": g_J, "y_hat": g_y_hat, "b": g_b, "beta": g_beta, "z": g_z, "a": g_a, "alpha": g_alpha}


def build_graph(alpha0, beta0):
    """The same network as a graph: leaves, then one node per line of NNForward, named as the lecture."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (M,))
    y = g.input("y", (K,))                          # one-hot label
    alpha = g.param("alpha", alpha0)
    beta = g.param("beta", beta0)
    a = gd.matmul(alpha, x, name="a")
    z = gd.sigmoid(a, name="z")
    b = gd.matmul(beta, z, name="b")
    y_hat = gd.softmax(b, name="y_hat")
    J = gd.negative(gd.sum(y * gd.log(y_hat)), name="J")
    return g, {"x": x, "y": y, "alpha": alpha, "beta": beta, "a": a, "z": z, "b": b, "y_hat": y_hat, "J": J}


LINES = (("J", "g_J = 1"), ("y_hat", "g_y_hat = -y / y_hat"), ("b", "g_b = J_softmax^T g_y_hat"),
         ("beta", "g_beta = g_b z^T"), ("z", "g_z = beta^T g_b"), ("a", "g_a = g_z * z * (1 - z)"),
         ("alpha", "g_alpha = g_a x^T"))


def fmt(v):
    v = np.asarray(v, dtype=np.float64).ravel()
    text = ", ".join(f"{x:+.4f}" for x in v[:3]) + (", ..." if v.size > 3 else "")
    return f"[{text}]"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_argument(p)
    gd.set_backend(p.parse_args().backend)
    rng = np.random.default_rng(0)
    alpha0 = rng.uniform(-1, 1, (D, M))
    beta0 = rng.uniform(-1, 1, (K, D))
    g, n = build_graph(alpha0, beta0)
    xv = rng.standard_normal(M)
    yv = np.eye(K)[1]
    fwd = nn_forward(xv, yv, alpha0, beta0)
    hand = nn_backward(xv, yv, alpha0, beta0, fwd)
    g.forward({n["x"]: xv, n["y"]: yv})
    print(f"graph: {len(g.nodes)} nodes on backend '{g.backend.name}'; x = {fmt(xv)}, y = {yv.astype(int)}")
    print(f"NNForward:  a = {fmt(fwd['a'])}  z = {fmt(fwd['z'])}  y_hat = {fmt(fwd['y_hat'])}  "
          f"J = {fwd['J']:.6f} (graph {float(gd.to_numpy(n['J'].value)):.6f})\n")
    graph_grads = {}
    for variant in gd.VARIANTS:
        g.backward(n["J"], variant=variant, retain_grads=True)      # keep every node's adjoint to print
        # on the host: the graph's gradients live on its backend (a GPU for cupy)
        graph_grads[variant] = {k: gd.to_numpy(n[k].grad) for k, _ in LINES}
    print(f"{'NNBackward line':28s} {'by hand':38s} {'Version A (children)':38s} {'Version B (parents)':38s}")
    worst = 0.0
    for key, line in LINES:
        a, b = graph_grads["children"][key], graph_grads["parents"][key]
        worst = max(worst, float(np.max(np.abs(a - hand[key]))), float(np.max(np.abs(b - hand[key]))))
        print(f"{line:28s} {fmt(hand[key]):38s} {fmt(a):38s} {fmt(b):38s}")
    assert worst < 1e-12, worst
    fused = fwd["y_hat"] - yv
    print(f"\nall gradients agree: hand-written NNBackward, Version A (children) and Version B (parents) "
          f"(max difference {worst:.1e})")
    print(f"footnote: the spelled-out Jacobian line gives g_b = {fmt(hand['b'])}; the usual shortcut "
          f"y_hat - y = {fmt(fused)} (max difference {np.max(np.abs(hand['b'] - fused)):.1e})")


if __name__ == "__main__":
    main()
