"""Everyday use as micrograd, PyTorch and NumPy users write it: each test is the user's snippet."""
import pathlib

import numpy as np
import pytest

import graphdiff as gd
from graphdiff import nn

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def readme_block(heading):
    return README.split(heading, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_sgd_on_the_params_of_a_raw_graph():
    g = gd.Graph(dtype="float64")
    w = g.param("w", np.array([1.0, -2.0]))
    loss = gd.sum(w * w)
    opt = nn.SGD(g.params(), lr=0.25)
    for _ in range(3):
        g.forward(outputs=loss)
        g.backward(loss)
        opt.step()
    np.testing.assert_allclose(w.value, np.array([1.0, -2.0]) * 0.5 ** 3)   # w -= 0.25 * 2w each step
    assert [n for n, _ in opt.params] == ["w"]


def test_optimizers_refuse_nodes_that_are_not_params():
    g = gd.Graph()
    x = g.input("x", (2,))
    with pytest.raises(gd.GraphError, match=r"optimizers update params; 'x' is a input: pass g.params\(\)"):
        nn.AdamW([x])


def test_readme_raw_graph_training_loop_learns():
    scope = {}
    exec(readme_block("### Training a raw graph"), scope)
    assert float(scope["loss"]) < 0.02                    # tanh regression with 5% noise: fits closely


def test_eager_mode_like_micrograd():
    g = gd.Graph(dtype="float64", eager=True)
    a, b = g.param("a", -4.0), g.param("b", 2.0)
    c = a * b + b ** 3
    c.backward()
    assert float(c) == 0.0 and float(a.grad) == 2.0 and float(b.grad) == 8.0 and float(c.grad) == 1.0
    assert str(a) == "Node('a', param, f64[], value=-4, grad=2)"
    a.value = 1.0                                         # values follow at once, as in micrograd
    assert float(c) == 10.0
    c.backward()
    assert float(b.grad) == 13.0


def test_float_of_a_node_without_value_or_with_many_elements():
    g = gd.Graph()
    x = g.input("x", (2,))
    with pytest.raises(gd.GraphError, match=r"node 'x' has no value yet"):
        float(x)
    g.forward({x: np.ones(2)})
    with pytest.raises(TypeError, match=r"only one-element nodes"):
        float(x)


@pytest.fixture
def fresh_registry():
    before = dict(gd.REGISTRY)
    yield
    gd.REGISTRY.clear()                                   # the README registers "my_softplus" for good
    gd.REGISTRY.update(before)


def test_a_registered_op_is_callable_and_checks_against_finite_differences(fresh_registry):
    scope = {}
    exec(readme_block("### Ops"), scope)                  # defines my_softplus, builds y, runs gradcheck
    softplus, w, g = scope["my_softplus"], scope["w"], scope["g"]
    y2 = gd.sum(gd.apply("my_softplus", w))
    y3 = gd.sum(softplus(w))
    np.testing.assert_allclose(g.forward(outputs=[y2, y3]), [np.sum(np.log1p(np.exp(w.value)))] * 2)
    with pytest.raises(gd.GraphError, match=r"no op named 'softplux'; register it with @gd.op"):
        gd.apply("softplux", w)
