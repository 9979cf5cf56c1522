"""Fused CuPy kernels: the ops' maths in fewer kernels on a GPU.

CuPy runs an expression such as 0.5 * x * (1 + tanh(c * (x + a * x**3))) one kernel per operator, each a
pass over the whole array in device memory. Here each element-wise stretch of an op is one kernel compiled
by `cupy.fuse` from a function of fused_maths.py (the same function tests run with NumPy against the rule);
row reductions (max, sum, mean over the last axis) stay CuPy's own, between the fused passes, and sums over
leading axes (gamma's and beta's gradients) stay the rule's, a GEMM with a ones row (CupyBackend.unbroadcast).

    op           forward                                   VJP
    gelu         1 kernel (output and residual)            1 kernel
    softmax      max, 1 fused (exp), sum, 1 divide          multiply, sum, 1 fused
    log_softmax  max, 1 fused (exp), sum, 1 fused (out)     sum, 1 fused
    layer_norm   mean, 1 fused, mean, 1 fused (rstd),      dx: 1 fused (two outputs), 2 means, 1 fused;
                 1 fused (output and xhat)                 gamma, beta: the rule's GEMMs

and AdamW's update of each (backend, dtype) group of parameters (nn.optim.AdamW.flat_update): one kernel that
updates the values and both moments in place, instead of a dozen element-wise kernels over the group.

Each kernel is registered with @kernel(op, "cupy") and keeps the rule's residuals; inputs outside its fast
path (dtypes other than one of float32 / float64, empty arrays, softmax along another axis than the last)
go to the op's rule. CuPy's kernels are opt-in (GRAPHDIFF_CUPY_KERNELS=1, or gd.fused_kernels(cupy=True))
until benchmarks/gpu_check.sh has run them on a GPU. A kernel that fails to compile or run raises
KernelError naming it and the switch; it never falls back to the rule silently.
"""
from . import fused_maths as fm
from .registry import REGISTRY, kernel
from ..errors import KernelError

SWITCH = "GRAPHDIFF_CUPY_KERNELS"


class Fused:
    """One function of fused_maths, compiled by cupy.fuse at its first call (kernel graphdiff_<name>)."""

    def __init__(self, op, maths):
        self.op, self.maths = op, maths
        self.name = "graphdiff_" + maths.__name__
        self.fused = None              # the cupy.fuse object (its .new_fusion tells which CuPy fusion took it)

    def __repr__(self):
        return f"<fused CuPy kernel {self.name} of {self.op}>"

    def __call__(self, *args):
        try:
            if self.fused is None:
                self.fused = self._compile()
            return self.fused(*args)
        except MemoryError:            # cupy's OutOfMemoryError: not the kernel's fault
            raise
        except Exception as e:
            what = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            raise KernelError(
                f"{self.op}: the fused CuPy kernel {self.name} failed ({type(e).__name__}: {what}). "
                f"CuPy's fused kernels are opt-in: unset {SWITCH} (or set it to 0), or run inside "
                "gd.fused_kernels(cupy=False), to run the unfused operations; please report this with the output of "
                "`python -c 'import cupy; cupy.show_config()'`") from e

    def _compile(self):
        import cupy
        from cupyx.scipy.special import erf
        m, maths = fm.Maths(cupy, erf), self.maths

        def traced(*arrays):
            return maths(m, *arrays)
        traced.__name__ = self.name
        return cupy.fuse(kernel_name=self.name)(traced)


GELU_TANH = Fused("gelu", fm.gelu_tanh)
GELU_TANH_VJP = Fused("gelu", fm.gelu_tanh_vjp)
GELU_ERF = Fused("gelu", fm.gelu_erf)
GELU_ERF_VJP = Fused("gelu", fm.gelu_erf_vjp)
EXP_SHIFTED = Fused("softmax", fm.exp_shifted)
SOFTMAX_VJP = Fused("softmax", fm.softmax_vjp)
LOG_EXP_SHIFTED = Fused("log_softmax", fm.exp_shifted)
LOG_SOFTMAX_OUT = Fused("log_softmax", fm.log_softmax_out)
LOG_SOFTMAX_VJP = Fused("log_softmax", fm.log_softmax_vjp)
SQUARED_DEVIATION = Fused("layer_norm", fm.squared_deviation)
RECIPROCAL_STD = Fused("layer_norm", fm.reciprocal_std)
LAYER_NORM_OUT = Fused("layer_norm", fm.layer_norm_out)
LAYER_NORM_D = Fused("layer_norm", fm.layer_norm_d)
LAYER_NORM_DX = Fused("layer_norm", fm.layer_norm_dx)
ADAMW = Fused("AdamW", fm.adamw)                # nn.optim.AdamW.flat_update: a group's update in one kernel
ALL = [v for v in list(globals().values()) if isinstance(v, Fused)]


