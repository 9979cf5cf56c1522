"""The op table: every registered op with its input domain, a PyTorch twin and its tolerance.

Each OpSpec draws leaf arrays (Hypothesis picks the shapes, including size-1 and broadcast axes; a drawn
seed picks the values inside the op's domain) and builds the op on them in graphdiff and in PyTorch.
tests/ops/test_ops.py runs every spec through the three oracles; a meta-test fails when a registered op
is missing here.
"""
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import graphdiff as gd

MAX_SIDE = 3


@dataclass
class OpSpec:
    name: str
    draw: object                  # data -> (list of leaf arrays, attrs dict)
    gd: object                    # (*nodes, **attrs) -> Node
    torch: object                 # (tensors, attrs, graph) -> tensor
    covers: tuple = ()            # registry names this spec exercises (default: (name,))
    grad: bool = True             # False: forward-only (bool outputs, one-hot rows)
    rtol: float = 1e-6            # finite differences vs analytic
    eps: float = 1e-6             # finite-difference step
    id: str = field(default="")

    def __post_init__(self):
        self.covers = self.covers or (self.name,)
        self.id = self.id or self.name


# --- drawing leaves -----------------------------------------------------------------------------------
def _rng(data):
    return np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="value seed"))


def shape(data, min_dims=0, max_dims=3, min_side=1):
    return data.draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                                      max_side=MAX_SIDE), label="shape")


def broadcast(data, n=2, min_dims=0):
    return data.draw(hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=min_dims, max_dims=3,
                                                       max_side=MAX_SIDE), label="shapes").input_shapes


def values(rng, shp, domain="real"):
    if domain == "real":
        return rng.standard_normal(shp)
    if domain == "positive":
        return rng.uniform(0.5, 2.0, shp)
    if domain == "away":         # |x| >= 0.2: away from kinks at 0
        return rng.choice([-1.0, 1.0], shp) * rng.uniform(0.2, 2.0, shp)
    if domain == "wide":
        return rng.standard_normal(shp) * 3.0
    raise ValueError(domain)


def elementwise(n=1, domains=("real",)):
    def draw(data):
        rng = _rng(data)
        shapes = broadcast(data, n) if n > 1 else [shape(data)]
        doms = domains if len(domains) == n else domains * n
        return [values(rng, s, d) for s, d in zip(shapes, doms)], {}
    return draw


def _axis(data, ndim, allow_none=True, allow_tuple=True):
    options = [st.integers(-ndim, ndim - 1)] if ndim else []
    if allow_none:
        options.append(st.none())
    if allow_tuple and ndim >= 2:
        options.append(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple))
    return data.draw(st.one_of(*options), label="axis")


def reduction(data):
    rng = _rng(data)
    s = shape(data)
    return [values(rng, s)], {"axis": _axis(data, len(s)), "keepdims": data.draw(st.booleans())}


# --- torch helpers --------------------------------------------------------------------------------------
def T():
    import torch
    return torch


def t_axis(axis, ndim):
    return tuple(range(ndim)) if axis is None else axis


def unary(fn):
    return lambda ts, a, g: fn(T())(ts[0])


def binary(fn):
    return lambda ts, a, g: fn(T())(ts[0], ts[1])


def _index_tensors(idx, shape=None):
    """The index for torch: arrays as tensors; torch has no negative slice steps, so those become arrays
    (only used in patterns without None or Ellipsis, where position k indexes axis k)."""
    torch = T()
    out = []
    for k, part in enumerate(idx):
        if isinstance(part, slice) and part.step is not None and part.step < 0:
            part = np.arange(shape[k])[part].copy()
        out.append(torch.as_tensor(part) if isinstance(part, np.ndarray) else part)
    if sum(isinstance(p, torch.Tensor) for p in out) > 1 and any(isinstance(p, int) for p in out):
        out = [torch.as_tensor(p) if isinstance(p, int) else p for p in out]
    return tuple(out)


