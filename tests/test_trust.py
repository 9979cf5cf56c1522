"""Never a silently wrong gradient: stale values, aliased arrays, stale plans, and bad input as typed errors.

Each test is a user's snippet that must give the right number or a typed error, never a wrong number or a bare
traceback."""
import numpy as np
import pytest

import graphdiff as gd


@pytest.fixture
def g():
    return gd.Graph(dtype="float64")


# --- staleness: every value a backward reads comes from the current feeds and params --------------------
def two_outputs(g):
    x = g.input("x", (3,))
    W = g.param("W", np.array([1.0, 2.0, 3.0]))
    y = gd.sum(gd.tanh(x * W))
    z = gd.sum(x * 2.0)                          # does not use W
    return x, W, y, z


def test_backward_after_forward_of_other_outputs_with_new_feeds_refuses(g):
    x, W, y, z = two_outputs(g)
    g.forward({x: np.ones(3)}, outputs=y)
    g.forward({x: np.full(3, 5.0)}, outputs=z)
    with pytest.raises(gd.GraphError, match=r"'multiply' \(multiply\), which 'sum' depends on, is stale: its "
                                            r"input 'x' was fed a new value after it was computed; run "
                                            r"g.forward\(feeds, outputs='sum'\) again right before backward"):
        g.backward(y)
    g.forward(outputs=y)                         # the fix the message names: gradients at x = 5
    g.backward(y)
    np.testing.assert_allclose(W.grad, 5.0 * (1 - np.tanh(5.0 * W.value) ** 2))


def test_backward_after_assigning_a_param_and_forwarding_something_else_refuses(g):
    x, W, y, z = two_outputs(g)
    g.forward({x: np.ones(3)}, outputs=y)
    W.value = np.array([7.0, 8.0, 9.0])
    g.forward(outputs=z)
    with pytest.raises(gd.GraphError, match=r"its input 'W' was assigned a new value after it was computed"):
        g.backward(y)


def test_backward_after_a_failed_forward_is_a_graph_error(g):
    x = g.input("x", (2,))
    W = g.param("W", np.ones(2))
    y = gd.sum(gd.log(x) * W)
    g.forward({x: np.array([1.0, 2.0])}, outputs=y)
    with pytest.raises(gd.NonFiniteError, match=r"log 'log'"):    # fails part-way through the run
        g.forward({x: np.array([-1.0, 2.0])}, outputs=y, check_finite=True)
    with pytest.raises(gd.GraphError, match=r"'log' \(log\), which 'sum' depends on, is stale: its input 'x' "
                                            r"was fed a new value after it was computed"):
        g.backward(y)


def test_a_refused_feed_changes_nothing():
    g = gd.Graph(dtype="float64")
    table = g.param("table", np.ones((3, 2)))
    ids = g.input("ids", (2,), dtype="int64")
    y = gd.sum(gd.embedding(table, ids) * 2.0)
    g.forward({ids: np.array([0, 1])}, outputs=y)
    with pytest.raises(gd.GraphError, match=r"ids must lie in \[0, 3\)"):
        g.forward({ids: np.array([0, 7])}, outputs=y)
    g.backward(y)                                # the values are still those of ids [0, 1]
    np.testing.assert_array_equal(table.grad, [[2.0, 2.0], [2.0, 2.0], [0.0, 0.0]])


def test_recomputing_shared_nodes_without_new_values_is_not_stale(g):
    x, W, y, z = two_outputs(g)
    g.forward({x: np.ones(3)}, outputs=[y, z])
    g.forward(outputs=z)
    g.backward(y)                                # nothing changed: no error
    np.testing.assert_allclose(W.grad, 1 - np.tanh(W.value) ** 2)


# --- aliasing: the graph owns its values -------------------------------------------------------------------
def test_feeds_are_copied_so_changing_the_batch_array_in_place_changes_nothing(g):
    x, W, y, z = two_outputs(g)
    X = np.ones(3)
    g.forward({x: X}, outputs=y)
    X[:] = 100.0                                 # the next batch written into the same buffer
    g.backward(y)
    np.testing.assert_allclose(W.grad, 1 - np.tanh(W.value) ** 2)
    np.testing.assert_array_equal(x.value, np.ones(3))


def test_param_initial_array_is_copied(g):
    w0 = np.array([0.5, -0.5])
    w = g.param("w", w0)
    y = gd.sum(w * w)
    g.forward(outputs=y)
    w0[:] = 9.0
    g.backward(y)
    np.testing.assert_array_equal(w.value, [0.5, -0.5])
    np.testing.assert_array_equal(w.grad, [1.0, -1.0])


def test_assigned_value_is_copied(g):
    w = g.param("w", np.zeros(2))
    new = np.array([1.0, 2.0])
    w.value = new
    new[:] = -1.0
    np.testing.assert_array_equal(w.value, [1.0, 2.0])


