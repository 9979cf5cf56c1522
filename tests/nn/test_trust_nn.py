"""Trust in the nn layer: tied parameters counted once, checkpoints that load all or nothing, paths as
os.PathLike, models called on array-likes, one model called twice in a loss, parameters in expressions, and
Nodes that NumPy can read. Gradients are checked against PyTorch (CPU) in float64."""
import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphdiff as gd
from graphdiff import nn
from graphdiff.nn import serialization
from graphdiff.nn.serialization import CheckpointError

from ..oracles import needs_torch, torch


def t(a):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


# --- tied parameters -------------------------------------------------------------------------------------
class Tied(nn.Module):
    """Two Linear layers sharing one weight (a square matrix), as tied embeddings do."""

    def __init__(self):
        super().__init__(dtype="float64")
        self.a = nn.Linear(3, 3, rng=0, dtype="float64")
        self.b = nn.Linear(3, 3, rng=1, dtype="float64")
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(gd.tanh(self.a(x)))


def torch_tied(model, X):
    W, ba, bb = t(model.a.weight.numpy()), t(model.a.bias.numpy()), t(model.b.bias.numpy())
    out = torch.tanh(torch.tensor(X) @ W + ba) @ W + bb
    return out, (W, ba, bb)


def test_tied_parameter_is_listed_once_under_its_first_name():
    model = Tied()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["a.weight", "a.bias", "b.bias"]
    assert len(model.parameters()) == 3
    assert model.num_parameters() == 9 + 3 + 3
    assert list(model.state_dict()) == names


@needs_torch
def test_tied_weight_gradient_is_the_sum_of_both_uses_as_in_pytorch():
    model = Tied()
    X = np.random.default_rng(0).standard_normal((4, 3))
    loss = gd.sum(model(X) ** 2)
    loss.backward()
    out, (W, ba, bb) = torch_tied(model, X)
    torch.sum(out ** 2).backward()
    np.testing.assert_allclose(model.a.weight.grad, W.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(model.b.bias.grad, bb.grad.numpy(), rtol=1e-12)


@needs_torch
@pytest.mark.parametrize("make", [lambda m: nn.SGD(m.parameters() + m.parameters(), lr=0.1),
                                  lambda m: nn.SGD(m, lr=0.1),
                                  lambda m: nn.AdamW(list(m.parameters()) * 2, lr=0.1)],
                         ids=["SGD-list-twice", "SGD-module", "AdamW-list-twice"])
def test_optimizer_moves_a_tied_or_repeated_parameter_once(make):
    model = Tied()
    X = np.random.default_rng(1).standard_normal((4, 3))
    out, (W, ba, bb) = torch_tied(model, X)
    opt_t = (torch.optim.SGD([W, ba, bb], lr=0.1) if "SGD" in repr(make(model))
             else torch.optim.AdamW([W, ba, bb], lr=0.1))
    opt = make(model)
    assert len(opt.params) == 3
    gd.sum(model(X) ** 2).backward()
    torch.sum(out ** 2).backward()
    opt.step()
    opt_t.step()
    np.testing.assert_allclose(model.a.weight.numpy(), W.detach().numpy(), rtol=1e-12)
    assert model.b.weight is model.a.weight


@needs_torch
def test_clip_grad_norm_counts_a_tied_or_repeated_parameter_once():
    model = Tied()
    X = np.random.default_rng(2).standard_normal((4, 3))
    gd.sum(model(X) ** 2).backward()
    out, ws = torch_tied(model, X)
    torch.sum(out ** 2).backward()
    want = torch.nn.utils.clip_grad_norm_(list(ws), 0.5)
    got = nn.clip_grad_norm(model.parameters() * 2, 0.5)
    assert float(got) == pytest.approx(float(want), rel=1e-12)
    np.testing.assert_allclose(model.a.weight.grad, ws[0].grad.numpy(), rtol=1e-6)


def test_optimizer_over_raw_graph_params_listed_twice_steps_once():
    g = gd.Graph(dtype="float64")
    w = g.param("w", np.array([1.0, 2.0]))
    loss = gd.sum(w * w)
    g.forward()
    g.backward(loss)
    nn.SGD(g.params() * 2, lr=0.25).step()
    np.testing.assert_allclose(w.value, [0.5, 1.0])


def test_save_load_keeps_tied_weights_tied(tmp_path):
    model = Tied()
    path = tmp_path / "tied.npz"
    model.save(str(path))
    with np.load(path) as z:
        assert sorted(k for k in z.files if k != "__meta__") == ["a.bias", "a.weight", "b.bias"]
    again = Tied()
    again.a.weight.data = again.a.weight.data * 0
    again.load(str(path))
    assert again.b.weight is again.a.weight
    np.testing.assert_array_equal(again.b.weight.numpy(), model.a.weight.numpy())
    # a state holding the tied weight under both names (as PyTorch's state_dict does) loads too
    state = dict(model.state_dict(), **{"b.weight": model.a.weight.numpy()})
    Tied().load_state_dict(state)


# --- checkpoints load all or nothing -----------------------------------------------------------------------
class Pair(nn.Module):
    def __init__(self, hidden=4, seed=0):
        super().__init__(dtype="float64")
        self.fc1 = nn.Linear(3, 3, rng=seed, dtype="float64")
        self.fc2 = nn.Linear(3, hidden, rng=seed + 1, dtype="float64")


def test_failed_load_leaves_the_module_as_it_was(tmp_path):
    path = str(tmp_path / "pair.npz")
    Pair(hidden=5, seed=7).save(path)              # fc1 fits, fc2 (found later) does not
    model = Pair(hidden=4)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="'fc2.weight' has shape"):
        model.load(path)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def rewrite(path, meta=None, **arrays):
    """The checkpoint at path with some arrays replaced (or its metadata), written as save writes it."""
    old, old_meta = serialization.load(path)
    old.update(arrays)
    serialization.save(path, old, old_meta if meta is None else meta)


