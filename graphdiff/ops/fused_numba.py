"""Row kernels compiled with Numba, for the fused NumPy kernels (fused_numpy.py) where NumPy cannot do well.

Layer norm and the softmax VJP work on rows of a few hundred numbers: NumPy has to run each step over every
row as its own pass (means, centring, variances, scaling, each a broadcast against a column of per-row
values), and at (4096, 128) those passes cost three times what PyTorch's one loop does. Numba compiles the
loop over a row once (LLVM vectorises it), so each row is read and written once. Numba is used where it
beats the NumPy blocks measurably (benchmarks/bench_kernels.py); the softmax forward, GELU and
cross-entropy stay NumPy, whose exp and tanh are SIMD where Numba's, without Intel's SVML, call libm one
number at a time.

Numba is optional: without it (or with GRAPHDIFF_NUMBA=0) `available` is False and the NumPy blocks run.
It is imported, and its loops compiled (or loaded from the disk cache, cache=True), at the first array of
at least MIN_SIZE numbers, not when graphdiff is imported: importing Numba takes a few tenths of a second,
which a small graph would never win back.
fastmath is limited to reassociation and contraction (vectorised sums, fused multiply-adds): NaN and inf
keep NumPy's semantics.
"""
import importlib.util
import os

import numpy as np

available = os.environ.get("GRAPHDIFF_NUMBA", "1") != "0" and importlib.util.find_spec("numba") is not None
MIN_SIZE = 1 << 16           # numbers in an array below which the NumPy blocks run (no import, no compile)
_loops = None


def loops():
    """The compiled row loops (a namespace), imported and compiled on first use."""
    global _loops
    if _loops is None:
        _loops = _compile()
    return _loops


def _compile():
    import types

    import numba
    _jit = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})

    @_jit
    def layer_norm_rows(x, gamma, beta, eps, y, xhat, rstd):
        """Row r of x (R, C): xhat = (x - mean) / sqrt(var + eps), y = xhat gamma + beta, rstd[r]; sums
        in float64."""
        R, C = x.shape
        for r in range(R):
            s = 0.0
            for c in range(C):
                s += x[r, c]
            mean = s / C
            v = 0.0
            for c in range(C):
                d = x[r, c] - mean
                v += d * d
            inv = 1.0 / np.sqrt(v / C + eps)
            rstd[r] = inv
            for c in range(C):
                h = (x[r, c] - mean) * inv
                xhat[r, c] = h
                y[r, c] = h * gamma[c] + beta[c]

    @_jit
    def layer_norm_vjp_rows(g, xhat, rstd, gamma, dx, dgamma, dbeta):
        """dx = rstd (d - mean(d) - xhat mean(d xhat)) with d = g gamma, row by row; dgamma and dbeta (C,)
        are the column sums of g xhat and g (accumulated in float64, then stored)."""
        R, C = g.shape
        acc_g = np.zeros(C)
        acc_b = np.zeros(C)
        for r in range(R):
            sd = 0.0
            sdh = 0.0
            for c in range(C):
                d = g[r, c] * gamma[c]
                sd += d
                sdh += d * xhat[r, c]
                acc_g[c] += g[r, c] * xhat[r, c]
                acc_b[c] += g[r, c]
            md = sd / C
            mk = sdh / C
            inv = rstd[r]
            for c in range(C):
                dx[r, c] = inv * (g[r, c] * gamma[c] - md - xhat[r, c] * mk)
        for c in range(C):
            dgamma[c] = acc_g[c]
            dbeta[c] = acc_b[c]

    @_jit
    def softmax_vjp_rows(g, s, dx):
        """dx = s (g - <g, s>) row by row (the softmax's VJP along the last axis)."""
        R, C = g.shape
        for r in range(R):
            dot = 0.0
            for c in range(C):
                dot += g[r, c] * s[r, c]
            for c in range(C):
                dx[r, c] = s[r, c] * (g[r, c] - dot)

    return types.SimpleNamespace(layer_norm_rows=layer_norm_rows, layer_norm_vjp_rows=layer_norm_vjp_rows,
                                 softmax_vjp_rows=softmax_vjp_rows)


def warm(dtype="float32"):
    """Import Numba and compile (or load from the cache) every row loop for dtype now, instead of at the
    first large array: for a benchmark's or a server's start-up. Returns False when Numba is unavailable."""
    if not available:
        return False
    L = loops()
    x = np.ones((2, 4), dtype=dtype)
    v = np.ones(4, dtype=dtype)
    r = np.ones(2, dtype=dtype)
    L.layer_norm_rows(x, v, v, 1e-5, x.copy(), x.copy(), r.copy())
    L.layer_norm_vjp_rows(x, x, r, v, x.copy(), v.copy(), v.copy())
    L.layer_norm_vjp_rows(x, x, r, v, x.copy(), np.empty(4), np.empty(4))    # float64 sums (threads > 1)
    L.softmax_vjp_rows(x, x, x.copy())
    return True
