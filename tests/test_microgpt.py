"""examples/microgpt.py trains microgpt's model with the losses of a pure-Python scalar engine of microgpt's
structure (benchmarks/microgpt_ref.py), in scalar and tensor mode; its CLI prints what issue 23 says."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from tests.test_readme import ROOT, run_example


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


microgpt = load("examples/microgpt.py", "microgpt_example")
ref = load("benchmarks/microgpt_ref.py", "microgpt_ref")


@pytest.fixture(scope="module")
def docs():
    return microgpt.load_docs()


@pytest.fixture(scope="module")
def reference_losses(docs):
    model = ref.Model(docs, seed=42)
    return [model.step(s, 1000) for s in range(8)]


def test_the_names_file_ships_with_the_project(docs):
    assert (ROOT / "examples" / "data" / "names.txt").is_file()
    assert "public domain" in (ROOT / "examples" / "data" / "README.md").read_text()
    assert len(docs) == len(set(docs)) > 5000
    assert all(re.fullmatch(r"[a-z]+", d) for d in docs)
    assert {"emma", "james", "mary"} <= set(docs)


def test_setup_follows_the_issue(docs):
    run = microgpt.Run(docs, seed=42)
    model = ref.Model(docs, seed=42)
    assert run.docs == model.docs != docs                 # shuffled, the same way
    assert run.vocab_size == model.vocab_size == 27 and run.bos == 26
    assert list(run.params) == list(model.params)          # wte, wpe, lm_head, then the layer's matrices
    flat = [v.data for m in model.params.values() for row in m for v in row]
    assert run.theta.tolist() == flat                      # the same draws, row by row, in that order


@pytest.mark.parametrize("mode, steps", [("tensor", 8), ("scalar", 4)])
@pytest.mark.parametrize("variant", ["children", "parents"])
def test_losses_equal_the_reference(docs, reference_losses, mode, steps, variant):
    trainer = microgpt.Trainer(docs, seed=42, mode=mode, variant=variant)
    losses = [trainer.step(s, 1000) for s in range(steps)]
    for a, b in zip(losses, reference_losses):
        assert abs(a - b) <= 1e-9 * abs(b), (losses, reference_losses)


def test_scalar_and_tensor_gradients_agree(docs):
    """One document's flat gradient, every entry, in both modes (the scalar graph's wte rows scattered back)."""
    import numpy as np
    tok = microgpt.Trainer(docs, mode="tensor")
    sca = microgpt.Trainer(docs, mode="scalar")
    tokens = tok.run.tokens(tok.run.docs[0])
    n = len(tokens) - 1
    _, g_tensor = tok.graph(n).step(tokens, "children")
    _, g_scalar = sca.graph(n).step(tokens, "parents")
    assert np.abs(g_tensor).max() > 0
    np.testing.assert_allclose(g_scalar, g_tensor, rtol=1e-9, atol=1e-14)


def test_scalar_graph_folds_by_position_and_head(docs):
    trainer = microgpt.Trainer(docs, mode="scalar")
    g = trainer.graph(2).g
    scopes = {n.scope for n in g.nodes if n.kind == "op"}
    assert {"pos0/embed", "pos1/loss", "pos0/layer0/head0", "pos1/layer0/head3"} <= scopes
    assert all(n.shape == () and n.dtype == "float64" for n in g.nodes)


def check_output(out, steps):
    lines = out.splitlines()
    for k in range(steps):
        assert re.fullmatch(rf"step {k + 1} loss \d+\.\d{{12}}", lines[k]), lines[k]
    assert re.fullmatch(r"ms/step \d+\.\d+", lines[steps])
    samples = lines[steps + 1:]
    assert len(samples) == 20
    for k, line in enumerate(samples):
        assert re.fullmatch(rf"sample {k + 1} [a-z]*", line), line


def test_cli_prints_steps_time_and_20_names(reference_losses):
    out = run_example("microgpt.py", "--steps", "3")
    check_output(out, 3)
    # the first two steps' learning rates do not depend on --steps (lr_0 = 0.01 for any run)
    assert [float(r.split()[-1]) for r in out.splitlines()[:2]] == pytest.approx(reference_losses[:2], rel=1e-9)


@pytest.mark.slow
def test_cli_scalar_mode_and_own_data(tmp_path):
    data = tmp_path / "words.txt"
    data.write_text("abc\nbca\ncab\nzz\n")
    out = run_example("microgpt.py", "--mode", "scalar", "--steps", "2", "--data", str(data), "--seed", "3")
    check_output(out, 2)
    assert all(re.fullmatch(r"sample \d+ [abcz]*", line) for line in out.splitlines()[3:])


@pytest.mark.slow
def test_benchmark_writes_losses_times_and_ratios(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "microgpt.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")]
                                                                        if p]))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_microgpt.py"), "--steps", "4",
                           "--check-steps", "4", "--json", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"cpu", "cores", "numpy", "torch", "threads", "date"} <= set(result["machine"])
    assert set(result["ms_per_step"]) == {"reference", "scalar", "tensor", "torch"}
    assert all(len(t) == 4 for t in result["step_seconds"].values())
    for name in ("scalar", "tensor"):
        assert result["losses_equal"][name]["max_rel_diff"] <= 1e-9
    assert result["losses_equal"]["torch"]["max_rel_diff"] < 1e-9
    assert {"scalar_speedup", "tensor_speedup", "tensor_over_torch"} <= set(result["ratios"])
    assert set(result["targets_met"]) == {"scalar_speedup", "tensor_speedup", "tensor_over_torch"}