# --- specific drawers -------------------------------------------------------------------------------------
def draw_matmul(data):
    rng = _rng(data)
    n, k, m = (data.draw(st.integers(1, MAX_SIDE)) for _ in range(3))
    kind = data.draw(st.sampled_from(["2d", "batch_a", "batch_b", "batch_both", "vec_a", "vec_b", "vec_vec"]))
    B = data.draw(st.integers(1, MAX_SIDE))
    a_shape, b_shape = {
        "2d": ((n, k), (k, m)), "batch_a": ((B, n, k), (k, m)), "batch_b": ((n, k), (B, k, m)),
        "batch_both": ((B, 1, n, k), (2, k, m)), "vec_a": ((k,), (B, k, m)), "vec_b": ((B, n, k), (k,)),
        "vec_vec": ((k,), (k,)),
    }[kind]
    return [values(rng, a_shape), values(rng, b_shape)], {}


def draw_reshape(data):
    rng = _rng(data)
    s = shape(data, min_dims=1)
    size = int(np.prod(s))
    target = data.draw(st.sampled_from([(size,), (-1, 1), tuple(reversed(s)), (1,) + s, s + (1,)]))
    return [values(rng, s)], {"shape": target}


def draw_transpose(data):
    rng = _rng(data)
    s = shape(data, min_dims=2)
    perm = tuple(data.draw(st.permutations(range(len(s)))))
    return [values(rng, s)], {"axes": perm}


def draw_broadcast_to(data):
    rng = _rng(data)
    shapes = broadcast(data, 2)
    target = np.broadcast_shapes(*shapes)
    return [values(rng, shapes[0])], {"shape": target}


def draw_concat(data):
    rng = _rng(data)
    s = shape(data, min_dims=1)
    ax = data.draw(st.integers(-len(s), len(s) - 1))
    n = data.draw(st.integers(1, 3))
    arrays = []
    for _ in range(n):
        s2 = list(s)
        s2[ax] = data.draw(st.integers(1, MAX_SIDE))
        arrays.append(values(rng, tuple(s2)))
    return arrays, {"axis": ax}


def draw_stack(data):
    rng = _rng(data)
    s = shape(data)
    n = data.draw(st.integers(1, 3))
    ax = data.draw(st.integers(-len(s) - 1, len(s)))
    return [values(rng, s) for _ in range(n)], {"axis": ax}


def draw_add_n(data):
    rng = _rng(data)
    n = data.draw(st.integers(1, 4))
    return [values(rng, s) for s in broadcast(data, n)], {}


INDEXES = [
    ((3, 3), (1,)), ((3, 3), (slice(None), 2)), ((3, 3), (slice(None, None, 2),)),
    ((2, 3, 3), (Ellipsis, 1)), ((2, 3), (None, slice(1, 3))), ((3, 2), (-1, slice(None, None, -1))),
    ((4, 2), (np.array([0, 2, 0, 3]),)), ((3, 4), (slice(None), np.array([[1, 1], [0, 3]]))),
    ((3, 4), (np.array([2, 0, 2]), np.array([1, 1, 3]))), ((2, 3, 4), (1, np.array([0, 0, 2]), slice(1, 3))),
]


def draw_getitem(data):
    rng = _rng(data)
    s, idx = data.draw(st.sampled_from(INDEXES))
    return [values(rng, s)], {"idx": idx}


def draw_index_add(data):
    rng = _rng(data)
    s, idx = data.draw(st.sampled_from([e for e in INDEXES if all(
        isinstance(k, (int, slice, type(None), type(Ellipsis))) for k in e[1]) or len(e[1]) == 1]))
    gshape = np.empty(s)[idx].shape
    return [values(rng, gshape)], {"shape": s, "idx": idx}


def torch_index_add(ts, a, g):
    torch = T()
    idx = a["idx"]
    z = torch.zeros(a["shape"], dtype=ts[0].dtype)
    if any(isinstance(k, np.ndarray) for k in idx):
        return z.index_put(_index_tensors(idx, a["shape"]), ts[0], accumulate=True)
    z = z.clone()
    z[_index_tensors(idx, a["shape"])] = ts[0]
    return z


def draw_where(data):
    rng = _rng(data)
    shapes = broadcast(data, 3)
    return [rng.random(shapes[0]) > 0.5, values(rng, shapes[1]), values(rng, shapes[2])], {}


