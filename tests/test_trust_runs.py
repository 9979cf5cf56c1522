"""Runs that must not mix: batch sizes, redrawn masks, partial forwards, threads, and the nn path's releases.

Each test is a user's snippet that must give the right gradient, never a wrong one, a refusal of a valid backward,
or a bare traceback."""
import threading

import numpy as np
import pytest

import graphdiff as gd

from .oracles import needs_torch, torch

VARIANTS = ["children", "parents"]


# --- forward_backward after a batch-size change -----------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_backward_after_a_batch_size_change_releases_by_the_new_size(variant):
    """forward_backward at B=4 right after a forward at B=1 gives the gradient of a plain forward + backward
    at B=4 (not by B=1's release plan, whose mean VJP divides by the old size)."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (None, 3))
    W = g.param("W", np.arange(6.0).reshape(3, 2) / 5)
    b = g.param("b", np.ones(2))
    y = gd.mean(gd.tanh(x @ W + b))
    X4 = np.arange(12.0).reshape(4, 3) / 10
    for _ in range(3):
        g.forward({x: X4}, outputs=y)
        g.backward(y, variant)
    want = W.grad.copy(), b.grad.copy()
    g.forward({x: X4[:1]}, outputs=y)
    g.forward_backward({x: X4}, [y], y, variant)
    np.testing.assert_allclose(W.grad, want[0])
    np.testing.assert_allclose(b.grad, want[1])
    g.forward_backward({x: X4[:1]}, [y], y, variant)       # and back: B=1's plan for B=1
    g.forward({x: X4[:1]}, outputs=y)
    got = W.grad.copy()
    g.backward(y, variant)
    np.testing.assert_allclose(got, W.grad)


# --- a partial forward that redraws a random node ---------------------------------------------------------
def dropout_graph():
    g = gd.Graph(dtype="float64", seed=0)
    x = g.input("x", (50,))
    W = g.param("W", np.ones(50))
    d = gd.dropout(x * W, 0.5, name="drop")
    y = gd.sum(d * 2.0, name="y")
    z = gd.sum(d * 3.0, name="z")               # shares y's dropout mask
    return g, x, W, d, y, z


def test_a_mask_redrawn_by_a_forward_of_another_output_makes_backward_refuse():
    """forward(outputs=z) draws a new mask for the dropout y shares; y's value is from the old one, so
    backward(y) refuses (it returned the gradient for the new mask)."""
    g, x, W, d, y, z = dropout_graph()
    g.forward({x: np.ones(50)}, outputs=y)
    g.forward(outputs=z)
    with pytest.raises(gd.GraphError, match=r"'y'.*is stale: its input 'drop' was recomputed by a later forward"):
        g.backward(y)
    value = g.forward(outputs=y)                 # the fix the message names
    g.backward(y)
    mask = d.inputs[1].value
    np.testing.assert_allclose(W.grad, 2.0 * mask)
    np.testing.assert_allclose(value, 2.0 * mask.sum())


def test_a_redrawn_mask_read_by_y_directly_is_named():
    """When y's own op reads the mask (not recomputed by the other forward), the message says it was redrawn."""
    g, x, W, d, y, z = dropout_graph()
    mask = d.inputs[1]
    g.forward({x: np.ones(50)}, outputs=y)
    g.forward(outputs=mask)
    with pytest.raises(gd.GraphError, match=r"'drop' \(multiply\), which 'y' depends on, is stale: its input "
                                            r"'drop_mask' drew new random numbers in a later forward"):
        g.backward(y)


def test_a_forward_that_keeps_the_masks_is_not_stale():
    """resample=False keeps the masks: nothing y reads changed, so backward(y) runs."""
    g, x, W, d, y, z = dropout_graph()
    g.forward({x: np.ones(50)}, outputs=y)
    g.forward(outputs=z, resample=False)
    g.backward(y)
    np.testing.assert_allclose(W.grad, 2.0 * d.inputs[1].value)


