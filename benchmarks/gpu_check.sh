#!/usr/bin/env bash
# The GPU tier and a short CuPy-vs-NumPy timing, for a machine with CuPy and a CUDA GPU.
# Needs numpy, scipy, cupy, pytest, hypothesis (torch optional); not graphviz nor matplotlib:
# it runs from the source tree (PYTHONPATH=.) and collects only engine tests, so nothing imports viz.
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}

$PY - <<'PY'
import cupy, numpy
print(f"cupy {cupy.__version__}, numpy {numpy.__version__}, "
      f"GPU: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
PY

# 1. the tier: the op table, random DAGs and the backend tests on CuPy, and CuPy == NumPy
$PY -m pytest -q -p no:cacheprovider -k "cupy or gpu" tests/ops tests/test_autodiff.py tests/test_backend.py tests/test_gpu.py
tier=$?

# 2. timing: forward + backward of a two-layer MLP, NumPy vs CuPy, float32, median of 5 after a warm-up
$PY - <<'PY'
import statistics, time
import numpy as np
import cupy
import graphdiff as gd

def mlp(backend, B, D):
    rng = np.random.default_rng(0)
    g = gd.Graph(backend=backend, dtype="float32")
    x = g.input("x", (B, D))
    W1 = g.param("W1", rng.standard_normal((D, 4 * D)) / np.sqrt(D))
    W2 = g.param("W2", rng.standard_normal((4 * D, D)) / np.sqrt(4 * D))
    loss = gd.mean((gd.gelu(x @ W1) @ W2) ** 2.0)
    return g, x, loss, rng.standard_normal((B, D)).astype(np.float32)

print(f"{'B x D':>12s} {'numpy ms':>10s} {'cupy ms':>10s} {'speed-up':>9s}")
for B, D in [(64, 256), (256, 1024), (1024, 2048)]:
    row = []
    for backend in ("numpy", "cupy"):
        g, x, loss, X = mlp(backend, B, D)
        times = []
        for k in range(6):
            t = time.perf_counter()
            g.forward({x: X}, outputs=loss)
            g.backward(loss)
            if backend == "cupy":
                cupy.cuda.Device().synchronize()
            if k:
                times.append(time.perf_counter() - t)
        row.append(statistics.median(times) * 1e3)
    print(f"{B:>5d} x {D:<5d} {row[0]:10.2f} {row[1]:10.2f} {row[0] / row[1]:8.1f}x")
PY
exit $tier
