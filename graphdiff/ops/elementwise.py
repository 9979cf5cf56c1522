"""Elementwise ops with NumPy broadcasting; every VJP un-broadcasts to its input's shape."""
import math

from .registry import REGISTRY, apply, broadcast_shapes, builds, op, same_shape
from ..values import dtype_name

__all__ = ["add", "subtract", "multiply", "divide", "power", "negative", "exp", "log", "sqrt", "tanh",
           "sigmoid", "relu", "gelu", "abs", "erf", "sign", "maximum", "minimum", "where", "astype", "greater",
           "less", "greater_equal", "less_equal", "equal", "not_equal", "logical_and"]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# --- binary arithmetic ------------------------------------------------------------------------------
@op("add", arity=2)
class Add:
    """a + b"""
    shape = broadcast_shapes
    saves = ()  # what the VJP reads besides shapes (registry.py)

    def forward(F, a, b):
        return a + b

    def vjp(F, i, g, xs, out):
        return F.unbroadcast(g, xs[i])


@op("subtract", arity=2)
class Subtract:
    """a - b"""
    shape = broadcast_shapes
    saves = ()

    def forward(F, a, b):
        return a - b

    def vjp(F, i, g, xs, out):
        return F.unbroadcast(g if i == 0 else -g, xs[i])


@op("multiply", arity=2)
class Multiply:
    """a * b"""
    shape = broadcast_shapes
    saves = {0: (1,), 1: (0,)}

    def forward(F, a, b):
        return a * b

    def vjp(F, i, g, xs, out):                    # d(ab) = b da + a db
        return F.unbroadcast(g * xs[1 - i], xs[i])


@op("divide", arity=2)
class Divide:
    """a / b"""
    shape = broadcast_shapes
    saves = {0: (1,), 1: (1, "out")}

    def forward(F, a, b):
        return a / b

    def vjp(F, i, g, xs, out):                    # d(a/b) = da / b - (a/b) db / b
        a, b = xs
        return F.unbroadcast(g / b if i == 0 else -g * out / b, xs[i])


@op("power", arity=2)
class Power:
    """a ** b"""
    shape = broadcast_shapes

    def forward(F, a, b):
        return F.pow(a, b)

    def vjp(F, i, g, xs, out):                    # d(a^b) = b a^(b-1) da + a^b log(a) db
        a, b = xs                                  # limits as PyTorch takes them: 0 where b = 0 (da)
        if i == 0:                                 # and where a = 0 <= b (db), not 0*inf = nan
            return F.unbroadcast(F.where(F.equal(b, 0.0), 0.0, g * b * F.pow(a, b - 1.0)), a)
        a0 = F.equal(a, 0.0)
        return F.unbroadcast(F.where(F.logical_and(a0, b >= 0.0), 0.0, g * out * F.log(F.where(a0, 1.0, a))), b)


def _greater(x, other):
    return x > other


def _less(x, other):
    return x < other


def _extremum_vjp(F, i, g, xs, wins):
    """maximum/minimum: none of g where the other input strictly wins, half where the two tie, else all of
    it: where either is NaN neither wins, and the NaN's gradient flows to both (as in PyTorch)."""
    x, other = xs[i], xs[1 - i]
    mine = F.where(F.equal(x, other), g * 0.5, g)
    return F.unbroadcast(F.where(wins(other, x), 0.0, mine), x)


@op("maximum", arity=2)
class Maximum:
    """elementwise max(a, b); a tie sends half the gradient to each side (as PyTorch does)"""
    shape = broadcast_shapes
    saves = (0, 1)

    def forward(F, a, b):
        return F.maximum(a, b)

    def vjp(F, i, g, xs, out):
        return _extremum_vjp(F, i, g, xs, _greater)


@op("minimum", arity=2)
class Minimum:
    """elementwise min(a, b); a tie sends half the gradient to each side"""
    shape = broadcast_shapes
    saves = (0, 1)

    def forward(F, a, b):
        return F.minimum(a, b)

    def vjp(F, i, g, xs, out):
        return _extremum_vjp(F, i, g, xs, _less)


