"""The op contract: the F vocabulary is served by every namespace a rule runs on, the built-in rules keep to
it, and a new differentiable op is one class and one row of the op table (no other list to extend)."""
import ast
import inspect
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphdiff as gd
from graphdiff import codegen
from graphdiff.backend import SCALAR
from graphdiff.ops.registry import ARRAY_VOCABULARY, VOCABULARY

from .optable import OpSpec, elementwise


def _namespace(name):
    return {"nodes": gd.ops.NODES, "python floats": SCALAR, "codegen": codegen.CODE}.get(name) or \
        gd.get_backend(name)


ARRAYS = ["numpy", "array_api_strict", pytest.param("cupy", marks=pytest.mark.gpu), "nodes"]


@pytest.mark.parametrize("name", ARRAYS + ["python floats", "codegen"])
def test_every_namespace_serves_the_vocabulary(name):
    """A rule written with VOCABULARY runs on arrays (NumPy, array_api_strict, CuPy or its stand-in), on
    Python floats, on Nodes (symbolic backward) and in the code generator (compiled float graphs)."""
    F = _namespace(name)
    missing = [f for f in VOCABULARY if not callable(getattr(F, f, None))]
    assert not missing, f"{name} lacks {missing}"


@pytest.mark.parametrize("name", ARRAYS)
def test_array_namespaces_serve_the_array_vocabulary(name):
    F = _namespace(name)
    missing = [f for f in ARRAY_VOCABULARY if not callable(getattr(F, f, None))]
    assert not missing, f"{name} lacks {missing}"


def _f_names(fn, seen=None):
    """The F.<name> attributes fn reads, with those of the module's helpers it calls that take F first."""
    seen = set() if seen is None else seen
    if fn in seen:
        return set()
    seen.add(fn)
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    names = {n.attr for n in ast.walk(tree)
             if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "F"}
    module = sys.modules[fn.__module__]
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
            helper = getattr(module, call.func.id, None)
            if inspect.isfunction(helper) and list(inspect.signature(helper).parameters)[:1] == ["F"]:
                names |= _f_names(helper, seen)
    return names


def _rules(spec, which):
    return [f for f in (spec.cls.__dict__.get(k) for k in which) if f is not None]


BUILT_IN = sorted(gd.REGISTRY)


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_vjps_keep_to_the_vocabulary(name):
    """Every VJP reads only ARRAY_VOCABULARY on F (so g.gradients, on Nodes, serves it); an elementwise op's
    forward and VJP read only VOCABULARY (so its graphs stay on the float path and compile)."""
    spec = gd.REGISTRY[name]
    vjp_names = set().union(*[_f_names(f) for f in _rules(spec, ("vjp", "make_vjp"))] or [set()])
    assert vjp_names <= set(ARRAY_VOCABULARY), f"{name}'s VJP reads {sorted(vjp_names - set(ARRAY_VOCABULARY))}"
    if spec.elementwise:
        names = vjp_names.union(*[_f_names(f) for f in _rules(spec, ("forward", "forward_res"))])
        assert names <= set(VOCABULARY), f"{name} reads {sorted(names - set(VOCABULARY))}"


# --- a new op: one class, one row -------------------------------------------------------------------------
def _register_throwaway():
    @gd.op("throwaway_softplus")
    class ThrowawaySoftplus:
        """log(1 + exp(x))"""
        shape = gd.ops.registry.same_shape
        saves = (0,)

        def forward(F, x):
            return F.log(1.0 + F.exp(x))

        def vjp(F, i, g, xs, out):
            return g / (1.0 + F.exp(-xs[0]))
    return ThrowawaySoftplus


ROW = OpSpec("throwaway_softplus", elementwise(), lambda x: gd.REGISTRY["throwaway_softplus"].builder(x), torch=None)


