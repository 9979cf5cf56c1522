"""Everyday nn use, written as the user's snippets: a Module called on arrays (a graph per input
shape, built once; the loss on a per-step Tape; loss.backward() sets p.grad), Module.save/load, and raw
graphs with a None batch axis (shapes re-inferred at feed time, plans kept per batch size)."""
import pathlib

import numpy as np
import pytest

import graphdiff as gd
from graphdiff import nn
from graphdiff.nn.serialization import CheckpointError


def reference_grads(model, X, Y):
    """The gradients of mean((model(X) - Y)^2) through the existing Program path (one hand-built graph)."""
    g = nn.new_graph(model)
    x, y = g.input("x", X.shape), g.input("y", Y.shape)
    prog = nn.Program(model, g, {"x": x, "y": y}, {"loss": gd.mean((model(x) - y) ** 2)})
    loss, = prog.run({"x": X, "y": Y}, backward="loss")
    return float(gd.to_numpy(loss)), [gd.to_numpy(p.grad) for p in model.parameters()]


def test_module_on_arrays_trains_like_pytorch(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((21, 3))
    Y = np.sin(X)
    model = nn.MLP(3, 16, activation="relu", std=0.5, rng=0, backend=backend, dtype="float64")
    opt = nn.AdamW(model.parameters(), lr=1e-2)
    sizes, losses = {}, []
    for epoch in range(3):
        for i in range(0, len(X), 8):                     # batches of 8, 8 and 5 rows
            xb, yb = X[i:i + 8], Y[i:i + 8]
            ref_loss, ref = reference_grads(model, xb, yb)
            out = model(xb)
            loss = gd.mean((out - yb) ** 2)
            loss.backward()
            assert float(loss) == pytest.approx(ref_loss, rel=1e-12)
            for p, want in zip(model.parameters(), ref):
                np.testing.assert_allclose(gd.to_numpy(p.grad), want, rtol=1e-10, atol=1e-14)
            opt.step()
            opt.zero_grad()
            losses.append(float(loss))
        programs = model._programs.programs               # test-only look at the cache
        sizes[epoch] = {key[0][0][0]: len(prog.graph) for key, prog in programs.items()}
    assert sorted(sizes[0]) == [(5, 3), (8, 3)]            # one graph per input shape ...
    assert sizes[0] == sizes[2]                            # ... that no step made bigger
    assert all(p.grad is None for p in model.parameters())
    assert losses[-1] < losses[0]


def test_module_on_arrays_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((6, 4)), rng.standard_normal((6, 2))
    model = nn.Linear(4, 2, rng=0, dtype="float64")
    loss = gd.mean((gd.tanh(model(X)) - Y) ** 2)
    loss.backward()
    W = torch.tensor(model.weight.numpy(), requires_grad=True)
    b = torch.tensor(model.bias.numpy(), requires_grad=True)
    ref = torch.mean((torch.tanh(torch.tensor(X) @ W + b) - torch.tensor(Y)) ** 2)
    ref.backward()
    np.testing.assert_allclose(model.weight.grad, W.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(model.bias.grad, b.grad.numpy(), rtol=1e-12)


def test_backward_after_a_newer_call_of_the_same_shape_replays_the_first():
    model = nn.Linear(3, 1, rng=0, dtype="float64")
    X = np.ones((4, 3))
    first = gd.sum(model(X) ** 2)
    model(2 * X)                                           # same shape: the cached graph now holds these values
    first.backward()                                       # so the first call's values are computed again
    np.testing.assert_allclose(model.weight.grad, 2 * X.T @ (X @ model.weight.numpy() + model.bias.numpy()))
    model(3 * X)
    with pytest.raises(gd.GraphError, match="ran again.*since this output's backward ran"):
        first.backward()
    other = gd.sum(model(np.ones((2, 3))))                 # another shape, another graph: the first is intact
    model(np.ones((5, 3)))
    other.backward()
    np.testing.assert_allclose(model.weight.grad, np.full((3, 1), 2.0))


def test_module_save_load_round_trip(tmp_path):
    X = np.random.default_rng(2).standard_normal((5, 3))
    model = nn.MLP(3, 8, rng=0)
    path = str(tmp_path / "mlp.npz")
    model.save(path)
    with np.load(path, allow_pickle=False) as z:           # plain arrays and a JSON entry: no pickle
        assert "c_fc.weight" in z.files
    again = nn.MLP(3, 8, rng=1).load(path)
    np.testing.assert_array_equal(gd.to_numpy(again(X).value), gd.to_numpy(model(X).value))
    with pytest.raises(CheckpointError, match="holds a MLP, not a Linear"):
        nn.Linear(3, 8).load(path)
    with pytest.raises(CheckpointError, match="mlp.npz.*'c_fc.weight' has shape"):
        nn.MLP(3, 4).load(path)


def test_module_on_arrays_rejects_several_outputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x):
            return self.lin(x), x

    with pytest.raises(TypeError, match="Two.forward returned tuple; a module called on arrays must return one"):
        Two()(np.ones((1, 2)))


def test_raw_graph_with_a_batch_axis_that_varies():
    g = gd.Graph(dtype="float64")
    x = g.input("x", shape=(None, 3))
    y = g.input("y", shape=(None, 1))
    W = g.param("W", np.ones((3, 1)))
    loss = gd.mean((x @ W - y) ** 2)
    orders = {}
    rng = np.random.default_rng(3)
    for B in (4, 7, 4):
        X, Y = rng.standard_normal((B, 3)), rng.standard_normal((B, 1))
        g.forward({x: X, y: Y})
        g.backward(loss)
        np.testing.assert_allclose(W.grad, 2 * X.T @ (X @ np.ones((3, 1)) - Y) / B, rtol=1e-12)
        assert x.shape == (B, 3) and g["matmul"].shape == (B, 1)
        orders.setdefault(B, []).append(gd.topological_order(g, [loss]))
    assert orders[4][0] is orders[4][1]                   # the plans of batch 4 were kept while 7 ran
    with pytest.raises(gd.GraphError, match=r"no value for input 'y' f64\[2,1\]"):   # y's old rows are gone
        g.forward({x: np.ones((2, 3))}, outputs=loss)


def test_batch_axis_refusals():
    g = gd.Graph()
    with pytest.raises(gd.ShapeError, match=r"input 'z': shape \(3, None\): only the leading \(batch\) axis"):
        g.input("z", shape=(3, None))
    x = g.input("x", shape=(None, 4))
    with pytest.raises(gd.ShapeError, match=r"input 'x' expects shape \(None, 4\).*got an array of shape \(4,\)"):
        g.forward({x: np.ones(4)})
    fixed = g.input("f", shape=(3, 4))
    s = x + fixed                                          # fine while the batch is 1 or 3 (NumPy broadcasting)
    with pytest.raises(gd.ShapeError, match=r"batch size 5 \(built for 1\): add '.*'"):
        g.forward({x: np.ones((5, 4))}, outputs=s)
    h = gd.dropout(g.input("a", shape=(None, 2)), 0.5)
    with pytest.raises(gd.ShapeError, match="dropout_mask '.*' was built with the fixed shape"):
        g.forward({"a": np.ones((3, 2))}, outputs=h)
    with pytest.raises(gd.GraphError, match="gradients: input 'x' has a None batch axis"):
        g.gradients(gd.sum(x), [x])


README = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()


def readme_block(heading):
    return README.split(heading, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture
def regression_data():
    """The X and Y of the README's "Training a raw graph", which the next sections continue."""
    env = {}
    exec(readme_block("### Training a raw graph").split("g = gd.Graph")[0], env)
    return env


def test_readme_batch_size_that_varies_runs_as_written(regression_data):
    env = dict(regression_data)
    exec(readme_block("### A batch size that varies"), env)
    assert env["x"].shape == (56, 3) and env["W"].grad.shape == (3, 1)
    assert float(env["loss"]) < float(np.mean(env["Y"][200:] ** 2))      # the steps moved W downhill


def test_readme_modules_without_ceremony_runs_as_written(regression_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = dict(regression_data)
    exec(readme_block("### Modules without ceremony"), env)
    model, same = env["model"], env["same"]
    assert float(env["loss"]) < 0.25 * float(np.mean(env["Y"][200:] ** 2))
    assert len(model._programs.programs) == 2
    for a, b in zip(model.parameters(), same.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
