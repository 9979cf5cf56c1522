"""SIGKILL a training run at random moments, resume it each time: the result equals an uninterrupted run."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from graphdiff.lm.checkpoint import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXT = "".join(f"def g{i}(y):\n    return y * {i} - 1\n\n" for i in range(150))
STEPS = 400
ARGS = ["--steps", str(STEPS), "--block-size", "8", "--n-layer", "1", "--n-head", "2", "--n-embd", "8",
        "--batch-size", "2", "--dropout", "0.1", "--warmup", "5", "--eval-every", "1", "--eval-batches", "1",
        "--no-progress", "--sample-chars", "0", "--threads", "1"]


def start(corpus, out, resume):
    cmd = [sys.executable, "-m", "graphdiff", "train", "--corpus", corpus, "--out", out, *ARGS]
    return subprocess.Popen(cmd + (["--resume"] if resume else []), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT))


def wait_for_training(proc):
    """Read stdout until the run has its model (it trains and saves from here on); the step it resumed at."""
    step = 0
    for line in proc.stdout:
        if line.startswith("resumed"):
            step = int(line.split()[-1])
        if line.startswith("model:"):
            return step
    raise AssertionError(proc.stderr.read())


def final_state(path):
    _, _, meta, arrays = load_checkpoint(path)
    tr = meta["train"]
    return arrays, {k: tr[k] for k in ("step", "tokens", "optim", "data_rng", "dropout_rng", "hp")}


@pytest.mark.slow
def test_sigkill_and_resume_matches_an_uninterrupted_run(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    straight = start(str(corpus), str(tmp_path / "straight" / "ckpt.npz"), resume=False)

    out = str(tmp_path / "killed" / "ckpt.npz")
    rnd = random.Random(9)
    kills, resumed_at = 0, []
    while kills < 12:
        proc = start(str(corpus), out, resume=os.path.exists(out))
        resumed_at.append(wait_for_training(proc))
        time.sleep(rnd.uniform(0.0, 0.25))                # somewhere in a step, an evaluation or a save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        if proc.returncode == 0:                         # finished before the kill landed
            break
        assert proc.returncode == -signal.SIGKILL
        kills += 1
        if os.path.exists(out):                          # whatever the moment, the checkpoint loads
            load_checkpoint(out)
    assert kills >= 10, "the run finished too soon to be killed 10 times; raise STEPS"
    assert resumed_at == sorted(resumed_at) and 0 < resumed_at[-1] < STEPS, resumed_at
    last = start(str(corpus), out, resume=True)
    stdout, stderr = last.communicate(timeout=300)
    assert last.returncode == 0, stderr
    assert f"at step {STEPS}" in stdout
    assert straight.wait(timeout=300) == 0, straight.stderr.read()
    straight.stdout.close()
    straight.stderr.close()

    folder = os.path.dirname(out)
    assert not [f for f in os.listdir(folder) if f.startswith(".tmp")], os.listdir(folder)
    a, meta_a = final_state(str(tmp_path / "straight" / "ckpt.npz"))
    b, meta_b = final_state(out)
    assert meta_a == meta_b and meta_b["step"] == STEPS
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)        # bit for bit
