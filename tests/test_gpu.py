"""The GPU tier: CuPy results equal NumPy results (float64 rtol 1e-10, float32 rtol 1e-4).

Runs where CuPy and a CUDA GPU exist (marker `gpu`; skipped elsewhere with the reason). The op table
and random-DAG tests also run on CuPy through the `backend` fixture. benchmarks/gpu_check.sh runs this tier.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphdiff as gd

from .ops.optable import OPS

pytestmark = pytest.mark.gpu
TOL = {"float64": 1e-10, "float32": 1e-4}


def run(spec, backend, arrays, attrs, dtype):
    g = gd.Graph(backend=backend, dtype=dtype, seed=0)
    leaves = [g.param(f"x{k}", a) if a.dtype.kind == "f" else g.constant(a, name=f"c{k}")
              for k, a in enumerate(arrays)]
    y = spec.gd(*leaves, **attrs)
    out = gd.to_numpy(g.forward(outputs=y))
    if not spec.grad:
        return out, {}
    seed = None if y.shape == () else np.random.default_rng(1).standard_normal(y.shape)
    grads = {n.name: gd.to_numpy(v) for n, v in g.backward(y, seed=seed).items()}
    return out, grads


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("spec", [pytest.param(s, id=s.id) for s in OPS if s.name != "dropout"])
@settings(max_examples=10)
@given(data=st.data())
def test_cupy_matches_numpy(spec, dtype, data):
    arrays, attrs = spec.draw(data)
    ref_out, ref_grads = run(spec, "numpy", arrays, attrs, dtype)
    out, grads = run(spec, "cupy", arrays, attrs, dtype)
    np.testing.assert_allclose(out, ref_out, rtol=TOL[dtype], atol=TOL[dtype] * 1e-2)
    for k in ref_grads:
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=TOL[dtype], atol=TOL[dtype] * 1e-2)


def test_values_live_on_the_gpu():
    import cupy
    g = gd.Graph(backend="cupy")
    w = g.param("w", np.ones((3, 3)))
    y = gd.sum(w @ w)
    g.forward(outputs=y)
    g.backward(y)
    assert isinstance(w.value, cupy.ndarray) and isinstance(w.grad, cupy.ndarray)
    assert isinstance(gd.to_numpy(w.grad), np.ndarray)
