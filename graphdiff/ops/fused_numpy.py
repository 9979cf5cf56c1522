"""Fused NumPy kernels: the same maths as the ops' rules, in fewer passes over memory.

NumPy runs an expression such as 0.5 * x * (1 + tanh(c * (x + a * x**3))) one operator at a time, each a
pass over the whole array into a new temporary: for a (4096, 512) activation that is a dozen passes over
8 MB each, bound by memory bandwidth. A kernel here walks the array in blocks that fit in the L2 cache
(BLOCK elements) and runs the whole expression on each block in place, into scratch buffers allocated once
per call, so main memory sees one read of each input and one write of each output.

Each kernel is registered with @kernel(op, "numpy") and keeps the rule's residuals (see registry.kernel);
tests/ops/test_kernels.py checks every one against its op's rule. Kernels here: gelu, softmax, log_softmax,
layer_norm, cross_entropy, and (for small arrays, where NumPy's Python layers cost more than the
arithmetic) mean and power. Inputs outside a kernel's fast path (a dtype other than float32 or float64,
mixed dtypes, empty arrays, ids checked on the device) go to the op's rule, so a kernel never fails where
the rule works. benchmarks/bench_kernels.py times each against its rule and PyTorch.
"""
import functools
import math

import numpy as np

from . import fused_numba
from .. import threads
from .fused_maths import GELU_A, GELU_C, INV_SQRT_2, INV_SQRT_2PI, fast_path as _fast
from .registry import REGISTRY, kernel, norm_axis, reduced_shape

NUMBA = {"on": fused_numba.available}   # layer norm and the softmax VJP by Numba's row loops (fused_numba.py)
BLOCK = 1 << 15          # elements per block: a few float32/float64 scratch blocks stay within L2

_C, _A = GELU_C, GELU_A              # tanh GELU: tanh(_C * (x + _A x^3))
_INV_SQRT_2, _INV_SQRT_2PI = INV_SQRT_2, INV_SQRT_2PI


def flat(x):
    """x as a 1-d C-contiguous array (a view when x is contiguous, else one copy)."""
    return np.ascontiguousarray(x).reshape(-1)


def blocks(n, step=None, start=0):
    """(start, stop) of consecutive blocks of step (BLOCK) covering range(start, n)."""
    step = step or BLOCK
    return [(s, min(s + step, n)) for s in range(start, n, step)]


def scratch(k, x, size=None, step=None):
    """k scratch blocks (of step elements, BLOCK by default) of x's dtype, for `size` elements (x.size)."""
    return [np.empty(min(step or BLOCK, x.size if size is None else size), dtype=x.dtype) for _ in range(k)]


