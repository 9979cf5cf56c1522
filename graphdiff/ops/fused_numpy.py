"""Fused NumPy kernels: the same maths as the ops' rules, in fewer passes over memory.

NumPy runs an expression such as 0.5 * x * (1 + tanh(c * (x + a * x**3))) one operator at a time, each a
pass over the whole array into a new temporary: for a (4096, 512) activation that is a dozen passes over
8 MB each, bound by memory bandwidth. A kernel here walks the array in blocks that fit in the L2 cache
(BLOCK elements) and runs the whole expression on each block in place, into scratch buffers allocated once
per call, so main memory sees one read of each input and one write of each output.

Each kernel is registered with @kernel(op, "numpy") and keeps the rule's residuals (see registry.kernel);
tests/test_kernels.py checks every one against its op's rule.
"""
import math

import numpy as np

from .registry import kernel

BLOCK = 1 << 15          # elements per block: a few float32/float64 scratch blocks stay within L2

_C = math.sqrt(2.0 / math.pi)        # tanh GELU: tanh(_C * (x + _A x^3))
_A = 0.044715
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def flat(x):
    """x as a 1-d C-contiguous array (a view when x is contiguous, else one copy)."""
    return np.ascontiguousarray(x).reshape(-1)


def blocks(n, step=BLOCK):
    """(start, stop) of consecutive blocks covering range(n)."""
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def scratch(k, x):
    """k scratch blocks of x's dtype."""
    return [np.empty(min(BLOCK, x.size), dtype=x.dtype) for _ in range(k)]


def _erf():
    from scipy.special import erf      # a ufunc (out= works); NumPy has no erf
    return erf


@kernel("gelu", "numpy")
class Gelu:
    """GELU forward and VJP, block by block (the tanh form: 7 in-place passes per block, one tanh)."""

    def forward_res(F, x, approximate="none"):
        xf = flat(x)
        y, keep = np.empty_like(xf), np.empty_like(xf)     # keep: the tanh, or Phi(x), as the rule keeps
        u, = scratch(1, xf)
        for s, e in blocks(xf.size):
            xs, us, ks = xf[s:e], u[:e - s], keep[s:e]
            if approximate == "tanh":
                np.multiply(xs, xs, out=us)                # x^2
                us *= _A * _C
                us += _C
                us *= xs                                   # _C (x + _A x^3)
                np.tanh(us, out=ks)
                np.add(ks, 1.0, out=us)
                us *= 0.5                                  # 0.5 (1 + t)
                np.multiply(us, xs, out=y[s:e])
            else:
                np.multiply(xs, _INV_SQRT_2, out=us)
                _erf()(us, out=ks)
                ks += 1.0
                ks *= 0.5                                  # Phi(x)
                np.multiply(ks, xs, out=y[s:e])
        return y.reshape(x.shape), keep.reshape(x.shape)

    def make_vjp(F, xs, out, res, approximate="none"):
        x = xs[0]
        keep = res if res is not None else Gelu.forward_res(F, x, approximate)[1]

        def vjp(i, g):
            xf, kf, gf = flat(x), flat(keep), flat(g)
            dx = np.empty(xf.shape, dtype=np.result_type(xf, gf))
            u, v = scratch(2, dx)
            for s, e in blocks(xf.size):
                xs_, ks, us, vs = xf[s:e], kf[s:e], u[:e - s], v[:e - s]
                if approximate == "tanh":     # slope = 0.5 (1 + t) + 0.5 x _C (1 + 3 _A x^2) (1 - t^2)
                    np.multiply(xs_, xs_, out=us)
                    us *= 3.0 * _A * _C
                    us += _C
                    us *= xs_
                    us *= 0.5
                    np.multiply(ks, ks, out=vs)
                    np.subtract(1.0, vs, out=vs)
                    us *= vs
                    np.add(ks, 1.0, out=vs)
                    vs *= 0.5
                    us += vs
                else:                         # slope = Phi(x) + x exp(-x^2 / 2) / sqrt(2 pi)
                    np.multiply(xs_, xs_, out=us)
                    us *= -0.5
                    np.exp(us, out=us)
                    us *= xs_
                    us *= _INV_SQRT_2PI
                    us += ks
                np.multiply(us, gf[s:e], out=dx[s:e])
            return dx.reshape(x.shape)
        return vjp
