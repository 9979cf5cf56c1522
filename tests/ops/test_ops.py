"""Every op in the table through the three oracles: the two backward variants agree, they match float64
central finite differences, and they match PyTorch's autograd on the CPU; on every backend."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphdiff as gd

from .optable import EDGE_CASES, OPS
from ..oracles import needs_torch, torch

SPECS = [pytest.param(s, id=s.id) for s in OPS]
GRAD_SPECS = [pytest.param(s, id=s.id) for s in OPS if s.grad]


def build(spec, backend, data):
    """Graph with the spec's op applied to params (float leaves) and constants (ids, masks)."""
    arrays, attrs = spec.draw(data)
    g = gd.Graph(backend=backend, dtype="float64", seed=0)
    leaves = [g.param(f"x{k}", a) if a.dtype.kind == "f" else g.constant(a, name=f"c{k}")
              for k, a in enumerate(arrays)]
    y = spec.gd(*leaves, **attrs)
    g.forward(outputs=y)
    assert y.dtype == "bool" or np.all(np.isfinite(gd.to_numpy(y.value))), f"{spec.id}: draw left the domain"
    seed = None
    if y.shape != () and spec.grad:
        seed = np.random.default_rng(1).standard_normal(y.shape)
    return g, leaves, y, arrays, attrs, seed


def grads(g, y, variant, seed):
    got = g.backward(y, variant=variant, seed=seed)
    return {n.name: gd.to_numpy(v).copy() for n, v in got.items()}


def assert_grads_close(a, b, rtol, atol=0.0, what=""):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=f"{what}: d/d{k}")


def test_table_covers_every_registered_op():
    covered = {name for s in OPS for name in s.covers}
    missing = sorted(set(gd.REGISTRY) - covered)
    assert not missing, f"ops missing from tests/ops/optable.py: {missing}"
    assert not covered - set(gd.REGISTRY), "the table names ops that are not registered"


@pytest.mark.parametrize("spec", GRAD_SPECS)
@settings(max_examples=25)
@given(data=st.data())
def test_variants_agree(spec, backend, data):
    g, leaves, y, *_, seed = build(spec, backend, data)
    a = grads(g, y, "children", seed)
    b = grads(g, y, "parents", seed)
    assert_grads_close(a, b, rtol=1e-12, atol=1e-15, what=spec.id)


@pytest.mark.parametrize("spec", GRAD_SPECS)
@settings(max_examples=8)
@given(data=st.data())
def test_finite_differences(spec, backend, data):
    g, leaves, y, *_, seed = build(spec, backend, data)
    params = [n for n in leaves if n.kind == "param"]
    numeric = gd.numeric_grads(y, params, seed=seed, eps=spec.eps)
    for variant in gd.VARIANTS:
        analytic = grads(g, y, variant, seed)
        for n in params:
            np.testing.assert_allclose(analytic[n.name], numeric[n], rtol=spec.rtol, atol=1e-7,
                                       err_msg=f"{spec.id} {variant}: d/d{n.name}")


@needs_torch
@pytest.mark.parametrize("spec", SPECS)
@settings(max_examples=15)
@given(data=st.data())
def test_matches_pytorch(spec, backend, data):
    g, leaves, y, arrays, attrs, seed = build(spec, backend, data)
    ts = [torch.tensor(a, requires_grad=a.dtype.kind == "f" and spec.grad) for a in arrays]
    out = spec.torch(ts, attrs, g)
    np.testing.assert_allclose(gd.to_numpy(y.value), out.detach().numpy(), rtol=1e-10, atol=1e-12,
                               err_msg=f"{spec.id}: forward")
    if not spec.grad:                            # forward only: comparisons, masks, one-hot rows
        return
    out.backward(None if seed is None else torch.tensor(seed))
    for variant in gd.VARIANTS:
        got = grads(g, y, variant, seed)
        for n, t in zip(leaves, ts):
            if n.kind == "param":
                np.testing.assert_allclose(got[n.name], t.grad.numpy(), rtol=1e-9, atol=1e-12,
                                           err_msg=f"{spec.id} {variant}: d/d{n.name}")


@needs_torch
@pytest.mark.parametrize("case", EDGE_CASES, ids=lambda c: c.id)
def test_edge_cases_match_pytorch(case, backend):
    """Limits (0 ** 0), NaN inputs and empty axes: values and both variants' gradients as PyTorch has them."""
    g = gd.Graph(backend=backend, dtype="float64")
    leaves = [g.param(f"x{k}", a) for k, a in enumerate(case.arrays)]
    y = case.gd(*leaves)
    ts = [torch.tensor(a, requires_grad=True) for a in case.arrays]
    out = case.torch(*ts)
    seed = np.linspace(1.0, 2.0, int(np.prod(y.shape))).reshape(y.shape)
    out.backward(torch.tensor(seed))
    with np.errstate(all="ignore"):
        g.forward(outputs=y)
        np.testing.assert_allclose(gd.to_numpy(y.value), out.detach().numpy(), rtol=1e-12, equal_nan=True)
        for variant in gd.VARIANTS:
            got = g.backward(y, variant=variant, seed=seed)
            for n, t in zip(leaves, ts):
                assert got[n].shape == t.shape
                np.testing.assert_allclose(gd.to_numpy(got[n]), t.grad.numpy(), rtol=1e-12, equal_nan=True,
                                           err_msg=f"{case.id} {variant}: d/d{n.name}")