# --- plans: anything that changes a cached plan invalidates it ----------------------------------------------
def test_requires_grad_set_after_a_first_backward_is_honoured(g):
    x, W, y, z = two_outputs(g)
    g.forward({x: np.ones(3)}, outputs=y)
    g.backward(y)
    assert x.grad is None
    x.requires_grad = True
    g.backward(y)
    np.testing.assert_allclose(x.grad, W.value * (1 - np.tanh(W.value) ** 2))
    x.requires_grad = False
    g.backward(y)
    assert x.grad is None


def test_a_frozen_param_gets_no_gradient(g):
    x, W, y, z = two_outputs(g)
    g.forward({x: np.ones(3)}, outputs=y)
    W.requires_grad = False
    assert g.backward(y) == {}
    assert W.grad is None


def test_requires_grad_only_on_float_leaves(g):
    ids = g.input("ids", (2,), dtype="int64")
    with pytest.raises(gd.DTypeError, match=r"input 'ids' has dtype int64: integer and bool leaves"):
        ids.requires_grad = True
    w = g.param("w", 1.0)
    with pytest.raises(gd.GraphError, match=r"'multiply' is a op computed by multiply; pass wrt="):
        (w * 2.0).requires_grad = True


# --- edge maths that must be errors (the numeric edge cases are in tests/ops/optable.py EDGE_CASES) --------
@pytest.mark.parametrize("axes", [(2, 3), (5, 0), (0, 0), (-3, 0)])
def test_transpose_axes_out_of_range_are_refused(g, axes):
    a = g.param("a", np.zeros((2, 3)))
    with pytest.raises(gd.ShapeError, match=r"transpose 'a': axes .* are not a permutation of the axes of "
                                            r"shape \(2, 3\)"):
        gd.transpose(a, axes)


# --- feeds and arguments: converted where NumPy would, typed errors naming the node otherwise ----------------
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint16", "int32"])
def test_small_integer_ids_are_accepted(g, dtype):
    table = g.param("table", np.arange(8.0).reshape(4, 2))
    ids = g.input("ids", (3,), dtype="int64")
    e = gd.embedding(table, ids)
    out = g.forward({ids: np.array([3, 0, 1], dtype=dtype)}, outputs=e)
    np.testing.assert_array_equal(out, [[6, 7], [0, 1], [2, 3]])


def test_float16_data_is_accepted(g):
    x = g.input("x", (2,))
    np.testing.assert_array_equal(g.forward({x: np.array([0.5, 2.0], dtype=np.float16)}, outputs=x), [0.5, 2.0])


@pytest.mark.parametrize("data, err, what", [
    ("abc", gd.DTypeError, r"got <U3 data \(text\)"),
    (np.ones(2, dtype=complex), gd.DTypeError, r"got complex128 data \(complex numbers\)"),
    (np.array([1, None], dtype=object), gd.DTypeError, r"got object data \(Python objects\)"),
    ([[1.0], [1.0, 2.0]], gd.ShapeError, r"the data is ragged"),
])
def test_unusable_feeds_are_typed_errors_naming_the_input(g, data, err, what):
    x = g.input("x", (2,))
    with pytest.raises(err, match=r"input 'x': " + what):
        g.forward({x: data}, outputs=x)


def test_string_seed_is_a_dtype_error(g):
    w = g.param("w", np.ones(2))
    y = w * 2.0
    g.forward(outputs=y)
    with pytest.raises(gd.DTypeError, match=r"backward: the seed for 'multiply': got <U3 data"):
        g.backward(y, seed="abc")


