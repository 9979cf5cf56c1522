"""A None batch axis never gives a silently wrong number: every node built on it follows the fed batch size or
is refused with a typed error; and higher-order functions (hvp, jvp, hessian) that fail leave the graph as
it was. Values and gradients are checked against PyTorch (float64, CPU) at two batch sizes on one graph."""
import numpy as np
import pytest

import graphdiff as gd

from .oracles import needs_torch, torch

VARIANTS = ("children", "parents")


def run(g, x, loss, X, variant):
    """loss and d loss / d x of the graph at feed X (the backward's variant as given)."""
    g.forward({x: X}, outputs=loss)
    g.backward(loss, variant=variant)
    return float(loss.value), np.array(x.grad)


def torch_run(fn, X):
    t = torch.tensor(X, requires_grad=True)
    out = fn(t)
    out.backward()
    return out.item(), t.grad.numpy()


# --- slices and shapes on the batch axis follow the fed batch size --------------------------------------
# (graphdiff expression, the same in PyTorch); x is fed (B, 3)
EXPRESSIONS = [
    ("x[:, 1] * 2", lambda x: gd.sum(x[:, 1] * 2), lambda t: (t[:, 1] * 2).sum()),
    ("x[1:]", lambda x: gd.sum(x[1:] ** 2), lambda t: (t[1:] ** 2).sum()),
    ("x[:-1, 0]", lambda x: gd.sum(x[:-1, 0] ** 3), lambda t: (t[:-1, 0] ** 3).sum()),
    ("x[::2]", lambda x: gd.sum(x[::2] ** 2), lambda t: (t[::2] ** 2).sum()),
    ("x[::-1]", lambda x: gd.sum(x[::-1] * gd.tanh(x)), lambda t: (t.flip(0) * torch.tanh(t)).sum()),
    ("x[1:3]", lambda x: gd.sum(x[1:3] ** 2), lambda t: (t[1:3] ** 2).sum()),
    ("x[-1]", lambda x: gd.sum(x[-1] ** 2), lambda t: (t[-1] ** 2).sum()),
    ("x[:, None, 1:]", lambda x: gd.sum(x[:, None, 1:] ** 2), lambda t: (t[:, None, 1:] ** 2).sum()),
    ("x[..., :2]", lambda x: gd.sum(x[..., :2] ** 2), lambda t: (t[..., :2] ** 2).sum()),
    ("x.T[:, 1:]", lambda x: gd.sum(x.T[:, 1:] ** 2), lambda t: (t.T[:, 1:] ** 2).sum()),
    ("concat then slice", lambda x: gd.sum(gd.concat([x, x * 2], axis=0)[1:] ** 2),
     lambda t: (torch.cat([t, t * 2], 0)[1:] ** 2).sum()),
    ("stack then slice", lambda x: gd.sum(gd.stack([x, x[::-1] * 2], axis=1)[1:, 1, :2] ** 2),
     lambda t: (torch.stack([t, t.flip(0) * 2], 1)[1:, 1, :2] ** 2).sum()),
    ("reshape(-1)", lambda x: gd.sum(gd.reshape(x, (-1,))[1:] ** 2), lambda t: (t.reshape(-1)[1:] ** 2).sum()),
    ("reshape(-1, 1)", lambda x: gd.sum(gd.reshape(x, (-1, 1)) * gd.reshape(x, (-1, 1))[::-1]),
     lambda t: (t.reshape(-1, 1) * t.reshape(-1, 1).flip(0)).sum()),
    ("reshape(3, -1)", lambda x: gd.sum(gd.reshape(x, (3, -1))[:, 1:] ** 2),
     lambda t: (t.reshape(3, -1)[:, 1:] ** 2).sum()),
    ("mean over the batch", lambda x: gd.sum(gd.mean(x, axis=0) ** 2), lambda t: (t.mean(0) ** 2).sum()),
]


