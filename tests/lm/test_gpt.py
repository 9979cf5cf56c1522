"""The batched GPT against PyTorch (float64, Pre-LN and Post-LN, with padding), and learning."""
import numpy as np
import pytest

from graphdiff.lm import GPT, RNNLM, make_batch
from graphdiff.nn import AdamW

from .torch_ref import gpt_loss, rnn_loss


def padded_batch(V=11, T=8, seed=0):
    rng = np.random.default_rng(seed)
    return make_batch([rng.integers(1, V, n) for n in (9, 5, 12, 3)], T, 0)   # rows 2, 4 padded


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
def test_gpt_loss_and_every_gradient_match_torch(norm, pos):
    cfg = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, norm=norm, pos=pos, pad_id=0, seed=3)
    m = GPT(dtype="float64", **cfg)
    idx, targets, mask = padded_batch()
    assert not mask.all() and (targets == 0).any()
    loss = m.loss(idx, targets, mask, backward=True)
    tloss, tgrads, _ = gpt_loss(m.state_dict(), m.config, idx, targets, mask)
    assert loss == pytest.approx(tloss, rel=1e-13)
    assert len(tgrads) == len(m.parameters())
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, tgrads[name], rtol=1e-9, atol=1e-13, err_msg=name)


def test_padded_positions_do_not_change_the_loss():
    m = GPT(dtype="float64", vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    a = make_batch([[1, 2, 3, 4]], 8, 0)
    b = make_batch([[1, 2, 3, 4]], 3, 0)
    assert m.loss(*a) == pytest.approx(m.loss(*b), rel=1e-13)


def test_rnnlm_loss_and_gradients_match_torch():
    m = RNNLM(dtype="float64", vocab_size=11, n_embd=4, n_hidden=6, seed=2)
    idx, targets, mask = padded_batch()
    loss = m.loss(idx, targets, mask, backward=True)
    tloss, tgrads = rnn_loss(m.state_dict(), idx, targets, 0)
    assert loss == pytest.approx(tloss, rel=1e-13)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, tgrads[name], rtol=1e-9, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("kind", ["gpt", "rnn"])
def test_small_model_overfits_one_batch(kind):
    m = (GPT(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, seed=1) if kind == "gpt"
         else RNNLM(vocab_size=11, n_embd=8, n_hidden=32, seed=1))
    batch = padded_batch()
    opt = AdamW(m, lr=3e-2, weight_decay=0.0)
    first = m.loss(*batch)
    for _ in range(150):
        m.loss(*batch, backward=True)
        opt.step()
    last = m.loss(*batch)
    assert first > 2.0 and last < 0.1


def test_dropout_is_random_in_training_and_off_in_eval():
    m = GPT(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.3, dtype="float64")
    batch = padded_batch()
    a, b = m.loss(*batch), m.loss(*batch)
    assert a != b
    m.eval()
    assert m.loss(*batch) == m.loss(*batch)


def test_sequence_longer_than_block_size_is_an_error():
    m = GPT(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4)
    with pytest.raises(ValueError, match="block_size"):
        m.forward_logits(np.ones((1, 5), dtype=np.int64))


def test_same_loss_on_every_backend(backend):
    kw = dict(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, dtype="float64")
    ref = GPT(**kw)
    m = GPT(backend=backend, **kw)
    batch = padded_batch()
    assert m.loss(*batch, backward=True) == pytest.approx(ref.loss(*batch, backward=True), rel=1e-12)
    for (n, p), q in zip(m.named_parameters(), ref.parameters()):
        import graphdiff as gd
        np.testing.assert_allclose(gd.to_numpy(p.grad), q.grad, rtol=1e-10, atol=1e-14, err_msg=n)
