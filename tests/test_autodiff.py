"""autodiff.py: topological order, forward, both backward variants on random DAGs, trace events, depth."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphdiff as gd

from .oracles import needs_torch, torch

LEAF_SHAPES = [(3, 4), (4,), (1, 4), (3, 1), ()]
UNARY = {"tanh": (gd.tanh, lambda x: torch.tanh(x)), "sigmoid": (gd.sigmoid, lambda x: torch.sigmoid(x)),
         "neg": (lambda x: -x, lambda x: -x), "square": (lambda x: x * x, lambda x: x * x),
         "mean_last": (lambda x: gd.mean(x, axis=-1, keepdims=True) if x.shape else x,
                       lambda x: x.mean(dim=-1, keepdim=True) if x.ndim else x)}
BINARY = {"add": (lambda a, b: a + b, lambda a, b: a + b), "sub": (lambda a, b: a - b, lambda a, b: a - b),
          "mul": (lambda a, b: a * b, lambda a, b: a * b),
          "div": (lambda a, b: a / (1.0 + b * b), lambda a, b: a / (1.0 + b * b))}


@st.composite
def dags(draw):
    """A random program: leaves of broadcastable shapes, then ops reading any earlier node (the same node
    twice allowed, so x*x and shared subexpressions appear), then y = sum of every node's sum."""
    leaves = draw(st.lists(st.sampled_from(LEAF_SHAPES), min_size=1, max_size=4))
    prog, n = [], len(leaves)
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.booleans()):
            prog.append((draw(st.sampled_from(sorted(UNARY))), (draw(st.integers(0, n - 1)),)))
        else:
            a, b = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
            prog.append((draw(st.sampled_from(sorted(BINARY))), (a, b)))
        n += 1
    return leaves, prog, draw(st.integers(0, 2**31))


def build_gd(leaves, prog, seed, backend="numpy"):
    rng = np.random.default_rng(seed)
    g = gd.Graph(backend=backend, dtype="float64")
    pool = [g.param(f"p{k}", rng.standard_normal(s)) for k, s in enumerate(leaves)]
    for name, args in prog:
        fn = (UNARY[name] if len(args) == 1 else BINARY[name])[0]
        pool.append(fn(*[pool[a] for a in args]))
    y = gd.add_n([gd.sum(p) * (0.5 + 0.1 * k) for k, p in enumerate(pool)])
    g.forward(outputs=y)
    return g, pool[:len(leaves)], y


def build_torch(leaves, prog, seed):
    rng = np.random.default_rng(seed)
    params = [torch.tensor(rng.standard_normal(s), requires_grad=True) for s in leaves]
    pool = list(params)
    for name, args in prog:
        fn = (UNARY[name] if len(args) == 1 else BINARY[name])[1]
        pool.append(fn(*[pool[a] for a in args]))
    y = sum(p.sum() * (0.5 + 0.1 * k) for k, p in enumerate(pool))
    y.backward()
    return y, [p.grad.numpy() for p in params]


def grads(g, y, variant):
    return [gd.to_numpy(v).copy() for v in g.backward(y, variant=variant).values()]


@settings(max_examples=60)
@given(dag=dags())
def test_random_dags_variants_agree(dag, backend):
    g, params, y = build_gd(*dag, backend=backend)
    a, b = grads(g, y, "children"), grads(g, y, "parents")
    for ga, gb in zip(a, b):
        np.testing.assert_allclose(ga, gb, rtol=1e-12, atol=1e-14)


@needs_torch
@settings(max_examples=60)
@given(dag=dags())
def test_random_dags_match_pytorch(dag, backend):
    g, params, y = build_gd(*dag, backend=backend)
    ty, tgrads = build_torch(*dag)
    np.testing.assert_allclose(gd.to_numpy(y.value), ty.item(), rtol=1e-12)
    for variant in gd.VARIANTS:
        for ga, gt in zip(grads(g, y, variant), tgrads):
            np.testing.assert_allclose(ga, gt, rtol=1e-10, atol=1e-12)


@settings(max_examples=15)
@given(dag=dags())
def test_random_dags_match_finite_differences(dag):
    g, params, y = build_gd(*dag)
    for variant in gd.VARIANTS:
        gd.gradcheck(y, wrt=params, variant=variant, rtol=1e-6, atol=1e-7)


ACTIONS = st.sampled_from(["feed+forward y", "feed+forward z", "forward y", "forward z", "assign"])