@needs_torch
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("text,build,ref", EXPRESSIONS, ids=[e[0] for e in EXPRESSIONS])
def test_batch_axis_expressions_follow_the_fed_batch_size(text, build, ref, variant):
    """One graph built on x (None, 3) gives PyTorch's value and gradient at batch sizes 6, 3, 6 and 9 (both
    backward variants): slices are resolved against the fed size, not the size when the graph was built."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (None, 3), requires_grad=True)
    loss = build(x)
    rng = np.random.default_rng(0)
    for B in (6, 3, 6, 9):
        X = rng.standard_normal((B, 3))
        got, grad = run(g, x, loss, X, variant)
        want, want_grad = torch_run(ref, X)
        assert got == pytest.approx(want, rel=1e-12), (text, B)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-14, err_msg=f"{text} at batch {B}")


def test_column_slice_of_a_batch_sums_every_row():
    """x[:, 1] * 2 summed over 5 fed rows is 70, not the first row's 2."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (None, 3))
    y = gd.sum(x[:, 1] * 2)
    assert g.forward({x: np.arange(15.0).reshape(5, 3)}, outputs=y) == 70.0
    assert g.forward({x: np.arange(6.0).reshape(2, 3)}, outputs=y) == 10.0


@needs_torch
@pytest.mark.parametrize("variant", VARIANTS)
def test_a_small_model_on_a_batch_axis_matches_pytorch_at_two_batch_sizes(variant):
    """Params' gradients through slices, concat, reshape(-1, ...) and a batch mean match PyTorch at batch
    sizes 4 and 7 on one graph, in both variants."""
    rng = np.random.default_rng(1)
    W0, b0 = rng.standard_normal((4, 5)), rng.standard_normal(5)
    g = gd.Graph(dtype="float64")
    x, y = g.input("x", (None, 4)), g.input("y", (None,))
    W, b = g.param("W", W0), g.param("b", b0)
    h = gd.tanh(x @ W + b)                                      # (B, 5)
    z = gd.concat([h[:, :2], h[:, 3:] * h[:, :1]], axis=1)      # (B, 4)
    pred = gd.reshape(z, (-1, 2))[::2, 1]                       # (B,): every other row of the (2B, 2) view
    loss = gd.mean((pred - y) ** 2) + gd.sum(h[1:] * h[:-1]) * 0.1

    def torch_loss(X, Y, Wt, bt):
        h = torch.tanh(X @ Wt + bt)
        z = torch.cat([h[:, :2], h[:, 3:] * h[:, :1]], 1)
        pred = z.reshape(-1, 2)[::2, 1]
        return ((pred - Y) ** 2).mean() + (h[1:] * h[:-1]).sum() * 0.1

    for B in (4, 7, 4):
        X, Y = rng.standard_normal((B, 4)), rng.standard_normal(B)
        g.forward({x: X, y: Y}, outputs=loss)
        g.backward(loss, variant=variant)
        Wt, bt = torch.tensor(W0, requires_grad=True), torch.tensor(b0, requires_grad=True)
        want = torch_loss(torch.tensor(X), torch.tensor(Y), Wt, bt)
        want.backward()
        assert float(loss.value) == pytest.approx(want.item(), rel=1e-12)
        np.testing.assert_allclose(W.grad, Wt.grad.numpy(), rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(b.grad, bt.grad.numpy(), rtol=1e-11, atol=1e-13)


@needs_torch
def test_slices_follow_the_batch_on_every_backend(backend):
    """Every backend resolves slices against the fed size (array_api_strict refuses out-of-range stops, so
    its run clamps them to the size fed then)."""
    g = gd.Graph(backend=backend, dtype="float64")
    x = g.input("x", (None, 3), requires_grad=True)
    y = gd.sum(x[1:, ::-1][:, :2] ** 2)
    for B in (4, 2):
        X = np.arange(3.0 * B).reshape(B, 3)
        g.forward({x: X}, outputs=y)
        g.backward(y)
        want, want_grad = torch_run(lambda t: (t[1:].flip(1)[:, :2] ** 2).sum(), X)
        assert float(y.value) == pytest.approx(want)
        np.testing.assert_allclose(gd.to_numpy(x.grad), want_grad)


def test_an_integer_index_past_a_smaller_batch_is_refused_naming_the_node():
    """x[4] fits a batch of 6 but not one of 3: a ShapeError naming the getitem node and both sizes."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (None, 3))
    g.forward({x: np.ones((6, 3))})
    y = gd.sum(x[4])
    assert g.forward({x: np.ones((6, 3))}, outputs=y) == 3.0
    with pytest.raises(gd.ShapeError, match=r"batch size 3 \(built for 6\): getitem 'getitem'.*index 4"):
        g.forward({x: np.ones((3, 3))}, outputs=y)


def test_a_reshape_with_explicit_batch_sizes_is_refused_when_built():
    """reshape(x, (3,)) of a batch axis fits one batch size only: a ShapeError naming the node, the input
    and the fix (-1) when it is built, whatever the batch. reshape with -1 follows the batch, and is refused
    (naming it) only by a batch size it cannot divide."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (None, 3))
    with pytest.raises(gd.ShapeError, match=r"reshape 'flat': shape \(3,\) is given in sizes, but input 'x' "
                                            r"f64\[1,3\] follows the batch axis of input 'x' \(None, now 1\).*"
                                            r"write -1 for the size that follows the batch"):
        gd.reshape(x, (3,), name="flat")
    g.forward({x: np.ones((2, 3))})
    with pytest.raises(gd.ShapeError, match=r"reshape 'flat': shape \(2, 3, 1\) is given in sizes.*now 2"):
        gd.reshape(gd.tanh(x), (2, 3, 1), name="flat")
    z = gd.sum(gd.reshape(x, (2, -1), name="halves") ** 2)     # 3 * B elements in two rows: B must be even
    assert g.forward({x: np.ones((4, 3))}, outputs=z) == 12.0
    with pytest.raises(gd.ShapeError, match=r"batch size 3 \(built for 4\): reshape 'halves'.*-1"):
        g.forward({x: np.ones((3, 3))}, outputs=z)


@pytest.mark.parametrize("build", [lambda x: gd.reshape(x, (1, 3), name="same"),
                                   lambda x: gd.broadcast_to(x, (1, 3), name="same"),
                                   lambda x: gd.broadcast_to(x[:, None], (1, 2, 3), name="same")],
                         ids=["reshape", "broadcast_to", "broadcast_to a new axis"])
def test_a_fixed_shape_of_a_batch_axis_is_refused_when_built(build):
    """reshape / broadcast_to to sizes on a batch axis (even to the shape it has now: (1, 3) is not x for
    every batch) are refused when built, naming the node, which is not added."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (None, 3))
    with pytest.raises(gd.ShapeError, match=r"'same': shape \(1, (2, )?3\) is given in sizes.*follows the batch"):
        build(x)
    assert "same" not in g


@needs_torch
@pytest.mark.parametrize("variant", VARIANTS)
def test_expand_dims_follows_the_batch(variant):
    """gd.expand_dims on a batch axis is x[:, None] (sizes would fix the batch): values and gradients match
    PyTorch at two batch sizes."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (None, 3), requires_grad=True)
    loss = gd.sum(gd.expand_dims(x, 1) * gd.expand_dims(x[::-1], 2)) + gd.sum(gd.expand_dims(x, 0)[:, 1:] ** 2)
    rng = np.random.default_rng(2)
    for B in (4, 2):
        X = rng.standard_normal((B, 3))
        got, grad = run(g, x, loss, X, variant)
        want, want_grad = torch_run(lambda t: (t[:, None] * t.flip(0)[:, :, None]).sum() + (t[None][:, 1:] ** 2).sum(),
                                    X)
        assert got == pytest.approx(want, rel=1e-12)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-12)


