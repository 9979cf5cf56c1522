"""`graphdiff train --init CKPT --corpus NEW`: fine-tuning starts from the pre-trained weights and tokenizer,
with a new optimizer state and step 0; what would change the model is refused in one line."""
import json

import numpy as np

from graphdiff.cli import main
from graphdiff.lm.checkpoint import load_checkpoint
from graphdiff.lm.train import init_trainer

TEXT = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(200))
NEW = "".join(f"def f{i}(x):\n    return {i} + x + x\n\n" for i in range(40))    # same characters, new text
SIZES = ["--block-size", "16", "--n-layer", "1", "--n-embd", "16", "--n-head", "2"]
COMMON = ["--batch-size", "4", "--eval-every", "3", "--eval-batches", "1", "--no-progress", "--sample-chars", "0",
          "--threads", "0"]


def pretrain(tmp_path):
    (tmp_path / "pre.txt").write_text(TEXT)
    (tmp_path / "new.txt").write_text(NEW)
    pre = str(tmp_path / "pre" / "ck.npz")
    assert main(["train", "--corpus", str(tmp_path / "pre.txt"), "--steps", "6", "--out", pre] + SIZES + COMMON) == 0
    return pre


def test_init_starts_from_the_weights_and_tokenizer_with_a_new_optimizer(tmp_path, capsys):
    pre = pretrain(tmp_path)
    ft = str(tmp_path / "ft" / "ck.npz")
    assert main(["train", "--init", pre, "--corpus", str(tmp_path / "new.txt"), "--steps", "3", "--out", ft,
                 "--lr", "0.001"] + COMMON) == 0
    out = capsys.readouterr().out
    assert f"initialised from {pre} (trained 6 steps there)" in out and "step 0" in out
    pre_model, pre_tok, _, _ = load_checkpoint(pre)
    ft_model, ft_tok, meta, arrays = load_checkpoint(ft)
    assert ft_tok.to_dict() == pre_tok.to_dict()                             # tokenizer kept
    assert json.loads((tmp_path / "ft" / "ck.tokenizer.json").read_text()) == pre_tok.to_dict()
    assert meta["train"]["step"] == 3 and meta["train"]["hp"]["lr"] == 0.001   # this run's settings, step 0 + 3
    assert meta["train"]["optim"]["t"] == 3                                   # AdamW started afresh
    assert meta["model"]["config"] == load_checkpoint(pre)[2]["model"]["config"]
    # the weights moved from the pre-trained ones (not from a fresh initialisation)
    trainer, _ = init_trainer(pre, [NEW])
    for (name, a), b in zip(pre_model.state_dict().items(), trainer.model.state_dict().values()):
        assert np.array_equal(a, b), name
    moved = [not np.array_equal(a, b) for a, b in zip(pre_model.state_dict().values(),
                                                       ft_model.state_dict().values())]
    assert any(moved)


def test_init_refuses_what_would_change_the_model(tmp_path, capsys):
    pre = pretrain(tmp_path)
    capsys.readouterr()
    args = ["train", "--init", pre, "--corpus", str(tmp_path / "new.txt"), "--steps", "2",
            "--out", str(tmp_path / "ft.npz")] + COMMON
    assert main(args + ["--n-embd", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot initialise from" in err and "--n-embd is 32" in err
    assert main(args + ["--resume"]) == 2
    assert "give one of them" in capsys.readouterr().err
    (tmp_path / "odd.txt").write_text(NEW + "\u00e9\u00e9 unknown characters")
    assert main(["train", "--init", pre, "--corpus", str(tmp_path / "odd.txt"), "--steps", "2",
                 "--out", str(tmp_path / "ft2.npz")] + COMMON) == 2
    assert "not in the vocabulary" in capsys.readouterr().err
