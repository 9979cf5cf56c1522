"""Each benchmark runs with --quick (the GPU one with --smoke on the CuPy stand-in) in a subprocess and writes a
result file with the machine line and a median, min and max per engine. No timing is asserted."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
MACHINE = ("cpu", "cores", "numpy", "blas", "threads", "date")


def run_quick(script, tmp_path, *extra, env=None):
    out = tmp_path / f"{script}.json"
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [e.get("PYTHONPATH")] if p])
    e.update(env or {})
    proc = subprocess.run([sys.executable, str(BENCH / script), *extra, "--json", str(out)], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for k in MACHINE:
        assert k in result["machine"], k
    assert result["rows"]
    engines = set()
    for row in result["rows"]:
        engines.add(row["engine"])
        assert {"median", "min", "max", "n"} <= set(row["summary"])
        assert row["summary"]["min"] <= row["summary"]["median"] <= row["summary"]["max"]
    assert any("ratio" in row for row in result["rows"])
    return result, engines


@pytest.mark.slow
def test_gpt_step(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("autograd")
    result, engines = run_quick("bench_gpt_step.py", tmp_path, "--quick")
    assert engines == {"graphdiff", "torch", "autograd", "numpy"}
    assert all(c["loss_rel_diff"] < 1e-4 for run in result["checks"].values()
               for k, c in run.items() if isinstance(c, dict))
    assert "median_ratio" in next(r for r in result["rows"] if r["engine"] == "torch")["ratio"]


@pytest.mark.slow
def test_memory(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("autograd")
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc/self/clear_refs")
    result, engines = run_quick("bench_memory.py", tmp_path, "--quick", "--configs", "tiny")
    assert {"graphdiff", "torch"} <= engines
    assert "method" in result


def test_scalar(tmp_path):
    pytest.importorskip("micrograd")
    result, engines = run_quick("bench_scalar.py", tmp_path, "--quick")
    modes = {r["mode"] for r in result["rows"]}
    assert {"run alone (children)", "build+run (lazy)", "build+run (eager)"} <= modes
    assert engines == {"graphdiff", "micrograd (build+run)"}


def test_train(tmp_path):
    pytest.importorskip("torch")
    result, engines = run_quick("bench_train.py", tmp_path, "--quick")
    assert engines == {"graphdiff", "torch"}
    assert result["tokens_per_s_ratio"] > 0 and result["tokens_per_step"] > 0


def test_generate(tmp_path):
    pytest.importorskip("torch")
    result, engines = run_quick("bench_generate.py", tmp_path, "--quick")
    assert engines == {"graphdiff KV cache", "graphdiff recompute", "torch recompute"}
    assert result["tokens_per_s_ratios"]


def test_gpu_smoke_on_standin(tmp_path):
    pytest.importorskip("torch")
    result, engines = run_quick("bench_gpu.py", tmp_path, "--smoke", env={"GRAPHDIFF_CUPY_STANDIN": "1"})
    assert result["machine"]["standin"] and result["machine"]["torch_device"] == "cpu"
    assert {"graphdiff cupy fp32", "torch fp32"} <= engines
    assert result["checks"]["tiny"]["rel_diff"] < 1e-4


def test_kernels(tmp_path):
    pytest.importorskip("torch")
    result, engines = run_quick("bench_kernels.py", tmp_path, "--quick", "--only", "softmax", "gelu", "layer_norm")
    assert engines == {"rule", "kernel", "torch"}