def draw_softmax(data):
    rng = _rng(data)
    s = shape(data, min_dims=1)
    return [values(rng, s, "wide")], {"axis": data.draw(st.integers(-len(s), len(s) - 1))}


def draw_cross_entropy(data):
    rng = _rng(data)
    lead = shape(data, min_dims=1, max_dims=2)
    V = data.draw(st.integers(2, 5))
    ids = rng.integers(0, V, lead)
    ignore = data.draw(st.sampled_from([None, 0, -100]))
    if ignore is not None:
        drop = rng.random(lead) < 0.3
        ids = np.where(drop, ignore, ids)
        ids.flat[0] = 1 if ignore == 0 else 0     # keep at least one target (all ignored gives 0/0 = nan)
    return [values(rng, lead + (V,), "wide"), ids], {"ignore_index": ignore}


def torch_cross_entropy(ts, a, g):
    torch = T()
    logits, ids = ts
    ignore = -100 if a["ignore_index"] is None else a["ignore_index"]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1),
                                             ignore_index=ignore)


def draw_layer_norm(data):
    rng = _rng(data)
    s = shape(data, min_dims=1)
    C = s[-1]
    if C == 1:                                    # a single feature normalises to exactly 0: no signal
        s = s[:-1] + (2,)
        C = 2
    return [values(rng, s), values(rng, (C,)), values(rng, (C,))], {"eps": data.draw(
        st.sampled_from([1e-5, 1e-2]))}


def draw_embedding(data):
    rng = _rng(data)
    V, C = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))
    ids = rng.integers(0, V, shape(data, max_dims=2))
    return [values(rng, (V, C)), ids], {}


def draw_dropout(data):
    rng = _rng(data)
    return [values(rng, shape(data))], {"p": data.draw(st.sampled_from([0.25, 0.5]))}


def torch_dropout(ts, a, g):
    mask = next(n for n in g.nodes if n.op == "dropout_mask")
    return ts[0] * T().as_tensor(gd.to_numpy(mask.value))


def draw_compare(data):
    rng = _rng(data)
    shapes = broadcast(data, 2)
    a, b = values(rng, shapes[0]), values(rng, shapes[1])
    if shapes[0] == shapes[1]:
        b = np.where(rng.random(b.shape) < 0.3, a, b)   # some exact ties for equal / >=
    return [a, b], {}


def draw_logical(data):
    rng = _rng(data)
    shapes = broadcast(data, 2)
    return [rng.random(shapes[0]) < 0.5, rng.random(shapes[1]) < 0.5], {}


def draw_one_hot(data):
    rng = _rng(data)
    n = data.draw(st.integers(1, 4))
    return [rng.integers(0, n, shape(data, max_dims=2))], {"n": n, "dtype": "float64"}


def draw_scatter_rows(data):
    rng = _rng(data)
    N, C, rows = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    return [values(rng, (N, C)), rng.integers(0, rows, N)], {"rows": rows}


def torch_scatter_rows(ts, a, g):
    torch = T()
    return torch.zeros(a["rows"], ts[0].shape[1], dtype=ts[0].dtype).index_add(0, ts[1], ts[0])


def draw_astype(data):
    rng = _rng(data)
    return [values(rng, shape(data))], {}


def torch_gelu(approx):
    return lambda ts, a, g: T().nn.functional.gelu(ts[0], approximate=approx)


def torch_reduce(fn):
    def run(ts, a, g):
        torch = T()
        x = ts[0]
        axis = t_axis(a["axis"], x.ndim)
        if fn == "max":
            return torch.amax(x, dim=axis, keepdim=a["keepdims"]) if x.ndim else x
        if x.ndim == 0:
            return x
        return getattr(torch, fn)(x, dim=axis, keepdim=a["keepdims"])
    return run


