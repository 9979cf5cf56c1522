"""The README's two commands, its Python blocks, the CI script and the examples stay true."""
import pathlib
import re
import subprocess
import sys

import pytest

import graphdiff as gd

from .viz.viz_helpers import need_renderer

ROOT = pathlib.Path(__file__).resolve().parents[1]
# a ```python block holding this comment is not run by test_readme_python_blocks_run_in_order; put it only on
# a block that cannot run on a CPU test machine, and say why on the same line
SKIP_MARKER = "# readme-test: skip"


def readme_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_gives_exactly_two_commands():
    cmds = readme_commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds)
    assert re.search(r'pip install -e "?\.', cmds[0]) and "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command_and_fails_on_no_tests():
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines()
    assert '"$rc" -eq 5' in ci


def run_example(name, *args):
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True,
                          check=True, cwd=ROOT).stdout


def test_lecture_mlp_example_agrees_with_its_hand_written_backward():
    out = run_example("lecture_mlp.py")
    assert "all gradients agree" in out
    # every NNBackward line printed with its hand value and both variants' values, which agree
    for line in ("g_J = 1", "g_y_hat = -y / y_hat", "g_b = J_softmax^T g_y_hat", "g_beta = g_b z^T",
                 "g_z = beta^T g_b", "g_a = g_z * z * (1 - z)", "g_alpha = g_a x^T"):
        row = next(r for r in out.splitlines() if r.startswith(line))
        hand, a, b = row[len(line):].split("]")[:3]
        assert hand.strip() + "]" == a.strip() + "]" == b.strip() + "]", row


def test_scalar_graph_example_reproduces_micrograd_numbers():
    out = run_example("scalar_graph.py")
    assert "g = 24.7041" in out
    assert out.count("dg/da = 138.8338, dg/db = 645.5773") == 2


def test_module_tape_example_matches_graphdiff():
    out = run_example("module_tape.py")
    errs = [float(line.rsplit("=", 1)[1]) for line in out.splitlines() if "max |tape - graphdiff|" in line]
    assert len(errs) == 8 and max(errs) < 1e-12                   # W1, W2, W3, h in both variants
    assert "tape_bwd popped (reverse creation order): CrossEntropy, Softmax, Add, Linear, Linear, Sigmoid" in out
    lost = float(out.split("dW1 is off by ")[1].split()[0])
    assert lost > 0.01                                            # '=' instead of '+=' loses a contribution


def test_pretrain_finetune_example_prints_errors_spread_and_gain():
    out = run_example("pretrain_finetune.py", "--seeds", "2", "--pretrain-steps", "30")
    assert "fine-tuned: test error" in out and "from scratch: test error" in out and " +- " in out
    assert "gain from pre-training (paired by seed)" in out


@pytest.mark.slow
def test_tiny_gpt_example_trains_and_samples():
    out = run_example("tiny_gpt.py", "--steps", "60", "--chars", "50000")
    losses = [float(line.split("val ")[1].split()[0]) for line in out.splitlines() if line.startswith("step ")]
    assert losses[-1] < losses[0]                          # it learns
    assert "--- ancestral sampling" in out and "KV cache:" in out


def test_readme_first_graph_runs_as_written():
    text = (ROOT / "README.md").read_text()
    block = text.split("## A first graph", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    env = {}
    exec(compile(block, "README.md", "exec"), env)
    W = env["W"]
    assert W.grad.shape == (3, 2) and W.grad.dtype.name == "float64"


def readme_python_blocks():
    """[(line where the code starts, code)] of every ```python block of README.md, in order."""
    text = (ROOT / "README.md").read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)]


def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch):
    """Every ```python block of README.md runs as written, in order, in one namespace (a block may use what
    the blocks above it defined) and in an empty folder: a reader can paste them one after another."""
    need_renderer("graphviz-pure")                       # the diagrams block renders an SVG
    monkeypatch.chdir(tmp_path)
    blocks = readme_python_blocks()
    assert len(blocks) >= 8
    registry = dict(gd.REGISTRY)                        # the README registers an op ("my_softplus") for good
    namespace = {"__name__": "__readme__"}
    try:
        for line, code in blocks:
            if SKIP_MARKER in code:
                continue
            # padded so that a traceback names the README's own line numbers
            exec(compile("\n" * (line - 1) + code, str(ROOT / "README.md"), "exec"), namespace)
    finally:
        gd.REGISTRY.clear()
        gd.REGISTRY.update(registry)
    assert (tmp_path / "out" / "model.svg").exists() and (tmp_path / "mlp.npz").exists()
