"""execution.py: topological order, the per-graph state and its caches, the garbage collector paused, and the
forward pass (Python floats for scalar graphs, the shape check of an order's first run, eager compute)."""
import gc

import numpy as np
import pytest

import graphdiff as gd
from graphdiff import codegen, execution


def _chain(g, n):
    x = g.param("x", 0.5)
    h = x
    for _ in range(n):
        h = gd.tanh(h * 0.9 + 0.1)
    return x, h


def test_topological_order_puts_each_node_after_its_inputs_and_only_what_outputs_need():
    g = gd.Graph(dtype="float64")
    a, b = g.param("a", 1.0), g.param("b", 2.0)
    c = a * b
    unused = gd.exp(b)
    d = c + a
    order = execution.topological_order(g, [d])
    assert unused not in order and set(order) == {a, b, c, d}
    pos = {n: k for k, n in enumerate(order)}
    assert all(pos[p] < pos[n] for n in order for p in n.inputs)
    both = execution.topological_order(g, [d, unused])
    assert unused in both and len(both) == len(set(both))


def test_topological_order_of_a_deep_chain_needs_no_recursion():
    g = gd.Graph(dtype="float64")
    x, h = _chain(g, 20_000)              # far past Python's recursion limit
    order = execution.topological_order(g, [h])
    assert order[0] is x and order[-1] is h and len(order) == len(g.nodes)
    assert execution.topological_order(g, [h]) is order      # kept: the same list


def test_the_state_lives_on_the_graph_and_follows_its_version_and_the_kernel_switch():
    g = gd.Graph(dtype="float64")
    x, h = _chain(g, 3)
    order = execution.topological_order(g, [h])
    st = execution.state(g)
    assert g.engine_state is st and isinstance(st.cache, execution.Caches)
    assert execution.order_of(st, order).nodes is order
    assert execution.topological_order(g, [h]) is order
    with gd.fused_kernels(False):         # the kernel switch: steps and rules bound under the other are stale
        assert execution.topological_order(g, [h]) is not order
        again = execution.topological_order(g, [h])
        assert execution.topological_order(g, [h]) is again
    assert execution.topological_order(g, [h]) is not again
    now = execution.topological_order(g, [h])
    gd.exp(h)                             # a new node: a new version
    assert execution.topological_order(g, [h]) is not now
    assert execution.state(g) is st       # one State per graph, its caches renewed


def test_each_batch_size_has_its_own_caches():
    g = gd.Graph(dtype="float32")
    x = g.input("x", (None, 3))
    y = gd.sum(x * 2.0)
    g.forward({x: np.ones((2, 3), np.float32)}, outputs=y)
    two = execution.state(g).cache
    g.forward({x: np.ones((5, 3), np.float32)}, outputs=y)
    assert execution.state(g).cache is not two
    g.forward({x: np.ones((2, 3), np.float32)}, outputs=y)
    assert execution.state(g).cache is two


def test_an_order_object_lists_its_leaves_ops_keepers_and_random_nodes():
    g = gd.Graph(dtype="float64", seed=0)
    x = g.input("x", (2, 3))
    w = g.param("w", np.ones((3, 3)))
    h = gd.layer_norm(x @ w, g.param("gamma", np.ones(3)), g.param("beta", np.zeros(3)))
    y = gd.sum(gd.dropout(h, 0.5))
    kept = execution.order_of(execution.state(g), execution.topological_order(g, [y]))
    assert set(kept.leaves) == {n for n in kept.nodes if n.spec is None}
    assert kept.ops == [n for n in kept.nodes if n.spec is not None]
    assert [n.op for n in kept.keepers] == ["layer_norm"]
    assert [n.op for n in kept.random] == ["dropout_mask"]


def test_gc_paused_pauses_the_collector_and_restores_it():
    seen = []

    @execution.gc_paused
    def work(fail=False):
        seen.append(gc.isenabled())
        if fail:
            raise ValueError("boom")
        return 7

    assert gc.isenabled()
    assert work() == 7 and seen == [False] and gc.isenabled()
    with pytest.raises(ValueError):
        work(fail=True)
    assert gc.isenabled()
    gc.disable()
    try:
        work()
        assert not gc.isenabled()         # a caller's own pause is left as it was
    finally:
        gc.enable()


def test_a_scalar_graph_runs_on_floats_and_compiles_its_forward():
    g = gd.Graph(dtype="float64")
    x, h = _chain(g, 5)
    want = 0.5
    for _ in range(5):
        want = np.tanh(want * 0.9 + 0.1)
    kept = None
    for run in range(1, codegen.COMPILE_AFTER + 2):
        assert g.forward(outputs=h) == pytest.approx(want, rel=1e-15)
        assert type(h.out) is float
        kept = execution.order_of(execution.state(g), execution.topological_order(g, [h]))
        assert callable(kept.compiled["forward"]) == (run >= codegen.COMPILE_AFTER)


