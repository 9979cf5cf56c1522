"""Greedy decoding, ancestral sampling, and the KV cache against full recomputation."""
import numpy as np
import pytest

from graphdiff.lm import GPT, RNNLM, generate
from graphdiff.lm.generate import Decoder, _pick


def small(kind, **kw):
    if kind == "gpt":
        return GPT(vocab_size=13, block_size=10, n_layer=2, n_head=2, n_embd=8, seed=1, **kw)
    return RNNLM(vocab_size=13, n_embd=5, n_hidden=7, seed=1, **kw)


@pytest.mark.parametrize("kind, norm", [("gpt", "pre"), ("gpt", "post"), ("rnn", None)])
def test_cached_logits_equal_full_recompute(kind, norm):
    m = small(kind, dtype="float64", **({"norm": norm} if kind == "gpt" else {}))
    cached, full = Decoder(m, use_cache=True), Decoder(m, use_cache=False)
    np.testing.assert_allclose(cached.start([3, 1, 4]), full.start([3, 1, 4]), rtol=0, atol=1e-9)
    rng = np.random.default_rng(0)
    for _ in range(20):                       # runs past block_size=10: the window slides
        t = int(rng.integers(1, 13))
        np.testing.assert_allclose(cached.push(t), full.push(t), rtol=0, atol=1e-9)


def test_cached_logits_equal_the_batched_models_logits():
    m = small("gpt", dtype="float64")
    ids = [2, 7, 1, 8, 2, 8]
    full = np.asarray(m.forward_logits(np.asarray([ids])))[0]      # (T, V)
    dec = Decoder(m, use_cache=True)
    rows = [dec.start(ids[:1])] + [dec.push(t) for t in ids[1:]]
    np.testing.assert_allclose(np.stack(rows), full, rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", ["gpt", "rnn"])
def test_greedy_is_deterministic_and_cache_agnostic(kind):
    m = small(kind, dtype="float64")
    a = generate(m, [1, 2], 15, greedy=True)
    b = generate(m, [1, 2], 15, greedy=True, use_cache=False)
    assert a == b and len(a) == 15 and m.pad_id not in a


def test_sampling_is_reproducible_by_seed():
    m = small("gpt")
    a, b = generate(m, [1], 30, seed=7), generate(m, [1], 30, seed=7)
    c = generate(m, [1], 30, seed=8)
    assert a == b and a != c


def test_top_k_and_temperature():
    logits = np.array([0.0, 5.0, 4.0, -1.0])
    rng = np.random.default_rng(0)
    picks = {_pick(logits, rng, False, 1.0, 2) for _ in range(200)}
    assert picks == {1, 2}
    assert {_pick(logits, rng, False, 1e-3, None) for _ in range(50)} == {1}
    assert _pick(logits, rng, True, 1.0, None) == 1


def test_empty_prompt_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        generate(small("gpt"), [], 3)


@pytest.mark.parametrize("kind", ["gpt", "rnn"])
def test_cached_decoding_on_every_backend(kind, backend):
    ref = small(kind, dtype="float64")
    m = small(kind, dtype="float64", backend=backend)
    a, b = Decoder(ref), Decoder(m)
    np.testing.assert_allclose(b.start([1, 2, 3]), a.start([1, 2, 3]), rtol=0, atol=1e-12)
    for t in [4, 5, 6, 7, 8, 9, 10, 11, 12]:
        np.testing.assert_allclose(b.push(t), a.push(t), rtol=0, atol=1e-12)
