"""batched.py: big, wide float graphs run a level at a time, one NumPy call per (level, op) group, with the ops'
own rules. Values and gradients (both variants, retain_grads, a subset of wrt) must equal the interpreted float
run's to 1e-12 and finite differences; inf and NaN as on NumPy; what it refuses goes to codegen. Each test
checks that the batched run is the one that ran."""
import math

import numpy as np
import pytest

import graphdiff as gd
from graphdiff import autodiff, batched, codegen, execution, plans
from graphdiff.backend import SCALAR
from graphdiff.errors import GraphError, ShapeError
from graphdiff.ops.registry import REGISTRY, VOCABULARY

UNARY = ("tanh", "sigmoid", "exp_tanh", "neg", "relu", "softsqrt", "gelu", "gelu_tanh", "erf", "softlog", "abs",
         "sum", "mean", "max")
BINARY = ("add", "sub", "mul", "square", "div", "max", "min", "pow")


def random_dag(seed, leaves=12, layers=8, width=40, smooth=False):
    """A wide random DAG of 0-d float64 nodes: each node reads earlier nodes of any layer (shared
    subexpressions), some as x * x, some through add_n of 2 to 9 inputs (one input may repeat). smooth:
    no kinks (relu, maximum, minimum), for finite differences."""
    rng = np.random.default_rng(seed)
    g = gd.Graph(dtype="float64")
    xs = [g.input(f"x{k}", (), requires_grad=True) for k in range(leaves)]
    values = {x: float(v) for x, v in zip(xs, rng.uniform(-1.5, 1.5, leaves))}
    pool = list(xs)
    unary = [u for u in UNARY if not (smooth and u in ("relu", "abs", "max"))]
    binary = [b for b in BINARY if not (smooth and b in ("max", "min"))]
    for _ in range(layers):
        layer = []
        for _ in range(width):
            pick = lambda: pool[int(len(pool) * (1 - rng.random() ** 2))]    # noqa: E731  (recent ones more)
            kind = rng.choice(["unary", "binary", "addn"], p=[0.3, 0.5, 0.2])
            if kind == "addn":
                ins = [pick() for _ in range(int(rng.integers(2, 10)))]
                if rng.random() < 0.3:
                    ins.append(ins[0])
                node = gd.add_n(ins)
            elif kind == "unary":
                a, op = pick(), unary[int(rng.integers(len(unary)))]
                node = {"tanh": gd.tanh, "sigmoid": gd.sigmoid, "exp_tanh": lambda v: gd.exp(gd.tanh(v)),
                        "neg": lambda v: -v, "relu": gd.relu, "softsqrt": lambda v: gd.sqrt(v * v + 1.0),
                        "gelu": gd.gelu, "gelu_tanh": lambda v: gd.gelu(v, approximate="tanh"), "erf": gd.erf,
                        "softlog": lambda v: gd.log(v * v + 1.0), "abs": gd.abs, "sum": gd.sum, "mean": gd.mean,
                        "max": gd.max}[op](a)
            else:
                a, b, op = pick(), pick(), binary[int(rng.integers(len(binary)))]
                node = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "square": lambda: a * a,
                        "div": lambda: a / (b * b + 1.0), "max": lambda: gd.maximum(a, b),
                        "min": lambda: gd.minimum(a, b), "pow": lambda: (a * a + 0.5) ** gd.tanh(b)}[op]()
            layer.append(gd.tanh(node) if rng.random() < 0.3 else node)
        pool += layer
    top = [gd.add_n([gd.tanh(n) for n in pool[-width + k:][:50]]) for k in range(0, width, 50)]
    y = gd.add_n(top) / width + gd.add_n(pool[-min(width // 2, 50):]) * 0.01
    return g, xs, values, y


@pytest.fixture
def anywhere(monkeypatch):
    """Batched for any graph (the tests' graphs are smaller than BATCH_MIN_NODES and not all wide)."""
    monkeypatch.setattr(batched, "BATCH_MIN_NODES", 0)
    monkeypatch.setattr(batched, "BATCH_MIN_WIDTH", 1)


def compiled(g, y, variant, retain_grads=False):
    """(forward, backward) the engine keeps compiled for y's order and plan."""
    order = execution.topological_order(g, [y])
    forward = execution.order_of(execution.state(g), order).compiled.get("forward")
    backward = plans.plan_for(g, y, None, variant).compiled.get((variant, retain_grads))
    return forward, backward


def interpreted(g, xs, values, y, variant, retain_grads=False):
    """Values and adjoints of the interpreted float run (the steps one by one; the variant loop on floats)."""
    order = execution.topological_order(g, [y])
    g.feed(values)
    kept = execution.order_of(execution.state(g), order)
    execution._run(execution._bound(g, execution.state(g), order, SCALAR, False), g.tick(), True)
    plan = plans.plan_for(g, y, None, variant)
    keep = set(plan.wrt) | (set(plan.active) if retain_grads else set())
    run = autodiff.NumericRun(SCALAR, keep, {}, plans.bound_rules(plan, SCALAR))
    adj = autodiff.LOOPS[variant](plan, 1.0, run)
    assert kept.ops
    return {n: float(n.out) for n in kept.ops}, {n: adj[n] for n in keep if n in adj}


def close(got, want, rel=1e-12):
    """Equal to rel relative, or to rel times the largest of the want's magnitudes (sums that cancel)."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    scale = np.max(np.abs(want)) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rel, atol=rel * scale)


@pytest.mark.parametrize("variant", gd.VARIANTS)
@pytest.mark.parametrize("seed", range(4))
def test_values_and_gradients_equal_the_interpreted_run(anywhere, variant, seed):
    g, xs, values, y = random_dag(seed)
    want_vals, want_adj = interpreted(g, xs, values, y, variant, retain_grads=True)
    h, hxs, hvalues, hy = random_dag(seed)                  # the same graph, run by the engine
    for _ in range(2):
        h.forward(hvalues, outputs=hy)
        h.backward(hy, variant=variant, retain_grads=True)
    forward, backward = compiled(h, hy, variant, retain_grads=True)
    assert isinstance(forward, batched.Forward) and isinstance(backward, batched.Backward)
    ops = [n for n in execution.topological_order(h, [hy]) if n.spec is not None]
    twin = dict(zip(execution.topological_order(g, [y]), execution.topological_order(h, [hy])))
    close([n.value for n in ops], [want_vals[m] for m in twin if m.spec is not None])
    assert all(type(n.value) is np.float64 for n in ops)
    assert len(want_adj) > len(xs)                          # retain_grads: every active node's adjoint
    close([twin[m].grad for m in want_adj], list(want_adj.values()))
    grads = [x.grad for x in hxs]
    assert np.all(np.isfinite(grads)) and np.any(np.abs(grads) > 1e-3)


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_gradients_equal_finite_differences(anywhere, variant):
    g, xs, values, y = random_dag(7, smooth=True)
    g.forward(values, outputs=y)
    g.backward(y, variant=variant)
    assert isinstance(compiled(g, y, variant)[1], batched.Backward)
    grads = [float(x.grad) for x in xs]
    eps = 1e-6
    for x, got in zip(xs, grads):
        at = dict(values)
        at[x] = values[x] + eps
        up = float(g.forward(at, outputs=y))
        at[x] = values[x] - eps
        down = float(g.forward(at, outputs=y))
        assert got == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_wrt_a_subset_and_a_leaf_y_does_not_reach(anywhere, variant):
    g, xs, values, y = random_dag(3)
    stray = g.input("stray", (), requires_grad=True)
    values[stray] = 0.5
    want_vals, want_adj = interpreted(g, xs, values, y, variant)
    wrt = xs[::3] + [stray]
    g.forward(values, outputs=y)                       # batched: so is every plan's backward of y's order
    got = g.backward(y, variant=variant, wrt=wrt)
    backward = plans.plan_for(g, y, wrt, variant).compiled[(variant, False)]
    assert isinstance(backward, batched.Backward)
    assert set(got) == set(wrt) and float(got[stray]) == 0.0
    close([got[x] for x in xs[::3]], [want_adj[x] for x in xs[::3]])
    assert all(x.grad is None for x in xs if x not in wrt)


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_inf_and_nan_as_on_numpy(anywhere, variant, monkeypatch):
    """log of a negative number, exp that overflows, a division by zero: NumPy's values and gradients, as the
    engine's NumPy run gives them (codegen's floats raise there and the engine reruns on NumPy)."""
    def build():
        g = gd.Graph(dtype="float64")
        xs = [g.input(f"x{k}", (), requires_grad=True) for k in range(40)]
        parts = [gd.log(x) + gd.exp(x * 800.0) + 1.0 / (x - 0.5) + gd.tanh(x) * x for x in xs]
        return g, xs, gd.add_n(parts[20:]) + gd.add_n([p * 0.0 for p in parts[:20]])
    feeds = np.linspace(-1.0, 1.0, 40)
    feeds[20] = 0.5
    results = []
    for on in (True, False):
        monkeypatch.setattr(batched, "BATCH_MIN_NODES", 0 if on else 10 ** 9)
        g, xs, y = build()
        with np.errstate(all="ignore"):
            for _ in range(codegen.COMPILE_AFTER + 1):
                g.forward(dict(zip(xs, feeds.tolist())), outputs=y)
                g.backward(y, variant=variant)
        forward, backward = compiled(g, y, variant)
        assert isinstance(forward, batched.Forward) == on and isinstance(backward, batched.Backward) == on
        results.append(([float(n.value) for n in execution.topological_order(g, [y])],
                        [float(x.grad) for x in xs]))
    (vals, grads), (want_vals, want_grads) = results
    assert np.isnan(vals).any() and np.isinf(vals).any() and not np.isfinite(grads).all()
    np.testing.assert_allclose(vals, want_vals, rtol=1e-12)
    np.testing.assert_allclose(grads, want_grads, rtol=1e-12)


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_the_backward_reads_the_forwards_values_only_while_no_leaf_changed(anywhere, variant):
    """The batched backward of y reads its forward's value vector while the graph's clock stands still; after
    a feed (here followed by a forward of every node, through another order) it reads the nodes' values."""
    g, xs, values, y = random_dag(2)
    g.forward(values, outputs=y)
    g.backward(y, variant=variant)
    forward, backward = compiled(g, y, variant)
    assert backward.forward is forward and forward.current() is not None
    moved = {x: v * 0.5 - 0.2 for x, v in values.items()}
    g.forward(moved)                                    # outputs=None: graph.nodes, another order
    assert forward.current() is None
    g.backward(y, variant=variant)
    got = [float(x.grad) for x in xs]
    h, hxs, _, hy = random_dag(2)
    _, want = interpreted(h, hxs, {hx: moved[x] for hx, x in zip(hxs, xs)}, hy, variant)
    close(got, [want[hx] for hx in hxs])


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_a_backward_with_no_edges(anywhere, variant):
    """y a leaf (its gradient is the seed), and y a node that depends on no leaf of wrt: no group, no edge."""
    g = gd.Graph(dtype="float64")
    x, c = g.input("x", (), requires_grad=True), g.input("c", ())
    y = gd.tanh(c) * 2.0
    for _ in range(codegen.COMPILE_AFTER):      # no batched forward of [x]: tried when codegen would be
        g.forward({x: 0.5, c: 0.25}, outputs=[x, y])
        assert float(g.backward(x, variant=variant, wrt=[x])[x]) == 1.0
        assert float(g.backward(y, variant=variant, wrt=[x])[x]) == 0.0
    assert isinstance(plans.plan_for(g, x, [x], variant).compiled[(variant, False)], batched.Backward)


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_a_rule_may_give_one_number_for_a_whole_group(anywhere, variant):
    """A VJP that ignores g (here: 0 for an input the op ignores) gives a 0-d value for all of a group's
    nodes; the batched run broadcasts it beside the other slot's array. (conftest removes the op again.)"""
    @gd.op("throwaway_first", arity=2)
    class First:
        """a (b ignored)"""
        shape = gd.ops.registry.broadcast_shapes

        def forward(F, a, b):
            return a + 0.0 * b

        def vjp(F, i, g, xs, out):
            return g if i == 0 else F.where(True, 0.0, 0.0)

    g = gd.Graph(dtype="float64")
    xs = [g.input(f"x{k}", (), requires_grad=True) for k in range(40)]
    y = gd.add_n([First.builder(a * a, gd.tanh(b)) * (k + 1.0) for k, (a, b) in enumerate(zip(xs, xs[1:] + xs[:1]))])
    for _ in range(2):
        g.forward({x: 0.1 * k - 2.0 for k, x in enumerate(xs)}, outputs=y)
        g.backward(y, variant=variant)
    assert isinstance(compiled(g, y, variant)[1], batched.Backward)
    assert [float(x.grad) for x in xs] == pytest.approx([2 * (0.1 * k - 2.0) * (k + 1) for k in range(40)], rel=1e-14)


def test_an_eager_graph_runs_its_backward_batched_from_codegens_run_on():
    """No forward to lend a layout (eager nodes are computed as they are added): the backward is tried
    batched when codegen would compile, on its COMPILE_AFTER-th run, and not before."""
    g = gd.Graph(dtype="float64", eager=True)
    xs = [g.param(f"x{k}", 0.01 * k) for k in range(200)]
    hs = xs
    for _ in range(8):
        hs = [gd.tanh(a * b + a) for a, b in zip(hs, hs[1:] + hs[:1])]
    y = gd.add_n(hs)
    assert len(execution.topological_order(g, [y])) >= batched.BATCH_MIN_NODES
    for run in range(1, codegen.COMPILE_AFTER + 1):
        grads = g.backward(y)
        assert isinstance(compiled(g, y, "children")[1], batched.Backward) == (run == codegen.COMPILE_AFTER)
        if run == 1:
            want = [float(grads[x]) for x in xs]
    close([float(grads[x]) for x in xs], want)


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_a_wide_add_n_compiles_and_sums_as_the_interpreted_run(variant):
    """codegen traces add_n's rule into ((a + b) + c) ..., deeper than Python's parser takes (some 200
    parentheses) for 1,000 inputs: cut into statements, it compiles, and sums in the same order, so its
    values and gradients are the interpreted run's bit for bit."""
    g = gd.Graph(dtype="float64")
    xs = [g.input(f"x{k}", (), requires_grad=True) for k in range(1000)]
    y = gd.add_n([x * x for x in xs] + [x * 0.1 for x in xs[::-1]])       # x_k's adjoint: a sum of two
    values = {x: 0.37 * k - 40.1 + 1e-3 * math.sin(k) for k, x in enumerate(xs)}
    want, want_adj = interpreted(g, xs, values, y, variant)
    for _ in range(codegen.COMPILE_AFTER):
        out = float(g.forward(values, outputs=y))
        g.backward(y, variant=variant)
    forward, backward = compiled(g, y, variant)
    assert callable(forward) and not isinstance(forward, batched.Forward)             # codegen's
    assert callable(backward) and not isinstance(backward, batched.Backward)
    assert out == want[y]
    assert [float(x.grad) for x in xs] == [want_adj[x] for x in xs]


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_a_node_with_thousands_of_consumers_compiles(variant, monkeypatch):
    """Version A sums x's 3,000 contributions in one total, which Python's compiler would refuse as one flat
    sum (too deep): cut into statements, the same sum in the same order as the interpreted run (codegen's,
    not batched: the graph is big enough for batched)."""
    monkeypatch.setattr(batched, "BATCH_MIN_NODES", 10 ** 9)
    g = gd.Graph(dtype="float64")
    x = g.input("x", (), requires_grad=True)
    y = gd.add_n([gd.tanh(x * (0.001 * k)) for k in range(3000)])
    want, want_adj = interpreted(g, [x], {x: 0.7}, y, variant)
    for _ in range(codegen.COMPILE_AFTER):
        out = float(g.forward({x: 0.7}, outputs=y))
        g.backward(y, variant=variant)
    forward, backward = compiled(g, y, variant)
    assert callable(forward) and callable(backward) and not isinstance(backward, batched.Backward)
    assert out == want[y] and float(x.grad) == want_adj[x]


def test_staleness_is_refused_after_a_batched_forward(anywhere):
    g, xs, values, y = random_dag(1)
    other = gd.tanh(xs[0] * xs[1])
    g.forward(values, outputs=y)
    g.backward(y)
    assert isinstance(compiled(g, y, "children")[0], batched.Forward)
    g.forward({xs[0]: 0.25}, outputs=other)             # a new feed, and only `other` recomputed
    with pytest.raises(GraphError, match="stale"):
        g.backward(y)


def test_the_default_choice_batched_for_big_wide_graphs_codegen_for_chains():
    g, xs, values, y = random_dag(5, leaves=40, layers=3, width=2000)
    assert len(g.nodes) >= batched.BATCH_MIN_NODES
    g.forward(values, outputs=y)
    g.backward(y)
    assert isinstance(compiled(g, y, "children")[0], batched.Forward)
    assert isinstance(compiled(g, y, "children")[1], batched.Backward)
    h = gd.Graph(dtype="float64")
    x = h.input("x", (), requires_grad=True)
    z = x
    while len(h.nodes) < 1.4 * batched.BATCH_MIN_NODES:
        z = gd.tanh(z) * 0.9 + x
    assert batched.compile_forward(execution.topological_order(h, [z])) is False       # big but thin
    assert batched.layout(execution.topological_order(h, [z])) is None     # seen at its 1024th node
    for _ in range(codegen.COMPILE_AFTER):
        h.forward({x: 0.3}, outputs=z)
        h.backward(z)
    forward, backward = compiled(h, z, "children")
    assert callable(forward) and not isinstance(forward, batched.Forward)   # codegen's
    assert callable(backward) and not isinstance(backward, batched.Backward)


def test_ops_it_does_not_know_to_be_elementwise_are_refused(anywhere, monkeypatch):
    """An op outside the elementwise ones and REDUCTIONS (none such builds a 0-d float node today: reshape,
    transpose and broadcast_to of a 0-d node give the node itself) is refused: here add_n, by taking it out."""
    monkeypatch.setattr(batched, "REDUCTIONS", ("sum", "mean", "max"))
    g = gd.Graph(dtype="float64")
    x = g.input("x", (), requires_grad=True)
    y = gd.add_n([gd.tanh(x) * x, x, x])
    order = execution.topological_order(g, [y])
    assert batched.layout(order) is None and batched.compile_forward(order) is False
    for _ in range(codegen.COMPILE_AFTER):
        g.forward({x: 0.3}, outputs=y)
        g.backward(y)
    assert callable(compiled(g, y, "children")[0]) and not isinstance(compiled(g, y, "children")[0], batched.Forward)
    assert float(x.grad) == pytest.approx(math.tanh(0.3) + 0.3 * (1 - math.tanh(0.3) ** 2) + 2.0, rel=1e-14)


def test_the_batched_namespace_serves_the_rules_vocabulary():
    missing = [name for name in VOCABULARY if not hasattr(batched.VECTOR, name)]
    assert not missing
    v = np.array([1.0, -2.0])
    assert batched.VECTOR.sum(v) is v and batched.VECTOR.unbroadcast(v, v) is v and batched.VECTOR.shape(v) == ()


def test_add_n_sums_in_its_rules_order():
    """add_n's rule adds left to right; the batched call does the same on each entry, so equal to the bit."""
    rng = np.random.default_rng(0)
    cols = rng.standard_normal((9, 50)) * 10.0 ** rng.integers(-8, 8, (9, 50))
    spec = REGISTRY["add_n"]
    got = spec.forward(batched.VECTOR, *cols)
    want = [spec.forward(SCALAR, *col) for col in cols.T.tolist()]
    assert got.tolist() == want


def test_python_floats_fed_to_scalar_inputs_are_kept_as_floats():
    g = gd.Graph(dtype="float64")
    x = g.input("x", ())
    v = g.input("v", (2,))
    g.feed({x: 1.5, v: [1.0, 2.0]})
    assert type(x.out) is float and type(x.value) is np.float64 and x.value == 1.5
    assert isinstance(v.out, np.ndarray)
    y = gd.sum(v * x)                               # a graph that is not all floats: NumPy reads x
    assert float(g.forward(outputs=y)) == 4.5
    with pytest.raises(ShapeError):
        g.feed({x: [1.0, 2.0]})