# --- staleness follows what y reads, not what the last forward fed ----------------------------------------
def test_a_forward_that_fed_only_an_input_y_does_not_read_is_not_stale():
    """A forward of z with a new u recomputes the node y shares with z, from the same W: y is not stale."""
    g = gd.Graph(dtype="float64")
    x, u = g.input("x", (3,)), g.input("u", (3,))
    W = g.param("W", np.array([1.0, 2.0, 3.0]))
    h = W * 2.0                                  # shared by y and z
    y = gd.sum(gd.tanh(h * x))
    z = gd.sum(h * u)
    g.forward({x: np.ones(3), u: np.ones(3)}, outputs=y)
    g.forward({u: np.full(3, 2.0)}, outputs=z)
    g.backward(y)
    np.testing.assert_allclose(W.grad, 2.0 * (1 - np.tanh(2.0 * W.value) ** 2))
    g.forward({x: np.full(3, 5.0)}, outputs=z)   # but a new x, which y reads, still is
    with pytest.raises(gd.GraphError, match=r"its input 'x' was fed a new value"):
        g.backward(y)


@needs_torch
@pytest.mark.parametrize("variant", VARIANTS)
def test_hvp_between_forward_and_backward_leaves_backward_valid(variant):
    """gd.hvp runs a forward of its own graph (recomputing y's inputs from the same values); backward(y)
    afterwards gives the same gradient as before it."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (3,))
    W = g.param("W", np.array([1.0, 2.0, 3.0]))
    y = gd.sum(gd.tanh(x * W) ** 2)
    g.forward({x: np.array([0.5, -1.0, 0.25])}, outputs=y)
    g.backward(y, variant)
    want = W.grad.copy()
    hv = gd.hvp(y, W, np.ones(3), variant)
    g.backward(y, variant)
    np.testing.assert_allclose(W.grad, want)
    Wt = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    xt = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64)
    gt, = torch.autograd.grad((torch.tanh(xt * Wt) ** 2).sum(), Wt, create_graph=True)
    hvt, = torch.autograd.grad(gt.sum(), Wt)
    np.testing.assert_allclose(want, gt.detach().numpy())
    np.testing.assert_allclose(hv, hvt.numpy())


ACTIONS = ["forward y", "forward z", "forward z, keep masks", "feed u, forward w", "feed x, forward w",
           "assign W"]


@pytest.mark.parametrize("seed", range(40))
def test_partial_forwards_in_any_order_refuse_exactly_when_y_read_something_that_changed(seed):
    """Random sequences of partial forwards (one sharing y's dropout mask, one sharing a node of W but not
    the mask), feeds and assignments: backward(y) refuses exactly when a feed, assignment or new mask that y
    reads came after y's last forward; otherwise it gives the gradient for the current x, W and mask."""
    rng = np.random.default_rng(seed)
    g = gd.Graph(dtype="float64", seed=seed)
    x, u = g.input("x", (6,)), g.input("u", (6,))
    W = g.param("W", rng.standard_normal(6))
    h = W * 3.0                                   # shared by y and w
    d = gd.dropout(x * W, 0.5)                    # shared by y and z
    y = gd.sum(d * 2.0) + gd.sum(h * x)
    z = gd.sum(d * 3.0)
    w = gd.sum(h * u)
    g.forward({x: rng.standard_normal(6), u: rng.standard_normal(6)}, outputs=[y, w])
    current = True
    for k in rng.integers(0, len(ACTIONS), size=rng.integers(1, 6)):
        action = ACTIONS[k]
        if action == "forward y":
            g.forward(outputs=y)
            current = True
        elif action == "forward z":
            g.forward(outputs=z)
            current = False                       # a new mask
        elif action == "forward z, keep masks":
            g.forward(outputs=z, resample=False)
        elif action == "feed u, forward w":
            g.forward({u: rng.standard_normal(6)}, outputs=w)
        elif action == "feed x, forward w":
            g.forward({x: rng.standard_normal(6)}, outputs=w)
            current = False
        else:
            W.value = rng.standard_normal(6)
            current = False
    variant = VARIANTS[seed % 2]
    if not current:
        with pytest.raises(gd.GraphError, match="is stale"):
            g.backward(y, variant)
        return
    g.backward(y, variant)
    mask = d.inputs[1].value
    np.testing.assert_allclose(W.grad, 2.0 * x.value * mask + 3.0 * x.value)
    np.testing.assert_allclose(y.value, np.sum(2.0 * x.value * W.value * mask) + np.sum(3.0 * W.value * x.value))


