"""forward_backward (the nn path) releases each value at its last use: which values it keeps and when it
lets them go (counted, not measured), that the gradients and trace events are those of forward + backward,
and that reading a released value or a second backward raises ReleasedError."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphdiff as gd
from graphdiff.execution import state
from graphdiff.lm import GPT

from .ops.optable import OPS

GRAD_SPECS = [pytest.param(s, id=s.id) for s in OPS if s.grad]
CFG = dict(vocab_size=11, n_embd=8, n_head=2, n_layer=2, block_size=6)


def _grads(g):
    return {n.name: gd.to_numpy(n.grad).copy() for n in g.params()}


@pytest.mark.parametrize("spec", GRAD_SPECS)
@settings(max_examples=10)
@given(data=st.data())
def test_every_op_declares_what_its_vjp_reads(spec, backend, data):
    """Each op's VJP gets a shape-only stand-in for what its `saves` leaves out (reading it raises), and its
    inputs are computed values that can be released: the gradients are exactly those of forward + backward."""
    arrays, attrs = spec.draw(data)
    for variant in gd.VARIANTS:
        g = gd.Graph(backend=backend, dtype="float64", seed=0)
        leaves = [g.param(f"x{k}", a) * 1.0 if a.dtype.kind == "f" else g.constant(a, name=f"c{k}")
                  for k, a in enumerate(arrays)]
        y = spec.gd(*leaves, **attrs)
        seed = None if y.shape == () else np.random.default_rng(1).standard_normal(y.shape)
        g.seed(0)                                   # dropout draws the same mask twice
        g.forward(outputs=y)
        g.backward(y, variant=variant, seed=seed)
        want, want_value = _grads(g), gd.to_numpy(y.value).copy()
        g.seed(0)
        value, = g.forward_backward({}, [y], y, variant=variant, seed=seed)
        got = _grads(g)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{spec.id} {variant}: d/d{k}")
        assert np.array_equal(gd.to_numpy(value), want_value, equal_nan=True)


def _gpt(dtype="float64", **kw):
    m = GPT(dtype=dtype, dropout=0.0, seed=0, **dict(CFG, **kw))
    rng = np.random.default_rng(0)
    idx = rng.integers(1, CFG["vocab_size"], (2, 6))
    targets = rng.integers(1, CFG["vocab_size"], (2, 6))
    mask = np.ones((2, 6), dtype=bool)
    mask[0, -2:] = False
    prog = m.programs(("loss", 2, 6))
    return m, prog, {"idx": idx, "targets": targets, "key_mask": mask}


def _plain(prog, feeds, variant, trace=None):
    g = prog.graph
    loss, = g.forward({prog.inputs[k]: v for k, v in feeds.items()}, outputs=[prog.outputs["loss"]])
    g.backward(prog.outputs["loss"], variant=variant, trace=trace)
    return loss, _grads(g)


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_gpt_step_gives_the_gradients_and_events_of_forward_plus_backward(variant, backend):
    m, prog, feeds = _gpt()
    if backend != "numpy":
        m, prog, feeds = _gpt(backend=backend)
    loss, want = _plain(prog, feeds, variant, trace=(plain_events := []))
    events = []
    got_loss, = prog.graph.forward_backward({prog.inputs[k]: v for k, v in feeds.items()}, [prog.outputs["loss"]],
                                            prog.outputs["loss"], variant=variant, trace=events)
    assert float(got_loss) == float(loss)
    got = _grads(prog.graph)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert [(e.kind,) + tuple(getattr(x, "name", x) for x in e) for e in events] == \
        [(e.kind,) + tuple(getattr(x, "name", x) for x in e) for e in plain_events]


def _alive(graph, prefix=""):
    return {n.name for n in graph.nodes if n.kind == "op" and n.out is not None and n.name.startswith(prefix)}


def test_the_forward_keeps_only_what_the_backward_reads():
    """Between the forward and the backward of a step, a block keeps what PyTorch saves: the layer norms'
    outputs (and their xhat, rstd), the scaled q, k^T and v, the attention weights, the heads side by side, the
    GELU's input and output, and views that cost nothing (c_attn's column blocks of the weight): not the
    scores, the masked scores, the mask, the sums or the matmul outputs that a bias is added to."""
    m, prog, feeds = _gpt()
    g, loss = prog.graph, prog.outputs["loss"]
    m.loss(feeds["idx"], feeds["targets"], feeds["key_mask"], backward=True)       # builds the lifetimes
    life = state(g).cache.lifetimes[((loss.index,), loss.index, "children", "numpy")]
    gd.execution.forward(g, {prog.inputs[k]: v for k, v in feeds.items()}, [loss], release=life)
    assert _alive(g, "h/0/") == {"h/0/ln_1/ln", "h/0/attn/c_attn/getitem", "h/0/attn/c_attn/getitem_2",
                                 "h/0/attn/c_attn/getitem_4", "h/0/attn/scale", "h/0/attn/transpose",
                                 "h/0/attn/c_attn/v", "h/0/attn/attn", "h/0/attn/reshape",
                                 "h/0/ln_2/ln", "h/0/mlp/c_fc/bias_1", "h/0/mlp/gelu"}
    kept = {g.nodes[k].name for k in state(g).residuals}
    assert kept == {"h/0/ln_1/ln", "h/0/ln_2/ln", "h/0/mlp/gelu", "h/1/ln_1/ln", "h/1/ln_2/ln", "h/1/mlp/gelu",
                    "ln_f/ln", "loss"}


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_the_backward_lets_go_of_a_block_once_it_is_through_it(variant):
    m, prog, feeds = _gpt()
    g, loss = prog.graph, prog.outputs["loss"]
    seen = {}

    def watch(e):
        if e.kind == "final" and e.node.name not in seen:
            seen[e.node.name] = (_alive(g, "h/1/"), _alive(g, "h/0/"), len(state(g).residuals))
    g.forward_backward({prog.inputs[k]: v for k, v in feeds.items()}, [loss], loss, variant=variant, trace=watch)
    upper, lower, _ = seen["h/0/add_1"]          # the backward enters block 0: block 1 is done
    assert upper == set() and "h/0/attn/attn" in lower
    assert seen["h/0/ln_1/ln"][1] <= {"h/0/ln_1/ln"}
    assert _alive(g) == {"loss"} and not state(g).residuals


def test_a_released_value_or_a_second_backward_raises_until_the_next_forward():
    m, prog, feeds = _gpt()
    g = prog.graph
    first = m.loss(feeds["idx"], feeds["targets"], feeds["key_mask"], backward=True)
    grads = {n: p.grad.copy() for n, p in m.named_parameters()}
    ln = g.node("ln_f/ln")
    with pytest.raises(gd.ReleasedError, match="'ln_f/ln' \\(layer_norm\\) was released.*run the forward again"):
        ln.value
    with pytest.raises(gd.ReleasedError, match="released"):
        gd.to_numpy(ln)
    with pytest.raises(gd.ReleasedError, match="backward through it to 'loss'"):
        prog.backward("loss")
    with pytest.raises(gd.ReleasedError):
        g.backward(prog.outputs["loss"], variant="parents")
    assert float(prog.outputs["loss"].value) == first            # outputs and leaves stay
    assert np.array_equal(gd.to_numpy(g.node("targets").value), feeds["targets"])
    _plain(prog, feeds, "children")                              # a plain forward brings everything back
    assert ln.value is not None
    assert all(np.array_equal(grads[n], p.grad) for n, p in m.named_parameters())
    assert m.loss(feeds["idx"], feeds["targets"], feeds["key_mask"], backward=True) == first


def test_an_op_that_declares_too_little_fails_loudly():
    @gd.op("misdeclared_square")
    class MisdeclaredSquare:
        shape = gd.ops.registry.same_shape
        saves = ()                                  # wrong: the VJP reads x

        def forward(F, x):
            return x * x

        def vjp(F, i, g, xs, out):
            return 2.0 * xs[0] * g
    try:
        g = gd.Graph(dtype="float64")
        x = g.param("x", np.arange(3.0))
        y = gd.sum(gd.REGISTRY["misdeclared_square"](x * 1.0))
        with pytest.raises(gd.GraphError, match="read the value of 'multiply'.*`saves`"):
            g.forward_backward({}, [y], y)
    finally:
        del gd.REGISTRY["misdeclared_square"]


def test_an_op_that_declares_nothing_keeps_everything_it_may_read():
    @gd.op("plain_cube")
    class PlainCube:
        shape = gd.ops.registry.same_shape

        def forward(F, x):
            return x * x * x

        def vjp(F, i, g, xs, out):
            return 3.0 * out / xs[0] * g
    try:
        g = gd.Graph(dtype="float64")
        x = g.param("x", np.arange(1.0, 4.0))
        y = gd.sum(gd.REGISTRY["plain_cube"](x * 1.0))
        g.forward_backward({}, [y], y)
        np.testing.assert_allclose(x.grad, 3.0 * np.arange(1.0, 4.0) ** 2)
    finally:
        del gd.REGISTRY["plain_cube"]


def test_scalar_graphs_run_the_plain_passes():
    g = gd.Graph(dtype="float64")
    a, b = g.param("a", 2.0), g.param("b", -3.0)
    y = gd.tanh(a * b + a)
    value, = g.forward_backward({}, [y], y, variant="parents")
    assert float(value) == pytest.approx(np.tanh(-4.0))
    assert float(a.grad) == pytest.approx((1 - np.tanh(-4.0) ** 2) * (b.value + 1))


@pytest.mark.parametrize("variant", gd.VARIANTS)
@pytest.mark.parametrize("seed", range(40))
def test_sums_added_in_place_never_touch_what_a_vjp_passed_on(variant, seed):
    """Random graphs where values are shared and add-like VJPs hand g itself (or a view of it) on: the
    in-place accumulation of the release path gives exactly the gradients of the plain backward."""
    rng = np.random.default_rng(seed)
    g = gd.Graph(dtype="float64")
    params = [g.param(f"w{k}", rng.standard_normal((2, 3))) for k in range(3)]
    nodes = list(params)
    for _ in range(14):
        pick = [nodes[k] for k in rng.integers(0, len(nodes), 3)]
        kind = rng.integers(0, 6)
        if kind == 0:
            n = pick[0] + pick[1]
        elif kind == 1:
            n = pick[0] * pick[1]
        elif kind == 2:
            n = gd.add_n(pick)
        elif kind == 3:
            n = pick[0] - pick[0]
        elif kind == 4:
            n = gd.reshape(gd.reshape(pick[0], (3, 2)) * 1.0, (2, 3))
        else:
            n = gd.tanh(pick[0]) + pick[0]
        nodes.append(n)
    y = gd.sum(gd.add_n(nodes[-4:]) * nodes[-1])
    g.forward(outputs=y)
    g.backward(y, variant=variant)
    want = _grads(g)
    g.forward_backward({}, [y], y, variant=variant)
    got = _grads(g)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_an_eager_graph_keeps_its_values():
    g = gd.Graph(dtype="float64", eager=True)
    x = g.param("x", np.arange(3.0))
    h = gd.tanh(x * 2.0)
    y = gd.sum(h * h)
    g.forward_backward({}, [y], y)
    assert h.value is not None and float(gd.sum(h).value) == pytest.approx(np.tanh(np.arange(3.0) * 2).sum())
    np.testing.assert_allclose(x.grad, 4 * np.tanh(2 * np.arange(3.0)) * (1 - np.tanh(2 * np.arange(3.0)) ** 2))


def test_adds_write_into_a_dying_input_only_where_nothing_else_sees_it(backend):
    """forward_backward's adds write into an input that is a fresh array, read by that add alone and released
    right after it (the bias adds of a GPT); not into one that another node reads, a view shares or a VJP
    reads. Values and gradients are those of a plain forward + backward, bit for bit."""
    g = gd.Graph(backend=backend, dtype="float64")
    rng = np.random.default_rng(0)
    x = g.input("x", (4, 3))
    W = g.param("W", rng.standard_normal((3, 5)))
    b = g.param("b", rng.standard_normal(5))
    h = gd.matmul(x, W, name="h")                     # read by the add alone: written in place
    y = gd.add(h, b, name="y")
    h2 = gd.matmul(x, W, name="h2")                   # read twice (add and multiply): kept apart
    y2 = gd.add(h2, b, name="y2") + h2 * 2.0
    h3 = gd.matmul(x, W, name="h3")
    v3 = gd.reshape(h3, (20,), name="v3")             # a view of h3's buffer outlives the add
    y3 = gd.add(h3, b, name="y3")
    h4 = gd.tanh(x @ W, name="h4")                    # tanh's VJP reads its output: not released at the add
    y4 = gd.add(h4, b, name="y4")
    loss = gd.sum(y * y) + gd.sum(y2 * y2) + gd.sum(v3 * v3) + gd.sum(y3) + gd.sum(y4 * y4)
    feeds = {x: rng.standard_normal((4, 3))}
    for variant in gd.VARIANTS:
        g.forward(feeds, outputs=loss)
        g.backward(loss, variant=variant)
        want, want_loss = _grads(g), float(gd.to_numpy(loss.value))
        got_loss, = g.forward_backward(feeds, [loss], loss, variant=variant)
        assert float(gd.to_numpy(got_loss)) == want_loss
        for k, v in _grads(g).items():
            np.testing.assert_array_equal(v, want[k], err_msg=k)
        life = state(g).cache.lifetimes[((loss.index,), loss.index, variant, g.backend.name)]
        names = {n.name for n in life.inplace}
        if g.backend.name in ("numpy", "cupy"):
            assert "y" in names and not names & {"y2", "y3", "y4"}, names
        else:
            assert not names                          # the array API has no out=


def test_a_gpt_steps_bias_mask_and_residual_adds_run_in_place():
    m, prog, feeds = _gpt()
    g, loss = prog.graph, prog.outputs["loss"]
    m.loss(feeds["idx"], feeds["targets"], feeds["key_mask"], backward=True)
    life = state(g).cache.lifetimes[((loss.index,), loss.index, "children", "numpy")]
    names = {n.name for n in life.inplace}
    per_layer = {"add", "add_1", "attn/c_attn/bias_q", "attn/c_attn/bias_k", "attn/c_attn/bias_v",
                 "attn/masked", "attn/c_proj/bias_1", "mlp/c_fc/bias_1", "mlp/c_proj/bias_1"}
    assert names == {f"h/{layer}/{n}" for layer in (0, 1) for n in per_layer}, names
    assert g.node("add") not in life.inplace       # token + position embeddings: embedding is no fresh-array op
