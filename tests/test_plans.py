"""plans.py: the one-sweep plan equals its plain definition, and plans are kept from their second use on."""
import numpy as np
import pytest

import graphdiff as gd
from graphdiff import autodiff, execution, plans
from graphdiff.backend import SCALAR


def _random_graph(seed):
    """A random DAG of float ops (inputs reused, x * x included), a comparison feeding a where, and leaves
    some of which need no gradient."""
    rng = np.random.default_rng(seed)
    g = gd.Graph(dtype="float64")
    nodes = [g.param(f"p{k}", rng.standard_normal()) for k in range(3)] + [g.constant(1.5, name="c")]
    for _ in range(int(rng.integers(3, 25))):
        a, b = (nodes[int(k)] for k in rng.integers(0, len(nodes), 2))
        kind = int(rng.integers(0, 5))
        if kind == 0:
            nodes.append(a * b)
        elif kind == 1:
            nodes.append(a + a)
        elif kind == 2:
            nodes.append(gd.tanh(a))
        elif kind == 3:
            nodes.append(gd.where(a > b, a, b * 2.0))
        else:
            nodes.append(gd.add_n([a, b, a]))
    return g, nodes


@pytest.mark.parametrize("seed", range(40))
def test_the_sweep_builds_what_the_definition_says(seed):
    g, nodes = _random_graph(seed)
    y = nodes[-1]
    params = [n for n in nodes if n.kind == "param"]
    for wrt, variant in ((None, "children"), (params[:1], "parents"), (params[1:], None)):
        plan = plans.plan_for(g, y, wrt, variant)        # built for one variant, the other's edges on demand
        pushes, pulls = plans.plain_edges(plan)
        assert plan.pushes == pushes
        assert plan.pulls == pulls


def test_a_plan_is_kept_from_its_second_use_on():
    g = gd.Graph(dtype="float64")
    x = g.param("x", 2.0)
    y = x * x
    first = plans.plan_for(g, y, None)
    second = plans.plan_for(g, y, None)
    assert second is not first and plans.plan_for(g, y, None) is second
    assert second.compiled is first.compiled          # the compile counts carry over


def test_a_value_changed_since_the_forward_is_refused():
    g = gd.Graph(dtype="float64")
    x = g.input("x", ())
    y = gd.exp(x) * 2.0
    g.forward({x: 1.0}, outputs=y)
    g.feed({x: 2.0})
    with pytest.raises(gd.GraphError, match=r"'x' was fed a new value after it was computed"):
        g.backward(y)


@pytest.mark.parametrize("variant", gd.VARIANTS)
@pytest.mark.parametrize("shape", [(), (3,)])
def test_a_param_assigned_after_the_forward_is_refused(variant, shape):
    """Every op node has the forward's stamp, but a leaf is newer: the look at the stamps must not pass it
    (on the scalar path and on arrays, for a plan used once and one kept)."""
    g = gd.Graph(dtype="float64")
    w = g.param("w", np.full(shape, 0.5))
    y = gd.sum(gd.tanh(w * w) * 3.0)
    for _ in range(3):                              # the plan kept from its second use on
        g.forward(outputs=y)
        g.backward(y, variant=variant)
    w.value = np.full(shape, 0.25)
    with pytest.raises(gd.GraphError, match=r"'w' was assigned a new value after it was computed"):
        g.backward(y, variant=variant)
    g.forward(outputs=y)
    g.backward(y, variant=variant)
    assert np.allclose(w.grad, 3.0 * 2 * 0.25 * (1 - np.tanh(0.0625) ** 2))


def test_a_forward_of_other_outputs_is_checked_edge_by_edge():
    """Op nodes of several stamps (a forward of other outputs since): not all one forward's, so every edge is
    checked, and the one that read an older value of a fed input is named."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", ())
    a = gd.exp(x)
    y, z = a * 2.0, a * 3.0
    g.forward({x: 1.0}, outputs=[y, z])
    g.forward({x: 2.0}, outputs=z)                  # a and z recomputed, y not
    with pytest.raises(gd.GraphError, match=r"'multiply' \(multiply\) is stale: its input 'exp'"):
        g.backward(y, wrt=[x])
    g.backward(z, wrt=[x])                          # z's values are all from x = 2
    assert x.grad == pytest.approx(3.0 * np.exp(2.0))


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_a_big_plan_is_kept_from_its_first_use(monkeypatch, variant):
    """From KEEP_FROM_FIRST_USE nodes a plan is kept at once (a second backward of a long chain does not
    sweep it again); below, only from its second use on. Same gradients either way."""
    monkeypatch.setattr(plans, "KEEP_FROM_FIRST_USE", 10)
    grads = []
    for steps in (3, 20):
        g = gd.Graph(dtype="float64")
        x = g.param("x", 0.5)
        h = x
        for _ in range(steps):
            h = gd.tanh(h)
        g.forward(outputs=h)
        first = plans.plan_for(g, h, None, variant)
        assert (plans.plan_for(g, h, None, variant) is first) == (steps >= 10)
        g.backward(h, variant=variant)
        grads.append(float(x.grad))
    want = [np.prod([1 - np.tanh(v) ** 2 for v in _tanh_chain(0.5, k)]) for k in (3, 20)]
    assert grads == pytest.approx(want, rel=1e-13)


def _tanh_chain(x, steps):
    """The inputs of each tanh of a chain of `steps` from x."""
    values = []
    for _ in range(steps):
        values.append(x)
        x = np.tanh(x)
    return values


class _BindingRun(autodiff.NumericRun):
    """A NumericRun that binds every node (as runs with their own bind do): no direct per-slot calls."""

    def bind(self, u):
        return super().bind(u)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_direct_vjp_calls_equal_bound_ones(seed, variant):
    """NumericRun calls a per-slot rule straight on a node's input values (plans.Rules.slot_rule); a run
    that binds each node first gives the same adjoints, bit for bit, on floats and on arrays."""
    g, nodes = _random_graph(seed)
    y = nodes[-1]
    g.forward(outputs=y)
    plan = plans.plan_for(g, y, None, variant)
    loop = autodiff.LOOPS[variant]
    for F, seed_value in ((SCALAR, 1.0), (g.backend, np.float64(1.0))):
        if F is not SCALAR:
            execution.as_arrays(plan.order)
        kept = set(plan.active)
        direct = loop(plan, seed_value, autodiff.NumericRun(F, kept, {}, plans.bound_rules(plan, F)))
        bound = loop(plan, seed_value, _BindingRun(F, kept, {}, plans.bound_rules(plan, F)))
        assert direct.keys() == bound.keys() and kept <= direct.keys()
        assert all(float(direct[n]) == float(bound[n]) for n in direct)