@settings(max_examples=40)
@given(dag=dags(), actions=st.lists(st.tuples(ACTIONS, st.integers(0, 3)), max_size=6), data=st.data())
def test_random_dags_never_mix_states(dag, actions, data, backend):
    """Partial forwards, new feeds, param assignment and in-place changes to the caller's arrays, in any
    order: backward either raises a GraphError (exactly when a feed or assignment came after the last
    forward of y) or gives the gradients of a fresh graph built from the current values."""
    leaves, prog, seed = dag
    g, params, y = build_gd(leaves, prog, seed, backend=backend)
    rng = np.random.default_rng(seed + 1)
    x = g.input("x", leaves[0], requires_grad=True)      # an input feeding every node that reads p0
    y = y + gd.sum(gd.tanh(x) * params[0])
    z = gd.sum(gd.sigmoid(x)) + gd.sum(params[-1] * 2.0)
    current = {p.name: rng.standard_normal(p.shape) for p in params}
    for p in params:
        p.value = current[p.name]
    X = rng.standard_normal(x.shape)
    current["x"] = X.copy()
    g.forward({x: X}, outputs=y)
    stale = False
    for action, k in actions:
        if action.startswith("feed"):
            X = rng.standard_normal(x.shape)
            current["x"] = X.copy()
            g.forward({x: X}, outputs=y if action.endswith("y") else z)
            stale = action.endswith("z")
        elif action.startswith("forward"):
            g.forward(outputs=y if action.endswith("y") else z)
            stale = stale and action.endswith("z")
        else:
            p = params[k % len(params)]
            new = rng.standard_normal(p.shape)
            current[p.name] = new.copy()
            p.value = new
            new += 100.0                                  # the caller reuses its buffer: no effect
            stale = True
        X += 100.0                                        # likewise the fed batch's buffer
    if stale:
        with pytest.raises(gd.GraphError, match=r"is stale|run g.forward"):
            g.backward(y, variant=data.draw(st.sampled_from(gd.VARIANTS)))
        return
    # the oracle: a fresh graph with the same structure and the current values, forward then backward
    f, fparams, fy = build_gd(leaves, prog, seed, backend=backend)
    fx = f.input("x", leaves[0], requires_grad=True)
    fy = fy + gd.sum(gd.tanh(fx) * fparams[0])
    for p in fparams:
        p.value = current[p.name]
    f.forward({fx: current["x"]}, outputs=fy)
    want = [gd.to_numpy(v).copy() for v in f.backward(fy).values()]
    for variant in gd.VARIANTS:
        got = [gd.to_numpy(v).copy() for v in g.backward(y, variant=variant).values()]
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def hand_graph():
    g = gd.Graph(dtype="float64")
    a = g.param("a", 1.5)
    b = a + a
    c = b * b
    g.forward(outputs=c)
    return g, a, b, c


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_trace_of_b_eq_a_plus_a_c_eq_b_times_b(variant):
    g, a, b, c = hand_graph()
    events = []
    g.backward(c, variant=variant, trace=events)
    assert float(gd.to_numpy(a.grad)) == pytest.approx(8 * 1.5)    # c = 4a^2
    contribs = [e for e in events if e.kind == "contribution"]
    assert [(e.child.name, e.slot, e.parent.name) for e in contribs] == [
        ("multiply", 0, "add"), ("multiply", 1, "add"), ("add", 0, "a"), ("add", 1, "a")]
    assert [e.first for e in contribs] == [True, False, True, False]
    assert [e.node.name for e in events if e.kind == "final"] == ["multiply", "add", "a"]
    assert [e.node.name for e in events if e.kind == "freed"] == ["multiply", "add"]   # a keeps its grad


def test_variants_differ_in_adjoint_lifetimes():
    """One node `a` reused by n later nodes: children (pull) keeps every consumer's adjoint until `a` pulls
    from them all; parents (push) folds each into d[a] at once and frees it."""
    n = 5
    g = gd.Graph(dtype="float64")
    x = g.param("x", 0.3)
    a = gd.tanh(x)
    h = a
    for _ in range(n):
        h = gd.tanh(h) * a
    g.forward(outputs=h)

    def run(variant):
        live, top, events = set(), 0, []
        g.backward(h, variant=variant, trace=events)
        for e in events:
            if e.kind == "contribution" and e.first:
                live.add(e.parent)
            elif e.kind == "final":
                live.add(e.node)
            elif e.kind == "freed":
                live.discard(e.node)
            top = max(top, len(live))
        assert not live - {x}                 # everything but the param's gradient was freed
        return top, sum(e.kind == "contribution" for e in events)

    (peak_a, calls_a), (peak_b, calls_b) = run("children"), run("parents")
    assert calls_a == calls_b == 3 * n + 1   # per step: mul -> tanh, mul -> a, tanh -> h; then a -> x
    assert peak_a >= n + 1 > 3 >= peak_b


