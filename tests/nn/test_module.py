"""Module: names, state_dict, train/eval, one graph per shape sharing the module's parameters."""
import numpy as np
import pytest

import graphdiff as gd
from graphdiff import nn
from graphdiff.lm import GPT, make_batch


class TwoLayer(nn.Module):
    def __init__(self, dtype="float64"):
        super().__init__(dtype=dtype)
        self.fc1 = nn.Linear(3, 4, rng=1, dtype=dtype)
        self.fc2 = nn.Linear(4, 2, rng=2, dtype=dtype)
        self.drop = nn.Dropout(0.5, dtype=dtype)

    def forward(self, x):
        return self.fc2(self.drop(gd.tanh(self.fc1(x))))


def test_named_parameters_and_state_dict_round_trip():
    m = TwoLayer()
    assert [n for n, _ in m.named_parameters()] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    sd = m.state_dict()
    m2 = TwoLayer()
    for v in sd.values():
        v += 1.0
    m2.load_state_dict(sd)
    for n, p in m2.named_parameters():
        np.testing.assert_array_equal(p.numpy(), sd[n])
    assert m.num_parameters() == 3 * 4 + 4 + 4 * 2 + 2


def test_load_state_dict_errors_name_the_keys_and_shapes():
    m = TwoLayer()
    sd = m.state_dict()
    del sd["fc2.bias"]
    with pytest.raises(KeyError, match="fc2.bias"):
        m.load_state_dict(sd)
    sd = m.state_dict()
    sd["fc1.weight"] = np.zeros((5, 4))
    with pytest.raises(gd.ShapeError, match=r"fc1.weight.*\(5, 4\)"):
        m.load_state_dict(sd)


def test_call_runs_forward_in_a_scope_and_train_eval_switches_dropout():
    m = TwoLayer()
    g = gd.Graph(dtype="float64", seed=0)
    x = g.input("x", (5, 3))
    y = m(x)
    assert "fc1/weight" in [p.name for p in g.params()]
    assert y.name.startswith("fc2/")
    X = np.ones((5, 3))
    m.eval()
    assert not m.drop.training
    g.training = False
    a = g.forward({x: X}, outputs=y)
    b = g.forward({x: X}, outputs=y)
    np.testing.assert_array_equal(a, b)


def test_module_called_twice_shares_one_param_node():
    cell = nn.RNNCell(2, 3, dtype="float64")
    g = gd.Graph(dtype="float64")
    x = g.input("x", (1, 2))
    h = g.constant(np.zeros((1, 3)))
    h = cell(x, cell(x, h))
    assert len(g.params()) == 3



def test_a_graph_a_module_was_called_in_is_freed_when_dropped():
    """The param nodes (one per Parameter per graph) and the attention mask (one per graph) that nn keeps for
    each graph it builds in go with the graph: nothing nn keeps holds a graph alive, nothing is stored on it."""
    import gc
    import weakref
    attn = nn.CausalSelfAttention(4, 2, rng=0, dtype="float64")
    refs = []
    for _ in range(2):
        g = gd.Graph(dtype="float64")
        x = g.input("x", (1, 3, 4))
        y = attn(x)
        assert attn(x) is not y and len(g.params()) == 4     # called twice: the same param nodes, one mask
        assert sum(n.name.endswith("mask_bias") for n in g.nodes) == 1
        assert not any(k.startswith("_nn") for k in vars(g))
        g.forward({x: np.ones((1, 3, 4))}, y)
        refs.append(weakref.ref(g))
        del g, x, y
    gc.collect()
    assert [r() for r in refs] == [None, None]

def test_one_graph_per_shape_cached_and_sharing_parameters():
    m = GPT(vocab_size=7, block_size=6, n_layer=1, n_head=1, n_embd=4, dtype="float64")
    b1 = make_batch([[1, 2, 3, 4, 5, 6, 1]], 6, 0)
    b2 = make_batch([[1, 2, 3, 4, 5]] * 2, 4, 0)
    m.loss(*b1)
    p1 = m.programs(("loss", 1, 6))
    m.loss(*b2)
    assert m.programs(("loss", 1, 6)) is p1                  # re-fed, not rebuilt
    assert len(m.programs.programs) == 2
    before = m.loss(*b2)
    m.wte.weight.data = m.wte.weight.data * 3.0              # an optimizer replacing the array...
    after2, after1 = m.loss(*b2), m.loss(*b1)                # ...is seen by every shape's graph
    fresh = GPT(vocab_size=7, block_size=6, n_layer=1, n_head=1, n_embd=4, dtype="float64")
    fresh.load_state_dict(m.state_dict())
    assert after2 != before
    assert after2 == fresh.loss(*b2) and after1 == fresh.loss(*b1)


def test_grads_land_on_parameters(backend):
    m = TwoLayer()
    m.backend = gd.get_backend(backend)
    g = gd.Graph(backend=backend, dtype="float64")
    for _, mod in m.named_modules():
        mod.backend = g.backend
    for _, p in m.named_parameters():
        p.data = g.backend.from_host(gd.to_numpy(p.data), "float64")
    x = g.input("x", (5, 3))
    loss = gd.mean(m(x) ** 2)
    prog = nn.Program(m, g, {"x": x}, {"loss": loss})
    m.eval()
    prog.run({"x": np.ones((5, 3))}, ("loss",), backward="loss")
    assert all(p.grad is not None and tuple(p.grad.shape) == p.shape for p in m.parameters())