def test_floats_step_aside_for_numpy_at_inf():
    g = gd.Graph(dtype="float64")
    x = g.param("x", 1000.0)
    y = gd.exp(x) * 2.0
    with np.errstate(over="ignore"):
        assert g.forward(outputs=y) == np.inf          # math.exp overflows; NumPy's inf is the answer
    assert type(y.out) is not float


def test_an_orders_first_run_checks_each_forward_against_its_shape_rule():
    @gd.op("wrong_shape_for_test")
    class Wrong:
        def shape(x):
            return x

        def forward(F, x):
            return F.sum(x, axis=0)

        def vjp(F, i, g, xs, out):
            return g

    g = gd.Graph(dtype="float64")
    x = g.param("x", np.ones((2, 3)))
    y = Wrong(x)
    with pytest.raises(gd.ShapeError, match=r"wrong_shape_for_test 'wrong_shape_for_test'.*returned shape \(3,\).*"
                                            r"shape rule says \(2, 3\)"):
        g.forward(outputs=y)


def test_a_missing_input_is_named():
    g = gd.Graph(dtype="float64")
    x = g.input("x", (2,))
    with pytest.raises(gd.GraphError, match=r"no value for input 'x'.*g.forward\(\{'x': array\}\)"):
        g.forward(outputs=gd.sum(x))


def test_check_finite_names_the_node_and_its_input_ranges():
    g = gd.Graph(dtype="float64", check_finite=True)
    x = g.input("x", (3,))
    y = gd.log(x)
    with np.errstate(all="ignore"), pytest.raises(gd.NonFiniteError, match=r"log 'log'.*'x' in \[-1, 2\]"):
        g.forward({x: np.array([-1.0, 1.0, 2.0])}, outputs=y)


def test_compute_runs_an_eager_scalar_node_on_floats_and_stamps_it():
    g = gd.Graph(dtype="float64", eager=True)
    a, b = g.param("a", 2.0), g.param("b", 3.0)
    c = a * b
    assert type(c.out) is float and c.out == 6.0
    assert c.stamp == max(a.stamp, b.stamp)
    v = g.param("v", np.ones(2))
    d = v * 2.0                           # arrays: the backend computes it
    assert isinstance(d.out, np.ndarray) and np.array_equal(d.out, [2.0, 2.0])


def _mixed(g):
    """Every node a 0-d float64 (so the lazy forward runs on floats too): nodes of one input, two inputs (a
    float and a NumPy scalar: the param before any float run), attrs (a sum over an axis of a 0-d value),
    three inputs (add_n) and a power of a number."""
    x, w = g.param("x", 0.7), g.param("w", -1.3)
    a = gd.tanh(x)
    b = a * w
    c = gd.sum(b, axis=None) + gd.relu(w)
    d = gd.maximum(c, a * 2.0)
    return x, w, gd.add_n([d, b ** 2.0, gd.exp(a)])


def test_eager_compute_gives_the_lazy_forwards_values():
    """compute's float paths (one input, two inputs, anything else through _floats) give the values of a
    lazy graph's forward, bit for bit, and the same gradients in both variants."""
    eager, lazy = gd.Graph(dtype="float64", eager=True), gd.Graph(dtype="float64")
    (xe, we, ye), (xl, wl, yl) = _mixed(eager), _mixed(lazy)
    lazy.forward(outputs=yl)
    assert [float(n.value) for n in eager.nodes] == [float(n.value) for n in lazy.nodes]
    assert all(type(n.out) is float for n in eager.nodes if n.spec is not None)
    for variant in gd.VARIANTS:
        eager.backward(ye, variant=variant)
        lazy.backward(yl, variant=variant)
        assert (float(xe.grad), float(we.grad)) == (float(xl.grad), float(wl.grad))


def test_nodes_without_attrs_share_one_dict_that_stays_empty():
    """NO_ATTRS is shared by every node without attrs (not inputs): nothing may write into it, not even an
    embedding, which keeps its id checks in its ids input's own dict."""
    g = gd.Graph(dtype="float64")
    table = g.param("table", np.ones((4, 2)))
    ids = g.input("ids", (3,), dtype="int64")
    y = gd.sum(gd.embedding(table, ids) * 2.0)
    assert gd.tanh(g.param("p", 1.0)).attrs is gd.graph.NO_ATTRS
    assert ids.attrs is not gd.graph.NO_ATTRS and "host_checks" in ids.attrs
    g.forward({ids: np.array([0, 1, 3])}, outputs=y)
    with pytest.raises(gd.GraphError, match="out-of-range"):
        g.forward({ids: np.array([0, 1, 4])}, outputs=y)
    assert gd.graph.NO_ATTRS == {}
