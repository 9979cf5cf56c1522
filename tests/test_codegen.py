"""codegen.py: the ops' own rules traced on symbolic floats into straight-line Python; the backward is the
literal trace of Version A or B (same edges, same order, same sums), and what cannot be traced is refused."""
import math

import pytest

import graphdiff as gd
from graphdiff import autodiff, codegen, plans
from graphdiff.backend import SCALAR
from graphdiff.execution import topological_order


def _graph():
    g = gd.Graph(dtype="float64")
    x, w = g.param("x", 0.7), g.param("w", -1.3)
    h = gd.tanh(x * w + 0.25)
    y = h * h + gd.gelu(x) / 3.0 - gd.maximum(w, x) ** 2.0 + gd.sqrt(gd.exp(h))
    return g, x, w, y


def test_expressions_write_python_source():
    a, b = codegen.Expr("a"), codegen.Expr("b")
    assert codegen.src(a * 2.0 + b) == "((a * 2.0) + b)"
    assert codegen.src(-a / b) == "((-a) / b)"
    assert codegen.src(a ** b) == "pow_(a, b)"
    assert codegen.CODE.exp(a).src == "exp(a)"
    assert codegen.CODE.where(a > 0.0, a, b).src == "(a if (a > 0.0) else b)"
    assert [codegen.src(v) for v in (math.inf, -math.inf, math.nan, True)] == ["inf", "(-inf)", "nan", "True"]


def test_a_value_dependent_branch_cannot_be_traced():
    with pytest.raises(TypeError, match="data-dependent branch"):
        bool(codegen.Expr("a") > 0.0)


def test_the_compiled_forward_computes_what_the_rules_compute():
    g, x, w, y = _graph()
    order = topological_order(g, [y])
    run = codegen.compile_forward(order)
    g.forward(outputs=y)                                   # the interpreted run (first run: not compiled)
    ops = [n for n in order if n.spec is not None]
    assert list(run(order)) == pytest.approx([float(n.out) for n in ops], rel=1e-15)


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_the_compiled_backward_is_the_trace_of_the_variant_loop(variant):
    """Same adjoints as the interpreted float run of the same loop, one VJP statement per edge, and the sums
    of that variant: Version A one sum per node with several children, Version B one += per extra push."""
    g, x, w, y = _graph()
    g.forward(outputs=y)
    plan = plans.plan_for(g, y, None, variant)
    loop = autodiff.LOOPS[variant]
    compiled = codegen.compile_backward(plan, loop, set(plan.wrt))
    got = compiled(plan.order, 1.0)
    run = autodiff.NumericRun(SCALAR, set(plan.wrt), {}, plans.bound_rules(plan, SCALAR))
    want = loop(plan, 1.0, run)
    assert set(got) == set(plan.wrt) == {x, w}
    for n in plan.wrt:
        assert got[n] == pytest.approx(want[n], rel=1e-14)
    trace = codegen.CodeRun(plan, set(plan.wrt))
    loop(plan, codegen.Expr("seed"), trace)
    edges = sum(len(slots) for _, slots in plan.pushes)
    fan_in = {}
    for _, slots in plan.pushes:
        for _, p in slots:
            fan_in[p] = fan_in.get(p, 0) + 1
    sums = sum(k - 1 for k in fan_in.values()) if variant == "parents" else sum(k > 1 for k in fan_in.values())
    assert trace.count == edges + sums


def test_math_errors_raise_where_numpy_would_give_inf_or_nan():
    g = gd.Graph(dtype="float64")
    x = g.param("x", -1.0)
    y = gd.log(x) + 1.0
    run = codegen.compile_forward(topological_order(g, [y]))
    with pytest.raises(ValueError):                        # the engine catches it and reruns on NumPy
        run(topological_order(g, [y]))


def test_compile_or_none_refuses_big_and_untraceable_subjects(monkeypatch):
    g, x, w, y = _graph()
    order = topological_order(g, [y])
    assert callable(codegen.compile_or_none(codegen.compile_forward, order))
    monkeypatch.setattr(codegen, "MAX_NODES", len(order) - 1)
    assert codegen.compile_or_none(codegen.compile_forward, order) is False
    monkeypatch.undo()

    @gd.op("branchy_for_test")
    class Branchy:                                         # a forward that branches on its input's value
        shape = gd.ops.registry.same_shape

        def forward(F, x):
            return x if x > 0.0 else -x

        def vjp(F, i, g, xs, out):
            return g

    g2 = gd.Graph(dtype="float64")
    z = Branchy(g2.param("z", 2.0))
    assert codegen.compile_or_none(codegen.compile_forward, topological_order(g2, [z])) is False
    for _ in range(codegen.COMPILE_AFTER + 1):             # the engine interprets it instead
        assert g2.forward(outputs=z) == 2.0
    assert float(g2.backward(z)[z.inputs[0]]) == 1.0