def flat_parts(n):
    """(start, stop) element ranges of a flat array of n, one per thread (graphdiff.threads), and the block
    each walks its range in: BLOCK on one thread; on several, each range is one block, so that a part runs
    each of its NumPy passes as one call. A thread retakes the GIL after every NumPy call, and on two threads
    block-sized calls spend as long waiting for it as computing (measured: no gain at all on two cores);
    element-wise maths gives the same numbers in any blocks."""
    ranges = [(a * BLOCK, min(b * BLOCK, n)) for a, b in threads.parts(-(-n // BLOCK), BLOCK)]
    return ranges, (None if len(ranges) == 1 else max(b - a for a, b in ranges))


def row_parts(R, step, C):
    """(start, stop) row ranges of R rows of C, one per thread, each made of whole blocks of `step` rows."""
    return [(a * step, min(b * step, R)) for a, b in threads.parts(-(-R // step), step * C)]


def _erf():
    from scipy.special import erf      # a ufunc (out= works); NumPy has no erf
    return erf


@kernel("gelu", "numpy")
class Gelu:
    """GELU forward and VJP, block by block (the tanh form: 7 in-place passes per block, one tanh)."""

    def forward_res(F, x, approximate="none"):
        xf = flat(x)
        y, keep = np.empty_like(xf), np.empty_like(xf)     # keep: the tanh, or Phi(x), as the rule keeps
        ranges, step = flat_parts(xf.size)
        threads.run(lambda lo, hi: _gelu_part(xf, y, keep, approximate, lo, hi, step), ranges)
        return y.reshape(x.shape), keep.reshape(x.shape)

    def make_vjp(F, xs, out, res, approximate="none"):
        x = xs[0]
        keep = res if res is not None else Gelu.forward_res(F, x, approximate)[1]

        def vjp(i, g):
            xf, kf, gf = flat(x), flat(keep), flat(g)
            dx = np.empty(xf.shape, dtype=np.result_type(xf, gf))
            ranges, step = flat_parts(xf.size)
            threads.run(lambda lo, hi: _gelu_vjp_part(xf, kf, gf, dx, approximate, lo, hi, step), ranges)
            return dx.reshape(x.shape)
        return vjp


def _gelu_part(xf, y, keep, approximate, lo, hi, step=None):
    """GELU of xf[lo:hi] into y and keep, in blocks of step (BLOCK)."""
    u, = scratch(1, xf, hi - lo, step)
    for s, e in blocks(hi, step, lo):
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


def _gelu_vjp_part(xf, kf, gf, dx, approximate, lo, hi, step=None):
    """GELU's VJP of xf[lo:hi] (keep kf, cotangent gf) into dx, in blocks of step (BLOCK)."""
    u, v = scratch(2, dx, hi - lo, step)
    for s, e in blocks(hi, step, lo):
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


# --- softmax and log_softmax --------------------------------------------------------------------------
# Along the last axis NumPy reduces each short row separately (np.max over rows of 128 costs as much as three
# elementwise passes), and a (rows, 1) broadcast costs twice a plain one, so the kernels below keep both rare:
# row sums are GEMVs against a ones vector, and the shift that keeps exp from overflowing is the block's
# maximum (one contiguous reduction) instead of each row's. Softmax and log-softmax do not depend on the
# shift; a row whose sum comes out tiny (its maximum far below the block's, or a NaN) is redone with its own
# maximum, as the rule does. Along another axis the reductions are over the middle axis of (pre, n, post),
# which NumPy vectorises, so those kernels follow the rule's steps block by block.
# _TINY_SUM: a row whose sum is below it has its maximum more than 11.5 below the shift: redone with its own
# maximum, so that exp(x - shift) of an entry whose probability is still a normal float32 never goes
# subnormal (entries more than 87 below their row's maximum would lose bits under a shift 11.5 higher)
_TINY_SUM = 1e-5
_NO_SHIFT = 40.0         # exp(x) of a block whose maximum is below this neither overflows nor sums to inf


def _lanes(x, axis):
    """x (C-contiguous) as (pre, n) when axis is the last one, else as (pre, n, post); and rows per block."""
    x = np.ascontiguousarray(x)
    a = axis % x.ndim
    n, post = x.shape[a], math.prod(x.shape[a + 1:])
    v = x.reshape(-1, n) if post == 1 else x.reshape(-1, n, post)
    return v, max(1, BLOCK // max(1, n * post))


def _row_blocks(v, step):
    return [(s, min(s + step, v.shape[0])) for s in range(0, v.shape[0], step)]


def _exp_shifted(xb, eb, sb, ones):
    """eb = exp(xb - shift) with a shift per row, sb = its row sums (xb, eb: (r, n); sb: (r,)); the shift is
    the block's maximum, or 0 when that is at most _NO_SHIFT (exp cannot overflow: one pass fewer), except
    on rows redone with their own. Returns the shifts: a scalar, or (r, 1)."""
    c = xb.max()
    if c <= _NO_SHIFT:
        c = xb.dtype.type(0)
        np.exp(xb, out=eb)
    else:
        np.subtract(xb, c, out=eb)
        np.exp(eb, out=eb)
    np.matmul(eb, ones, out=sb)
    bad = ~(sb >= _TINY_SUM)                       # also NaN: the rule's answer for those rows is its own
    if not bad.any():
        return c
    shift = np.full((xb.shape[0], 1), c, dtype=xb.dtype)
    rows = np.flatnonzero(bad)
    xr = xb[rows]
    m = np.max(xr, axis=1, keepdims=True)
    er = np.exp(xr - m)
    eb[rows], sb[rows], shift[rows] = er, np.sum(er, axis=1), m
    return shift


def _softmax_blocks(v, y, step):
    """softmax of the rows of v (R, n) into y, in blocks of step rows."""
    ones = np.ones(v.shape[1], dtype=v.dtype)
    s = np.empty(step, dtype=v.dtype)
    for a, b in _row_blocks(v, step):
        xb, yb, sb = v[a:b], y[a:b], s[:b - a]
        _exp_shifted(xb, yb, sb, ones)
        np.reciprocal(sb, out=sb)
        yb *= sb[:, None]


def _softmax_part(v, y, step):
    """_softmax_blocks's numbers for one thread's rows (whole blocks), in fewer NumPy calls (each call retakes
    the GIL): when no block's maximum calls for a shift, exp, the check of the sums, 1 / sum and the product
    run once over the part (element- and row-wise: the same numbers); the row sums stay one GEMV per block,
    as there. A block that needs a shift sends the part to _softmax_blocks."""
    R, n = v.shape
    full = R - R % step
    maxima = v[:full].reshape(-1, step * n).max(axis=1)         # each whole block's, exactly
    if not (np.all(maxima <= _NO_SHIFT) and (full == R or v[full:].max() <= _NO_SHIFT)):    # (NaN: no)
        return _softmax_blocks(v, y, step)
    np.exp(v, out=y)
    ones, s = np.ones(n, dtype=v.dtype), np.empty(R, dtype=v.dtype)
    for a, b in _row_blocks(v, step):
        np.matmul(y[a:b], ones, out=s[a:b])
    bad = ~(s >= _TINY_SUM)
    if bad.any():                                  # those rows redone with their own maximum, as there
        rows = np.flatnonzero(bad)
        xr = v[rows]
        er = np.exp(xr - np.max(xr, axis=1, keepdims=True))
        y[rows], s[rows] = er, np.sum(er, axis=1)
    np.reciprocal(s, out=s)
    y *= s[:, None]


@kernel("softmax", "numpy")
class Softmax:
    """softmax in blocks of whole rows: exp(x - shift), row sums by GEMV, one multiply by 1 / sum."""

    def forward(F, x, axis=-1):
        if not _fast(x):
            return REGISTRY["softmax"].forward(F, x, axis=axis)
        v, step = _lanes(x, axis)
        y = np.empty_like(v)
        if v.ndim == 2:
            ranges = row_parts(v.shape[0], step, v.shape[1])
            if len(ranges) == 1:
                _softmax_blocks(v, y, step)
            else:
                threads.run(lambda lo, hi: _softmax_part(v[lo:hi], y[lo:hi], step), ranges)
        else:
            s = np.empty((step, 1, v.shape[2]), dtype=v.dtype)
            for a, b in _row_blocks(v, step):
                xb, yb, sb = v[a:b], y[a:b], s[:b - a]
                np.max(xb, axis=1, keepdims=True, out=sb)
                np.subtract(xb, sb, out=yb)
                np.exp(yb, out=yb)
                np.sum(yb, axis=1, keepdims=True, out=sb)
                np.reciprocal(sb, out=sb)
                yb *= sb
        return y.reshape(x.shape)

    def vjp(F, i, g, xs, out, axis=-1):           # J^T g = s * (g - <g, s>)
        if not _fast(g, out):
            return REGISTRY["softmax"].vjp(F, i, g, xs, out, axis=axis)
        gv, step = _lanes(g, axis)
        ov, _ = _lanes(out, axis)
        dx = np.empty_like(gv)
        if gv.ndim == 2 and NUMBA["on"] and gv.size >= fused_numba.MIN_SIZE:
            rows = fused_numba.loops().softmax_vjp_rows
            threads.run(lambda lo, hi: rows(gv[lo:hi], ov[lo:hi], dx[lo:hi]), row_parts(gv.shape[0], step, gv.shape[1]))
            return dx.reshape(g.shape)
        for a, b in _row_blocks(gv, step):
            gb, ob, db = gv[a:b], ov[a:b], dx[a:b]
            if gv.ndim == 2:
                dot = np.einsum("ij,ij->i", gb, ob)[:, None]
            else:
                np.multiply(gb, ob, out=db)
                dot = np.sum(db, axis=1, keepdims=True)
            np.subtract(gb, dot, out=db)
            db *= ob
        return dx.reshape(g.shape)


@kernel("log_softmax", "numpy")
class LogSoftmax:
    """log_softmax in blocks of whole rows: x - (shift + log(sum exp(x - shift))), row sums by GEMV. One
    class (an axis of length 1) is the rule's: exactly 0, which a shift other than the row's own misses by
    a rounding (and a kink after it, abs or relu, would then take the wrong branch)."""

    def forward(F, x, axis=-1):
        if not _fast(x) or x.shape[axis] == 1:
            return REGISTRY["log_softmax"].forward(F, x, axis=axis)
        v, step = _lanes(x, axis)
        y = np.empty_like(v)
        e = np.empty((min(step, v.shape[0]),) + v.shape[1:], dtype=v.dtype)
        if v.ndim == 2:
            ones = np.ones(v.shape[1], dtype=v.dtype)
            s = np.empty(step, dtype=v.dtype)
            for a, b in _row_blocks(v, step):
                xb, yb, eb, sb = v[a:b], y[a:b], e[:b - a], s[:b - a]
                shift = _exp_shifted(xb, eb, sb, ones)
                np.log(sb, out=sb)
                lse = sb[:, None]
                lse += shift                                 # as the rule: x - (shift + log(sum))
                np.subtract(xb, lse, out=yb)
        else:
            m, s = (np.empty((step, 1, v.shape[2]), dtype=v.dtype) for _ in range(2))
            for a, b in _row_blocks(v, step):
                xb, yb, eb, mb, sb = v[a:b], y[a:b], e[:b - a], m[:b - a], s[:b - a]
                np.max(xb, axis=1, keepdims=True, out=mb)
                np.subtract(xb, mb, out=yb)                  # as the rule: (x - max) - log(sum)
                np.exp(yb, out=eb)
                np.sum(eb, axis=1, keepdims=True, out=sb)
                np.log(sb, out=sb)
                yb -= sb
        return y.reshape(x.shape)

    def vjp(F, i, g, xs, out, axis=-1):           # g - exp(out) * sum(g)
        if not _fast(g, out):
            return REGISTRY["log_softmax"].vjp(F, i, g, xs, out, axis=axis)
        gv, step = _lanes(g, axis)
        ov, _ = _lanes(out, axis)
        dx = np.empty_like(gv)
        ones = np.ones(gv.shape[1], dtype=gv.dtype)
        for a, b in _row_blocks(gv, step):
            gb, ob, db = gv[a:b], ov[a:b], dx[a:b]
            np.exp(ob, out=db)
            db *= (gb @ ones)[:, None] if gv.ndim == 2 else np.sum(gb, axis=1, keepdims=True)
            np.subtract(gb, db, out=db)
        return dx.reshape(g.shape)


# --- layer_norm ---------------------------------------------------------------------------------------
def _rows(x):
    """x as C-contiguous (rows, C) over its last axis, and rows per block."""
    x = np.ascontiguousarray(x)
    C = x.shape[-1]
    return x.reshape(-1, C), max(1, BLOCK // max(1, C))


@kernel("layer_norm", "numpy")
class LayerNorm:
    """layer_norm in blocks of whole rows; row means and column sums (gamma's and beta's gradients) by GEMV.

    The VJP does the three slots' work in one pass at the first slot asked for and hands out the results:
    the engine asks for each slot with the same g, in any order (gamma and beta often first). A slot it
    does not need is never asked for, so when x needs no gradient its dx was computed for nothing: rare
    (a layer norm's input nearly always depends on parameters), and cheaper than a second pass whenever x
    comes last."""

    def forward_res(F, x, gamma, beta, eps=1e-5):   # keeps (xhat, rstd), as the rule
        if not _fast(x, gamma, beta):
            return REGISTRY["layer_norm"].forward_res(F, x, gamma, beta, eps=eps)
        v, step = _rows(x)
        R, C = v.shape
        y, xhat = np.empty_like(v), np.empty_like(v)
        rstd = np.empty((R, 1), dtype=v.dtype)
        lead = x.shape[:-1]
        if NUMBA["on"] and v.size >= fused_numba.MIN_SIZE:
            rows, r1 = fused_numba.loops().layer_norm_rows, rstd.reshape(-1)
            gm, bt, eps = np.ascontiguousarray(gamma), np.ascontiguousarray(beta), float(eps)
            threads.run(lambda lo, hi: rows(v[lo:hi], gm, bt, eps, y[lo:hi], xhat[lo:hi], r1[lo:hi]),
                      row_parts(R, step, C))
            return y.reshape(x.shape), (xhat.reshape(x.shape), rstd.reshape(lead + (1,)))
        ones = np.ones(C, dtype=v.dtype)
        for a, b in _row_blocks(v, step):
            xb, hb, rb = v[a:b], xhat[a:b], rstd[a:b]
            mean = xb @ ones
            mean *= 1.0 / C
            np.subtract(xb, mean[:, None], out=hb)
            var = np.einsum("ij,ij->i", hb, hb)[:, None]
            var *= 1.0 / C
            var += eps
            np.sqrt(var, out=rb)
            np.reciprocal(rb, out=rb)
            hb *= rb
            np.multiply(hb, gamma, out=y[a:b])
            y[a:b] += beta
        lead = x.shape[:-1]
        return y.reshape(x.shape), (xhat.reshape(x.shape), rstd.reshape(lead + (1,)))

    def make_vjp(F, xs, out, res, eps=1e-5):
        x, gamma, beta = xs
        if res is None:
            res = LayerNorm.forward_res(F, x, gamma, beta, eps=eps)[1]
        xhat, rstd = res
        rule = REGISTRY["layer_norm"].make_vjp
        state = {"g": None, "ready": {}, "given": set()}   # per cotangent: slots computed, slots handed out

        def vjp(i, g):
            if not _fast(g, xhat, rstd, gamma):
                return rule(F, xs, out, res, eps=eps)(i, g)
            if state["g"] is not g:                    # a new cotangent: nothing computed for it yet
                state.update(g=g, ready={}, given=set())
            ready, given = state["ready"], state["given"]
            if i not in ready:
                grads = _layer_norm_vjp(g, xhat, rstd, gamma)
                ready.update((k, v) for k, v in zip((0, 1, 2), grads) if k not in given)
            given.add(i)
            grad = ready.pop(i)
            if not ready:
                state["g"] = None                      # nothing kept for g: let it go
            return grad
        return vjp


def _layer_norm_vjp(g, xhat, rstd, gamma):
    """(dx, dgamma, dbeta), dx = rstd (d - mean(d) - xhat mean(d xhat)) with d = g gamma, in one pass."""
    gv, step = _rows(g)
    hv, rv = xhat.reshape(gv.shape), rstd.reshape(-1, 1)
    R, C = gv.shape
    dgamma, dbeta = np.zeros(C, dtype=gv.dtype), np.zeros(C, dtype=gv.dtype)
    dx = np.empty_like(gv)
    if NUMBA["on"] and gv.size >= fused_numba.MIN_SIZE:
        rows, parts = fused_numba.loops().layer_norm_vjp_rows, row_parts(R, step, C)
        hv, r1, gm = np.ascontiguousarray(hv), np.ascontiguousarray(rv.reshape(-1)), np.ascontiguousarray(gamma)
        if len(parts) == 1:
            rows(gv, hv, r1, gm, dx, dgamma, dbeta)
        else:                   # each part's column sums in float64, added up, then stored as the one part's
            def part(lo, hi):
                sums = np.empty((2, C))
                rows(gv[lo:hi], hv[lo:hi], r1[lo:hi], gm, dx[lo:hi], sums[0], sums[1])
                return sums
            dgamma[:], dbeta[:] = sum(threads.run(part, parts))
        return dx.reshape(g.shape), dgamma, dbeta
    t = np.empty((min(step, R), C), dtype=gv.dtype)
    ones = np.ones(min(step, R), dtype=gv.dtype)
    for a, b in _row_blocks(gv, step):
        gb, hb, tb, ob = gv[a:b], hv[a:b], t[:b - a], ones[:b - a]
        dbeta += ob @ gb
        np.multiply(gb, hb, out=tb)                    # g xhat
        dgamma += ob @ tb
        rb, db = rv[a:b], dx[a:b]
        k = tb @ gamma                                 # C mean(d xhat), per row
        md = gb @ gamma                                # C mean(d)
        k *= 1.0 / C
        md *= 1.0 / C
        np.multiply(hb, k[:, None], out=tb)
        np.multiply(gb, gamma, out=db)
        db -= tb
        db -= md[:, None]
        db *= rb
    return dx.reshape(g.shape), dgamma, dbeta


# --- cross_entropy ------------------------------------------------------------------------------------
def _lse_rows(v, step):
    """(R, 1) log-sum-exp of each row of v (R, n), in blocks of rows (the shifts as in softmax)."""
    lse = np.empty((v.shape[0], 1), dtype=v.dtype)
    e = np.empty((min(step, v.shape[0]), v.shape[1]), dtype=v.dtype)
    ones = np.ones(v.shape[1], dtype=v.dtype)
    for a, b in _row_blocks(v, step):
        sb = lse[a:b, 0]
        shift = _exp_shifted(v[a:b], e[:b - a], sb, ones)
        np.log(sb, out=sb)
        lse[a:b] += shift
    return lse


def _targets(ids, V, ignore_index, dtype):
    """Flat ids clipped into [0, V) (out-of-range ids pick nothing, as the rule's one_hot), where they are in
    range, and the kept-target weights (ids equal to ignore_index weigh 0) in the logits' dtype."""
    ids = np.asarray(ids).reshape(-1)
    valid = (ids >= 0) & (ids < V)
    w = (ids != ignore_index) if ignore_index is not None else np.ones(ids.shape, dtype=bool)
    return np.where(valid, ids, 0), valid, w.astype(dtype)


@kernel("cross_entropy", "numpy")
class CrossEntropy:
    """cross_entropy without the one-hot matrix: the log-sum-exp in blocks of rows, the targets' logits picked
    by index; the VJP is exp(logits - lse) with 1 taken off at each target, scaled, in one pass per block."""

    def forward_res(F, logits, ids, ignore_index=None, check_ids=False):   # keeps the log-sum-exp
        if check_ids or not _fast(logits):
            return REGISTRY["cross_entropy"].forward_res(F, logits, ids, ignore_index=ignore_index,
                                                         check_ids=check_ids)
        v, step = _rows(logits)
        R, V = v.shape
        lse = _lse_rows(v, step)
        idx, valid, w = _targets(ids, V, ignore_index, v.dtype)
        picked = v[np.arange(R), idx] - lse[:, 0]
        picked *= valid
        picked *= w
        return -np.sum(picked) / np.sum(w), lse.reshape(logits.shape[:-1] + (1,))

    def make_vjp(F, xs, out, lse, ignore_index=None, check_ids=False):  # (softmax - onehot) / kept
        logits, ids = xs
        rule = REGISTRY["cross_entropy"].make_vjp
        if not _fast(logits) or (lse is not None and lse.dtype != logits.dtype):
            return rule(F, xs, out, lse, ignore_index=ignore_index, check_ids=check_ids)
        v, step = _rows(logits)
        R, V = v.shape
        lse = _lse_rows(v, step) if lse is None else lse.reshape(R, 1)

        def vjp(i, g):
            if np.result_type(g, v) != v.dtype:
                return rule(F, xs, out, lse.reshape(logits.shape[:-1] + (1,)), ignore_index=ignore_index,
                            check_ids=check_ids)(i, g)
            idx, valid, w = _targets(ids, V, ignore_index, v.dtype)
            scale = g / np.sum(w)
            rows_scale = None if w.all() else w * scale
            dx = np.empty_like(v)
            flat_dx = dx.reshape(-1)
            hot = np.flatnonzero(valid)
            hot_at = hot * V + idx[hot]                # flat positions of the targets' logits
            for a, b in _row_blocks(v, step):
                db = dx[a:b]
                np.subtract(v[a:b], lse[a:b], out=db)
                np.exp(db, out=db)
                if a == 0 and b == R:                  # one block (small logits): every target is in it
                    flat_dx[hot_at] -= 1.0
                else:
                    lo, hi = np.searchsorted(hot, (a, b))
                    flat_dx[hot_at[lo:hi]] -= 1.0
                if rows_scale is None:
                    db *= scale
                else:
                    db *= rows_scale[a:b, None]
            return dx.reshape(logits.shape)
        return vjp


# --- small-array kernels: the rule's arithmetic, without the Python layers of np.mean and np.broadcast_to ---
@functools.lru_cache(maxsize=512)
def _mean_shapes(shape, axis):
    """(count of the values each mean averages, the keepdims shape of the means) of x.shape, axis."""
    axes = norm_axis(axis, len(shape))
    return math.prod(shape[k] for k in axes), reduced_shape(shape, axis, True)


@kernel("mean", "numpy")
class Mean:
    """mean as np.mean computes it (one add.reduce, one division by the count) without its Python layer;
    the VJP writes g * (1 / n) straight into a new array of x's shape (the rule's broadcast_to view and
    product, in one call). Each costs a few microseconds less per call, which matters at microgpt's size."""

    def forward(F, x, axis=None, keepdims=False):
        if not _fast(x):
            return REGISTRY["mean"].forward(F, x, axis=axis, keepdims=keepdims)
        return np.true_divide(np.add.reduce(x, axis=axis, keepdims=keepdims), _mean_shapes(x.shape, axis)[0])

    def vjp(F, i, g, xs, out, axis=None, keepdims=False):
        shape = tuple(xs[0].shape)
        if not shape or 0 in shape or not _fast(g) or g.dtype != xs[0].dtype:     # (empty x: the rule)
            return REGISTRY["mean"].vjp(F, i, g, xs, out, axis=axis, keepdims=keepdims)
        n, kept = _mean_shapes(shape, axis)
        return np.multiply(g.reshape(kept), 1.0 / n, out=np.empty(shape, dtype=g.dtype))


@kernel("power", "numpy")
class Power:
    """a ** b; the VJP for a with a 0-d exponent b that is not 0 (x ** -0.5 of an RMS norm) skips the rule's
    where(b == 0, 0, ...), which then picks every element of the same product."""

    def forward(F, a, b):
        return np.power(a, b)

    def vjp(F, i, g, xs, out):
        a, b = xs
        if i == 0 and b.ndim == 0 and b != 0:
            return F.unbroadcast(g * b * np.power(a, b - 1.0), a)
        return REGISTRY["power"].vjp(F, i, g, xs, out)