# --- one graph, two threads -----------------------------------------------------------------------------------
class _Spy:
    """Delegates to the graph's lock, and says when thread `who` is about to take it."""

    def __init__(self, lock, who, arrived):
        self.lock, self.who, self.arrived = lock, who, arrived

    def __enter__(self):
        if threading.current_thread() is self.who[0]:
            self.arrived.set()
        return self.lock.__enter__()

    def __exit__(self, *exc):
        return self.lock.__exit__(*exc)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_forward_from_another_thread_waits_for_a_running_backward(variant, monkeypatch):
    """Thread B's forward, started while thread A's backward runs, does not reach A's values: A gets the
    gradient of its own batch. The interleaving is forced: A's backward waits (in its trace) until B has
    either finished its forward (without the graph's lock A would read B's values) or is taking the lock."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (3,))
    W = g.param("W", np.array([1.0, 2.0, 3.0]))
    y = gd.sum(gd.tanh(x * W))
    XA, XB = np.array([0.1, 0.2, 0.3]), np.array([3.0, -2.0, 1.0])
    g.forward({x: XA}, outputs=y)
    g.backward(y, variant)
    want = W.grad.copy()

    b_thread, b_reached = [None], threading.Event()
    monkeypatch.setattr(g, "lock", _Spy(g.lock, b_thread, b_reached))

    def run_b():
        g.forward({x: XB}, outputs=y)
        b_reached.set()                           # finished (only possible before: no lock)

    def in_backward(event):
        if b_thread[0] is None:
            b_thread[0] = threading.Thread(target=run_b)
            b_thread[0].start()
            assert b_reached.wait(timeout=60)

    g.forward({x: XA}, outputs=y)
    g.backward(y, variant, trace=in_backward)
    b_thread[0].join(timeout=60)
    assert not b_thread[0].is_alive()
    np.testing.assert_allclose(W.grad, want)
    np.testing.assert_allclose(x.value, XB)        # B's forward ran, after A's backward
    np.testing.assert_allclose(y.value, np.tanh(XB * W.value).sum())


def test_calls_nest_under_the_graph_lock():
    """The lock is re-entrant: a user holding it (to make forward + backward one step) can call the graph."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (3,))
    W = g.param("W", np.ones(3))
    y = gd.sum(x * W)
    with g.lock:
        g.forward({x: np.arange(3.0)}, outputs=y)
        g.backward(y)
        g.forward_backward({x: np.ones(3)}, [y], y)
        gd.hvp(y, W, np.ones(3))
    np.testing.assert_allclose(W.grad, np.ones(3))


# --- matmul with a 1-D operand on the nn path ---------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("trained", ["a", "b", "ab"])
@pytest.mark.parametrize("shapes", [((4, 3), (3,)), ((3,), (3, 4)), ((3,), (3,)), ((2, 4, 3), (3,)),
                                    ((3,), (2, 3, 4))], ids=str)
def test_forward_backward_through_matmul_with_a_1d_operand_matches_pytorch(shapes, trained, variant):
    """a @ b with a 1-D operand (linear regression X @ w, w of shape (3,)) trains under forward_backward,
    with PyTorch's gradients, whichever operand is trained (the other is an input, whose value the VJP of
    the trained one reads and releases nothing else)."""
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    g = gd.Graph(dtype="float64")
    a = g.param("a", A) if "a" in trained else g.input("a", A.shape)
    b = g.param("b", B) if "b" in trained else g.input("b", B.shape)
    loss = gd.sum(gd.tanh(a @ b))
    feeds = {n: v for n, v in ((a, A), (b, B)) if n.kind == "input"}
    got, = g.forward_backward(feeds, [loss], loss, variant)
    at, bt = (torch.tensor(v, requires_grad=True) for v in (A, B))
    lt = torch.tanh(at @ bt).sum()
    lt.backward()
    np.testing.assert_allclose(got, lt.item())
    for n, t in ((a, at), (b, bt)):
        if n.kind == "param":
            np.testing.assert_allclose(n.grad, t.grad.numpy())