def test_reshape_with_minus_one_keeps_building_as_before():
    """A fixed-shape graph (no batch axis): reshape with -1 gives the resolved shape and the input's values."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (4, 3))
    r = gd.reshape(x, (2, -1))
    assert r.shape == (2, 6)
    assert gd.reshape(x, (-1, 3)) is x                         # same shape: no node
    np.testing.assert_array_equal(g.forward({x: np.arange(12.0).reshape(4, 3)}, outputs=r),
                                  np.arange(12.0).reshape(2, 6))
    with pytest.raises(gd.ShapeError, match=r"reshape 'x': cannot infer -1 in \(5, -1\) for 12 elements"):
        gd.reshape(x, (5, -1))


# --- two batch inputs fed different row counts ----------------------------------------------------------
def test_batch_inputs_fed_different_row_counts_are_refused_naming_both():
    """x fed 3 rows and y fed 4: a ShapeError naming both inputs and their row counts (not 'no value for
    input x'); the feeds change nothing, and a consistent feed then runs."""
    g = gd.Graph(dtype="float64")
    x, y = g.input("x", (None, 3)), g.input("y", (None, 1))
    loss = gd.mean((x @ g.param("W", np.ones((3, 1))) - y) ** 2)
    with pytest.raises(gd.ShapeError, match=r"input 'x' was fed 3 rows and input 'y' 4 rows"):
        g.forward({x: np.ones((3, 3)), y: np.ones((4, 1))}, outputs=loss)
    assert g.batch is None and x.out is None and y.out is None
    assert g.forward({x: np.ones((4, 3)), y: np.zeros((4, 1))}, outputs=loss) == 9.0


# --- higher order on a batch graph, and failed calls ---------------------------------------------------------
def batch_graph():
    g = gd.Graph(dtype="float64")
    x = g.input("x", (None, 2))
    W = g.param("W", np.array([[1.0], [2.0]]))
    loss = gd.sum(gd.tanh(x @ W) ** 2)
    return g, x, W, loss


@pytest.mark.parametrize("call", ["hvp", "jvp", "hessian"])
def test_higher_order_on_a_batch_graph_is_refused_and_changes_nothing(call):
    """hvp / jvp / hessian on a graph with a None batch axis: the GraphError of g.gradients, no node added,
    and the graph still runs at every batch size."""
    g, x, W, loss = batch_graph()
    g.forward({x: np.ones((3, 2))}, outputs=loss)
    before = len(g.nodes)
    with pytest.raises(gd.GraphError, match=f"{call}: input 'x' has a None batch axis"):
        if call == "hvp":
            gd.hvp(loss, W, np.ones((2, 1)))
        elif call == "jvp":
            gd.jvp(loss, W, np.ones((2, 1)))
        else:
            gd.hessian(loss, W)
    assert len(g.nodes) == before
    for B in (5, 2):
        X = np.full((B, 2), 0.5)
        assert g.forward({x: X}, outputs=loss) == pytest.approx(B * np.tanh(1.5) ** 2)
    g.forward({x: np.ones((4, 2))})                             # every node, at a new batch size


def fixed_graph():
    g = gd.Graph(dtype="float64")
    x = g.input("x", (3, 2))
    ids = g.input("ids", (3,), dtype="int64")
    W = g.param("W", np.array([[1.0], [2.0]]))
    loss = gd.sum(gd.tanh(x @ W) ** 2)
    g.forward({x: np.ones((3, 2)), ids: np.zeros(3, dtype=np.int64)})
    return g, x, ids, W, loss


@pytest.mark.parametrize("case", ["hvp: v of the wrong shape", "hvp: wrt integer ids",
                                  "jvp: tangent of the wrong shape", "jvp: wrt integer ids",
                                  "gradients: wrt integer ids"])
@needs_torch
def test_a_failed_higher_order_call_leaves_the_graph_as_it_was(case):
    """A call that fails while building or feeding its nodes removes them again: g.forward() of every node
    still runs (no unfed 'hvp/v0' or 'jvp/u0'), names are as before, and the next good call works."""
    g, x, ids, W, loss = fixed_graph()
    names = [n.name for n in g.nodes]
    with pytest.raises((gd.ShapeError, gd.DTypeError)):
        if case == "hvp: v of the wrong shape":
            gd.hvp(loss, W, np.ones(3))
        elif case == "hvp: wrt integer ids":
            gd.hvp(loss, ids, np.ones(3))
        elif case == "jvp: tangent of the wrong shape":
            gd.jvp(loss, W, np.ones(3))
        elif case == "jvp: wrt integer ids":
            gd.jvp(loss, ids, np.ones(3))
        else:
            g.gradients(loss, [W, ids])
    assert [n.name for n in g.nodes] == names
    g.forward()                                                   # every node: nothing left unfed
    hv = gd.hvp(loss, W, np.array([[1.0], [0.0]]))
    jv = gd.jvp(loss, W, np.array([[1.0], [0.0]]))
    Wt = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    f = lambda w: (torch.tanh(torch.ones(3, 2, dtype=torch.float64) @ w) ** 2).sum()   # noqa: E731
    _, want_hv = torch.autograd.functional.hvp(f, Wt, torch.tensor([[1.0], [0.0]], dtype=torch.float64))
    want_jv = (torch.autograd.functional.jacobian(f, Wt) * torch.tensor([[1.0], [0.0]])).sum()   # J t
    np.testing.assert_allclose(hv, want_hv.numpy(), rtol=1e-12)
    np.testing.assert_allclose(jv, want_jv.numpy(), rtol=1e-12)
    g.forward()


# --- the Hessian of an empty param -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(0,), (2, 0)])
def test_hessian_of_an_empty_param_is_an_empty_block(shape):
    """A param with no elements has an empty Hessian block, of shape wrt.shape * 2."""
    g = gd.Graph(dtype="float64")
    W = g.param("W", np.zeros(shape))
    a = g.param("a", np.array([1.0, 2.0]))
    y = gd.sum(a ** 3) + gd.sum(W ** 2)
    g.forward()
    H = gd.hessian(y, W)
    assert H.shape == shape * 2 and H.dtype == np.float64
    np.testing.assert_allclose(gd.hessian(y, a), np.diag([6.0, 12.0]))


@needs_torch
def test_a_failed_hvp_through_an_embedding_leaves_the_ids_checks_as_they_were():
    """The second-order graph of an embedding asks the ids input for a range check at each feed; a failed
    hvp takes that request back with its nodes."""
    g = gd.Graph(dtype="float64")
    ids = g.input("ids", (4,), dtype="int64")
    T = g.param("T", np.random.default_rng(0).standard_normal((5, 3)))
    loss = gd.sum(gd.tanh(gd.embedding(T, ids)) ** 2)
    g.forward({ids: np.array([0, 1, 1, 4])})
    before = (len(g.nodes), list(ids.attrs["host_checks"]))
    with pytest.raises(gd.ShapeError, match=r"input 'hvp/v0' expects shape \(5, 3\)"):
        gd.hvp(loss, T, np.ones(3))
    assert (len(g.nodes), ids.attrs["host_checks"]) == before
    hv = gd.hvp(loss, T, np.ones((5, 3)))
    Tt = torch.tensor(T.value)
    f = lambda t: (torch.tanh(t[torch.tensor([0, 1, 1, 4])]) ** 2).sum()   # noqa: E731
    np.testing.assert_allclose(hv, torch.autograd.functional.hvp(f, Tt, torch.ones(5, 3, dtype=torch.float64))[1],
                               rtol=1e-12)


def test_gradients_with_an_array_seed_of_another_shape_is_refused_and_changes_nothing():
    """g.gradients(y, wrt, seed=array): the seed's shape must be y's (a (1,) seed is not broadcast);
    the refusal adds no node."""
    g = gd.Graph(dtype="float64")
    W = g.param("W", np.ones(3))
    y = gd.tanh(W * 2.0)
    before = len(g.nodes)
    for bad in (np.ones(4), np.ones(1)):
        with pytest.raises(gd.ShapeError, match=r"gradients: the seed has shape \((4|1),\), 'tanh' has shape \(3,\)"):
            g.gradients(y, [W], seed=bad)
    assert len(g.nodes) == before
    dW, = g.gradients(y, [W], seed=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(g.forward(outputs=dW), 2 * (1 - np.tanh(2.0) ** 2) * np.array([1.0, 2.0, 3.0]))


@needs_torch
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_backward_follows_the_batch_size(variant):
    """forward_backward (the nn path, which releases values) at alternating batch sizes on one graph: each
    run uses what was worked out for its own batch size (not the previous size's, which fails or mixes
    shapes), and matches PyTorch."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (None, 3))
    W = g.param("W", np.full((3, 2), 0.3))
    h = gd.tanh(x @ W)
    loss = gd.mean(h * 2.0) + gd.sum(h[1:] * h[:-1])
    rng = np.random.default_rng(3)
    g.forward({x: np.ones((5, 3))})
    for B in (5, 2, 2, 5, 5, 2, 7):
        X = rng.standard_normal((B, 3))
        (value,) = g.forward_backward({x: X}, [loss], loss, variant=variant)
        Wt = torch.tensor(np.full((3, 2), 0.3), requires_grad=True)
        ht = torch.tanh(torch.tensor(X) @ Wt)
        want = (ht * 2.0).mean() + (ht[1:] * ht[:-1]).sum()
        want.backward()
        assert float(value) == pytest.approx(want.item(), rel=1e-12)
        np.testing.assert_allclose(W.grad, Wt.grad.numpy(), rtol=1e-12, err_msg=f"batch {B}")


@pytest.mark.parametrize("eager", [False, True])
def test_assigning_an_input_value_follows_the_batch_size(eager):
    """x.value = rows of another batch size is a feed: the None axis takes its size (it is not checked
    against the size built for, 1), in eager graphs too."""
    g = gd.Graph(dtype="float64", eager=eager)
    x = g.input("x", (None, 3))
    x.value = np.arange(6.0).reshape(2, 3)
    y = gd.sum(x[:, 1] * 2)
    assert float(g.forward(outputs=y)) == 10.0
    x.value = np.arange(15.0).reshape(5, 3)
    assert float(g.forward(outputs=y)) == 70.0 and x.shape == (5, 3)
