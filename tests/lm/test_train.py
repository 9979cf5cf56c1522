"""Training, exact resume from a checkpoint, bad checkpoints, and the CLI."""
import json
import os

import numpy as np
import pytest

from graphdiff.cli import main
from graphdiff.lm import CharTokenizer, GPT, RNNLM
from graphdiff.lm.checkpoint import load_checkpoint
from graphdiff.lm.train import Trainer, prepare_data
from graphdiff.nn import CheckpointError
from graphdiff.nn import serialization

TEXT = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(200))


def make_trainer(kind="gpt", dropout=0.1):
    tok = CharTokenizer.train(TEXT)
    train, val = prepare_data([TEXT], tok)
    if kind == "gpt":
        m = GPT(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=dropout)
    else:
        m = RNNLM(vocab_size=tok.vocab_size, block_size=16, n_embd=8, n_hidden=16)
    return Trainer(m, tok, train, val, steps=8, batch_size=4, warmup=2, eval_every=4, eval_batches=2), train, val


@pytest.mark.parametrize("kind", ["gpt", "rnn"])
def test_resume_continues_the_same_loss_curve(tmp_path, kind):
    straight, train, val = make_trainer(kind)
    straight.fit(progress=False)
    first, _, _ = make_trainer(kind)
    first.fit(steps=4, progress=False, checkpoint=str(tmp_path / "ck.npz"))
    resumed = Trainer.resume(str(tmp_path / "ck.npz"), train, val)
    assert resumed.step == 4
    resumed.fit(progress=False)
    a = [e["loss"] for e in straight.history]
    b = [e["loss"] for e in resumed.history]
    assert a == b                                               # bit for bit
    assert straight.history[-1]["val_loss"] == resumed.history[-1]["val_loss"]
    for (n, p), q in zip(straight.model.named_parameters(), resumed.model.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)


def test_checkpoint_files_are_npz_and_json_without_pickle(tmp_path):
    tr, _, _ = make_trainer()
    tr.fit(steps=2, progress=False, checkpoint=str(tmp_path / "ck.npz"))
    meta = json.loads((tmp_path / "ck.json").read_text())
    assert meta["model"]["kind"] == "gpt" and meta["train"]["step"] == 2
    with np.load(tmp_path / "ck.npz", allow_pickle=False) as z:
        assert "model/wte.weight" in z.files and "optim/exp_avg.wte.weight" in z.files
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_truncated_checkpoint_says_so(tmp_path):
    tr, _, _ = make_trainer()
    tr.save(str(tmp_path / "ck.npz"))
    data = (tmp_path / "ck.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(str(tmp_path / "cut.npz"))
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(CheckpointError, match="truncated or not"):
        load_checkpoint(str(tmp_path / "junk.npz"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "missing.npz"))


def test_checkpoint_from_another_model_says_so(tmp_path):
    tr, _, _ = make_trainer("rnn")
    tr.save(str(tmp_path / "rnn.npz"))
    with pytest.raises(CheckpointError, match="'rnn' model, not a 'gpt'"):
        load_checkpoint(str(tmp_path / "rnn.npz"), expect_kind="gpt")
    arrays, meta = serialization.load(str(tmp_path / "rnn.npz"))
    meta["model"]["config"]["n_hidden"] = 32                  # metadata and weights disagree
    serialization.save(str(tmp_path / "bad.npz"), arrays, meta)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a graphdiff checkpoint"):
        load_checkpoint(str(tmp_path / "plain.npz"))


def test_cli_train_resume_generate(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    ck = str(tmp_path / "ck.npz")
    common = ["--corpus", str(corpus), "--out", ck, "--block-size", "16", "--n-layer", "1", "--n-embd", "16",
              "--batch-size", "4", "--eval-every", "3", "--eval-batches", "1", "--no-progress",
              "--sample-chars", "20", "--threads", "0"]
    assert main(["train", "--steps", "3"] + common) == 0
    assert main(["train", "--steps", "6", "--resume"] + common) == 0
    out = capsys.readouterr().out
    assert "resumed" in out and "step 6" in out
    assert main(["generate", "--checkpoint", ck, "--prompt", "def", "--max-new-tokens", "10", "--greedy"]) == 0
    assert capsys.readouterr().out.startswith("def")
    assert main(["train", "--steps", "3", "--model", "rnn", "--resume"] + common) == 2
    assert "--model is 'rnn' but the checkpoint holds 'gpt'" in capsys.readouterr().err


def test_cli_bad_inputs_exit_2_with_a_message(tmp_path, capsys):
    assert main(["train", "--corpus", str(tmp_path / "none.txt"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    assert main(["generate", "--checkpoint", str(tmp_path / "bad.npz")]) == 2
    assert "truncated" in capsys.readouterr().err


def test_resume_on_another_corpus_says_so(tmp_path):
    tr, _, _ = make_trainer()
    tr.save(str(tmp_path / "ck.npz"))
    train, val = prepare_data([TEXT.replace("x", "f")], tr.tokenizer)
    with pytest.raises(CheckpointError, match="another corpus"):
        Trainer.resume(str(tmp_path / "ck.npz"), train, val)
