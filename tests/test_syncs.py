"""Device syncs per training step and per generated token, counted by the CuPy stand-in.

A sync is a device -> host read (bool(), float(), .item(), .get(), asnumpy): on a GPU each one waits for
every queued kernel. A training step reads the loss back once (for the progress bar), a generated token its
logits row once; nothing else. Runs with GRAPHDIFF_CUPY_STANDIN=1 (skipped on a real GPU, which counts nothing).
"""
import sys

import numpy as np
import pytest

import graphdiff as gd
from graphdiff.lm import GPT, RNNLM, CharTokenizer, generate
from graphdiff.lm.train import Trainer, prepare_data

from .conftest import standin_active

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def counters():
    if not standin_active():
        pytest.skip("counts device syncs with the CuPy stand-in (GRAPHDIFF_CUPY_STANDIN=1)")
    counters = sys.modules["cupy"].standin
    counters.reset()
    counters.trace = True           # a failure shows where each extra sync came from
    yield counters
    counters.trace = False


def explain(counters):
    return "\n---\n".join(counters.where)


@pytest.mark.parametrize("kind, clip", [("gpt", 1.0), ("gpt", 0.0), ("rnn", 1.0)])
def test_one_sync_per_training_step(counters, kind, clip):
    text = "def f(x):\n    return x * 2\n" * 40
    tok = CharTokenizer.train(text)
    docs = [text[k:k + 200] for k in range(0, len(text), 200)]
    train, val = prepare_data(docs, tok)
    cfg = dict(vocab_size=tok.vocab_size, pad_id=tok.pad_id, backend="cupy", seed=0)
    model = (GPT(block_size=16, n_layer=1, n_head=2, n_embd=16, **cfg) if kind == "gpt"
             else RNNLM(n_embd=8, n_hidden=16, **cfg))
    trainer = Trainer(model, tok, train, val, steps=10, batch_size=4, grad_clip=clip)
    trainer.train_step()                     # builds the graph (constants go over once)
    counters.reset()
    for _ in range(3):
        loss, _ = trainer.train_step()
        assert isinstance(loss, float)
    assert counters.syncs == 3, explain(counters)


@pytest.mark.parametrize("kind", ["gpt", "rnn"])
@pytest.mark.parametrize("use_cache", [True, False], ids=["kv-cache", "recompute"])
def test_one_sync_per_generated_token(counters, kind, use_cache):
    cfg = dict(vocab_size=13, seed=1, backend="cupy")
    m = (GPT(block_size=10, n_layer=2, n_head=2, n_embd=8, **cfg) if kind == "gpt"
         else RNNLM(n_embd=5, n_hidden=7, **cfg))
    generate(m, [1, 2, 3], 12, use_cache=use_cache)          # builds every graph the runs below use
    counts = []
    for n in (4, 12):                                        # runs past block_size: the window slides
        counters.reset()
        generate(m, [1, 2, 3], n, use_cache=use_cache, seed=3)
        counts.append(counters.syncs)
    assert counts[1] - counts[0] == 12 - 4, explain(counters)
    assert counts[0] == 4, explain(counters)                 # the prompt costs nothing extra


def test_kv_cache_does_less_device_work_and_fewer_transfers_than_recompute(counters):
    m = GPT(vocab_size=13, block_size=32, n_layer=2, n_head=2, n_embd=16, seed=1, backend="cupy")
    per_token = {}
    for use_cache in (True, False):
        generate(m, [1, 2, 3], 20, use_cache=use_cache)      # warm: graphs built
        runs = []
        for n in (4, 20):                                    # the difference leaves out the prompt
            counters.reset()
            generate(m, [1, 2, 3], n, use_cache=use_cache, greedy=True)
            runs.append(np.array([counters.elements, counters.to_device, counters.syncs]))
        per_token[use_cache] = tuple((runs[1] - runs[0]) / 16)
    (work_c, h2d_c, sync_c), (work_f, h2d_f, sync_f) = per_token[True], per_token[False]
    assert work_c < work_f / 2, per_token                  # device work: one position, not the whole prefix
    assert h2d_c <= h2d_f and h2d_c <= 2, per_token        # the new id and its position: a few bytes
    assert sync_c == sync_f == 1, per_token                # the logits row, once


def test_ids_are_checked_on_the_host_before_any_transfer(counters):
    g = gd.Graph(backend="cupy")
    table = g.param("wte", np.ones((5, 2)))
    ids = g.input("ids", (3,), dtype="int64")
    y = gd.sum(gd.embedding(table, ids, name="tok_emb"))
    g.forward({ids: np.array([0, 1, 4])}, outputs=y)
    counters.reset()
    with pytest.raises(gd.GraphError, match=r"forward failed at embedding 'tok_emb': input 'ids' was fed "
                                            r"out-of-range ids: ids must lie in \[0, 5\)"):
        g.forward({ids: np.array([0, 1, 7])}, outputs=y)
    assert counters.to_device == 0 and counters.syncs == 0
    g.forward({ids: np.array([4, 0, 0])}, outputs=y)
    assert counters.syncs == 0, explain(counters)


def test_computed_ids_are_checked_on_the_device(counters):
    g = gd.Graph(backend="cupy")
    table = g.param("wte", np.ones((5, 2)))
    raw = g.input("raw", (3,))
    y = gd.sum(gd.embedding(table, gd.astype(raw, "int64")))   # ids computed in the graph: not on the host
    with pytest.raises(gd.GraphError, match=r"ids must lie in \[0, 5\) for a table of 5 rows; found id 9 at "
                                            r"position \(1,\)"):
        g.forward({raw: np.array([0.0, 9.0, 1.0])}, outputs=y)