@settings(max_examples=10)
@given(data=st.data())
def test_a_new_op_is_one_class_and_one_row(data):
    """Registered and given one op-table row, an op runs through every path without being listed anywhere
    else: both variants agree with finite differences on NumPy and array_api_strict, g.gradients builds its
    gradient as nodes, forward_backward releases by its saves, and a scalar graph of it runs on floats and
    compiles; its builder (what gd.exp is to exp) came with the registration. (tests/conftest.py removes the
    op again.)"""
    op = gd.REGISTRY.get("throwaway_softplus") or _register_throwaway()
    arrays, attrs = ROW.draw(data)
    for backend in ("numpy", "array_api_strict"):
        g = gd.Graph(backend=backend, dtype="float64")
        x = g.param("x", arrays[0])
        y = gd.sum(ROW.gd(x) * 3.0)
        g.forward(outputs=y)
        numeric = gd.numeric_grads(y, [x])[x]
        for variant in gd.VARIANTS:
            got = gd.to_numpy(g.backward(y, variant=variant)[x])
            np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-8)
            (dx,) = g.gradients(y, [x], variant=variant)
            np.testing.assert_allclose(gd.to_numpy(g.forward(outputs=dx)), got, rtol=1e-12)
        g.forward(outputs=y)
        g.backward(y)
        want = gd.to_numpy(x.grad).copy()
        g.forward_backward({}, [y], y)
        np.testing.assert_allclose(gd.to_numpy(x.grad), want, rtol=1e-12)
    g = gd.Graph(dtype="float64")
    x = g.param("x", float(arrays[0].reshape(-1)[0]))
    y = op.builder(x) * op.builder(x * 2.0)
    for _ in range(codegen.COMPILE_AFTER + 1):
        g.forward(outputs=y)
        got = g.backward(y)[x]
        assert type(y.out) is float
    v = float(x.value)
    sp = np.log1p(np.exp(v)) if v < 30 else v
    sp2 = np.log1p(np.exp(2 * v)) if v < 15 else 2 * v
    want = sp2 / (1 + np.exp(-v)) + sp * 2 / (1 + np.exp(-2 * v))
    np.testing.assert_allclose(float(got), want, rtol=1e-9)


# --- builders come from the registry ----------------------------------------------------------------------
def test_a_fixed_arity_op_gets_its_builder_from_its_registration():
    """An op of one or two inputs and no attributes is given its public function at registration: named after
    the op, documented by its class, adding the node straight away for Nodes of one graph and wrapping numbers
    and arrays otherwise; gd's own such functions are exactly those builders."""
    @gd.op("throwaway_hypot", arity=2)
    class ThrowawayHypot:
        """sqrt(a^2 + b^2)"""
        shape = gd.ops.registry.broadcast_shapes

        def forward(F, a, b):
            return F.sqrt(a * a + b * b)

        def vjp(F, i, g, xs, out):
            return F.unbroadcast(g * xs[i] / out, xs[i])

    hypot = ThrowawayHypot.builder
    assert hypot.__name__ == "throwaway_hypot"
    assert hypot.__doc__.startswith("sqrt(a^2 + b^2). Args: a, b:")
    assert list(inspect.signature(hypot).parameters) == ["a", "b", "name"]
    g = gd.Graph(dtype="float64")
    a, b = g.param("a", 3.0), g.param("b", np.array([4.0, 0.0]))
    for y in (hypot(a, b, name="h"), hypot(a, 4.0), hypot(np.array([3.0]), b)):
        assert y.op == "throwaway_hypot" and y.spec is ThrowawayHypot
    assert g["h"].op == "throwaway_hypot"
    y = gd.sum(g["h"])
    g.forward(outputs=y)
    np.testing.assert_allclose(gd.to_numpy(g["h"].out), [5.0, 3.0])
    np.testing.assert_allclose(gd.to_numpy(g.backward(y)[a]), 3.0 / 5.0 + 1.0)
    for name in ("add", "multiply", "power", "maximum", "equal", "logical_and", "exp", "tanh", "relu", "sign"):
        assert getattr(gd, name) is gd.REGISTRY[name].builder, name


def test_an_op_with_attributes_names_its_own_builder():
    """An op whose forward takes attributes (or a list of inputs) gets no made builder: its module writes
    one that checks them and names it with builds(); Nodes (F of the symbolic backward) serves those builders
    under the vocabulary's names, the ops named otherwise (pow, gather_rows) included."""
    @gd.op("throwaway_scale")
    class ThrowawayScale:
        """x * k"""
        shape = gd.ops.registry.same_shape

        def forward(F, x, k):
            return x * k

        def vjp(F, i, g, xs, out, k):
            return g * k
    assert ThrowawayScale.builder is None

    @gd.ops.registry.builds(ThrowawayScale)
    def scale(x, k, name=None):
        return gd.ops.apply(ThrowawayScale, (x,), {"k": float(k)}, name)
    assert ThrowawayScale.builder is scale
    for name in ("sum", "reshape", "where", "astype", "getitem", "concat", "matmul", "gelu", "embedding"):
        assert getattr(gd, name) is gd.REGISTRY[name].builder, name
    F = gd.ops.NODES
    assert F.exp is gd.exp and F.sum is gd.sum and F.pow is gd.power and F.gather_rows is gd.embedding
