"""Shared fixtures: the backends every test runs on, and a deterministic Hypothesis profile."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import graphdiff as gd

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


CPU_BACKENDS = ["numpy", "array_api_strict"]
BACKENDS = CPU_BACKENDS + [pytest.param("cupy", marks=pytest.mark.gpu)]


def pytest_collection_modifyitems(config, items):
    if cupy_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA GPU (run benchmarks/gpu_check.sh on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=BACKENDS, scope="session")
def backend(request):
    """Each backend name; cupy only where a GPU exists."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)
