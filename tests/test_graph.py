"""graph.py: leaves, wrapping, names and scopes, shape/dtype inference, node attributes."""
import numpy as np
import pytest

import graphdiff as gd


def test_contract_example_builds_and_runs():
    g = gd.Graph()
    x = g.input("x", shape=(4, 3))
    W = g.param("W", np.random.default_rng(0).standard_normal((3, 2)))
    b = g.param("b", np.zeros(2))
    c = g.constant(2.0)
    h = gd.tanh(x @ W + b)
    loss = gd.mean(h * h * c)
    assert [n.kind for n in (x, W, c, h)] == ["input", "param", "constant", "op"]
    assert (h.shape, h.dtype, loss.shape) == ((4, 2), "float32", ())
    assert h.op == "tanh" and h.inputs[0].op == "add" and W.op is None
    assert g.params() == [W, b] and g.inputs() == [x]
    assert g.nodes[0] is x and [n.index for n in g.nodes] == list(range(len(g.nodes)))
    g.forward({"x": np.ones((4, 3))})
    g.backward(loss, variant="children")
    assert W.grad.shape == (3, 2) and W.grad.dtype == np.float32


def test_python_numbers_and_arrays_become_constants_in_the_graph_dtype():
    g = gd.Graph(dtype="float64")
    x = g.param("x", np.ones(3))
    y = 2 * x + np.arange(3)                    # int scalar and int array in float slots: float64
    consts = [n for n in g.nodes if n.kind == "constant"]
    assert [c.dtype for c in consts] == ["float64", "float64"]
    assert y.dtype == "float64"
    np.testing.assert_array_equal(gd.to_numpy(g.forward(outputs=y)), [2.0, 3.0, 4.0])


def test_integer_arrays_stay_integer_in_integer_slots():
    g = gd.Graph()
    table = g.param("wte", np.eye(4))
    e = gd.embedding(table, np.array([[0, 3]]))
    assert e.inputs[1].dtype == "int64" and e.shape == (1, 2, 4)


def test_names_are_unique_and_scoped():
    g = gd.Graph()
    x = g.param("x", 1.0)
    a, b = gd.tanh(x), gd.tanh(x)
    assert (a.name, b.name) == ("tanh", "tanh_1")
    with g.scope("block0"):
        with g.scope("attn"):
            q = gd.exp(x, name="q")
            W = g.param("W", 1.0)
        assert g.current_scope == "block0"
    assert (q.name, q.scope, W.name) == ("block0/attn/q", "block0/attn", "block0/attn/W")
    assert g["block0/attn/q"] is q and g.current_scope == ""


def test_shapes_and_dtypes_inferred_at_build_time():
    g = gd.Graph()
    x = g.input("x", (2, 1, 5))
    w = g.param("w", np.ones((3, 5, 4)))
    y = x.reshape(2, 1, 1, 5) @ w               # batch axes (2, 1) and (3,) broadcast to (2, 3)
    assert y.shape == (2, 3, 1, 4)
    assert gd.sum(y, axis=(0, -1), keepdims=True).shape == (1, 3, 1, 1)
    with pytest.raises(gd.ShapeError, match=r"a\(2, 1, 5\) @ b\(3, 5, 4\): batch axes \(2,\) and \(3,\) do not broadcast"):
        x @ w
    assert (x > 0.0).dtype == "bool"
    assert gd.astype(x, "float64").dtype == "float64"
    assert x[..., None, 1:3].shape == (2, 1, 1, 2)
    assert gd.concat([x, x], axis=-1).shape == (2, 1, 10) and gd.stack([x, x], axis=1).shape == (2, 2, 1, 5)
    assert x.reshape(-1, 5).shape == (2, 5) and x.T.shape == (5, 1, 2)


