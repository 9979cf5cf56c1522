"""Ops that must not give silently wrong answers: custom ops without a VJP, masked (-inf) logits, ids out of
range, integer feeds that overflow, VJPs of the wrong dtype, seeds of the wrong shape, NaN through max/min
and log_softmax over one class."""
import numpy as np
import pytest
import torch

import graphdiff as gd
from graphdiff.errors import DTypeError, GraphError, ShapeError

NEG_INF = -np.inf


def np_value(node):
    return np.asarray(node.numpy())


def np_grad(node):
    g = node.grad
    return np.asarray(g) if isinstance(g, (np.ndarray, np.generic)) else node.graph.backend.to_numpy(g)


# --- custom ops must say whether they have a gradient ----------------------------------------------------
def test_op_without_vjp_is_refused_at_registration():
    """An op registered with no vjp or make_vjp (and not declared non-differentiable) is refused with a
    GraphError naming the op and both ways out, instead of silently getting zero gradients."""
    with pytest.raises(GraphError, match=r"'h3_no_vjp'.*vjp.*differentiable=False"):
        @gd.op("h3_no_vjp")
        class NoVjp:
            def shape(x):
                return x

            def forward(F, x):
                return x * x
    assert "h3_no_vjp" not in gd.REGISTRY


def test_op_declared_non_differentiable_registers_and_has_no_gradient():
    """differentiable=False (argument, or a class attribute) registers a forward-only op; its output is a
    constant for the backward (as sign's or a comparison's)."""
    @gd.op("h3_round", differentiable=False)
    class Round:
        def shape(x):
            return x

        def forward(F, x):
            return F.sign(x)

    @gd.op("h3_floor")
    class Floor:
        differentiable = False

        def shape(x):
            return x

        def forward(F, x):
            return x * 0.0 + 2.0

    assert not gd.REGISTRY["h3_round"].differentiable and not gd.REGISTRY["h3_floor"].differentiable
    g = gd.Graph(dtype="float64")
    w = g.param("w", np.array([-0.4, 1.6]))
    y = gd.sum(Round(w) * w + Floor(w))
    g.forward()
    g.backward(y)
    np.testing.assert_allclose(np_grad(w), [-1.0, 1.0])    # only the `* w` path has a gradient


def test_builtin_ops_without_vjp_are_the_declared_non_differentiable_ones():
    """Every registered op either has a VJP or is declared non-differentiable."""
    missing = [n for n, s in gd.REGISTRY.items() if s.vjp is None and s.differentiable]
    assert missing == []
    assert {n for n, s in gd.REGISTRY.items() if not s.differentiable} >= {
        "sign", "greater", "less", "equal", "not_equal", "logical_and", "one_hot", "dropout_mask"}


# --- masked (-inf) logits --------------------------------------------------------------------------------
MASKED = np.array([[0.5, NEG_INF, 1.5, -0.25], [NEG_INF, 2.0, NEG_INF, 0.0], [1.0, -1.0, 0.5, NEG_INF]])
TARGETS = np.array([0, 3, 2])


def _torch_masked(fn):
    t = torch.tensor(MASKED, requires_grad=True)
    y = fn(t)
    y.backward()
    return y.detach().numpy(), t.grad.numpy()


def _gd_masked(backend, fn, kernels):
    with gd.fused_kernels(kernels, cupy=kernels):
        g = gd.Graph(backend=backend, dtype="float64")
        x = g.param("x", MASKED)
        y = fn(g, x)
        g.forward()
        g.backward(y)
        return np_value(y), np_grad(x)