def test_forward_computes_only_what_outputs_need():
    g = gd.Graph()
    x = g.input("x", (2,))
    a = gd.exp(x)
    b = gd.log(x)                        # not needed for a
    g.forward({x: np.ones(2)}, outputs=a)
    assert a.value is not None and b.value is None
    assert gd.topological_order(g, [a]) == [x, a]


def test_topological_order_is_cached_and_invalidated():
    g = gd.Graph()
    x = g.param("x", 1.0)
    y = gd.tanh(x)
    first = gd.topological_order(g, [y])
    assert gd.topological_order(g, [y]) is first
    gd.exp(y)                             # adding a node clears the cache
    assert gd.topological_order(g, [y]) is not first
    assert gd.topological_order(g, [y]) == first


def test_grad_is_overwritten_not_accumulated():
    g = gd.Graph(dtype="float64")
    w = g.param("w", 2.0)
    y = w * w
    g.forward(outputs=y)
    g.backward(y)
    g.backward(y)
    assert float(gd.to_numpy(w.grad)) == 4.0


def test_params_y_does_not_depend_on_get_zero_grads_and_retain_grads():
    g = gd.Graph(dtype="float64")
    w, unused = g.param("w", 3.0), g.param("unused", np.ones(2))
    h = gd.tanh(w)
    y = h * 2.0
    g.forward(outputs=y)
    g.backward(y, retain_grads=True)
    np.testing.assert_array_equal(gd.to_numpy(unused.grad), np.zeros(2))
    assert float(gd.to_numpy(h.grad)) == 2.0
    g.backward(y)                                # without retain_grads intermediate grads are cleared
    assert h.grad is None


def test_seed_for_non_scalar_output_and_grad_of_input():
    g = gd.Graph(dtype="float64")
    x = g.input("x", (3,), requires_grad=True)
    y = x * x
    g.forward({x: np.array([1.0, 2.0, 3.0])})
    got = g.backward(y, seed=np.array([1.0, 0.0, 2.0]))
    np.testing.assert_allclose(gd.to_numpy(got[x]), [2.0, 0.0, 12.0])


def test_param_assignment_is_used_by_next_forward():
    g = gd.Graph(dtype="float64")
    w = g.param("w", np.ones(2))
    y = gd.sum(w * 3.0)
    assert float(gd.to_numpy(g.forward(outputs=y))) == 6.0
    w.value = np.array([1.0, 2.0])
    assert float(gd.to_numpy(g.forward(outputs=y))) == 9.0


def test_eager_mode_computes_as_it_builds():
    g = gd.Graph(eager=True, dtype="float64")
    a = g.param("a", 2.0)
    b = a * 3.0 + 1.0
    assert float(gd.to_numpy(b.value)) == 7.0
    g.backward(b)
    assert float(gd.to_numpy(a.grad)) == 3.0


@pytest.mark.slow
def test_chain_of_a_million_nodes_runs_both_variants():
    """No recursion anywhere: a 1,000,000-node chain runs forward and both backward variants."""
    n = 1_000_000
    g = gd.Graph(dtype="float64")
    x = g.param("x", 0.5)
    h = x
    for _ in range(n - 1):
        h = gd.tanh(h)
    assert len(g.nodes) == n
    g.forward(outputs=h)
    v, d = 0.5, 1.0                         # the chain rule by hand: prod of (1 - tanh^2)
    for _ in range(n - 1):
        v = np.tanh(v)
        d *= 1.0 - v * v
    assert float(gd.to_numpy(h.value)) == pytest.approx(v, rel=1e-9)
    for variant in gd.VARIANTS:
        g.backward(h, variant=variant)
        assert float(gd.to_numpy(x.grad)) == pytest.approx(d, rel=1e-9)