OPS = [
    OpSpec("add", elementwise(2), lambda a, b: a + b, binary(lambda t: t.add)),
    OpSpec("subtract", elementwise(2), lambda a, b: a - b, binary(lambda t: t.subtract)),
    OpSpec("multiply", elementwise(2), lambda a, b: a * b, binary(lambda t: t.multiply)),
    OpSpec("multiply", elementwise(1), lambda a: a * a, lambda ts, a, g: ts[0] * ts[0], id="multiply_self"),
    OpSpec("divide", elementwise(2, ("real", "away")), lambda a, b: a / b, binary(lambda t: t.divide)),
    OpSpec("power", elementwise(2, ("positive", "real")), lambda a, b: a ** b, binary(lambda t: t.pow)),
    OpSpec("power", elementwise(1, ("away",)), lambda a: a ** 3, lambda ts, a, g: ts[0] ** 3, id="power_const"),
    OpSpec("maximum", elementwise(2), gd.maximum, binary(lambda t: t.maximum)),
    OpSpec("minimum", elementwise(2), gd.minimum, binary(lambda t: t.minimum)),
    OpSpec("negative", elementwise(1), lambda a: -a, unary(lambda t: t.negative)),
    OpSpec("exp", elementwise(1), gd.exp, unary(lambda t: t.exp)),
    OpSpec("log", elementwise(1, ("positive",)), gd.log, unary(lambda t: t.log)),
    OpSpec("sqrt", elementwise(1, ("positive",)), gd.sqrt, unary(lambda t: t.sqrt)),
    OpSpec("tanh", elementwise(1), gd.tanh, unary(lambda t: t.tanh)),
    OpSpec("sigmoid", elementwise(1, ("wide",)), gd.sigmoid, unary(lambda t: t.sigmoid)),
    OpSpec("relu", elementwise(1, ("away",)), gd.relu, unary(lambda t: t.relu)),
    OpSpec("abs", elementwise(1, ("away",)), gd.abs, unary(lambda t: t.abs)),
    OpSpec("erf", elementwise(1), gd.erf, unary(lambda t: t.erf)),
    OpSpec("gelu", elementwise(1, ("wide",)), gd.gelu, torch_gelu("none")),
    OpSpec("gelu", elementwise(1, ("wide",)), lambda x: gd.gelu(x, approximate="tanh"), torch_gelu("tanh"),
           id="gelu_tanh"),
    OpSpec("where", draw_where, gd.where, lambda ts, a, g: T().where(ts[0], ts[1], ts[2])),
    # float32 in the middle: the gradient is exact (identity) but the forward rounds, so use a wide step
    OpSpec("astype", draw_astype, lambda x: gd.astype(gd.astype(x, "float32"), "float64"),
           lambda ts, a, g: ts[0].float().double(), eps=1e-3, rtol=1e-3),
    OpSpec("sum", reduction, gd.sum, torch_reduce("sum")),
    OpSpec("mean", reduction, gd.mean, torch_reduce("mean")),
    OpSpec("max", reduction, gd.max, torch_reduce("max")),
    OpSpec("add_n", draw_add_n, lambda *xs: gd.add_n(xs), lambda ts, a, g: sum(ts[1:], ts[0])),
    OpSpec("matmul", draw_matmul, lambda a, b: a @ b, binary(lambda t: t.matmul)),
    OpSpec("reshape", draw_reshape, gd.reshape, lambda ts, a, g: ts[0].reshape(a["shape"])),
    OpSpec("transpose", draw_transpose, gd.transpose, lambda ts, a, g: ts[0].permute(a["axes"])),
    OpSpec("transpose", elementwise(1), lambda x: x.T, lambda ts, a, g: ts[0].permute(tuple(reversed(range(ts[0].ndim)))),
           id="transpose_T"),
    OpSpec("broadcast_to", draw_broadcast_to, gd.broadcast_to, lambda ts, a, g: ts[0].broadcast_to(a["shape"])),
    OpSpec("concat", draw_concat, lambda *xs, axis: gd.concat(xs, axis=axis),
           lambda ts, a, g: T().cat(ts, dim=a["axis"])),
    OpSpec("stack", draw_stack, lambda *xs, axis: gd.stack(xs, axis=axis),
           lambda ts, a, g: T().stack(ts, dim=a["axis"])),
    OpSpec("getitem", draw_getitem, lambda x, idx: x[idx], lambda ts, a, g: ts[0][_index_tensors(a["idx"], ts[0].shape)]),
    OpSpec("index_add", draw_index_add, gd.index_add, torch_index_add),
    OpSpec("softmax", draw_softmax, gd.softmax, lambda ts, a, g: T().softmax(ts[0], dim=a["axis"])),
    OpSpec("log_softmax", draw_softmax, gd.log_softmax, lambda ts, a, g: T().log_softmax(ts[0], dim=a["axis"])),
    OpSpec("cross_entropy", draw_cross_entropy, gd.cross_entropy, torch_cross_entropy),
    OpSpec("layer_norm", draw_layer_norm, gd.layer_norm,
           lambda ts, a, g: T().nn.functional.layer_norm(ts[0], (ts[0].shape[-1],), ts[1], ts[2], a["eps"])),
    OpSpec("embedding", draw_embedding, gd.embedding, lambda ts, a, g: T().nn.functional.embedding(ts[1], ts[0])),
    OpSpec("dropout", draw_dropout, gd.dropout, torch_dropout, covers=("dropout_mask",)),
    OpSpec("greater", draw_compare, lambda a, b: a > b, binary(lambda t: t.gt), grad=False),
    OpSpec("less", draw_compare, lambda a, b: a < b, binary(lambda t: t.lt), grad=False),
    OpSpec("greater_equal", draw_compare, lambda a, b: a >= b, binary(lambda t: t.ge), grad=False),
    OpSpec("less_equal", draw_compare, lambda a, b: a <= b, binary(lambda t: t.le), grad=False),
    OpSpec("equal", draw_compare, gd.equal, binary(lambda t: t.eq), grad=False),
    OpSpec("not_equal", draw_compare, gd.not_equal, binary(lambda t: t.ne), grad=False),
    OpSpec("logical_and", draw_logical, gd.logical_and, binary(lambda t: t.logical_and), grad=False),
    OpSpec("sign", elementwise(1, ("away",)), gd.sign, unary(lambda t: t.sign)),
    OpSpec("one_hot", draw_one_hot, gd.one_hot,
           lambda ts, a, g: T().nn.functional.one_hot(ts[0], a["n"]).double(), grad=False),
    OpSpec("scatter_rows", draw_scatter_rows, gd.scatter_rows, torch_scatter_rows),
]


