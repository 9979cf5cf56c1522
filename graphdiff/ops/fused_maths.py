"""The element-wise maths of the fused kernels, written once as plain functions of arrays.

Each function takes `m` (the element-wise functions of one array library: exp, log, sqrt, tanh, erf) and
arrays, and uses only Python operators, Python float constants and m's functions: what NumPy runs and what
`cupy.fuse` compiles into one CUDA kernel. fused_cupy.py compiles them with cupy.fuse; tests run them with
NumPy (NUMPY below) against the ops' rules in every CI run, so the maths the GPU runs is tested on the CPU.

Written for the old fusion of CuPy 14 (cupy/_core/fusion.pyx), the path cupy.fuse takes first:
- no Python branching on a traced value (`if x > 0` raises TypeError there), no attribute but .dtype/.ndim
  (`.shape` raises), no NumPy function on a traced value, no `abs(x)`, `+x` or `2.0 ** x` (its proxies have
  no __abs__, __pos__, __rpow__);
- constants are Python floats (weak: float32 stays float32); a NumPy scalar would promote float32 to float64;
- every constant that can change between calls is an argument: a closure constant is compiled into the
  kernel, which is cached by the arguments' dtypes and ndims only, so a new value would be ignored;
- no reductions: the old fusion takes at most one, without keepdims, and any trace it refuses goes silently
  to new_fusion (a different code generator); CuPy before 14.2 also miscompiled some fused reductions with
  its default CUB accelerator. Row reductions stay CuPy's own, between the fused passes;
- every output of one fused function has the broadcast shape of all its array arguments.
"""
import math

import numpy as np

GELU_C = math.sqrt(2.0 / math.pi)        # tanh GELU: tanh(GELU_C * (x + GELU_A x^3))
GELU_A = 0.044715
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def fast_path(*arrays):
    """True when the arrays (NumPy's or CuPy's) share one dtype, float32 or float64, and are not empty: what
    the fused kernels take; they hand anything else to the op's rule."""
    dt = arrays[0].dtype
    return dt in FLOATS and all(a.dtype == dt for a in arrays) and arrays[0].size > 0


class Maths:
    """The element-wise functions the maths calls, from one array library (NumPy with SciPy's erf, CuPy
    with cupyx's)."""

    __slots__ = ("exp", "log", "sqrt", "tanh", "erf")

    def __init__(self, xp, erf=None):
        self.exp, self.log, self.sqrt, self.tanh, self.erf = xp.exp, xp.log, xp.sqrt, xp.tanh, erf


def numpy_maths():
    from scipy.special import erf
    return Maths(np, erf)


# --- gelu: the rule's expressions (ops/elementwise.py), the output and the residual in one pass ----------
def gelu_tanh(m, x):
    """(y, t): y = 0.5 x (1 + t), t = tanh(GELU_C (x + GELU_A x^3)) (the residual)."""
    t = m.tanh(GELU_C * (x + GELU_A * x * x * x))
    return 0.5 * x * (1.0 + t), t


def gelu_tanh_vjp(m, x, t, g):
    dt = GELU_C * (1.0 + 3.0 * GELU_A * x * x) * (1.0 - t * t)
    return g * (0.5 * (1.0 + t) + 0.5 * x * dt)


def gelu_erf(m, x):
    """(y, cdf): y = x Phi(x), cdf = Phi(x) (the residual)."""
    cdf = 0.5 * (1.0 + m.erf(x * INV_SQRT_2))
    return x * cdf, cdf


def gelu_erf_vjp(m, x, cdf, g):
    return g * (cdf + x * m.exp(-0.5 * x * x) * INV_SQRT_2PI)


# --- softmax and log_softmax along the last axis: shift and total are (..., 1) row values -----------------
def exp_shifted(m, x, shift):
    """exp(x - shift): softmax's numerators, and the terms of log-sum-exp."""
    return m.exp(x - shift)


def log_softmax_out(m, x, shift, total):
    """(x - shift) - log(total), total = sum(exp(x - shift)) over the row (the rule's order: exactly 0 over
    one class)."""
    return (x - shift) - m.log(total)


def softmax_vjp(m, out, g, dot):
    """out (g - dot), dot = sum(g out) over the row."""
    return out * (g - dot)


def log_softmax_vjp(m, out, g, total_g):
    """g - exp(out) total_g, total_g = sum(g) over the row."""
    return g - m.exp(out) * total_g


# --- layer_norm over the last axis: mean, var, rstd, md, mdx are (..., 1) row values ----------------------
def squared_deviation(m, x, mean):
    xc = x - mean
    return xc * xc


def reciprocal_std(m, var, eps):
    return 1.0 / m.sqrt(var + eps)


def layer_norm_out(m, x, mean, rstd, gamma, beta):
    """(y, xhat): xhat = (x - mean) rstd (a residual), y = xhat gamma + beta."""
    xhat = (x - mean) * rstd
    return xhat * gamma + beta, xhat


def layer_norm_d(m, g, gamma, xhat):
    """(d, d xhat) with d = g gamma, the gradient at xhat: the two terms whose row means dx needs."""
    d = g * gamma
    return d, d * xhat


def layer_norm_dx(m, d, xhat, rstd, md, mdx):
    """rstd (d - md - xhat mdx), md = mean(d), mdx = mean(d xhat) over the row."""
    return rstd * (d - md - xhat * mdx)


# --- AdamW: one group's whole update, in place (nn.optim.AdamW.flat_update) --------------------------------
def adamw(m, data, g, mom, var, b1, c1, b2, c2, decay, bias2, step_size, eps):
    """AdamW's update of data and of the moments mom, var, in place (no output), in PyTorch's order of
    operations (AdamW.update's). c1 = 1 - b1 and c2 = 1 - b2 come from Python, as AdamW.update computes
    them (in double, then rounded once to the arrays' dtype); decay None: no weight decay. decay, bias2 and
    step_size: Python numbers, or 0-d arrays a recorded step reads from the device."""
    mom *= b1
    mom += c1 * g
    var *= b2
    var += c2 * (g * g)
    if decay is not None:
        data *= decay
    denom = m.sqrt(var)
    denom /= bias2
    denom += eps
    step = mom / denom
    step *= step_size
    data -= step
