"""Gradients as graph nodes (both variants), Hessian-vector products, Hessians and forward mode, checked
against the numeric backward, PyTorch's double backward and torch.func.jvp, and finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphdiff as gd
from graphdiff.lm import GPT, make_batch

from .ops.optable import OPS
from .ops.test_ops import build
from .oracles import needs_torch, torch

GRAD_SPECS = [pytest.param(s, id=s.id) for s in OPS if s.grad]


# --- gradient nodes equal the numeric backward, op by op --------------------------------------------------------
@pytest.mark.parametrize("spec", GRAD_SPECS)
@settings(max_examples=6)
@given(data=st.data())
def test_gradient_nodes_equal_numeric_gradients(spec, backend, data):
    g, leaves, y, arrays, attrs, seed = build(spec, backend, data)
    params = [n for n in leaves if n.kind == "param"]
    for variant in gd.VARIANTS:
        numeric = {n: gd.to_numpy(v).copy() for n, v in g.backward(y, variant=variant, seed=seed).items()}
        nodes = g.gradients(y, params, variant=variant, seed=seed)
        assert all(d.scope.split("/")[0] == "grad" and d.shape == n.shape for d, n in zip(nodes, params))
        values = g.forward(outputs=nodes, resample=False)
        for n, v in zip(params, values):
            np.testing.assert_allclose(gd.to_numpy(v), numeric[n], rtol=1e-10, atol=1e-13,
                                       err_msg=f"{spec.id} {variant}: d/d{n.name}")


@pytest.mark.parametrize("spec", GRAD_SPECS)
@settings(max_examples=4)
@given(data=st.data())
def test_jvp_is_the_transpose_of_the_vjp(spec, data):
    """<J u, v> = <u, J^T v> for random u (tangents of the params) and v (cotangent of the output)."""
    g, leaves, y, arrays, attrs, _ = build(spec, "numpy", data)
    params = [n for n in leaves if n.kind == "param"]
    rng = np.random.default_rng(7)
    us = [rng.standard_normal(p.shape) for p in params]
    v = rng.standard_normal(y.shape)
    ju = gd.jvp(y, params, us)
    jtv = g.backward(y, wrt=params, seed=v)
    lhs = float(np.sum(ju * v))
    rhs = sum(float(np.sum(u * jtv[p])) for u, p in zip(us, params))
    assert lhs == pytest.approx(rhs, rel=max(1e-9, spec.rtol if spec.rtol > 1e-5 else 0), abs=1e-12), spec.id


# --- the backward graph has the shape each variant promises ---------------------------------------------------
@pytest.mark.parametrize("variant, ops", [("children", ["multiply", "multiply", "add_n", "add_n"]),
                                          ("parents", ["multiply", "multiply", "add", "add"])])
def test_backward_graph_of_b_eq_a_plus_a_c_eq_b_times_b(variant, ops):
    """Hand count: dc/db = c's two multiply VJPs (b * g each); the add's VJPs pass the adjoint through.
    children: one add_n per node over its children's contributions (db, then da = db + db);
    parents: an add per contribution after the first (db += ..., da += ...)."""
    g = gd.Graph(dtype="float64")
    a = g.param("a", 1.5)
    b = a + a
    c = b * b
    before = len(g.nodes)
    da = g.gradients(c, a, variant=variant)
    new = g.nodes[before:]
    assert [n.op for n in new if n.op is not None] == ops
    assert [n.kind for n in new if n.op is None] == ["constant"]          # the seed, dc/dc = 1
    assert all(n.scope == "grad" for n in new)
    assert float(g.forward(outputs=da)) == 8 * 1.5                      # c = 4 a^2


def test_gradients_of_unreached_nodes_are_zero_and_errors_are_typed():
    g = gd.Graph(dtype="float64")
    a, w = g.param("a", np.ones(2)), g.param("w", np.ones(3))
    y = gd.sum(a * a)
    assert np.array_equal(g.forward(outputs=g.gradients(y, w)), np.zeros(3))
    with pytest.raises(gd.GraphError, match=r"gradients: 'multiply_1' has shape \(2,\); pass seed="):
        g.gradients(a * a, a)
    with pytest.raises(ValueError, match=r"gradients: unknown variant 'sideways'"):
        g.gradients(y, a, variant="sideways")


# --- second derivatives against PyTorch ------------------------------------------------------------------------
def torch_hvp(fn, params, vs):
    ts = [torch.tensor(p, requires_grad=True) for p in params]
    grads = torch.autograd.grad(fn(*ts), ts, create_graph=True)
    dot = sum((gr * torch.tensor(v)).sum() for gr, v in zip(grads, vs))
    return [h.detach().numpy() for h in torch.autograd.grad(dot, ts)]


@needs_torch
@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_scalar_example_second_derivatives(variant):
    """micrograd's README expression: d2g/da2 and d2g/db2 against PyTorch double backward."""
    def expr(F, a, b):
        c = a + b
        d = a * b + b ** 3
        c = c + c + 1
        c = c + 1 + c + (-a)
        d = d + d * 2 + F.relu(b + a)
        d = d + 3 * d + F.relu(b - a)
        e = c - d
        f = e ** 2
        h = f / 2.0
        h = h + 10.0 / f
        return h
    g = gd.Graph(dtype="float64")
    a, b = g.param("a", -4.0), g.param("b", 2.0)
    out = expr(gd, a, b)
    g.forward(outputs=out)
    want = torch_hvp(lambda a, b: expr(torch, a, b), [np.float64(-4.0), np.float64(2.0)], [1.0, 0.0])
    got = gd.hvp(out, [a, b], [1.0, 0.0], variant=variant)
    np.testing.assert_allclose([float(v) for v in got], [float(w) for w in want], rtol=1e-10)
    H = gd.hessian(out, a, variant=variant)
    assert float(H) == pytest.approx(float(want[0]), rel=1e-10)


