"""The training step recorded as a CUDA graph (graphdiff.lm.capture): the same numbers as the plain step.

On the CuPy stand-in, capture records the work without running it (its arrays hold NaN until the launch)
and each launch replays it, so a step that read a recorded constant, kept the wrong memory or read the
device back inside the recording fails here as it would on a GPU (benchmarks/gpu_check.sh runs the same
tests there).
"""
import numpy as np
import pytest

import graphdiff as gd
from graphdiff.lm import GPT, RNNLM, CharTokenizer
from graphdiff.lm.capture import CapturedStep
from graphdiff.lm.train import Trainer, prepare_data
from graphdiff.nn.optim import AdamW

from ..conftest import standin_active

TEXT = "def f(x):\n    return x * 2\n" * 40


def data():
    tok = CharTokenizer.train(TEXT)
    docs = [TEXT[k:k + 200] for k in range(0, len(TEXT), 200)]
    return tok, *prepare_data(docs, tok)


def trainer(kind, backend, graphed, clip=1.0, **model_kw):
    tok, train, val = data()
    cfg = dict(vocab_size=tok.vocab_size, pad_id=tok.pad_id, backend=backend, seed=0)
    model = (GPT(block_size=16, n_layer=1, n_head=2, n_embd=16, **cfg, **model_kw) if kind == "gpt"
             else RNNLM(block_size=16, n_embd=8, n_hidden=16, **cfg))
    tr = Trainer(model, tok, train, val, steps=10, warmup=3, batch_size=4, grad_clip=clip)
    if graphed:
        tr.use_cuda_graph()
    return tr


@pytest.mark.gpu
@pytest.mark.parametrize("kind, clip", [("gpt", 1.0), ("gpt", 0.0), ("rnn", 1.0)])
def test_recorded_steps_match_plain_steps(kind, clip):
    plain, graphed = trainer(kind, "cupy", False, clip), trainer(kind, "cupy", True, clip)
    for step in range(7):       # 2 plain steps, the recording (launched), 4 launches; lr warms up then decays
        a, _ = plain.train_step()
        b, _ = graphed.train_step()
        assert a == b, f"step {step}: loss {a} (plain) vs {b} (CUDA graph)"
    assert graphed.captured.graph is not None and graphed.captured.calls == 7
    for (name, p), (_, q) in zip(plain.model.named_parameters(), graphed.model.named_parameters()):
        np.testing.assert_array_equal(gd.to_numpy(p.data), gd.to_numpy(q.data), err_msg=name)
        np.testing.assert_array_equal(gd.to_numpy(p.grad), gd.to_numpy(q.grad), err_msg=name)
    assert plain.opt.t == graphed.opt.t == 7
    assert plain.evaluate() == graphed.evaluate()       # eval beside the recording reads the same weights
    for name, st in plain.opt.state.items():
        for k, v in st.items():
            np.testing.assert_array_equal(gd.to_numpy(v), gd.to_numpy(graphed.opt.state[name][k]))


@pytest.mark.gpu
def test_a_launch_is_what_updates():
    """The recording itself computes nothing: skipping the launch leaves the weights as they were."""
    if not standin_active():
        pytest.skip("patches the stand-in's Graph.launch")
    import cupy
    tr = trainer("gpt", "cupy", True)
    for _ in range(3):
        tr.train_step()
    before = {k: gd.to_numpy(p.data).copy() for k, p in tr.model.named_parameters()}
    launch = cupy.cuda.Graph.launch
    cupy.cuda.Graph.launch = lambda self, stream=None: None
    try:
        tr.train_step()
    finally:
        cupy.cuda.Graph.launch = launch
    for k, p in tr.model.named_parameters():
        np.testing.assert_array_equal(gd.to_numpy(p.data), before[k], err_msg=k)
    tr.train_step()
    assert any((gd.to_numpy(p.data) != before[k]).any() for k, p in tr.model.named_parameters())