def test_load_refuses_complex_arrays_into_real_params(tmp_path):
    path = str(tmp_path / "lin.npz")
    model = nn.Linear(2, 2, rng=0, dtype="float64")
    model.save(path)
    rewrite(path, weight=np.ones((2, 2)) * (1 + 2j))
    before = model.weight.numpy().copy()
    with pytest.raises(CheckpointError, match="'weight'.*complex"):
        model.load(path)
    np.testing.assert_array_equal(model.weight.numpy(), before)
    with pytest.raises(gd.DTypeError, match="'weight'.*complex"):
        model.load_state_dict({"weight": np.ones((2, 2), complex), "bias": np.zeros(2)})


def test_load_refuses_text_arrays_and_metadata_that_is_not_an_object(tmp_path):
    path = str(tmp_path / "lin.npz")
    model = nn.Linear(2, 2, rng=0, dtype="float64")
    model.save(path)
    rewrite(path, bias=np.array(["a", "b"]))
    with pytest.raises(CheckpointError, match="'bias'.*text"):
        model.load(path)
    model.save(path)
    rewrite(path, meta=["not", "an", "object"])
    with pytest.raises(CheckpointError, match="'metadata'.* is a JSON list, not an object"):
        model.load(path)


def test_module_save_and_load_take_pathlib_paths(tmp_path):
    model = nn.Linear(2, 2, rng=0, dtype="float64")
    path = tmp_path / "lin.npz"
    model.save(path)
    assert json.loads((tmp_path / "lin.json").read_text())["class"] == "Linear"
    again = nn.Linear(2, 2, rng=1, dtype="float64").load(path)
    np.testing.assert_array_equal(again.weight.numpy(), model.weight.numpy())
    arrays, meta = serialization.load(path)
    assert meta["class"] == "Linear"
    with pytest.raises(CheckpointError, match="lin2.npz' does not exist"):
        model.load(tmp_path / "lin2.npz")


# --- a save killed mid-write ------------------------------------------------------------------------------
KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from graphdiff.nn import serialization
    def savez(f, **arrays):
        f.write(b"half a file")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    np.savez = savez
    serialization.save(sys.argv[1], {"w": np.ones(3)}, {"format": "test"})
