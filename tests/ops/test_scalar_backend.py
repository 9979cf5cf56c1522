"""Scalar graphs (every node a 0-d float64) run the ops' own rules on Python floats (backend 'python'),
with the same values and gradients as NumPy, and NumPy's semantics wherever floats meet inf or NaN."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphdiff as gd

# the ops a micrograd-style graph uses, each with its input domain
FLOAT_OPS = {
    "add": ["real", "real"], "subtract": ["real", "real"], "multiply": ["real", "real"],
    "divide": ["real", "away"], "power": ["pos", "real"], "maximum": ["real", "real"],
    "minimum": ["real", "real"], "negative": ["real"], "exp": ["real"], "log": ["pos"], "sqrt": ["pos"],
    "tanh": ["real"], "sigmoid": ["real"], "relu": ["away"], "abs": ["away"], "erf": ["real"],
    "gelu": ["real"], "sum": ["real"], "mean": ["real"], "max": ["real"], "add_n": ["real"] * 3,
}
reals = st.floats(-3, 3)
draw = {"real": reals, "pos": st.floats(0.1, 3), "away": reals.filter(lambda v: abs(v) > 1e-3)}


def build(name, values, shape):
    g = gd.Graph(dtype="float64")
    xs = [g.param(f"x{k}", np.full(shape, v)) for k, v in enumerate(values)]
    spec = gd.REGISTRY[name]
    y = gd.apply(spec, xs if spec.arity is None else tuple(xs))
    y = gd.sum(y * 1.5) if shape else y * 1.5
    return g, xs, y


@pytest.mark.parametrize("name", sorted(FLOAT_OPS))
@settings(max_examples=30)
@given(data=st.data())
def test_float_run_matches_numpy(name, data):
    values = [data.draw(draw[d]) for d in FLOAT_OPS[name]]
    g, xs, y = build(name, values, ())
    h, hxs, hy = build(name, values, (1,))             # the same graph on arrays: NumPy runs it
    g.forward(outputs=y)
    h.forward(outputs=hy)
    assert type(y.out) is float                        # the float backend ran
    assert float(y.value) == pytest.approx(float(hy.value), rel=1e-13, abs=1e-15)
    for variant in gd.VARIANTS:
        got, want = g.backward(y, variant=variant), h.backward(hy, variant=variant)
        for a, b in zip(xs, hxs):
            assert float(got[a]) == pytest.approx(float(want[b][0]), rel=1e-12, abs=1e-14), (variant, a.name)


def test_gelu_both_approximations_run_on_floats():
    g = gd.Graph(dtype="float64")
    x = g.param("x", 0.7)
    y = gd.gelu(x) + gd.gelu(x, approximate="tanh")
    g.forward(outputs=y)
    assert type(y.out) is float


def test_scalar_graphs_run_on_python_floats_but_show_numpy_scalars():
    g = gd.Graph(dtype="float64")
    a, b = g.param("a", 2.0), g.param("b", -3.0)
    y = gd.tanh(a * b + 1.0)
    g.forward(outputs=y)
    assert type(y.out) is float
    assert isinstance(y.value, np.float64) and y.value.shape == ()
    g.backward(y)
    assert isinstance(a.grad, np.float64)
    assert float(a.grad) == pytest.approx(-3.0 * (1 - math.tanh(-5.0) ** 2))


def test_float32_and_array_graphs_run_on_numpy():
    g = gd.Graph(dtype="float32")
    a = g.param("a", 2.0)
    y = gd.tanh(a)
    g.forward(outputs=y)
    assert type(y.out) is not float and y.value.dtype == np.float32


def test_where_numpy_gives_inf_or_nan_the_floats_step_aside():
    def run(shape):
        g = gd.Graph(dtype="float64")
        x = g.param("x", np.full(shape, -1.0))
        z = g.param("z", np.full(shape, 0.0))
        y = gd.sum(gd.log(x) + gd.sqrt(z) + 1.0 / z + x ** 0.5)
        events = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            g.forward(outputs=y)
            g.backward(y, trace=events)
        return y, x, z, events

    y, x, z, events = run(())
    ay, ax, az, _ = run((1,))
    assert math.isnan(y.value) and type(y.out) is not float     # NumPy's answer, not a ValueError from math
    np.testing.assert_array_equal([x.grad, z.grad], [ax.grad[0], az.grad[0]])   # NaN where NumPy has NaN
    assert len([e for e in events if e.kind == "final"]) == len({e.node for e in events if e.kind == "final"})


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_repeated_runs_compile_to_straight_line_code_with_the_same_numbers(variant):
    """From the COMPILE_AFTER-th run on, forward and backward are one compiled function each (the rules and
    the variant loop traced into Python source); numbers stay equal to the interpreted run's, and where
    floats meet inf the NumPy run still takes over."""
    from graphdiff import codegen, plans
    g = gd.Graph(dtype="float64")
    x, w = g.param("x", 0.5), g.param("w", 1.3)
    h = x
    for _ in range(5):
        h = gd.tanh(h * w + 0.1) + gd.relu(h) * gd.sigmoid(w) + gd.gelu(h) / (1.0 + w * w)
    y = gd.log(h * h + 1.0 + gd.exp(w * 10.0))
    runs = []
    for _ in range(codegen.COMPILE_AFTER + 2):
        g.forward(outputs=y)
        runs.append((float(y.value), *[float(v) for v in g.backward(y, variant=variant).values()]))
    assert plans.plan_for(g, y, None).compiled[(variant, False)]      # a function, not a count
    assert all(r == pytest.approx(runs[0], rel=1e-14) for r in runs)
    w.value = 1e3                                                       # exp(1e4) overflows in the floats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        g.forward(outputs=y)
        g.backward(y, variant=variant)
    assert type(y.out) is not float and float(y.value) == np.inf        # NumPy's answer, not OverflowError


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_residuals_never_outlive_the_values_they_belong_to(variant):
    """gelu keeps its tanh for the VJP; a compiled forward keeps none, so a later traced (interpreted)
    backward must recompute it rather than read one from an earlier run with other values."""
    g = gd.Graph(dtype="float64")
    w = g.param("w", 0.3)
    y = gd.gelu(w * 2.0, approximate="tanh") * 3.0
    for k in range(6):                                  # the forward compiles from the third run on
        w.value = 0.3 + 0.5 * k
        g.forward(outputs=y)
        got = float(g.backward(y, variant=variant, trace=[])[w])     # traced: interpreted, reads residuals
        h = gd.Graph(dtype="float64")
        hw = h.param("w", np.full(1, 0.3 + 0.5 * k))
        hy = gd.sum(gd.gelu(hw * 2.0, approximate="tanh") * 3.0)
        h.forward(outputs=hy)
        assert got == pytest.approx(float(h.backward(hy, variant=variant)[hw][0]), rel=1e-12), k


# --- eager graphs compute scalar nodes on floats too ----------------------------------------------------------
def _expression(g):
    a, b = g.param("a", -4.0), g.param("b", 2.0)
    c = a * b + b ** 3 - 1.5 / a
    d = gd.tanh(c * 0.1) + gd.relu(c) * gd.sigmoid(a) + gd.gelu(b) + gd.maximum(a, b) - gd.exp(a) * gd.log(b)
    return a, b, d * d + gd.sqrt(gd.abs(c)) + 1.0


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_eager_scalar_nodes_hold_the_floats_a_lazy_forward_computes(variant):
    lazy, eager = gd.Graph(dtype="float64"), gd.Graph(dtype="float64", eager=True)
    la, lb, ly = _expression(lazy)
    ea, eb, ey = _expression(eager)
    lazy.forward(outputs=ly)
    assert [n.name for n in eager.nodes] == [n.name for n in lazy.nodes]
    for n, m in zip(eager.nodes, lazy.nodes):
        assert type(n.out) is float and n.out == m.out and n.stamp >= 0, n.name    # bit for bit
        assert isinstance(n.value, np.float64)
    got, want = eager.backward(ey, variant=variant), lazy.backward(ly, variant=variant)
    assert [float(got[ea]), float(got[eb])] == [float(want[la]), float(want[lb])]


def test_eager_floats_step_aside_for_numpy_at_inf_and_nan():
    """1/0, log(0), 0 * inf: math raises or gives what NumPy gives; the node gets NumPy's value either way."""
    g = gd.Graph(dtype="float64", eager=True)
    z, one = g.param("z", 0.0), g.param("one", 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        inf = one / z
        nan = inf * z
        neg = gd.log(z)
        back = gd.tanh(one) + one                  # after them, floats again
    assert float(inf.value) == np.inf and math.isnan(nan.value) and float(neg.value) == -np.inf
    assert type(inf.out) is not float and type(back.out) is float
    assert float(back.value) == math.tanh(1.0) + 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        grads = g.backward(gd.tanh(one) * inf, wrt=[one, z])
    assert float(grads[one]) == np.inf and float(grads[z]) == -np.inf


def test_eager_scalar_nodes_with_check_finite_run_on_numpy_and_name_the_node():
    g = gd.Graph(dtype="float64", eager=True, check_finite=True)
    p = g.param("p", 1.0)
    with pytest.raises(gd.NonFiniteError, match=r"log 'log'"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            gd.log(p - 2.0)
    assert [n.name for n in g.nodes] == ["p", "const", "subtract"]
    assert type(g["subtract"].out) is not float and float(g["subtract"].value) == -1.0


def test_checks_after_a_float_run_see_numpy_values():
    """A float run leaves Python floats in the nodes; a checked forward or backward then runs NumPy's rules,
    which need arrays (on floats 1 / 0 would be a ZeroDivisionError, unbroadcast an AttributeError)."""
    g = gd.Graph(dtype="float64")
    a, b = g.param("a", 2.0), g.param("b", 0.0)
    y = a * a + b
    g.forward(outputs=y)
    assert type(a.out) is float and type(b.out) is float
    assert float(g.backward(y, check_finite=True)[a]) == 4.0
    g.forward(outputs=a * b)
    with pytest.raises(gd.NonFiniteError, match=r"divide 'divide'.*produced NaN or Inf"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            g.forward(outputs=a / b, check_finite=True)


@pytest.mark.parametrize("variant", gd.VARIANTS)
@pytest.mark.parametrize("eager", [False, True])
def test_a_graph_run_once_keeps_no_plan_and_compiles_on_the_same_run(variant, eager):
    """A plan and the bound forward steps are kept from their second use on (a graph built and run once, as
    eager users run theirs, leaves nothing for the collector); the backward still compiles on the
    COMPILE_AFTER-th run, with the first run's numbers."""
    from graphdiff import codegen, execution, plans
    g = gd.Graph(dtype="float64", eager=eager)
    x, w = g.param("x", 0.5), g.param("w", 1.3)
    y = gd.tanh(x * w + 0.1) * gd.gelu(x) + gd.relu(w) / 3.0
    cache = execution.state(g).cache

    def kept():
        return (["bwd"] * sum(isinstance(v, plans.Plan) for v in cache.plans.values())
                + ["steps"] * sum(bool(v) for o in cache.by_nodes.values() for v in o.steps.values()))

    first = None
    for run in range(1, codegen.COMPILE_AFTER + 2):
        g.forward(outputs=y)
        got = g.backward(y, variant=variant)
        numbers = [float(y.value), float(got[x]), float(got[w])]
        first = first or numbers
        assert numbers == pytest.approx(first, rel=1e-14)
        plan = cache.plans[(y.index, None)]
        counts = plan.compiled if isinstance(plan, plans.Plan) else plan
        assert callable(counts[(variant, False)]) == (run >= codegen.COMPILE_AFTER), run
        if run == 1:
            assert kept() == []
        elif run == 2:
            assert sorted(kept()) == ["bwd", "steps"]
