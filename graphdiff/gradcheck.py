"""Finite-difference gradient checks: public, so users can check their own ops and models."""
import numpy as np

from .graph import to_numpy
from .errors import DTypeError, GradcheckError, GraphError


def numeric_grads(y, wrt, feeds=None, eps=1e-6, seed=None):
    """Central finite differences of sum(seed * y) with respect to each node in wrt.

    Every element of every wrt node is nudged by +-eps and the graph re-run (dropout masks are kept
    fixed). Returns {node: NumPy array}. Cost: two forwards per element, so keep graphs small.
    """
    g = y.graph
    F = g.backend
    if g.dtype != "float64" or any(n.dtype != "float64" for n in wrt):
        raise DTypeError("finite differences need float64 to be meaningful: build the graph with "
                         "gd.Graph(dtype='float64')")
    g.forward(feeds, outputs=y)
    w = None if seed is None else np.asarray(to_numpy(seed), dtype=np.float64)

    def f():
        out = to_numpy(g.forward(None, outputs=y, resample=False))
        return float(np.sum(out if w is None else out * w))

    def put(node, values):                  # a new leaf value, stamped like an assignment
        node.out = F.from_host(values, "float64")
        node.stamp = 0 if node.kind == "constant" else g.tick()

    result = {}
    for node in wrt:
        if node.kind not in ("param", "input", "constant"):
            raise GraphError(f"finite differences perturb leaves; '{node.name}' is computed by {node.op}")
        base = np.array(to_numpy(node.out), dtype=np.float64)
        grad = np.zeros_like(base)
        flat, gflat = base.reshape(-1), grad.reshape(-1)
        for k in range(flat.size):
            old = flat[k]
            flat[k] = old + eps
            put(node, base)
            fp = f()
            flat[k] = old - eps
            put(node, base)
            fm = f()
            flat[k] = old
            gflat[k] = (fp - fm) / (2 * eps)
        put(node, base)
        result[node] = grad
    g.forward(None, outputs=y, resample=False)
    return result


def gradcheck(y, wrt=None, feeds=None, eps=1e-6, rtol=1e-5, atol=1e-8, variant="children", seed=None):
    """Compare backward's gradients of y with central finite differences in float64.

    Args:
        y: output node (scalar, or any shape with seed=).
        wrt: leaves to check (default: the graph's params).
        feeds: as for Graph.forward.
        eps, rtol, atol: step and tolerances (|analytic - numeric| <= atol + rtol * |numeric|).
        variant: which backward variant to check.
    Returns:
        the largest absolute error found.
    Raises:
        GradcheckError naming the node, the index, and both values at the worst element.
    """
    g = y.graph
    wrt = list(g.params() if wrt is None else wrt)
    numeric = numeric_grads(y, wrt, feeds, eps, seed)
    g.backward(y, variant=variant, seed=seed, wrt=wrt)
    worst = 0.0
    for node in wrt:
        analytic = np.asarray(to_numpy(node.grad), dtype=np.float64)
        num = numeric[node]
        err = np.abs(analytic - num)
        bad = err > atol + rtol * np.abs(num)
        if bad.any():
            k = np.unravel_index(int(np.argmax(np.where(bad, err, -1.0))), num.shape)
            raise GradcheckError(
                f"gradcheck: d{y.name}/d{node.name} at index {tuple(int(i) for i in k)}: analytic "
                f"{analytic[k]:.10g} vs numeric {num[k]:.10g} (abs error {err[k]:.3g}, rtol {rtol}, atol {atol}; "
                f"{int(bad.sum())} of {bad.size} elements differ, variant '{variant}')")
        worst = max(worst, float(err.max(initial=0.0)))
    return worst