# --- plans: built in few passes, equal to the definitions -------------------------------------------------------
def reference_plan(g, y, wrt):
    """pushes, active and pulls by their definitions (the plain definition of a plan: a node is active when it
    needs a gradient and leads to y; a node's last pull is where its count of unpulled edges reaches 0)."""
    from graphdiff.execution import topological_order
    order = topological_order(g, [y])
    needs = {n for n in g.nodes if n.spec is None and n.requires_grad} if wrt is None else set(wrt)
    for n in order:
        if n.spec is not None and n.spec.differentiable and n.dtype in ("float32", "float64"):
            if any(p in needs for p in n.inputs):
                needs.add(n)
    live = {y} if y in needs else set()
    for u in reversed(order):
        if u in live and u.spec is not None and u.spec.differentiable:
            live.update(p for p in u.inputs if p in needs)
    active = [n for n in order if n in live]
    pushes = [(u, [(i, p) for i, p in enumerate(u.inputs) if p in live]
               if u.spec is not None and u.spec.differentiable else []) for u in reversed(active)]
    children = {}
    for u, slots in reversed(pushes):
        for i, p in slots:
            children.setdefault(p, []).append((u, i))
    remaining = {u: len(slots) for u, slots in pushes}
    pulls = []
    for v, slots in pushes:
        edges = []
        for u, i in children.pop(v, ()):
            remaining[u] -= 1
            edges.append((u, i, remaining[u] == 0))
        pulls.append((v, edges, not slots))
    return active, pushes, pulls


@settings(max_examples=60)
@given(dag=dags(), data=st.data())
def test_plans_equal_their_definitions(dag, data):
    from graphdiff.plans import plan_for
    g, params, y = build_gd(*dag)
    extra = gd.tanh(params[0]) * params[-1] + gd.sum(params[0] * params[0])    # not used by y: no pushes
    mask = g.input("m", (), dtype="bool")
    y = y + gd.where(mask, gd.sum(extra), 0.0) * gd.astype(gd.sum(params[0]) > 0.0, "float64")
    wrt = data.draw(st.one_of(st.none(), st.lists(st.sampled_from(g.nodes[:len(g.nodes) - 3]), min_size=1,
                                                  max_size=4).filter(lambda ws: all(w.dtype == "float64"
                                                                                    for w in ws))))
    active, pushes, pulls = reference_plan(g, y, list(dict.fromkeys(wrt)) if wrt else None)
    # a fresh plan, then the kept one, each built for one variant (the other's edges and active come later)
    for variant in (data.draw(st.sampled_from([None, *gd.VARIANTS])), data.draw(st.sampled_from(gd.VARIANTS))):
        plan = plan_for(g, y, wrt, variant)
        assert plan.has_adjoints == bool(active)
        assert plan.active == active and plan.pushes == pushes and plan.pulls == pulls


@pytest.mark.parametrize("case", ["assigned", "fed", "recomputed", "no value"])
def test_the_first_staleness_check_of_a_plan_and_later_ones_agree(case):
    """A plan's first check is a loop, later ones use its edges as arrays: the same errors, the same node."""
    g = gd.Graph(dtype="float64")
    x, w = g.input("x", (2,)), g.param("w", np.ones(2))
    h = gd.tanh(x * w)
    y, z = gd.sum(h * h), gd.sum(h)
    if case != "no value":
        g.forward({x: np.ones(2)}, outputs=y)
    if case == "assigned":
        w.value = np.full(2, 2.0)
    elif case == "fed":
        g.feed({x: np.zeros(2)})
    elif case == "recomputed":
        g.forward({x: np.zeros(2)}, outputs=z)
    messages = []
    for _ in range(3):
        with pytest.raises(gd.GraphError) as e:
            g.backward(y)
        messages.append(str(e.value))
    assert messages[0] == messages[1] == messages[2]
    what = {"assigned": "'multiply' (multiply), which 'sum' depends on, is stale: its input 'w' was assigned",
            "fed": "'multiply' (multiply), which 'sum' depends on, is stale: its input 'x' was fed",
            "recomputed": "'multiply_1' (multiply), which 'sum' depends on, is stale: its input 'tanh' was "
                          "recomputed", "no value": "'sum' has no value"}
    assert messages[0].startswith("backward: " + what[case])
    g.forward({x: np.ones(2)}, outputs=y)
    t = np.tanh(w.value)
    for variant in gd.VARIANTS * 2:
        assert g.backward(y, variant=variant)[w] == pytest.approx(2 * t * (1 - t * t))


def _scalar_session(g, y, variant, trace):
    g.forward(outputs=y)
    events = [] if trace else None
    grads = g.backward(y, variant=variant, trace=events)
    return ({n.name: float(v) for n, v in grads.items()},
            [(e.kind,) + tuple(getattr(e, f).name if hasattr(getattr(e, f), "name") else getattr(e, f)
                               for f in e._fields) for e in events or []])