def test_input_dtypes_and_feeding_ints():
    g = gd.Graph()
    ids = g.input("ids", (2, 3), dtype="int64")
    mask = g.input("mask", (2, 3), dtype=bool)
    assert (ids.dtype, mask.dtype) == ("int64", "bool")
    g.forward({ids: np.zeros((2, 3), dtype=np.int32), mask: np.ones((2, 3), dtype=bool)})
    assert ids.value.dtype == np.int64


def test_node_repr_and_numpy_helpers():
    g = gd.Graph(dtype="float64")
    w = g.param("w", [1.0, 2.0])
    assert repr(w) == "<Node 'w' param f64[2]>"
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])
    assert gd.sum(w).shape == () and len(w) == 2


def test_numpy_array_on_the_left_defers_to_node():
    g = gd.Graph(dtype="float64")
    w = g.param("w", np.ones(2))
    y = np.array([2.0, 3.0]) * w
    assert isinstance(y, gd.Node) and y.op == "multiply"


# --- the quick paths of building give the general paths' nodes and errors ------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("number", [2.5, 0.1, -7, 3, 2 ** 60, True])
def test_numbers_wrapped_directly_are_the_constants_the_general_path_makes(dtype, number):
    g = gd.Graph(dtype=dtype)
    x = g.param("x", 1.0)
    with g.scope("s"):
        quick = (x * number).inputs[1]           # Python floats and exact ints skip the array round trip
        general = g.constant(np.asarray(number), dtype=dtype)
        named = g.constant(float(number), name="c")
    assert (quick.name, general.name, named.name) == ("s/const", "s/const_1", "s/c")
    for c in (quick, general, named):
        assert (c.kind, c.shape, c.dtype, c.scope, c.stamp, c.inputs, c.attrs) == \
            ("constant", (), dtype, "s", 0, (), {})
        assert type(c.out) is np.ndarray and c.out.dtype == np.dtype(dtype) and c.out.shape == ()
    assert quick.out == general.out and named.out == np.asarray(float(number), dtype=dtype)
    assert g.constant(2.0).dtype == dtype and g.constant(2).dtype == "int64"


def test_quick_dtype_and_shape_checks_give_the_full_checks_answers():
    g = gd.Graph(dtype="float32")
    a, b = g.param("a", np.ones(2)), g.param("b", np.ones(2), dtype="float64")
    ids = g.input("ids", (2,), dtype="int64")
    assert (a + a).dtype == "float32" and (a + b).dtype == "float64" and (b * a).dtype == "float64"
    assert gd.add_n([a, a, b]).dtype == "float64" and gd.add_n([a]).shape == (2,)
    with pytest.raises(gd.DTypeError, match=r"add 'add_\d': input 1 \('ids', i64\[2\]\) must be a float node"):
        a + ids
    with pytest.raises(gd.DTypeError, match=r"tanh 'tanh': input 0 \('ids', i64\[2\]\) must be a float node"):
        gd.tanh(ids)
    with pytest.raises(gd.GraphError, match=r"op add takes 2 inputs, got 3"):
        gd.apply("add", [a, a, a])
    with pytest.raises(gd.ShapeError, match=r"add 'add_\d': shapes \(2,\) and \(3,\) do not broadcast"):
        a + g.param("c", np.ones(3))
    assert (a + g.param("d", np.ones((3, 1)))).shape == (3, 2)
    assert [n.name for n in g.nodes if n.op] == ["add", "add_1", "multiply", "add_n", "add_n_1", "add_5"]


def test_names_skip_over_ones_a_user_took():
    g = gd.Graph()
    x = g.param("x", 1.0)
    assert gd.tanh(x).name == "tanh"
    taken = g.param("tanh_1", 1.0)
    assert [gd.tanh(x).name, gd.tanh(x, name="tanh").name, gd.tanh(x).name] == ["tanh_2", "tanh_3", "tanh_4"]
    assert g["tanh_1"] is taken


