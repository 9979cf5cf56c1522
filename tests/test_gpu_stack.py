"""The whole stack on CuPy: the CLI (train fresh and resumed, generate with and without the KV cache, demo,
render, compare, growth), every example, and gd.gradcheck, each run as a user runs it.

Marked `gpu`: runs on a GPU, and in CI on the CuPy stand-in (GRAPHDIFF_CUPY_STANDIN=1), where any implicit
device -> host conversion raises as it does on CuPy. Sizes are small: this checks that everything runs
on the device backend, not what it learns.
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphdiff as gd

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "gpt", "--steps", "8", "--batch-size", "4", "--block-size", "16", "--n-layer", "1",
        "--n-head", "2", "--n-embd", "16", "--eval-every", "4", "--eval-batches", "2", "--sample-chars", "20",
        "--no-progress"]


def run(*args, cwd=ROOT):
    """Run `python *args` with backend cupy; the output, or a failure showing the end of stderr."""
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                         env=dict(__import__("os").environ, GRAPHDIFF_BACKEND="cupy"))
    assert res.returncode == 0, f"{' '.join(map(str, args))} failed:\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


def graphdiff(*args):
    return run("-m", "graphdiff", *map(str, args))


def need(module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"needs the {module!r} package, which this machine lacks")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "ckpt"
    text = graphdiff("train", *TINY, "--out", out, "--backend", "cupy")
    assert "backend cupy" in text and out.exists()
    return out


def test_train_and_resume(checkpoint):
    text = graphdiff("train", *TINY, "--steps", "12", "--out", checkpoint, "--resume", "--backend", "cupy")
    assert "at step 12" in text


@pytest.mark.parametrize("cache", [[], ["--no-kv-cache"]], ids=["kv-cache", "recompute"])
def test_generate(checkpoint, cache):
    text = graphdiff("generate", "--checkpoint", checkpoint, "--prompt", "def ", "--max-new-tokens", "24",
                     "--greedy", "--backend", "cupy", *cache)
    assert text.startswith("def ")


def test_generate_cache_and_recompute_agree(checkpoint):
    args = ["generate", "--checkpoint", checkpoint, "--prompt", "import ", "--max-new-tokens", "20", "--greedy",
            "--backend", "cupy"]
    assert graphdiff(*args) == graphdiff(*args, "--no-kv-cache")


def test_demo():
    need("graphviz")                # the tour draws its graphs (a GPU machine may lack the package)
    assert "backend 'cupy'" in graphdiff("demo", "--backend", "cupy")


@pytest.mark.parametrize("command", [["render", "mlp"], ["compare", "scalar", "--repeats", "1"]],
                         ids=["render", "compare"])
def test_viz_commands(command, tmp_path):
    need("graphviz")
    text = graphdiff(*command, "--out", tmp_path, "--backend", "cupy")
    assert "wrote" in text or "DOT source" in text


def test_growth(tmp_path):
    need("graphviz")
    need("matplotlib")
    text = graphdiff("growth", "--max-len", "8", "--render-len", "2", "--out", tmp_path, "--backend", "cupy")
    assert "fitted exponents" in text


EXAMPLES = {
    "lecture_mlp.py": ([], "all gradients agree"),
    "module_tape.py": ([], "dW1: max |tape - graphdiff|"),
    "scalar_graph.py": ([], "dg/da = 138.8338"),
    "tiny_gpt.py": (["--steps", "10", "--chars", "20000"], "KV cache:"),
    "pretrain_finetune.py": (["--seeds", "1", "--pretrain-steps", "20", "--steps", "10"], "fine-tuned: test error"),
    "attention_positions.py": ([], "unchanged: position 1 cannot see position 4"),
    "decoding.py": (["--steps", "10", "--chars", "20000", "--samples", "2", "--length", "4"],
                    "plain ancestral sampling"),
    "batching.py": ([], "vocabulary: <pad>=0"),
    "microgpt.py": (["--steps", "3"], "ms/step"),
    "finetune_lm.py": (["--pre-steps", "4", "--steps", "4", "--pre-chars", "20000", "--new-chars", "3000",
                        "--out", "{tmp}"], "after 4 steps"),
}


def test_every_example_is_run_here():
    assert sorted(EXAMPLES) == sorted(p.name for p in (ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example(name, tmp_path):
    if name == "pretrain_finetune.py":
        need("sklearn")
    args, expect = EXAMPLES[name]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert expect in run(str(ROOT / "examples" / name), "--backend", "cupy", *args)


def test_gradcheck_on_cupy():
    g = gd.Graph(backend="cupy", dtype="float64")
    rng = np.random.default_rng(0)
    x = g.input("x", (3, 4))
    W = g.param("W", rng.standard_normal((4, 2)))
    ids = g.input("ids", (3,), "int64")
    loss = gd.cross_entropy(gd.tanh(x @ W), ids)
    worst = gd.gradcheck(loss, feeds={x: rng.standard_normal((3, 4)), ids: np.array([0, 1, 1])})
    assert worst < 1e-7