def lecture_mlp(F, x, y, alpha, beta):
    """The lecture's network: a = alpha x, z = sigmoid(a), b = beta z, y_hat = softmax(b), J = CE."""
    a = alpha @ x
    z = F.sigmoid(a)
    b = beta @ z
    y_hat = F.softmax(b, -1) if F is gd else torch.softmax(b, -1)
    return -(y * F.log(y_hat)).sum()


@needs_torch
@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_lecture_mlp_hvp_and_jvp_match_pytorch(variant):
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal(4), np.eye(3)[1]
    A, B = rng.standard_normal((5, 4)), rng.standard_normal((3, 5))
    VA, VB = rng.standard_normal((5, 4)), rng.standard_normal((3, 5))
    g = gd.Graph(dtype="float64")
    x, y = g.input("x", (4,)), g.input("y", (3,))
    alpha, beta = g.param("alpha", A), g.param("beta", B)
    J = lecture_mlp(gd, x, y, alpha, beta)
    g.forward({x: X, y: Y}, outputs=J)
    tx, ty = torch.tensor(X), torch.tensor(Y)
    want = torch_hvp(lambda a, b: lecture_mlp(torch, tx, ty, a, b), [A, B], [VA, VB])
    got = gd.hvp(J, [alpha, beta], [VA, VB], variant=variant)
    for h, w in zip(got, want):
        np.testing.assert_allclose(h, w, rtol=1e-9, atol=1e-12)
    # forward mode on the hidden layer's output: torch.func.jvp
    z = gd.sigmoid(alpha @ x)
    g.forward(outputs=z)
    _, tz = torch.func.jvp(lambda a: torch.sigmoid(a @ tx), (torch.tensor(A),), (torch.tensor(VA),))
    np.testing.assert_allclose(gd.jvp(z, alpha, VA, variant=variant), tz.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_hvp_is_the_finite_difference_of_gradients(variant):
    rng = np.random.default_rng(1)
    g = gd.Graph(dtype="float64")
    W = g.param("W", rng.standard_normal((3, 3)))
    x = g.input("x", (2, 3))
    loss = gd.mean(gd.gelu(gd.layer_norm(x @ W, g.constant(np.ones(3)), g.constant(np.zeros(3)))) ** 2.0)
    X, V = rng.standard_normal((2, 3)), rng.standard_normal((3, 3))
    g.forward({x: X}, outputs=loss)
    hv = gd.hvp(loss, W, V, variant=variant)
    W0, eps = W.value.copy(), 1e-5

    def grad_at(w):
        W.value = w
        g.forward(outputs=loss)
        return gd.to_numpy(g.backward(loss, wrt=W, variant=variant)[W]).copy()
    fd = (grad_at(W0 + eps * V) - grad_at(W0 - eps * V)) / (2 * eps)
    np.testing.assert_allclose(hv, fd, rtol=1e-6, atol=1e-9)


@needs_torch
@pytest.mark.slow
@pytest.mark.parametrize("variant", gd.VARIANTS)
def test_tiny_gpt_hvp_matches_pytorch_double_backward(variant):
    from .lm.torch_ref import gpt_loss_of
    cfg = dict(vocab_size=9, block_size=6, n_layer=1, n_head=2, n_embd=8, norm="pre", pos="learned", pad_id=0,
               seed=5)
    m = GPT(dtype="float64", **cfg)
    rng = np.random.default_rng(2)
    idx, targets, mask = make_batch([rng.integers(1, 9, n) for n in (7, 4)], 6, 0)
    prog = m.programs(("loss", *idx.shape))
    prog.run({"idx": idx, "targets": targets, "key_mask": mask}, ("loss",))
    loss = prog.outputs["loss"]
    names = [n for n, _ in m.named_parameters()]
    nodes = {p: node for node, p in prog.bindings}
    params = [nodes[p] for _, p in m.named_parameters()]
    vs = [rng.standard_normal(p.shape) for p in params]
    got = gd.hvp(loss, params, vs, variant=variant)

    state = m.state_dict()
    P = {k: torch.tensor(v, requires_grad=True) for k, v in state.items()}
    tloss, _ = gpt_loss_of(P, m.config, idx, targets, mask)
    grads = torch.autograd.grad(tloss, [P[n] for n in names], create_graph=True)
    dot = sum((gr * torch.tensor(v)).sum() for gr, v in zip(grads, vs))
    want = torch.autograd.grad(dot, [P[n] for n in names])
    for n, h, w in zip(names, got, want):
        np.testing.assert_allclose(gd.to_numpy(h), w.numpy(), rtol=1e-7, atol=1e-10, err_msg=n)


def test_readme_backward_graph_block_runs_after_the_first_graph():
    import pathlib
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    first = text.split("## A first graph", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    block = text.split("### The backward pass as a graph", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    scope = {}
    exec(first + block, scope)
    g, W, loss = scope["g"], scope["W"], scope["loss"]
    dW = scope["dW"]
    np.testing.assert_allclose(g.forward(outputs=dW), g.backward(loss, wrt=W)[W], rtol=1e-12)