def test_refuses_what_it_cannot_record():
    with pytest.raises(gd.GraphError, match="backend 'numpy'.*cupy"):
        trainer("gpt", "numpy", True)
    tok, _, _ = data()
    m = GPT(block_size=16, n_layer=1, n_head=2, n_embd=16, vocab_size=tok.vocab_size, backend="numpy")
    with pytest.raises(TypeError, match="AdamW"):
        CapturedStep(m, object(), 4, 16)


@pytest.mark.gpu
def test_refuses_dropout():
    with pytest.raises(ValueError, match="dropout"):
        trainer("gpt", "cupy", True, dropout=0.1)
    tok, _, _ = data()
    m = GPT(block_size=16, n_layer=1, n_head=2, n_embd=16, vocab_size=tok.vocab_size, backend="cupy")
    with pytest.raises(ValueError, match="warmup"):
        CapturedStep(m, AdamW(m), 4, 16, warmup=0)


def test_cli_refuses_cuda_graph_on_the_cpu(tmp_path, capsys):
    from graphdiff.cli import main
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    rc = main(["train", "--corpus", str(corpus), "--steps", "2", "--batch-size", "2", "--block-size", "8",
               "--n-layer", "1", "--n-head", "1", "--n-embd", "8", "--no-progress", "--sample-chars", "0",
               "--backend", "numpy", "--cuda-graph", "--out", str(tmp_path / "ck.npz")])
    assert rc == 2
    assert "--cuda-graph" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "sampled"])
def test_recorded_decoding_matches_plain_decoding(greedy):
    """Past block_size tokens the window slides (the prefill refills the recorded cache in place)."""
    from graphdiff.lm import generate
    from graphdiff.lm.generate import Decoder
    m = GPT(block_size=10, n_layer=2, n_head=2, n_embd=8, vocab_size=13, seed=1, backend="cupy")
    kw = dict(greedy=greedy, temperature=1.3, seed=3)
    plain = generate(m, [1, 2, 3], 25, **kw)
    assert generate(m, [1, 2, 3], 25, cuda_graph=True, **kw) == plain
    dec = Decoder(m, cuda_graph=True)
    rows = [dec.start([4, 5])] + [dec.push(t) for t in [6, 7, 8, 9, 10, 11, 12, 1, 2, 3]]
    ref = Decoder(m)
    want = [ref.start([4, 5])] + [ref.push(t) for t in [6, 7, 8, 9, 10, 11, 12, 1, 2, 3]]
    assert dec.recording.recorded
    for a, b in zip(rows, want):
        np.testing.assert_array_equal(a, b)


def test_recorded_decoding_refusals():
    from graphdiff.lm import generate
    m = GPT(block_size=10, n_layer=1, n_head=2, n_embd=8, vocab_size=13, seed=1, backend="numpy")
    with pytest.raises(gd.GraphError, match="cupy"):
        generate(m, [1, 2], 3, cuda_graph=True)
    with pytest.raises(ValueError, match="KV-cache step of a GPT"):
        generate(m, [1, 2], 3, cuda_graph=True, use_cache=False)


@pytest.mark.gpu
def test_replaced_parameters_are_refused():
    tr = trainer("gpt", "cupy", True)
    for _ in range(4):
        tr.train_step()
    tr.model.load_state_dict(tr.model.state_dict())     # new arrays: the recording would not see them
    with pytest.raises(gd.GraphError, match="replaced.*use_cuda_graph"):
        tr.train_step()
    tr.use_cuda_graph()                                  # a new recording reads the new arrays
    for _ in range(4):
        tr.train_step()


@pytest.mark.gpu
def test_recorded_steps_with_the_fused_cupy_kernels():
    """The cupy.fuse kernels (opt-in) inside a recording: the same numbers as the plain steps with them."""
    with gd.fused_kernels(cupy=True):
        plain, graphed = trainer("gpt", "cupy", False), trainer("gpt", "cupy", True)
        for step in range(6):
            a, _ = plain.train_step()
            b, _ = graphed.train_step()
            assert a == b, f"step {step}: loss {a} (plain) vs {b} (CUDA graph)"
