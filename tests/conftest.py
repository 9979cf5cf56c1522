"""Shared fixtures: the backends every test runs on, and a deterministic Hypothesis profile.

GRAPHDIFF_CUPY_STANDIN=1 puts tests/cupy_standin first on the import path (here and, through PYTHONPATH,
in every subprocess the tests start): `import cupy` then gives the CuPy stand-in, the real CupyBackend runs
on it, and every test marked `gpu` (the `backend` fixture's "cupy", the GPU tier, the whole-stack runs)
runs in CI: `GRAPHDIFF_CUPY_STANDIN=1 python -m pytest -m gpu`.
"""
import os
import sys
from pathlib import Path

STANDIN = Path(__file__).parent / "cupy_standin"
if os.environ.get("GRAPHDIFF_CUPY_STANDIN") == "1":
    sys.path.insert(0, str(STANDIN))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(STANDIN), str(STANDIN.parent.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p])

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import graphdiff as gd  # noqa: E402

# derandomized: the same examples on every run, so CI on a noisy machine is repeatable
settings.register_profile("graphdiff", deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "graphdiff"))


def cupy_available():
    try:
        gd.get_backend("cupy")
        return True
    except gd.BackendUnavailable:
        return False


def standin_active():
    """True when `cupy` is the stand-in (its sync counters are then readable: cupy.standin)."""
    return cupy_available() and hasattr(sys.modules["cupy"], "standin")


CPU_BACKENDS = ["numpy", "array_api_strict"]
BACKENDS = CPU_BACKENDS + [pytest.param("cupy", marks=pytest.mark.gpu)]


def pytest_collection_modifyitems(config, items):
    if cupy_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA GPU (run benchmarks/gpu_check.sh on a GPU machine, "
                                   "or GRAPHDIFF_CUPY_STANDIN=1 for the CuPy stand-in)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=BACKENDS, scope="session")
def backend(request):
    """Each backend name; cupy only where a GPU (or the CuPy stand-in) exists."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _registry_restored():
    """Ops a test registers (throwaway custom ops) are removed after it, so none leaks into another test."""
    before = dict(gd.REGISTRY)
    yield
    if gd.REGISTRY.keys() != before.keys():
        gd.REGISTRY.clear()
        gd.REGISTRY.update(before)
