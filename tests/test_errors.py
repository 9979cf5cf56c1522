"""Errors that teach: typed, naming the node, the op, shapes and dtypes, and the fix."""
import numpy as np
import pytest

import graphdiff as gd


@pytest.fixture
def g():
    return gd.Graph(dtype="float64")


def test_shape_mismatch_at_build_time_names_op_node_shapes_and_fix(g):
    a = g.input("a", (4, 3))
    b = g.param("b", np.zeros((2, 5)))
    with g.scope("attn"):
        with pytest.raises(gd.ShapeError, match=r"matmul 'attn/qk': a\(4, 3\) @ b\(2, 5\): inner dims differ "
                                                r"\(3 != 2\); b needs shape \(3, \.\.\.\).*'a' f64\[4,3\], 'b' f64\[2,5\]"):
            gd.matmul(a, b, name="qk")


def test_broadcast_mismatch_names_the_axis(g):
    a, b = g.param("a", np.zeros((4, 3))), g.param("b", np.zeros(2))
    with pytest.raises(gd.ShapeError, match=r"add 'add': shapes \(4, 3\) and \(2,\) do not broadcast \(axis -1: "
                                            r"sizes \[2, 3\]\); reshape one"):
        a + b


def test_missing_feed_says_how_to_feed(g):
    x = g.input("x", (2, 3))
    y = gd.tanh(x)
    with pytest.raises(gd.GraphError, match=r"no value for input 'x' f64\[2,3\]; pass it in feeds, "
                                            r"e.g. g.forward\(\{'x': array\}\)"):
        g.forward(outputs=y)


def test_misshaped_feed(g):
    g.input("x", (2, 3))
    with pytest.raises(gd.ShapeError, match=r"input 'x' expects shape \(2, 3\) \(f64\[2,3\]\), got an array of "
                                            r"shape \(3, 2\); reshape the data"):
        g.forward({"x": np.zeros((3, 2))})


def test_unknown_feed_name_suggests_the_close_one(g):
    g.input("tokens", (2,), dtype="int64")
    with pytest.raises(gd.GraphError, match=r"no node named 'token' in this graph; did you mean 'tokens'\?"):
        g.forward({"token": np.zeros(2, dtype=np.int64)})


def test_feeding_a_param_says_to_assign(g):
    w = g.param("w", np.zeros(2))
    with pytest.raises(gd.GraphError, match=r"'w' is a param, not an input; assign w.value = \.\.\. instead"):
        g.forward({w: np.ones(2)})


def test_float_data_into_integer_ids(g):
    ids = g.input("ids", (3,), dtype="int64")
    with pytest.raises(gd.DTypeError, match=r"input 'ids' holds int64, got float64 data; pass integer ids"):
        g.forward({ids: np.array([0.5, 1.0, 2.0])})


def test_non_scalar_backward_without_seed(g):
    x = g.param("x", np.ones((4, 65)))
    logits = gd.tanh(x, name="logits")
    g.forward(outputs=logits)
    with pytest.raises(gd.GraphError, match=r"backward: 'logits' has shape \(4, 65\); pass seed= .* or reduce it "
                                            r"to a scalar first"):
        g.backward(logits)


def test_seed_of_wrong_shape(g):
    x = g.param("x", np.ones(3))
    y = x * 2.0
    g.forward(outputs=y)
    with pytest.raises(gd.ShapeError, match=r"the seed for 'multiply' expects shape \(3,\) \(f64\[3\]\), got an "
                                            r"array of shape \(2,\)"):
        g.backward(y, seed=np.ones(2))


def test_unknown_variant(g):
    x = g.param("x", 1.0)
    y = x * x
    g.forward(outputs=y)
    with pytest.raises(ValueError, match=r"unknown variant 'child'; use 'children' \(Version A.*or 'parents'"):
        g.backward(y, variant="child")


def test_mixing_nodes_of_two_graphs():
    g1, g2 = gd.Graph(), gd.Graph()
    a, b = g1.param("a", 1.0), g2.param("b", 1.0)
    with pytest.raises(gd.GraphError, match=r"add: 'a' and 'b' belong to two different graphs"):
        a + b
    y = a * 2.0
    g1.forward(outputs=y)
    with pytest.raises(gd.GraphError, match=r"backward: node 'multiply' belongs to another graph"):
        g2.backward(y)


def test_integer_inputs_have_no_gradient(g):
    with pytest.raises(gd.DTypeError, match=r"input 'ids' has dtype int64: integer and bool inputs have no "
                                            r"gradient"):
        g.input("ids", (3,), dtype="int64", requires_grad=True)
    ids = g.input("ids", (3,), dtype="int64")
    table = g.param("wte", np.ones((5, 2)))
    loss = gd.sum(gd.embedding(table, ids))
    g.forward({ids: np.array([0, 1, 4])})
    with pytest.raises(gd.DTypeError, match=r"cannot differentiate with respect to 'ids' \(i64\[3\]\): integer "
                                            r"ids and bool masks have no gradient"):
        g.backward(loss, wrt=[ids])


def test_integer_node_into_float_op(g):
    ids = g.input("ids", (3,), dtype="int64")
    with pytest.raises(gd.DTypeError, match=r"tanh 'tanh': input 0 \('ids', i64\[3\]\) must be a float node; "
                                            r"cast it with gd.astype"):
        gd.tanh(ids)