""")


def temps(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


def test_next_save_removes_the_temporary_file_a_killed_save_left(tmp_path):
    path = tmp_path / "ckpt.npz"
    run = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path)], capture_output=True)
    assert run.returncode == -signal.SIGKILL
    assert len(temps(tmp_path)) == 1 and not path.exists()
    serialization.save(str(path), {"w": np.zeros(3)}, {"format": "test"})
    assert temps(tmp_path) == []
    arrays, meta = serialization.load(str(path))
    np.testing.assert_array_equal(arrays["w"], np.zeros(3))


def test_save_leaves_the_temporary_file_of_a_live_writer_alone(tmp_path):
    import fcntl
    path = tmp_path / "ckpt.npz"
    live = tmp_path / ".tmp-ckpt.npz-writing"
    with open(live, "wb") as f:                 # another writer, still writing: it holds the lock
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        serialization.save(str(path), {"w": np.zeros(3)}, {"format": "test"})
        assert live.exists()


# --- models called on arrays: dtypes and array-likes ---------------------------------------------------------
def test_model_called_on_an_int_array_says_the_dtype_and_the_fix():
    model = nn.Linear(3, 2, rng=0)
    fix = (r"argument 0 holds int64 data \(shape \(2, 3\)\) where the model computes with floats; "
           r"pass X\.astype\(np\.float32\)")
    with pytest.raises(gd.DTypeError, match=fix) as e:
        model(np.ones((2, 3), dtype=np.int64))
    assert "hashable" not in str(e.value)
    with pytest.raises(TypeError, match="keyword options must be hashable"):
        nn.Dropout(0.5)(np.ones((2, 3)), unused=[1])


def test_model_called_on_nested_lists_like_numpy():
    model = nn.Linear(3, 2, rng=0, dtype="float64")
    want = np.array([[1.0, 2.0, 3.0]]) @ model.weight.numpy() + model.bias.numpy()
    np.testing.assert_allclose(model([[1, 2, 3]]).numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(model([[1.0, 2.0, 3.0]]).numpy(), want, rtol=1e-12)
    emb = nn.Embedding(5, 2, rng=0, dtype="float64")
    np.testing.assert_array_equal(emb([[1, 4]]).numpy(), emb.weight.numpy()[[[1, 4]]])


# --- one model twice in a loss; parameters in expressions --------------------------------------------------
def torch_linear(model):
    return t(model.weight.numpy()), t(model.bias.numpy())


@needs_torch
def test_one_model_called_twice_in_one_loss_matches_pytorch():
    model = nn.Linear(3, 2, rng=0, dtype="float64")
    X = np.random.default_rng(3).standard_normal((4, 3))
    loss = gd.mean(model(X) - model(X * 2) ** 2)
    loss.backward()
    W, b = torch_linear(model)
    Xt = torch.tensor(X)
    ref = torch.mean((Xt @ W + b) - (2 * Xt @ W + b) ** 2)
    ref.backward()
    assert float(loss) == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(model.weight.grad, W.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(model.bias.grad, b.grad.numpy(), rtol=1e-12)


@needs_torch
def test_two_calls_of_other_shapes_and_three_calls_in_one_loss():
    model = nn.MLP(3, 5, activation="relu", std=0.5, rng=0, dtype="float64")
    rng = np.random.default_rng(4)
    X, Z = rng.standard_normal((4, 3)), rng.standard_normal((2, 3))
    loss = gd.sum(model(X) ** 2) + gd.sum(model(Z)) * gd.mean(model(X + 1))
    loss.backward()
    W1, b1 = torch_linear(model.c_fc)
    W2, b2 = torch_linear(model.c_proj)

    def f(A):
        return torch.relu(torch.tensor(A) @ W1 + b1) @ W2 + b2
    ref = torch.sum(f(X) ** 2) + torch.sum(f(Z)) * torch.mean(f(X + 1))
    ref.backward()
    assert float(loss) == pytest.approx(ref.item(), rel=1e-12)
    for p, want in zip(model.parameters(), (W1, b1, W2, b2)):
        np.testing.assert_allclose(p.grad, want.grad.numpy(), rtol=1e-11)


class Dropped(nn.Module):
    def __init__(self):
        super().__init__(dtype="float64")
        self.lin = nn.Linear(3, 3, rng=0, dtype="float64")
        self.drop = nn.Dropout(0.5, dtype="float64")

    def forward(self, x):
        return self.drop(self.lin(x))


def test_two_calls_with_dropout_use_each_calls_own_mask():
    model = Dropped()
    X = np.random.default_rng(5).standard_normal((6, 3))
    a, b = model(X), model(X)                  # one cached graph, two runs, two masks
    masks = [(a.numpy() != 0), (b.numpy() != 0)]
    assert not np.array_equal(masks[0], masks[1])
    gd.sum(a * 3.0 - b).backward()
    want = X.T @ (3.0 * masks[0] * 2 - masks[1] * 2)
    np.testing.assert_allclose(model.lin.weight.grad, want, rtol=1e-12)


@pytest.mark.parametrize("make", [nn.SGD, nn.AdamW], ids=["SGD-new-arrays", "AdamW-in-place"])
def test_replay_after_an_optimizer_step_is_refused(make):
    model = nn.Linear(3, 2, rng=0, dtype="float64")
    X = np.ones((4, 3))
    opt = make(model, lr=0.1)
    gd.sum(model(X)).backward()
    opt.step()                                  # AdamW: the parameters are views of its flat buffer from now on
    data = model.weight.data
    first = gd.sum(model(X))
    gd.sum(model(2 * X)).backward()
    opt.step()
    assert (model.weight.data is data) == (make is nn.AdamW)   # AdamW updated it in place
    with pytest.raises(gd.GraphError, match="parameters changed.*call backward before the step"):
        first.backward()


@needs_torch
def test_l2_penalty_on_a_parameter_with_a_model_output_then_a_step():
    model = nn.Linear(3, 2, rng=0, dtype="float64")
    X = np.random.default_rng(6).standard_normal((4, 3))
    Y = np.ones((4, 2))
    penalty = gd.sum(model.weight ** 2)
    assert float(penalty) == pytest.approx(float(np.sum(model.weight.numpy() ** 2)), rel=1e-12)
    loss = gd.mean((model(X) - Y) ** 2) + 0.1 * penalty + gd.sum(model.bias * model.bias)
    loss.backward()
    W, b = torch_linear(model)
    ref = torch.mean((torch.tensor(X) @ W + b - torch.tensor(Y)) ** 2) + 0.1 * torch.sum(W ** 2) + torch.sum(b * b)
    ref.backward()
    np.testing.assert_allclose(model.weight.grad, W.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(model.bias.grad, b.grad.numpy(), rtol=1e-12)
    opt, opt_t = nn.SGD(model, lr=0.1), torch.optim.SGD([W, b], lr=0.1)
    opt.step()
    opt_t.step()
    np.testing.assert_allclose(model.weight.numpy(), W.detach().numpy(), rtol=1e-12)


@needs_torch
def test_parameters_in_gd_functions_and_reflected_operators():
    model = nn.Linear(2, 2, rng=0, dtype="float64")
    W, b = torch_linear(model)
    loss = gd.sum(gd.tanh(model.weight)) + gd.mean(2.0 * model.bias - model.bias @ model.weight)
    loss.backward()
    ref = torch.sum(torch.tanh(W)) + torch.mean(2.0 * b - b @ W)
    ref.backward()
    np.testing.assert_allclose(model.weight.grad, W.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(model.bias.grad, b.grad.numpy(), rtol=1e-12)


def test_penalty_alone_sets_the_gradient_and_graphs_built_apart_still_refuse():
    model = nn.Linear(2, 2, rng=0, dtype="float64")
    gd.sum(model.weight ** 2).backward()
    np.testing.assert_allclose(model.weight.grad, 2 * model.weight.numpy(), rtol=1e-12)
    g = gd.Graph()
    with pytest.raises(gd.GraphError, match="belong to two different graphs"):
        g.input("x", (2, 2)) + model(np.ones((2, 2)))


# --- Nodes as NumPy sees them -------------------------------------------------------------------------------
def test_numpy_reads_nodes_through_the_array_protocol():
    model = nn.Linear(3, 4, rng=0, dtype="float64")
    X = np.random.default_rng(7).standard_normal((5, 3))
    out = model(X)
    np.testing.assert_array_equal(np.asarray(out), out.numpy())
    np.testing.assert_array_equal(np.argmax(out, axis=1), np.argmax(out.numpy(), axis=1))
    assert np.asarray(out, dtype=np.float32).dtype == np.float32


def test_array_protocol_on_a_device_backend_says_to_copy_explicitly():
    class Device:                       # what the CuPy backend says: its arrays are not the host's
        name = "cupy"
    g = gd.Graph(dtype="float64")
    x = g.constant(np.ones(2))
    g.backend = Device()
    with pytest.raises(gd.GraphError, match=r"on the cupy backend.*\.numpy\(\)"):
        np.asarray(x)


def test_data_is_micrograds_name_for_value_and_backward_returns_none():
    g = gd.Graph(eager=True)
    a = g.param("a", 2.0)
    assert a.data == 2.0
    y = a * a
    assert y.backward() is None
    assert a.grad == 4.0
    a.data = 3.0
    assert y.data == 9.0


def test_eager_scalar_graph_defaults_to_float64_like_micrograd():
    g = gd.Graph(eager=True)
    a = g.param("a", 0.1)
    y = a * 3.0
    assert g.dtype == "float64" and y.dtype == "float64"
    assert y.item() == 0.1 * 3.0                 # Python's float arithmetic, bit for bit
    assert gd.Graph().dtype == "float32"         # a graph built to run later keeps float32


def test_two_calls_and_a_penalty_on_every_backend(backend):
    """The join, the replay and Parameter leaves use only the backend's arrays (CuPy stand-in included)."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((4, 3))
    grads = {}
    for name in ("numpy", backend):
        model = nn.Linear(3, 2, rng=0, backend=name, dtype="float64")
        loss = gd.mean(model(X) * model(X * 2)) + gd.sum(model.weight ** 2)
        loss.backward()
        grads[name] = (gd.to_numpy(model.weight.grad), gd.to_numpy(model.bias.grad))
    for got, want in zip(grads[backend], grads["numpy"]):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    if backend == "cupy":
        with pytest.raises(gd.GraphError, match=r"on the cupy backend.*\.numpy\(\)"):
            np.asarray(loss)