def _naming_session(eager, look_now):
    """Nodes named after their op get their names when first asked for (Graph._names); look_now asks
    right after each node is built, so that each node is named when it is built."""
    g = gd.Graph(dtype="float64", eager=eager, check_finite=eager)
    made = []

    def keep(n):
        if look_now:
            n.name
        made.append(n)
    x, w = g.param("x", 0.5), g.param("w", np.ones(2))
    keep(x), keep(w), keep(x * x), keep(x * x), keep(gd.multiply(x, x, name="multiply_2")), keep(x * x)
    keep(x * 2.0), keep(x + 3.0), keep(g.constant(1.0, name="const_1")), keep(g.constant(2.0))
    with g.scope("blk"):
        keep(x * x), keep(gd.tanh(x)), keep(gd.tanh(x)), keep(g.constant(4.0)), keep(gd.tanh(x, name="tanh"))
    keep(gd.tanh(x, name="blk/tanh"))
    with pytest.raises(gd.ShapeError) as e:      # the message names the node the op would have made
        x + w * np.ones(3)
    made.append(str(e.value))
    keep(x + x), keep(w * w)
    if eager:
        with pytest.raises(gd.NonFiniteError) as e:
            gd.log(x - 1.0)
        made.append(str(e.value))
        keep(gd.log(x))
    with pytest.raises(gd.GraphError) as e:      # a leaf still collides with an op's (pending) name
        g.param("multiply_3", 1.0)
    made.append(str(e.value))
    keep(g.param("multiply_9", 1.0)), keep(x * x)
    return [m if isinstance(m, str) else m.name for m in made]


@pytest.mark.parametrize("eager", [False, True], ids=["lazy", "eager"])
def test_names_given_late_are_the_names_given_at_build_time(eager):
    names = _naming_session(eager, look_now=False)
    assert names == _naming_session(eager, look_now=True)
    assert [n for n in names if "'" not in n] == (
        ["x", "w", "multiply", "multiply_1", "multiply_2", "multiply_3", "multiply_4", "add", "const_1_1",
         "const_2", "blk/multiply", "blk/tanh", "blk/tanh_1", "blk/const", "blk/tanh_2", "blk/tanh_3", "add_1",
         "multiply_6"] + (["log"] if eager else []) + ["multiply_9", "multiply_7"])
    assert "multiply 'multiply_5': shapes (2,) and (3,) do not broadcast" in names[16]
    assert "'const_3' f64[3]" in names[16]
    assert "name 'multiply_3' is already used by <Node 'multiply_3' multiply f64[]>" in names[-3]
    if eager:
        assert "log 'log' (inputs: 'subtract' f64[])" in names[-5]


ELEMENTWISE = sorted(name for name, spec in gd.REGISTRY.items() if spec.elementwise)


@pytest.mark.parametrize("opname", ELEMENTWISE)
@pytest.mark.parametrize("shape, dtype", [((), "float64"), ((2, 3), "float32")])
def test_elementwise_nodes_built_without_rules_are_what_the_rules_give(opname, shape, dtype):
    """Float inputs of one shape and dtype skip an elementwise op's rules (Graph.add_node): the node must
    be what they give; other inputs still go through them."""
    spec = gd.REGISTRY[opname]
    g = gd.Graph(dtype=dtype)
    xs = [g.param(f"x{i}", np.ones(shape)) for i in range(spec.arity)]
    node = spec(*xs)
    assert node.shape == spec.shape(*(x.shape for x in xs)) and node.dtype == dtype
    wide = g.param("wide", np.ones((4, 2, 3)), dtype="float64")
    mixed = spec(*([wide] + xs[1:]))              # broadcast (binary) and/or promoted: by the rules
    assert mixed.shape == (4, 2, 3) and mixed.dtype == "float64"
    ids = g.input("ids", shape, dtype="int64")
    with pytest.raises(gd.DTypeError, match=f"{opname} '{opname}_2': input 0 \\('ids'"):
        spec(*([ids] + xs[1:]))
