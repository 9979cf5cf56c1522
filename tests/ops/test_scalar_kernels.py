"""The Python-float kernels that scalar graphs run on agree with each op's generic forward and VJP."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphdiff as gd

F = gd.get_backend("numpy")
KERNEL_OPS = sorted(n for n, s in gd.REGISTRY.items() if s.forward_scalar is not None)
DOMAIN = {"log": ["pos"], "sqrt": ["pos"], "power": ["pos", "real"], "divide": ["real", "away"],
          "relu": ["away"], "abs": ["away"]}
ATTRS = {"gelu": [{"approximate": "none"}, {"approximate": "tanh"}], "sum": [{"axis": None}],
         "mean": [{"axis": None}], "max": [{"axis": None}]}
reals = st.floats(-3, 3)
draw = {"real": reals, "pos": st.floats(0.1, 3), "away": reals.filter(lambda v: abs(v) > 1e-3)}


def test_every_kernel_op_has_both_kernels():
    for name in KERNEL_OPS:
        assert gd.REGISTRY[name].vjp_scalar is not None, name
    assert {"add", "multiply", "tanh", "relu", "exp", "log"} <= set(KERNEL_OPS)


@pytest.mark.parametrize("name", KERNEL_OPS)
@settings(max_examples=40)
@given(data=st.data())
def test_kernels_match_the_generic_rule(name, data):
    spec = gd.REGISTRY[name]
    arity = spec.arity or data.draw(st.integers(1, 4))
    doms = DOMAIN.get(name, ["real"] * arity)
    xs = [data.draw(draw[d]) for d in (doms if len(doms) == arity else doms * arity)]
    g = data.draw(reals)
    for attrs in ATTRS.get(name, [{}]):
        out = spec.forward_scalar(*xs, **attrs)
        ref = spec.forward(F, *[np.float64(x) for x in xs], **attrs)
        assert type(out) is float
        assert out == pytest.approx(float(ref), rel=1e-13, abs=1e-15)
        for i in range(arity):
            got = spec.vjp_scalar(i, g, xs, out, **attrs)
            want = spec.vjp(F, i, np.float64(g), [np.float64(x) for x in xs], np.float64(out), **attrs)
            assert float(got) == pytest.approx(float(want), rel=1e-12, abs=1e-14)


def test_scalar_graphs_run_on_python_floats_but_show_numpy_scalars():
    g = gd.Graph(dtype="float64")
    a, b = g.param("a", 2.0), g.param("b", -3.0)
    y = gd.tanh(a * b + 1.0)
    g.forward(outputs=y)
    assert type(y._value) is float                       # the kernels ran
    assert isinstance(y.value, np.float64) and y.value.shape == ()
    g.backward(y)
    assert isinstance(a.grad, np.float64)
    assert float(a.grad) == pytest.approx(-3.0 * (1 - math.tanh(-5.0) ** 2))


def test_float32_and_array_graphs_do_not_use_kernels():
    g = gd.Graph(dtype="float32")
    a = g.param("a", 2.0)
    y = gd.tanh(a)
    g.forward(outputs=y)
    assert type(y._value) is not float and y.value.dtype == np.float32


def test_where_numpy_gives_inf_or_nan_the_kernels_step_aside():
    g = gd.Graph(dtype="float64")
    x = g.param("x", -1.0)
    z = g.param("z", 0.0)
    y = gd.log(x) + gd.sqrt(z) + 1.0 / z
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        g.forward(outputs=y)
        assert math.isnan(y.value)                       # NumPy's answer, not a ValueError from math.log
        events = []
        g.backward(y, trace=events)
    assert math.isnan(x.grad) is False and float(x.grad) == -1.0
    assert math.isinf(z.grad) or math.isnan(z.grad)
    assert len([e for e in events if e.kind == "final"]) == len({e.node for e in events if e.kind == "final"})