# --- unary ------------------------------------------------------------------------------------------
@op("negative")
class Negative:
    """-x"""
    shape = same_shape
    saves = ()

    def forward(F, x):
        return -x

    def vjp(F, i, g, xs, out):
        return -g


@op("exp")
class Exp:
    """e^x"""
    shape = same_shape
    saves = ("out",)

    def forward(F, x):
        return F.exp(x)

    def vjp(F, i, g, xs, out):
        return g * out


@op("log")
class Log:
    """natural log"""
    shape = same_shape
    saves = (0,)

    def forward(F, x):
        return F.log(x)

    def vjp(F, i, g, xs, out):
        return g / xs[0]


@op("sqrt")
class Sqrt:
    """square root"""
    shape = same_shape
    saves = ("out",)

    def forward(F, x):
        return F.sqrt(x)

    def vjp(F, i, g, xs, out):
        return g * 0.5 / out


@op("tanh")
class Tanh:
    """tanh x"""
    shape = same_shape
    saves = ("out",)

    def forward(F, x):
        return F.tanh(x)

    def vjp(F, i, g, xs, out):
        return g * (1.0 - out * out)


@op("sigmoid")
class Sigmoid:
    """1 / (1 + e^-x), computed without overflow for large |x|"""
    shape = same_shape
    saves = ("out",)

    def forward(F, x):
        e = F.exp(-F.abs(x))
        return F.where(x >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))

    def vjp(F, i, g, xs, out):
        return g * out * (1.0 - out)


@op("relu")
class Relu:
    """max(x, 0); the gradient at 0 is 0; NaN stays NaN (as in NumPy and PyTorch)"""
    shape = same_shape
    saves = ("out",)

    def forward(F, x):
        return F.where(x < 0.0, 0.0, x)         # not x > 0 ? x : 0, which would turn NaN into 0

    def vjp(F, i, g, xs, out):
        return F.where(out <= 0.0, 0.0, g)


@op("abs")
class Abs:
    """|x|; the gradient at 0 is 0"""
    shape = same_shape
    saves = (0,)

    def forward(F, x):
        return F.abs(x)

    def vjp(F, i, g, xs, out):
        return g * F.sign(xs[0])


@op("sign", differentiable=False)
class Sign:
    """-1, 0 or 1 by the sign of x (NaN stays NaN); its gradient is 0 almost everywhere"""
    shape = same_shape

    def forward(F, x):
        return F.sign(x)


@op("erf")
class Erf:
    """the error function, 2/sqrt(pi) * integral_0^x e^(-t^2) dt"""
    shape = same_shape
    saves = (0,)

    def forward(F, x):
        return F.erf(x)

    def vjp(F, i, g, xs, out):
        x = xs[0]
        return g * (2.0 / math.sqrt(math.pi)) * F.exp(-x * x)


@op("gelu")
class Gelu:
    """x * Phi(x) (approximate="none") or PyTorch's tanh approximation (approximate="tanh")"""
    shape = same_shape
    saves = (0,)  # and its residual

    def forward_res(F, x, approximate="none"):    # keeps Phi(x) or the tanh: the VJP needs it again
        if approximate == "tanh":
            t = F.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
            return 0.5 * x * (1.0 + t), t
        cdf = 0.5 * (1.0 + F.erf(x * _INV_SQRT_2))
        return x * cdf, cdf

    def make_vjp(F, xs, out, res, approximate="none"):
        x = xs[0]
        if approximate == "tanh":
            t = res if res is not None else F.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
            dt = _SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x) * (1.0 - t * t)
            slope = 0.5 * (1.0 + t) + 0.5 * x * dt
        else:
            cdf = res if res is not None else 0.5 * (1.0 + F.erf(x * _INV_SQRT_2))
            slope = cdf + x * F.exp(-0.5 * x * x) * _INV_SQRT_2PI
        return lambda i, g: g * slope


