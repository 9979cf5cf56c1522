"""The unrolled graphs compute what the batched models compute: same loss, same gradients, both variants;
and they grow as the lecture says (RNN linear, Transformer quadratic in edges)."""
import numpy as np
import pytest

import graphdiff as gd
from graphdiff.lm.gpt import GPT
from graphdiff.lm.rnn import RNNLM
from graphdiff.lm.unrolled import graph_stats, unroll

V, T = 7, 6


def sequence(pad_tail=0, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, V, T + 1)
    if pad_tail:
        ids[-pad_tail:] = 0                              # right padding with pad id 0
    return ids[:-1], ids[1:]                             # inputs, next-token targets


def batched(model, ids, targets):
    loss = model.loss(ids[None], targets[None], (ids != model.pad_id)[None], backward=True)
    return loss, {n: gd.to_numpy(p.grad) for n, p in model.named_parameters()}


def check(model, ids, targets):
    ref_loss, ref_grads = batched(model, ids, targets)
    u = unroll(model, ids, targets)
    g = u.graph
    assert float(g.forward(outputs=u.loss)) == pytest.approx(ref_loss, rel=1e-12)
    for variant in gd.VARIANTS:
        g.backward(u.loss, variant=variant)
        for name, node in u.params.items():
            np.testing.assert_allclose(gd.to_numpy(node.grad), ref_grads[name], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{variant}: d loss / d {name}")


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
@pytest.mark.parametrize("pad_tail", [0, 2])
def test_unrolled_transformer_equals_batched_gpt(norm, pos, pad_tail):
    model = GPT(vocab_size=V, block_size=8, n_layer=2, n_head=2, n_embd=8, norm=norm, pos=pos, dtype="float64",
                seed=1)
    check(model, *sequence(pad_tail))


@pytest.mark.parametrize("pad_tail", [0, 2])
def test_unrolled_rnn_equals_batched_rnn(pad_tail):
    model = RNNLM(vocab_size=V, block_size=8, n_embd=5, n_hidden=6, dtype="float64", seed=2)
    check(model, *sequence(pad_tail, seed=3))


def test_one_score_node_per_query_key_pair_and_depth():
    model = GPT(vocab_size=V, block_size=16, n_layer=1, n_head=1, n_embd=4)
    depths = []
    for n in (4, 8):
        u = unroll(model, np.arange(n) % (V - 1) + 1)
        scores = [x for x in u.graph.nodes if x.op == "matmul" and x.name.rsplit("/", 1)[-1].startswith("s")]
        assert len(scores) == n * (n + 1) // 2
        depths.append(graph_stats(u.graph)["depth"])
    assert depths[0] == depths[1]                          # the transformer's depth does not grow with T
    rnn = RNNLM(vocab_size=V, n_embd=3, n_hidden=3)
    d = [graph_stats(unroll(rnn, np.ones(n, dtype=int)).graph)["depth"] for n in (4, 8, 12)]
    assert d[2] - d[1] == d[1] - d[0] > 0                  # the RNN's grows by the same amount per position


def test_bad_sequences():
    model = GPT(vocab_size=V, block_size=4, n_layer=1, n_head=1, n_embd=4)
    with pytest.raises(ValueError, match="starts with the pad id 0; pad on the right"):
        unroll(model, [0, 1, 2])
    with pytest.raises(ValueError, match="5 positions exceed block_size 4"):
        unroll(model, [1, 2, 3, 4, 5])