def _last(x, axis):
    return isinstance(axis, int) and x.ndim > 0 and axis % x.ndim == x.ndim - 1


@kernel("gelu", "cupy")
class Gelu:
    """GELU: output and residual in one kernel, the VJP in one."""

    def forward_res(F, x, approximate="none"):
        if not fm.fast_path(x):
            return REGISTRY["gelu"].forward_res(F, x, approximate=approximate)
        return (GELU_TANH if approximate == "tanh" else GELU_ERF)(x)

    def make_vjp(F, xs, out, res, approximate="none"):
        x = xs[0]
        keep = res if res is not None else Gelu.forward_res(F, x, approximate)[1]
        slope = GELU_TANH_VJP if approximate == "tanh" else GELU_ERF_VJP

        def vjp(i, g):
            if not fm.fast_path(x, keep, g):
                return REGISTRY["gelu"].make_vjp(F, xs, out, keep, approximate=approximate)(i, g)
            return slope(x, keep, g)
        return vjp


@kernel("softmax", "cupy")
class Softmax:
    """softmax along the last axis: exp(x - max) fused, CuPy's row sums."""

    def forward(F, x, axis=-1):
        if not (fm.fast_path(x) and _last(x, axis)):
            return REGISTRY["softmax"].forward(F, x, axis=axis)
        e = EXP_SHIFTED(x, F.max(x, axis=-1, keepdims=True))
        e /= F.sum(e, axis=-1, keepdims=True)
        return e

    def vjp(F, i, g, xs, out, axis=-1):           # J^T g = s * (g - <g, s>)
        if not (fm.fast_path(g, out) and _last(out, axis)):
            return REGISTRY["softmax"].vjp(F, i, g, xs, out, axis=axis)
        return SOFTMAX_VJP(out, g, F.sum(g * out, axis=-1, keepdims=True))


@kernel("log_softmax", "cupy")
class LogSoftmax:
    """log_softmax along the last axis: (x - max) - log(sum(exp(x - max))), two fused passes."""

    def forward(F, x, axis=-1):
        if not (fm.fast_path(x) and _last(x, axis)):
            return REGISTRY["log_softmax"].forward(F, x, axis=axis)
        shift = F.max(x, axis=-1, keepdims=True)
        return LOG_SOFTMAX_OUT(x, shift, F.sum(LOG_EXP_SHIFTED(x, shift), axis=-1, keepdims=True))

    def vjp(F, i, g, xs, out, axis=-1):           # g - exp(out) * sum(g)
        if not (fm.fast_path(g, out) and _last(out, axis)):
            return REGISTRY["log_softmax"].vjp(F, i, g, xs, out, axis=axis)
        return LOG_SOFTMAX_VJP(out, g, F.sum(g, axis=-1, keepdims=True))


@kernel("layer_norm", "cupy")
class LayerNorm:
    """layer_norm: the element-wise stretches fused, CuPy's row means between them; gamma's and beta's
    gradients are the rule's (GEMMs with a ones row)."""

    def forward_res(F, x, gamma, beta, eps=1e-5):   # keeps (xhat, rstd), as the rule
        if not fm.fast_path(x, gamma, beta):
            return REGISTRY["layer_norm"].forward_res(F, x, gamma, beta, eps=eps)
        mean = F.mean(x, axis=-1, keepdims=True)
        rstd = RECIPROCAL_STD(F.mean(SQUARED_DEVIATION(x, mean), axis=-1, keepdims=True), eps)
        y, xhat = LAYER_NORM_OUT(x, mean, rstd, gamma, beta)
        return y, (xhat, rstd)

    def make_vjp(F, xs, out, res, eps=1e-5):
        x, gamma, beta = xs
        if res is None:
            res = LayerNorm.forward_res(F, x, gamma, beta, eps=eps)[1]
        xhat, rstd = res
        rule = REGISTRY["layer_norm"].make_vjp(F, xs, out, res, eps=eps)

        def vjp(i, g):
            if i != 0 or not fm.fast_path(g, xhat, rstd, gamma):
                return rule(i, g)
            d, dxhat = LAYER_NORM_D(g, gamma, xhat)
            return LAYER_NORM_DX(d, xhat, rstd, F.mean(d, axis=-1, keepdims=True),
                                 F.mean(dxhat, axis=-1, keepdims=True))
        return vjp