@needs_torch
def test_linear_regression_with_a_vector_of_weights_under_forward_backward():
    """A user's snippet: mean squared error of X @ w - t, w of shape (3,)."""
    g = gd.Graph(dtype="float64")
    X, t = g.input("X", (4, 3)), g.input("t", (4,))
    w = g.param("w", np.array([0.5, -1.0, 2.0]))
    r = X @ w - t
    loss = gd.mean(r * r)
    Xv, tv = np.arange(12.0).reshape(4, 3), np.ones(4)
    g.forward_backward({X: Xv, t: tv}, [loss], loss)
    wt = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    ((torch.tensor(Xv) @ wt - torch.tensor(tv)) ** 2).mean().backward()
    np.testing.assert_allclose(w.grad, wt.grad.numpy())


# --- values a float run left ---------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("run", ["forward", "forward_backward"])
def test_gelu_of_a_0d_node_after_that_node_ran_on_python_floats(run):
    """A 0-d float64 output computed alone runs on Python floats; an output of arrays that reads it (through
    gelu's NumPy kernel, which needs .shape) still runs, and its gradient is PyTorch's."""
    g = gd.Graph(dtype="float64")
    a = g.param("a", 0.5)
    s = a * 2.0                                  # 0-d float64: its forward alone runs on floats
    x = g.param("x", np.array([1.0, -2.0, 3.0]))
    y = gd.sum(gd.gelu(s) * x)
    g.forward(outputs=s)
    if run == "forward":
        g.forward(outputs=y)
        g.backward(y)
    else:
        g.forward_backward({}, [y], y)
    at = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    xt = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    (torch.nn.functional.gelu(at * 2.0) * xt).sum().backward()
    np.testing.assert_allclose(a.grad, at.grad.numpy())
    np.testing.assert_allclose(x.grad, xt.grad.numpy())


# --- a custom op whose forward breaks its own shape rule -----------------------------------------------------
@pytest.fixture
def doubled_rows():
    """An op that returns concat([x, x]) along axis 0 but declares x's shape (a broken shape rule),
    registered for one test (the op table's meta-test sees only the library's ops)."""
    @gd.op("doubled_rows")
    class DoubledRows:
        shape = gd.ops.registry.same_shape

        def forward(F, x):
            return F.concat([x, x], axis=0)

        def vjp(F, i, g, xs, out):
            return 2.0 * g
    try:
        yield DoubledRows
    finally:
        del gd.REGISTRY["doubled_rows"]


@pytest.mark.parametrize("run", ["forward", "forward_backward"])
@pytest.mark.parametrize("after", ["sum", "tanh", "matmul"])
def test_a_forward_that_breaks_its_shape_rule_is_a_shape_error_naming_the_op(run, after, doubled_rows):
    """The plain forward and forward_backward both raise ShapeError at the op, with the shape its rule
    declares and the shape its forward returned (forward_backward gave a raw NumPy error, or nothing)."""
    g = gd.Graph(dtype="float64")
    W = g.param("W", np.ones((2, 3)))
    h = doubled_rows(W, name="doubled")
    y = {"sum": lambda: gd.sum(h), "tanh": lambda: gd.sum(gd.tanh(h)), "matmul": lambda: gd.sum(h @ W.T)}[after]()
    msg = (r"forward: doubled_rows 'doubled' \(inputs: 'W' f64\[2,3\]\) returned shape \(4, 3\), but "
           r"its shape rule says \(2, 3\)")
    with pytest.raises(gd.ShapeError, match=msg):
        if run == "forward":
            g.forward(outputs=y)
        else:
            g.forward_backward({}, [y], y)