# --- selection, casts, comparisons --------------------------------------------------------------------
@op("where", arity=3, slots=("bool", "float", "float"))
class Where:
    """cond ? a : b, elementwise with broadcasting"""
    shape = broadcast_shapes
    saves = (0,)

    def forward(F, cond, a, b):
        return F.where(cond, a, b)

    def vjp(F, i, g, xs, out):
        cond = xs[0]
        picked = F.where(cond, g, 0.0) if i == 1 else F.where(cond, 0.0, g)
        return F.unbroadcast(picked, xs[i])


@op("astype", slots="any")
class Astype:
    """x cast to another dtype; differentiable between float dtypes"""
    shape = same_shape
    saves = ()

    def dtype(x_dtype, dtype):
        return dtype

    def forward(F, x, dtype):
        return F.astype(x, F.dtypes[dtype])

    def vjp(F, i, g, xs, out, dtype):
        return F.astype_like(g, xs[0])


def _compare(name, fn_name, doc):
    @op(name, arity=2, slots="any", differentiable=False)
    class Compare:
        __doc__ = doc
        shape = broadcast_shapes

        def dtype(a, b):
            return "bool"

        def forward(F, a, b):
            return getattr(F, fn_name)(a, b)
    return Compare


Greater = _compare("greater", "greater", "a > b (bool)")
Less = _compare("less", "less", "a < b (bool)")
GreaterEqual = _compare("greater_equal", "greater_equal", "a >= b (bool)")
LessEqual = _compare("less_equal", "less_equal", "a <= b (bool)")
Equal = _compare("equal", "equal", "a == b (bool)")
NotEqual = _compare("not_equal", "not_equal", "a != b (bool)")


@op("logical_and", arity=2, slots="bool", differentiable=False)
class LogicalAnd:
    """a and b, elementwise on bool masks"""
    shape = broadcast_shapes

    def dtype(a, b):
        return "bool"

    def forward(F, a, b):
        return F.logical_and(a, b)


# --- public functions ---------------------------------------------------------------------------------
# the ops of one or two inputs and no attributes: each one's builder was made at its registration
# (OpDef.builder: named after the op, its class docstring, Nodes of one graph straight to add_node)
add = Add.builder
subtract = Subtract.builder
multiply = Multiply.builder
divide = Divide.builder
power = Power.builder
maximum = Maximum.builder
minimum = Minimum.builder
negative = Negative.builder
exp = Exp.builder
log = Log.builder
sqrt = Sqrt.builder
tanh = Tanh.builder
sigmoid = Sigmoid.builder
relu = Relu.builder
abs = Abs.builder
erf = Erf.builder
sign = Sign.builder
greater = Greater.builder
less = Less.builder
greater_equal = GreaterEqual.builder
less_equal = LessEqual.builder
equal = Equal.builder
not_equal = NotEqual.builder
logical_and = LogicalAnd.builder


@builds(Gelu)
def gelu(x, approximate="none", name=None):
    """Gaussian error linear unit, PyTorch's meaning.

    Args:
        x: a float Node.
        approximate: "none" (x * Phi(x), exact with erf) or "tanh" (the GPT-2 approximation).
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return apply(REGISTRY["gelu"], (x,), {"approximate": approximate}, name)


@builds(Where)
def where(cond, a, b, name=None):
    """cond ? a : b elementwise. Args: cond: a bool Node or array; a, b: float Nodes, arrays or numbers."""
    return apply(REGISTRY["where"], (cond, a, b), name=name)


@builds(Astype)
def astype(x, dtype, name=None):
    """x cast to dtype ("float32", "float64", "int64", "int32", "bool")."""
    dtype = dtype_name(dtype)
    if x.dtype == dtype:
        return x
    return apply(REGISTRY["astype"], (x,), {"dtype": dtype}, name)
