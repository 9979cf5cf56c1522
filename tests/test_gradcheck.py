"""gd.gradcheck and gd.numeric_grads: what they promise to a user checking an op or a model.

- numeric_grads is central finite differences in float64 (error O(eps^2), not a one-sided O(eps)), of
  sum(seed * y) for a non-scalar y, with dropout masks held fixed, leaving every leaf as it found it;
- gradcheck passes when backward (either variant) agrees and returns the largest absolute error found;
- on disagreement it raises GradcheckError naming y, the leaf, the index and both values of the worst element;
- float32 graphs, integer leaves and computed nodes are refused with typed errors.
"""
import re

import numpy as np
import pytest

import graphdiff as gd


def cubic(backend="numpy"):
    g = gd.Graph(backend=backend, dtype="float64")
    w = g.param("w", np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.25]]))
    return g, w, gd.sum(w * w * w)


def test_numeric_grads_are_central_differences_in_float64():
    """For w^3 a central difference is exactly 3w^2 + eps^2; a one-sided one would be off by 3w*eps."""
    g, w, y = cubic()
    eps = 1e-3
    num = gd.numeric_grads(y, [w], eps=eps)[w]
    W = w.numpy()
    assert num.dtype == np.float64 and num.shape == W.shape
    np.testing.assert_allclose(num, 3 * W ** 2 + eps ** 2, rtol=1e-9, atol=1e-12)
    assert np.abs(num - (3 * W ** 2 + 3 * W * eps + eps ** 2)).max() > 1e-3


def test_numeric_grads_of_a_non_scalar_output_weight_it_by_the_seed(rng):
    """sum(seed * y): for y = x @ W, d/dW is x.T @ seed."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (4, 3))
    W = g.param("W", rng.standard_normal((3, 2)))
    y = x @ W
    X, S = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    num = gd.numeric_grads(y, [W], feeds={x: X}, seed=S)[W]
    np.testing.assert_allclose(num, X.T @ S, rtol=1e-7, atol=1e-9)
    assert gd.gradcheck(y, wrt=[W], feeds={x: X}, seed=S) < 1e-7


def test_numeric_grads_leave_every_leaf_and_value_as_they_were(rng):
    g = gd.Graph(dtype="float64")
    x = g.input("x", (2, 3), requires_grad=True)
    w = g.param("w", rng.standard_normal(3))
    y = gd.sum(gd.tanh(x * w))
    X = rng.standard_normal((2, 3))
    W = w.numpy().copy()
    out = float(g.forward({x: X}, outputs=y))
    gd.numeric_grads(y, [x, w])
    np.testing.assert_array_equal(w.numpy(), W)
    np.testing.assert_array_equal(x.numpy(), X)
    assert float(y.value) == out


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_gradcheck_passes_and_returns_the_largest_absolute_error(backend, variant):
    g, w, y = cubic(backend)
    worst = gd.gradcheck(y, variant=variant)
    num = gd.numeric_grads(y, [w])[w]
    g.backward(y, variant=variant)
    assert worst == pytest.approx(np.abs(gd.to_numpy(w.grad) - num).max(), rel=1e-6, abs=1e-15)
    assert 0 <= worst < 1e-7


def test_gradcheck_checks_the_graphs_params_by_default_and_wrt_when_given(rng):
    g = gd.Graph(dtype="float64")
    x = g.input("x", (3,), requires_grad=True)
    a = g.param("a", rng.standard_normal(3))
    b = g.param("b", rng.standard_normal(3))
    y = gd.sum(gd.relu(x) * a * b)
    # x at 0 is relu's kink: checking x fails, checking the params (the default) does not
    feeds = {x: np.array([1.0, 0.0, -1.0])}
    assert gd.gradcheck(y, feeds=feeds) < 1e-7
    with pytest.raises(gd.GradcheckError, match=r"d\w+/dx at index \(1,\)"):
        gd.gradcheck(y, wrt=[x], feeds=feeds)


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_a_failure_names_output_leaf_index_and_both_values(variant):
    """At relu's kink the backward says 0, the central difference the mean slope 0.5; the worst of the
    differing elements (the one scaled by 3) is reported, with the count of those that differ."""
    g = gd.Graph(dtype="float64")
    w = g.param("w", np.array([[1.0, 0.0], [-2.0, 0.0]]))
    c = g.constant(np.array([[1.0, 1.0], [1.0, 3.0]]))
    y = gd.sum(gd.relu(w) * c, name="loss")
    with pytest.raises(gd.GradcheckError) as e:
        gd.gradcheck(y, variant=variant)
    msg = str(e.value)
    assert msg.startswith("gradcheck: dloss/dw at index (1, 1): analytic 0 vs numeric 1.5"), msg
    assert "2 of 4 elements differ" in msg and f"variant '{variant}'" in msg
    assert isinstance(e.value, AssertionError)         # pytest shows it as a failed check


def test_tolerances_decide_what_differs():
    """|analytic - numeric| <= atol + rtol * |numeric| passes: the kink's 0.5 passes with atol 0.5."""
    g = gd.Graph(dtype="float64")
    w = g.param("w", np.array([0.0, 2.0]))
    y = gd.sum(gd.relu(w))
    with pytest.raises(gd.GradcheckError):
        gd.gradcheck(y, atol=0.49)
    assert gd.gradcheck(y, atol=0.5) == pytest.approx(0.5)
    assert gd.gradcheck(y, rtol=1.0, atol=0.0) == pytest.approx(0.5)      # 0.5 <= 1.0 * |0.5|


def test_a_0d_leaf_fails_at_index_empty():
    g = gd.Graph(dtype="float64")
    w = g.param("w", 0.0)
    y = gd.relu(w)
    with pytest.raises(gd.GradcheckError, match=re.escape(f"d{y.name}/dw at index (): analytic 0 vs numeric 0.5")):
        gd.gradcheck(y)


def test_an_empty_leaf_has_nothing_to_check():
    g = gd.Graph(dtype="float64")
    w = g.param("w", np.zeros((0, 3)))
    v = g.param("v", np.array([1.0, 2.0]))
    y = gd.sum(w) + gd.sum(v * v)
    assert gd.numeric_grads(y, [w])[w].shape == (0, 3)
    assert gd.gradcheck(y) < 1e-7


def test_dropout_masks_stay_fixed_while_differencing():
    """Each nudged forward reuses the masks of the first one: with a new mask per forward the differences
    would be noise and the check would fail."""
    g = gd.Graph(dtype="float64", seed=0)
    w = g.param("w", np.linspace(-1.0, 1.0, 12).reshape(3, 4))
    y = gd.sum(gd.dropout(gd.tanh(w), 0.5) * 2.0)
    assert gd.gradcheck(y) < 1e-7


def test_refusals_are_typed():
    g32 = gd.Graph(dtype="float32")
    w32 = g32.param("w", 1.0)
    with pytest.raises(gd.DTypeError, match=r"gd.Graph\(dtype='float64'\)"):
        gd.gradcheck(w32 * w32)
    g = gd.Graph(dtype="float64")
    w = g.param("w", np.array([1.0, 2.0]))
    ids = g.input("ids", (2,), dtype="int64")
    h = w * w
    y = gd.sum(h)
    with pytest.raises(gd.DTypeError, match="float64"):
        gd.numeric_grads(y, [ids], feeds={ids: np.array([0, 1])})
    with pytest.raises(gd.GraphError, match=r"finite differences perturb leaves; '\w+' is computed by multiply"):
        gd.gradcheck(y, wrt=[h])