def test_lm_paths_may_be_pathlib_paths(tmp_path):
    """The language-model files go through the same funnel (serialization, tokenizers, the corpus)."""
    from graphdiff.lm import CharTokenizer, GPT, tokenizers
    from graphdiff.lm.data import load_corpus
    from graphdiff.lm.checkpoint import load_checkpoint
    from graphdiff.lm.train import Trainer, prepare_data
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(60))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    docs, _ = load_corpus(corpus)
    tok = CharTokenizer.train(docs[0])
    tokenizers.save(tok, tmp_path / "tok.json")
    assert tokenizers.load(tmp_path / "tok.json").vocab_size == tok.vocab_size
    train, val = prepare_data(docs, tok)
    model = GPT(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=8)
    trainer = Trainer(model, tok, train, val, steps=2, batch_size=2, warmup=1, eval_every=2, eval_batches=1)
    trainer.fit(progress=False, checkpoint=tmp_path / "ckpt.npz", log=tmp_path / "log.jsonl")
    again, _, meta, _ = load_checkpoint(tmp_path / "ckpt.npz")
    assert meta["train"]["step"] == 2
    assert (tmp_path / "ckpt.tokenizer.json").exists()         # written beside the first checkpoint
    resumed = Trainer.resume(tmp_path / "ckpt.npz", train, val)
    assert resumed.step == 2
    with pytest.raises(Exception, match=r"'[^']*nowhere\.npz'") as err:   # the path as text, not PosixPath(...)
        load_checkpoint(tmp_path / "nowhere.npz")
    assert "PosixPath" not in str(err.value)


def test_a_tuple_of_nodes_still_goes_to_forward():
    class Sum(nn.Module):
        def forward(self, pair):
            return pair[0] + pair[1]

    g = gd.Graph(dtype="float64")
    a, b = g.constant(np.ones(2)), g.constant(np.ones(2))
    out = Sum()((a, b))
    assert out.graph is g and out.op == "add"


def test_backward_of_one_part_of_a_joined_tape_leaves_the_other_calls_alone():
    model = nn.Linear(3, 2, rng=0, dtype="float64")
    other = nn.Linear(3, 2, rng=1, dtype="float64")
    X = np.ones((4, 3))
    a, b, c = model(X), model(2 * X), other(X)
    both = a + b + c                                       # one Tape now
    gd.sum(a).backward()                                   # a's call runs its backward: its inputs are let go
    model(3 * X)
    gd.sum(b * 2.0).backward()                             # b is replayed; a (not used) is not, c gets zeros
    np.testing.assert_allclose(model.weight.grad, 2 * (2 * X).T @ np.ones((4, 2)))
    np.testing.assert_array_equal(other.weight.grad, np.zeros((3, 2)))
    assert both.graph is a.graph