@pytest.mark.parametrize("variant", gd.VARIANTS)
@pytest.mark.parametrize("trace", [False, True], ids=["plain", "traced"])
def test_shared_bindings_run_like_per_node_ones(variant, trace):
    """Nodes of an op without attrs share one forward and one VJP bound to the backend (execution and
    autodiff bind them once per op); nodes with attrs (gelu's approximate) are bound one by one. A fresh
    graph's first run, its later runs (steps and plans kept, then compiled) and runs with NumPy's
    kernels off give the same values, gradients and trace events."""
    def build():
        g = gd.Graph(dtype="float64")
        x, w, b = g.param("x", 0.3), g.param("w", -0.7), g.param("b", 0.2)
        h = x
        for k in range(4):
            h = gd.gelu(h * w + b, approximate="tanh" if k % 2 else "none") + gd.tanh(h) * x
        return g, h
    g, y = build()
    first = _scalar_session(g, y, variant, trace)
    again = [_scalar_session(g, y, variant, trace) for _ in range(4)]
    with gd.fused_kernels(False):
        g2, y2 = build()
        off = _scalar_session(g2, y2, variant, trace)
    for other in again + [off]:
        assert other[1] == first[1]
        assert other[0] == pytest.approx(first[0], rel=1e-13, abs=1e-15)
    assert list(first[0]) == ["x", "w", "b"] and (not trace or len(first[1]) > 30)


def _events(trace):
    return [(e.kind,) + tuple(getattr(e, f).index if hasattr(getattr(e, f), "index") else getattr(e, f)
                              for f in e._fields) for e in trace]


@settings(max_examples=40)
@given(dag=dags(), data=st.data())
def test_a_fresh_plans_backward_is_a_kept_plans(dag, data):
    """A fresh graph's first backward builds only the edges of its variant, in one sweep; a kept plan is
    built the same way and may be used by the other variant later (its edges built then). Gradients are
    bit for bit the same, trace events the same in the same order, on arrays and on Python floats."""
    leaves, prog, seed = dag
    if data.draw(st.booleans()):
        leaves = [()] * len(leaves)         # a scalar graph: the Python-float backward
    variant = data.draw(st.sampled_from(gd.VARIANTS))
    other = "parents" if variant == "children" else "children"
    retain = data.draw(st.booleans())

    def session(g, y, v):
        trace = []
        grads = g.backward(y, variant=v, trace=trace, retain_grads=retain)
        plain = g.backward(y, variant=v, retain_grads=retain)
        got = [gd.to_numpy(grads[n]).tobytes() for n in grads], _events(trace)
        assert [gd.to_numpy(plain[n]).tobytes() for n in plain] == got[0]
        return got
    g, _, y = build_gd(leaves, prog, seed)
    first = session(g, y, variant)               # fresh plans
    g2, _, y2 = build_gd(leaves, prog, seed)
    session(g2, y2, other)                       # the plan is kept, built for the other variant
    kept = session(g2, y2, variant)
    assert kept == first


@pytest.mark.parametrize("variant", gd.VARIANTS)
@pytest.mark.parametrize("eager", [False, True], ids=["lazy", "eager"])
def test_backward_of_a_graph_mixing_floats_and_arrays(variant, eager):
    """0-d float64 nodes computed on Python floats (eagerly, or by a forward of an all-0-d output) in a graph
    with arrays: the NumPy backward gets them as arrays."""
    g = gd.Graph(dtype="float64", eager=eager)
    a, v = g.param("a", 0.5), g.param("v", np.array([1.0, 2.0, 3.0]))
    s = gd.tanh(a) * a
    if not eager:
        g.forward(outputs=s)            # all 0-d float64: on Python floats
    y = gd.sum(v * s) + s
    if not eager:
        g.forward(outputs=y)
    grads = g.backward(y, variant=variant)
    ds = np.tanh(0.5) + 0.5 * (1 - np.tanh(0.5) ** 2)
    assert float(gd.to_numpy(grads[a])) == pytest.approx(7.0 * ds, rel=1e-12)
    np.testing.assert_allclose(gd.to_numpy(grads[v]), np.tanh(0.5) * 0.5, rtol=1e-12)


@settings(max_examples=60)
@given(dag=dags(), data=st.data())
def test_topological_order_is_the_depth_first_post_order(dag, data):
    """The order is exactly the depth-first post-order over inputs in slot order, from each output in turn
    (trace events and Version A's summation order follow it)."""
    g, params, y = build_gd(*dag)
    outs = data.draw(st.lists(st.sampled_from(g.nodes), min_size=1, max_size=3)) + [y]

    def visit(n, seen, order):
        if n in seen:
            return
        seen.add(n)
        for p in n.inputs:
            visit(p, seen, order)
        order.append(n)
    seen, order = set(), []
    for o in outs:
        visit(o, seen, order)
    assert gd.topological_order(g, outs) == order