@pytest.mark.parametrize("kernels", [True, False], ids=["fused", "rules"])
def test_cross_entropy_with_masked_logits_is_finite(backend, kernels):
    """A -inf logit that is not a target leaves cross_entropy and its gradient finite and equal to
    PyTorch's (the rule picked the target by multiplying with a one-hot row: -inf * 0 = NaN)."""
    want_y, want_g = _torch_masked(lambda t: torch.nn.functional.cross_entropy(t, torch.tensor(TARGETS)))
    y, grad = _gd_masked(backend, lambda g, x: gd.cross_entropy(x, TARGETS), kernels)
    np.testing.assert_allclose(y, want_y, rtol=1e-12)
    np.testing.assert_allclose(grad, want_g, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kernels", [True, False], ids=["fused", "rules"])
@pytest.mark.parametrize("which", ["softmax", "log_softmax"])
def test_softmax_with_masked_logits_matches_pytorch(backend, kernels, which):
    """softmax and log_softmax of rows with -inf entries: values (0 and -inf where masked) and gradients
    (0 where masked) equal PyTorch's, by the rules and by the fused kernels."""
    w = np.arange(MASKED.size, dtype=np.float64).reshape(MASKED.shape) / 7.0 - 0.6
    keep = np.isfinite(MASKED)

    def torch_fn(t):
        out = getattr(torch, which)(t, dim=-1)
        return torch.where(torch.tensor(keep), out * torch.tensor(w), torch.zeros(())).sum()

    def gd_fn(g, x):
        out = getattr(gd, which)(x)
        return gd.sum(gd.where(keep, out * w, 0.0), name="y")

    want_y, want_g = _torch_masked(torch_fn)
    y, grad = _gd_masked(backend, gd_fn, kernels)
    np.testing.assert_allclose(y, want_y, rtol=1e-12)
    np.testing.assert_allclose(grad, want_g, rtol=1e-12, atol=1e-15)
    with gd.fused_kernels(kernels, cupy=kernels):
        g = gd.Graph(backend=backend, dtype="float64")
        out = getattr(gd, which)(g.param("x", MASKED))
        g.forward()
        np.testing.assert_allclose(np_value(out), getattr(torch, which)(torch.tensor(MASKED), dim=-1).numpy(),
                                   rtol=1e-12, atol=1e-300)


# --- ids out of range ------------------------------------------------------------------------------------
def _id_ops():
    """(name, build(g, ids) -> node) for each op that takes ids, with 3 valid ids 0..2."""
    return [
        ("embedding", lambda g, ids: gd.embedding(g.param("table", np.ones((3, 2))), ids)),
        ("scatter_rows", lambda g, ids: gd.scatter_rows(g.param("rows_g", np.ones((2, 2))), ids, 3)),
        ("one_hot", lambda g, ids: gd.one_hot(ids, 3, "float64")),
        ("cross_entropy", lambda g, ids: gd.cross_entropy(g.param("logits", np.ones((2, 3))), ids)),
    ]


@pytest.mark.parametrize("bad", [3, -1])
@pytest.mark.parametrize("name,build", _id_ops(), ids=[n for n, _ in _id_ops()])
def test_ids_out_of_range_are_refused_as_arrays(name, build, bad):
    """Ids given as an array outside [0, rows), negative included, raise a GraphError naming the op and
    the id, for every op that takes ids (one_hot and scatter_rows gave zero rows or wrote the last row)."""
    g = gd.Graph(dtype="float64")
    with pytest.raises(GraphError, match=rf"{name}.*found id {bad}\b"):
        build(g, np.array([0, bad]))


@pytest.mark.parametrize("bad", [3, -1])
@pytest.mark.parametrize("name,build", _id_ops(), ids=[n for n, _ in _id_ops()])
def test_ids_out_of_range_are_refused_when_fed(name, build, bad):
    """Ids fed to an input are checked at the feed: the error names the node, the input and the id."""
    g = gd.Graph(dtype="float64")
    ids = g.input("ids", (2,), dtype="int64")
    node = build(g, ids)
    g.forward({ids: np.array([1, 0])})
    with pytest.raises(GraphError, match=rf"{name} '{node.name}'.*'ids'.*found id {bad}\b"):
        g.forward({ids: np.array([0, bad])})


@pytest.mark.parametrize("bad", [3, -1])
@pytest.mark.parametrize("name,build", _id_ops(), ids=[n for n, _ in _id_ops()])
def test_ids_out_of_range_are_refused_when_computed(name, build, bad):
    """Ids computed in the graph are checked by the forward: a GraphError naming the node and the id."""
    g = gd.Graph(dtype="float64")
    raw = g.input("raw", (3,), dtype="int64")
    node = build(g, raw[1:])
    g.forward({raw: np.array([7, 1, 0])})
    with pytest.raises(GraphError, match=rf"{name} '{node.name}'.*found id {bad}\b"):
        g.forward({raw: np.array([0, 0, bad])})


def test_cross_entropy_ignore_index_is_still_allowed():
    """ignore_index may lie outside [0, V): the ids equal to it are left out, the others still checked."""
    g = gd.Graph(dtype="float64")
    y = gd.cross_entropy(g.param("logits", np.zeros((2, 3))), np.array([-100, 1]), ignore_index=-100)
    g.forward()
    np.testing.assert_allclose(np_value(y), np.log(3.0))


# --- integer feeds that do not fit -----------------------------------------------------------------------
@pytest.mark.parametrize("value", [2**31, -2**31 - 1])
def test_int_feed_that_overflows_the_input_dtype_is_refused(value):
    """Feeding 2**31 to an int32 input (which a cast would store as -2**31) is a DTypeError naming the input,
    the value and the dtype."""
    g = gd.Graph(dtype="float64")
    ids = g.input("ids", (2,), dtype="int32")
    y = gd.astype(ids, "float64")
    with pytest.raises(DTypeError, match=rf"'ids'.*int32.*{value}"):
        g.forward({ids: np.array([0, value], dtype=np.int64)}, outputs=[y])
    g.forward({ids: np.array([0, 2**31 - 1], dtype=np.int64)}, outputs=[y])    # in range: cast, fine
    np.testing.assert_array_equal(np_value(y), [0.0, 2**31 - 1])


def test_int_feed_into_unsigned_input_that_is_negative_is_refused():
    """Fits nowhere: -1 fed to a uint8 input would wrap to 255."""
    g = gd.Graph(dtype="float64")
    if "uint8" not in gd.graph.DTYPES:
        pytest.skip("no unsigned dtypes")
    x = g.input("x", (1,), dtype="uint8")
    with pytest.raises(DTypeError, match="'x'"):
        g.forward({x: np.array([-1])})


# --- a VJP that returns another dtype ---------------------------------------------------------------------
def square_f32():
    """Registers and returns an op x * x whose VJP (wrongly) returns float32 (the conftest fixture removes it)."""
    @gd.op("h3_square_f32")
    class SquareF32:
        """x * x, with a VJP that returns float32"""
        def shape(x):
            return x

        def forward(F, x):
            return x * x

        def vjp(F, i, g, xs, out):
            return F.astype(2.0 * g * xs[0], F.dtypes["float32"])
    return SquareF32


@pytest.mark.parametrize("variant", ["children", "parents"])
def test_vjp_result_is_cast_to_its_inputs_dtype(variant):
    """A VJP returning float32 for a float64 input gives a float64 .grad (PyTorch casts gradients to the
    input's dtype), on the run that checks the plan and on the runs after it."""
    g = gd.Graph(dtype="float64")
    w = g.param("w", np.array([1.0 / 3.0, 2.0]))
    y = gd.sum(square_f32()(w) * 3.0)
    for _ in range(3):
        g.forward()
        g.backward(y, variant=variant)
        assert np_grad(w).dtype == np.float64
        np.testing.assert_allclose(np_grad(w), 6.0 * np.array([1.0 / 3.0, 2.0]), rtol=1e-6)


def test_mixed_precision_input_gets_a_gradient_of_its_own_dtype():
    """float32 a + float64 b is float64; a's gradient is float32, as a's value (PyTorch's rule)."""
    g = gd.Graph(dtype="float64")
    a = g.param("a", np.array([1.0, 2.0], dtype=np.float32), dtype="float32")
    b = g.param("b", np.array([3.0, 4.0]))
    y = gd.sum(a * b)
    g.forward()
    g.backward(y)
    assert np_grad(a).dtype == np.float32 and np_grad(b).dtype == np.float64
    np.testing.assert_allclose(np_grad(a), [3.0, 4.0])


# --- seeds of the wrong shape ----------------------------------------------------------------------------
def test_gradients_refuses_an_array_seed_of_the_wrong_shape():
    """g.gradients broadcast a seed of the wrong shape that g.backward refuses; both raise ShapeError."""
    g = gd.Graph(dtype="float64")
    w = g.param("w", np.ones((2, 3)))
    y = w * 2.0
    g.forward()
    with pytest.raises(ShapeError):
        g.backward(y, seed=np.ones(3))
    with pytest.raises(ShapeError, match=r"seed.*\(3,\).*\(2, 3\)"):
        g.gradients(y, [w], seed=np.ones(3))
    dw, = g.gradients(y, [w], seed=np.full((2, 3), 0.5))
    g.forward()
    np.testing.assert_allclose(np_value(dw), np.ones((2, 3)))


# --- NaN flows through max and min -----------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["children", "parents"])
@pytest.mark.parametrize("fn", ["maximum", "minimum"])
def test_nan_in_maximum_and_minimum_flows_into_both_gradients(backend, fn, variant):
    """maximum(nan, 1) sent zero gradient to both inputs; PyTorch sends the whole gradient to both where
    either is NaN (neither wins), half to each on a tie, all to the winner otherwise."""
    A = np.array([np.nan, 1.0, 2.0, 0.5, np.nan])
    B = np.array([1.0, np.nan, 2.0, 1.5, np.nan])
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (A, B))
    (getattr(torch, fn)(ta, tb) * torch.arange(1.0, 6.0, dtype=torch.float64)).sum().backward()
    g = gd.Graph(backend=backend, dtype="float64")
    a, b = g.param("a", A), g.param("b", B)
    y = gd.sum(getattr(gd, fn)(a, b) * np.arange(1.0, 6.0))
    g.forward()
    g.backward(y, variant=variant)
    np.testing.assert_array_equal(np_grad(a), ta.grad.numpy())
    np.testing.assert_array_equal(np_grad(b), tb.grad.numpy())