def test_float_ids_into_embedding(g):
    table = g.param("wte", np.ones((5, 2)))
    with pytest.raises(gd.DTypeError, match=r"expected integer ids, got float64 data"):
        gd.embedding(table, np.array([0.0, 1.0]))


def test_out_of_range_ids_name_the_node_and_the_id(g):
    table = g.param("wte", np.ones((5, 2)))
    ids = g.input("ids", (3,), dtype="int64")
    emb = gd.embedding(table, ids, name="tok_emb")
    with pytest.raises(gd.GraphError, match=r"forward failed at embedding 'tok_emb'.*ids must lie in \[0, 5\) for "
                                            r"a table of 5 rows; found id 7 at position \(2,\)"):
        g.forward({ids: np.array([0, 1, 7])}, outputs=emb)


def test_cross_entropy_target_out_of_range(g):
    logits = g.param("logits", np.zeros((2, 3)))
    with pytest.raises(gd.GraphError, match=r"target ids must lie in \[0, 3\) or equal ignore_index=None; found "
                                            r"id 3 at position \(1,\)"):
        g.forward(outputs=gd.cross_entropy(logits, np.array([0, 3])))


def test_nan_in_forward_names_the_first_node(g):
    x = g.input("x", (3,))
    y = gd.log(x, name="logp")
    z = gd.exp(y)
    with pytest.raises(gd.NonFiniteError, match=r"forward: log 'logp' \(inputs: 'x' f64\[3\]\) produced NaN or Inf "
                                                r"from finite inputs \('x' in \[-1, 2\]\)"):
        with np.errstate(all="ignore"):
            g.forward({x: np.array([1.0, -1.0, 2.0])}, outputs=z, check_finite=True)


def test_nan_in_backward_names_the_vjp(g):
    x = g.param("x", np.array([0.0, 1.0]))
    y = gd.sum(gd.sqrt(x, name="root"))
    g.forward(outputs=y)
    with np.errstate(all="ignore"):
        with pytest.raises(gd.NonFiniteError, match=r"backward: the VJP of sqrt 'root' for input 0 \('x'\) produced "
                                                    r"NaN or Inf"):
            g.backward(y, check_finite=True)


def test_graph_wide_check_finite(g):
    g.check_finite = True
    p = g.param("p", np.array([np.nan]))
    with pytest.raises(gd.NonFiniteError, match=r"param 'p' holds NaN or Inf"):
        g.forward(outputs=p * 2.0)


def test_stale_values_after_assignment(g):
    w = g.param("w", 1.0)
    y = w * w
    g.forward(outputs=y)
    w.value = 3.0
    with pytest.raises(gd.GraphError, match=r"'multiply' \(multiply\) is stale: its input 'w' was assigned a new "
                                             r"value after it was computed; run g.forward\(feeds, outputs='multiply'\) "
                                             r"again right before backward"):
        g.backward(y)


def test_backward_before_forward(g):
    w = g.param("w", 1.0)
    y = w * w
    with pytest.raises(gd.GraphError, match=r"'multiply' has no value; run g.forward\(feeds\) first"):
        g.backward(y)


def test_duplicate_leaf_names(g):
    g.param("W", 1.0)
    with pytest.raises(gd.GraphError, match=r"name 'W' is already used by <Node 'W' param f64\[\]>"):
        g.param("W", 2.0)
    with g.scope("block1"):
        assert g.param("W", 2.0).name == "block1/W"


def test_assigning_a_wrong_shape_to_a_param(g):
    w = g.param("w", np.zeros((2, 3)))
    with pytest.raises(gd.ShapeError, match=r"param 'w' expects shape \(2, 3\)"):
        w.value = np.zeros(3)


def test_truth_value_of_a_node(g):
    x = g.param("x", 1.0)
    with pytest.raises(gd.GraphError, match=r"use gd.where\(cond, a, b\)"):
        if x > 0:
            pass


def test_bad_index_and_reshape(g):
    x = g.param("x", np.zeros((2, 3)))
    with pytest.raises(gd.ShapeError, match=r"getitem 'getitem': index \[5, :\] does not fit shape \(2, 3\)"):
        x[5]
    with pytest.raises(gd.ShapeError, match=r"reshape 'x': input shape \(2, 3\) has 6 elements, shape \(4,\) has 4"):
        x.reshape(4)


def test_gradcheck_failure_names_param_index_and_values():
    @gd.op("bad_square", arity=1)
    class BadSquare:
        """x^2 with a wrong derivative (3x instead of 2x), to show what gradcheck reports"""
        shape = staticmethod(lambda s: s)

        def forward(F, x):
            return x * x

        def vjp(F, i, g, xs, out):
            return g * 3.0 * xs[0]

    try:
        g = gd.Graph(dtype="float64")
        w = g.param("w", np.array([1.0, 2.0]))
        y = gd.sum(gd.ops.apply(gd.REGISTRY["bad_square"], (w,)))
        with pytest.raises(gd.GradcheckError, match=r"gradcheck: dsum/dw at index \(1,\): analytic 6 vs numeric 4"):
            gd.gradcheck(y)
    finally:
        del gd.REGISTRY["bad_square"]


def test_gradcheck_needs_float64():
    g = gd.Graph(dtype="float32")
    w = g.param("w", 1.0)
    with pytest.raises(gd.DTypeError, match=r"gd.Graph\(dtype='float64'\)"):
        gd.gradcheck(w * w)