# --- edge cases: fixed inputs where the maths has a limit, an empty axis or a NaN -----------------------
# (each checked in both variants against PyTorch, NaN where PyTorch has NaN; finite differences do not
# apply at a kink or on an empty array)
@dataclass
class EdgeCase:
    id: str
    arrays: list                  # float64 leaf values
    gd: object                    # (*nodes) -> Node
    torch: object                 # (*tensors) -> tensor


EDGE_CASES = [
    EdgeCase("power_base0_exp0_and_2", [np.array([0.0, 0.0, 2.0]), np.array([0.0, 2.0, 0.0])],
             lambda p, q: p ** q, lambda p, q: p ** q),
    EdgeCase("power_base0_exp_half_and_3", [np.array([0.0, 0.0]), np.array([0.5, 3.0])],
             lambda p, q: p ** q, lambda p, q: p ** q),
    EdgeCase("power_negative_base_int_exp", [np.array([-2.0, -0.5]), np.array([2.0, 3.0])],
             lambda p, q: p ** q, lambda p, q: p ** q),
    EdgeCase("relu_nan_zero", [np.array([np.nan, -1.0, 0.0, 2.0])], gd.relu, lambda x: x.relu()),
    EdgeCase("mean_empty_axis", [np.zeros((2, 0))], lambda x: gd.mean(x, axis=1), lambda x: x.mean(dim=1)),
    EdgeCase("mean_empty_all", [np.zeros((0, 3))], lambda x: gd.mean(x, axis=0), lambda x: x.mean(dim=0)),
    EdgeCase("sum_empty_axis", [np.zeros((2, 0))], lambda x: gd.sum(x, axis=1), lambda x: x.sum(dim=1)),
]