def test_nan_in_max_reduction_flows_as_in_torch_amax():
    """max over an axis with a NaN: the gradient is NaN across that slice (torch.amax's rule), not 0."""
    X = np.array([[np.nan, 1.0, 2.0], [0.0, 3.0, 1.0]])
    t = torch.tensor(X, requires_grad=True)
    torch.amax(t, dim=1).sum().backward()
    g = gd.Graph(dtype="float64")
    x = g.param("x", X)
    y = gd.sum(gd.max(x, axis=1))
    g.forward()
    with np.errstate(invalid="ignore", divide="ignore"):
        g.backward(y)
    np.testing.assert_array_equal(np_grad(x), t.grad.numpy())


# --- log_softmax over one class is exactly 0 -------------------------------------------------------------
@pytest.mark.parametrize("kernels", [True, False], ids=["fused", "rules"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows", [[0.3, -0.7, 2.5, 1.1], [0.3, -0.7, 1e3, 123.456]], ids=["small", "large"])
def test_log_softmax_over_one_class_is_exactly_zero(backend, kernels, dtype, rows):
    """log_softmax over an axis of length 1 is exactly 0 (not x - (m + log s), +-1e-16), so a kink after
    it (abs, relu) takes the branch PyTorch takes."""
    X = np.array(rows, dtype=dtype).reshape(4, 1)
    with gd.fused_kernels(kernels, cupy=kernels):
        g = gd.Graph(backend=backend, dtype=dtype)
        x = g.param("x", X)
        out = gd.log_softmax(x, axis=-1)
        y = gd.sum(gd.abs(out))
        g.forward()
        g.backward(y)
        np.testing.assert_array_equal(np_value(out), np.zeros_like(X))
        np.testing.assert_array_equal(np_grad(x), np.zeros_like(X))
        g2 = gd.Graph(backend=backend, dtype=dtype)
        out2 = gd.log_softmax(g2.param("x", X.reshape(1, 4, 1)), axis=1)
        out3 = gd.log_softmax(g2.param("x1", X.reshape(4, 1, 1)), axis=1)
        g2.forward()
        assert np.all(np_value(out3) == 0)
        assert np.all(np.isfinite(np_value(out2)))


def test_log_softmax_keeps_a_masked_row_with_one_finite_entry_at_zero(backend):
    """A row whose only finite entry is x: log_softmax's rule gives exactly 0 there (as for one class)."""
    with gd.fused_kernels(False):
        g = gd.Graph(backend=backend, dtype="float64")
        out = gd.log_softmax(g.param("x", np.array([[NEG_INF, 0.7, NEG_INF]])))
        g.forward()
    assert np_value(out)[0, 1] == 0.0