def test_numpy_integer_axis(g):
    x = g.param("x", np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(g.forward(outputs=gd.sum(x, axis=np.int64(1))), [3.0, 12.0])
    np.testing.assert_array_equal(g.forward(outputs=gd.concat([x, x], axis=np.int64(0))).shape, (4, 3))


@pytest.mark.parametrize("build, what", [
    (lambda g, x: g.input("q", (2.5, 2)), r"'q': shape must be a tuple of ints, got \(2.5, 2\)"),
    (lambda g, x: gd.reshape(x, (1.5, 4)), r"reshape 'x': shape must be a tuple of ints"),
    (lambda g, x: gd.broadcast_to(x, (2.0, 2, 3)), r"broadcast_to 'x': shape must be a tuple of ints"),
    (lambda g, x: x.reshape(3.0, 2), r"reshape 'x': shape must be a tuple of ints"),
])
def test_fractional_shapes_are_refused_not_truncated(g, build, what):
    x = g.param("x", np.zeros((2, 3)))
    with pytest.raises(gd.ShapeError, match=what):
        build(g, x)


def test_zero_slice_step_names_the_node(g):
    x = g.param("x", np.zeros((2, 3)))
    with pytest.raises(gd.ShapeError, match=r"getitem 'x' f64\[2,3\]: slice step cannot be zero"):
        x[::0]


def test_empty_list_index_follows_numpy(g):
    x = g.param("x", np.arange(6.0).reshape(2, 3))
    y = x[[]]
    assert y.shape == np.zeros((2, 3))[[]].shape == (0, 3)
    s = gd.sum(y)
    g.forward(outputs=s)
    g.backward(s)
    np.testing.assert_array_equal(x.grad, np.zeros((2, 3)))


@pytest.mark.parametrize("bad", [1.5, "0", True])
def test_ignore_index_must_be_an_integer(g, bad):
    logits = g.param("logits", np.zeros((2, 3)))
    with pytest.raises(gd.DTypeError, match=r"cross_entropy: ignore_index must be an integer id"):
        gd.cross_entropy(logits, np.array([0, 1]), ignore_index=bad)


def test_a_failed_eager_op_leaves_no_node():
    g = gd.Graph(dtype="float64", eager=True, check_finite=True)
    p = g.param("p", np.ones(3))
    with pytest.raises(gd.NonFiniteError, match=r"log 'log'"):
        gd.log(p - 2.0)                          # computed as it is added: log(-1)
    assert [n.name for n in g.nodes] == ["p", "const", "subtract"]
    q = gd.sum(p * 2.0)                          # the graph goes on working
    assert float(q.value) == 6.0


# --- the children variant is linear in fan-in -----------------------------------------------------------------
@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_each_node_gathers_its_input_values_once(variant):
    """add_n over n inputs: the children variant gathers the n-tuple of input values once per node, not once
    per edge (n^2 work: 8 s for n = 16,000), so each VJP call of one node sees the same tuple."""
    seen = []
    spec = gd.REGISTRY["add_n"]
    original = spec.vjp

    def spy(F, i, g, xs, out):
        seen.append(id(xs))
        return original(F, i, g, xs, out)

    g = gd.Graph(dtype="float64")
    xs = [g.param(f"x{k}", np.full(2, float(k))) for k in range(50)]
    y = gd.sum(gd.add_n(xs))
    g.forward(outputs=y)
    spec.vjp = spy
    try:
        g.backward(y, variant=variant)
    finally:
        spec.vjp = original
    assert len(seen) == 50 and len(set(seen)) == 1
    assert all(np.array_equal(x.grad, np.ones(2)) for x in xs)


@pytest.mark.slow
def test_wide_add_n_runs_in_both_variants():
    g = gd.Graph(dtype="float64")
    xs = [g.param(f"x{k}", np.full(2, float(k))) for k in range(20_000)]   # arrays: no scalar fast path
    y = gd.sum(gd.add_n(xs) * 2.0)
    g.forward(outputs=y)
    for variant in gd.VARIANTS:
        g.backward(y, variant=variant)
        np.testing.assert_array_equal(xs[-1].grad, [2.0, 2.0])


# --- a graph dropped is freed ------------------------------------------------------------------------------------
@pytest.mark.parametrize("eager", [False, True])
def test_a_graph_that_ran_is_freed_when_dropped(eager):
    """The engine's caches (orders, plans, compiled runs, hvp graphs) live on the graph: a graph built, run and
    dropped, as eager users do every step, is freed with them."""
    import gc
    import weakref
    refs = []
    for shape in ((), (3,)):
        g = gd.Graph(dtype="float64", eager=eager)
        x = g.param("x", np.full(shape, 0.5))
        y = gd.sum(gd.tanh(x * x + 1.0))
        for variant in gd.VARIANTS * 2:                  # the float graph compiles from the third run on
            g.forward(outputs=y)
            g.backward(y, variant=variant)
        gd.hvp(y, x, np.ones(shape))
        refs.append(weakref.ref(g))
        del g, x, y
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_forward_and_backward_leave_the_collector_as_they_found_it():
    """They pause Python's cyclic collector while they run (their containers hold no cycles): it is back on
    afterwards, after an error too, and stays off for a caller who turned it off."""
    import gc
    g = gd.Graph(dtype="float64")
    w = g.param("w", 2.0)
    y = gd.log(w * w)
    seen = []
    assert gc.isenabled()
    g.forward(outputs=y)
    g.backward(y, trace=lambda e: seen.append(gc.isenabled()))
    assert gc.isenabled() and seen and not any(seen)
    w.value = 3.0
    with pytest.raises(gd.GraphError, match=r"is stale"):
        g.backward(y)
    assert gc.isenabled()
    gc.disable()
    try:
        g.forward(outputs=y)
        g.backward(y)
        assert not gc.isenabled()
    finally:
        gc.enable()
