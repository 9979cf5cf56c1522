"""plans.py: the one-sweep plan equals its plain definition, and plans are kept from their second use on."""
import numpy as np
import pytest

import graphdiff as gd
from graphdiff import plans


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
