"""graphdiff train as a user runs it: validation losses without a bar, one tokenizer file per checkpoint,
a schedule fitted to --time-limit."""
import json
import os

import pytest

from graphdiff.cli import main

TEXT = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(120))
TINY = ["--block-size", "8", "--n-layer", "1", "--n-head", "2", "--n-embd", "8", "--batch-size", "2",
        "--sample-chars", "0", "--threads", "1"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return str(path)


def test_no_progress_still_prints_validation_losses(tmp_path, corpus, capsys):
    assert main(["train", "--corpus", corpus, "--out", str(tmp_path / "a.npz"), "--steps", "4", "--eval-every", "2",
                 "--no-progress"] + TINY) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step ")]
    assert [ln.split(":")[0] for ln in lines] == ["step 2", "step 4"] and all(" val " in ln for ln in lines)


def test_two_checkpoints_in_one_folder_keep_their_own_tokenizer(tmp_path, corpus):
    for name in ("a.npz", "b.npz"):
        assert main(["train", "--corpus", corpus, "--out", str(tmp_path / name), "--steps", "2",
                     "--no-progress"] + TINY + (["--tokenizer", "bpe", "--bpe-vocab", "300"] if name == "b.npz"
                                                else [])) == 0
    a = json.loads((tmp_path / "a.tokenizer.json").read_text())
    b = json.loads((tmp_path / "b.tokenizer.json").read_text())
    assert a["type"] != b["type"] and not os.path.exists(tmp_path / "tokenizer.json")


def test_time_limit_without_steps_fits_the_schedule(tmp_path, corpus, capsys):
    out = str(tmp_path / "t.npz")
    assert main(["train", "--corpus", corpus, "--out", out, "--time-limit", "3", "--eval-every", "1000",
                 "--no-progress", "--warmup", "2"] + TINY) == 0
    printed = capsys.readouterr().out
    assert "fitting the schedule to --time-limit 3 s: about" in printed
    from graphdiff.lm.checkpoint import load_checkpoint
    meta = load_checkpoint(out)[2]
    planned, done = meta["train"]["hp"]["steps"], meta["train"]["step"]
    assert planned == int(printed.split("about ")[1].split()[0]) and 5 <= done <= planned
