"""Neural-network ops: softmax, log_softmax, cross_entropy, layer_norm, embedding, dropout.

Integer ids are range-checked on the host, where they come from, never by reading device data back in the
forward: ids given as an array or a constant are checked when the node is built, and an input's ids at every
feed (the check is recorded on the input node, `attrs["host_checks"]`, and Graph runs it on the host value
before the transfer). Only ids computed inside the graph are checked by the forward on the device (a sync).
"""
import numpy as np

from .registry import REGISTRY, apply, builds, norm_axis, op
from ..errors import DTypeError, GraphError, ShapeError
from ..graph import Node, to_numpy

__all__ = ["softmax", "log_softmax", "cross_entropy", "layer_norm", "embedding", "dropout", "one_hot",
           "scatter_rows"]


def _axis_shape(shape, axis):
    if not shape:
        raise ShapeError("needs at least one axis")
    norm_axis(axis, len(shape))
    return shape


def _logsumexp(F, x, axis):
    m = F.max(x, axis=axis, keepdims=True)
    return m + F.log(F.sum(F.exp(x - m), axis=axis, keepdims=True))


@op("softmax")
class Softmax:
    """exp(x) / sum(exp(x)) along axis"""
    shape = _axis_shape
    saves = ("out",)

    def forward(F, x, axis=-1):
        e = F.exp(x - F.max(x, axis=axis, keepdims=True))
        return e / F.sum(e, axis=axis, keepdims=True)

    def vjp(F, i, g, xs, out, axis=-1):           # J^T g = s * (g - <g, s>)
        return out * (g - F.sum(g * out, axis=axis, keepdims=True))


@op("log_softmax")
class LogSoftmax:
    """x - logsumexp(x) along axis"""
    shape = _axis_shape
    saves = ("out",)

    def forward(F, x, axis=-1):                   # (x - m) - log s, not x - (m + log s): exactly 0 over one
        xm = x - F.max(x, axis=axis, keepdims=True)  # class, or at a masked row's only finite entry
        return xm - F.log(F.sum(F.exp(xm), axis=axis, keepdims=True))

    def vjp(F, i, g, xs, out, axis=-1):
        return g - F.exp(out) * F.sum(g, axis=axis, keepdims=True)


def _ce_shape(logits, ids, ignore_index=None, check_ids=False):
    if len(logits) < 1 or tuple(logits[:-1]) != tuple(ids):
        raise ShapeError(f"logits {logits} and ids {ids} do not fit: ids must have the shape of logits "
                         f"without its last (class) axis, here {tuple(logits[:-1])}")
    return ()


def _keep(F, ids, ignore_index):
    if ignore_index is None:
        return F.ones_like(ids) > 0
    return F.not_equal(ids, ignore_index)


@op("cross_entropy", arity=2, slots=("float", "int"))
class CrossEntropy:
    """mean over kept targets of -log softmax(logits)[id]; ids equal to ignore_index are left out"""
    shape = _ce_shape
    saves = (0, 1)  # and the residual lse

    def forward_res(F, logits, ids, ignore_index=None, check_ids=False):   # keeps the log-sum-exp
        V = logits.shape[-1]
        keep = _keep(F, ids, ignore_index)
        if check_ids:
            _check_on_device(F, ids, _ce_rule(V, ignore_index))
        lse = _logsumexp(F, logits, -1)
        hot = F.one_hot(ids, V, F.dtypes["bool"])        # picked by where: a masked (-inf) logit times 0 is NaN
        picked = F.sum(F.where(hot, logits - lse, 0.0), axis=-1)
        w = F.astype_like(keep, logits)
        return -F.sum(picked * w) / F.sum(w), lse

    def make_vjp(F, xs, out, lse, ignore_index=None, check_ids=False):  # (softmax - onehot) / kept
        logits, ids = xs
        if lse is None:
            lse = _logsumexp(F, logits, -1)

        def vjp(i, g):
            w = F.astype_like(_keep(F, ids, ignore_index), logits)
            scale = F.reshape(w, w.shape + (1,)) * (g / F.sum(w))
            return (F.exp(logits - lse) - F.one_hot(ids, logits.shape[-1], logits.dtype)) * scale
        return vjp


# --- id range checks ------------------------------------------------------------------------------------
def _ce_rule(V, ignore_index):
    return V, ignore_index, f"target ids must lie in [0, {V}) or equal ignore_index={ignore_index}"


def _embedding_rule(V):
    return V, None, f"ids must lie in [0, {V}) for a table of {V} rows"


def _rows_rule(V, what):
    return V, None, f"ids must lie in [0, {V}) for {V} {what}"


def _first_bad(host, rule):
    """'found id 7 at position (2,)' for the first id of the host array outside the rule, else None."""
    V, ignore, _ = rule
    bad = (host < 0) | (host >= V)
    if ignore is not None:
        bad &= host != ignore
    if not bad.any():
        return None
    pos = tuple(int(k) for k in np.argwhere(bad)[0])
    return f"found id {int(host[pos])} at position {pos}"


def _check_on_device(F, ids, rule):
    """Ids computed inside the graph: only the device has them (reads one bool back, a sync)."""
    V, ignore, text = rule
    bad = F.logical_not(F.logical_and(ids >= 0, ids < V))
    if ignore is not None:
        bad = F.logical_and(bad, F.not_equal(ids, ignore))
    if bool(F.any(bad)):
        raise ValueError(f"{text}; {_first_bad(F.to_numpy(ids), rule)}")


def _guarded(spec, args, attrs, name, ids, rule):
    """apply(spec, args) with the ids range-checked on the host: now for arrays and constants, at every
    feed for an input, by the forward (on the device) for ids computed in the graph."""
    if not isinstance(ids, Node) or ids.kind == "constant":
        host = to_numpy(ids)
        found = _first_bad(host, rule) if host.dtype.kind in "iu" else None   # else _wrap's DTypeError
        if found:
            what = f"constant '{ids.name}'" if isinstance(ids, Node) else "the ids"
            raise GraphError(f"{spec.name} '{name or spec.name}': {what}: {rule[2]}; {found}")
    elif ids.kind == "op":
        attrs = dict(attrs, check_ids=True)
    node = apply(spec, args, attrs, name)
    if isinstance(ids, Node) and ids.kind == "input":
        def check(host):
            found = _first_bad(host, rule)
            if found:
                raise GraphError(f"forward failed at {node.op} '{node.name}': input '{ids.name}' was fed "
                                 f"out-of-range ids: {rule[2]}; {found}")
        ids.attrs.setdefault("host_checks", []).append(check)
    return node


def _ln_shape(x, gamma, beta, eps=1e-5):
    if not x:
        raise ShapeError("layer_norm needs at least one axis")
    C = x[-1]
    for nm, s in (("gamma", gamma), ("beta", beta)):
        if tuple(s) != (C,):
            raise ShapeError(f"{nm} has shape {s}, expected ({C},) to match the last axis of x{x}")
    return x


@op("layer_norm", arity=3)
class LayerNorm:
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis (biased variance, as PyTorch)"""
    shape = _ln_shape
    saves = (1,)  # gamma, and the residuals xhat, rstd

    def forward_res(F, x, gamma, beta, eps=1e-5):   # keeps the normalised x and 1/std
        xhat, rstd = _normalize(F, x, eps)
        return xhat * gamma + beta, (xhat, rstd)

    def make_vjp(F, xs, out, res, eps=1e-5):
        x, gamma, beta = xs
        xhat, rstd = res if res is not None else _normalize(F, x, eps)

        def vjp(i, g):
            if i == 2:
                return F.unbroadcast(g, beta.shape)
            if i == 1:
                return F.unbroadcast(g * xhat, gamma.shape)
            d = g * gamma                              # dL/dxhat
            return rstd * (d - F.mean(d, axis=-1, keepdims=True) - xhat * F.mean(d * xhat, axis=-1, keepdims=True))
        return vjp


def _normalize(F, x, eps):
    xc = x - F.mean(x, axis=-1, keepdims=True)
    rstd = 1.0 / F.sqrt(F.mean(xc * xc, axis=-1, keepdims=True) + eps)
    return xc * rstd, rstd


def _embedding_shape(table, ids, check_ids=False):
    if len(table) != 2:
        raise ShapeError(f"table must be 2-d (rows, features), got shape {table}")
    return tuple(ids) + (table[1],)


@op("embedding", arity=2, slots=("float", "int"))
class Embedding:
    """table[ids]: one row per id"""
    shape = _embedding_shape
    saves = (1,)

    def forward(F, table, ids, check_ids=False):
        V, C = table.shape
        if check_ids:
            _check_on_device(F, ids, _embedding_rule(V))
        flat = F.reshape(ids, (-1,))
        return F.reshape(F.take(table, flat, axis=0), tuple(ids.shape) + (C,))

    def vjp(F, i, g, xs, out, check_ids=False):                    # rows used twice get both gradients
        table, ids = xs
        return F.scatter_rows(F.reshape(g, (-1, table.shape[1])), F.reshape(ids, (-1,)), table.shape[0])


def _one_hot_shape(ids, n, dtype, check_ids=False):
    return tuple(ids) + (n,)


@op("one_hot", slots="int", differentiable=False)
class OneHot:
    """(..., n): 1 where the last index equals ids, else 0 (in the float dtype given)"""
    shape = _one_hot_shape

    def dtype(ids, n, dtype, check_ids=False):
        return dtype

    def forward(F, ids, n, dtype, check_ids=False):
        if check_ids:
            _check_on_device(F, ids, _rows_rule(n, "classes"))
        return F.one_hot(ids, n, F.dtypes[dtype])


def _scatter_rows_shape(g, ids, rows, check_ids=False):
    if len(g) != 2 or tuple(ids) != g[:1]:
        raise ShapeError(f"scatter_rows needs g (N, C) and ids (N,), got g{g} and ids{ids}")
    return (rows, g[1])


@op("scatter_rows", arity=2, slots=("float", "int"))
class ScatterRows:
    """zeros((rows, C)) with g[k] added at row ids[k] (repeats add up): the VJP of embedding"""
    shape = _scatter_rows_shape
    saves = (1,)

    def forward(F, g, ids, rows, check_ids=False):
        if check_ids:
            _check_on_device(F, ids, _rows_rule(rows, "rows"))
        return F.scatter_rows(g, ids, rows)

    def vjp(F, i, gg, xs, out, rows, check_ids=False):   # the adjoint of a scatter is a gather
        return F.gather_rows(gg, xs[1])


def _mask_shape(shape, dtype, p):
    return shape


@op("dropout_mask", arity=0, random=True, differentiable=False)
class DropoutMask:
    """keep / (1 - p) with keep ~ Bernoulli(1 - p) while training; ones in eval mode"""
    shape = _mask_shape

    def dtype(shape, dtype, p):
        return dtype

    def forward(F, shape, dtype, p, ctx):
        if not ctx.training:
            return F.ones(shape, dtype=F.dtypes[dtype])
        u = ctx.rng.uniform(shape, dtype)
        return F.where(u >= p, F.full(shape, 1.0 / (1.0 - p), dtype=F.dtypes[dtype]),
                       F.zeros(shape, dtype=F.dtypes[dtype]))


# --- public functions ---------------------------------------------------------------------------------
@builds(Softmax)
def softmax(x, axis=-1, name=None):
    """Softmax along axis (default last). Args: x: a float Node."""
    return apply(REGISTRY["softmax"], (x,), {"axis": int(axis)}, name)


@builds(LogSoftmax)
def log_softmax(x, axis=-1, name=None):
    """log(softmax(x)) along axis, computed stably."""
    return apply(REGISTRY["log_softmax"], (x,), {"axis": int(axis)}, name)


@builds(CrossEntropy)
def cross_entropy(logits, ids, ignore_index=None, name=None):
    """Mean negative log-likelihood of integer targets.

    Args:
        logits: (..., V) float Node of unnormalised scores.
        ids: (...) integer Node or array of target ids in [0, V).
        ignore_index: targets equal to it (e.g. the <pad> id) are left out of the mean.
    """
    if ignore_index is not None:
        if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, (int, np.integer)):
            raise DTypeError(f"cross_entropy: ignore_index must be an integer id (such as the <pad> id), "
                             f"got {ignore_index!r}")
        ignore_index = int(ignore_index)
    return _guarded(REGISTRY["cross_entropy"], (logits, ids), {"ignore_index": ignore_index}, name, ids,
                    _ce_rule(np.shape(logits)[-1] if np.ndim(logits) else 0, ignore_index))


@builds(OneHot)
def one_hot(ids, n, dtype="float32", name=None):
    """(..., n) one-hot rows of integer ids. Args: ids: int Node or array of ids in [0, n) (checked, as
    embedding's); n: classes; dtype: float dtype name."""
    n = int(n)
    return _guarded(REGISTRY["one_hot"], (ids,), {"n": n, "dtype": str(dtype)}, name, ids, _rows_rule(n, "classes"))


@builds(ScatterRows)
def scatter_rows(g, ids, rows, name=None):
    """zeros((rows, C)) with g[k] (g is (N, C)) added at row ids[k] (ids (N,) ints in [0, rows), checked as
    embedding's): the VJP of embedding."""
    rows = int(rows)
    return _guarded(REGISTRY["scatter_rows"], (g, ids), {"rows": rows}, name, ids, _rows_rule(rows, "rows"))


@builds(LayerNorm)
def layer_norm(x, gamma, beta, eps=1e-5, name=None):
    """Layer normalisation over the last axis.

    Args:
        x: (..., C) float Node.  gamma, beta: (C,) scale and shift.  eps: added to the variance.
    """
    return apply(REGISTRY["layer_norm"], (x, gamma, beta), {"eps": float(eps)}, name)


@builds(Embedding)
def embedding(table, ids, name=None):
    """Rows of table picked by ids. Args: table: (V, C) float Node; ids: (...) integer Node or array.
    Returns (..., C)."""
    rows = np.shape(table)[0] if np.ndim(table) else 0       # a bad table shape is the shape rule's error
    return _guarded(REGISTRY["embedding"], (table, ids), {}, name, ids, _embedding_rule(rows))


def dropout(x, p, name=None):
    """Zero each element with probability p while the graph is training, scaling the rest by 1/(1-p).

    A new mask is drawn at each forward from the graph's rng (g.seed(...) to repeat); with
    g.training = False the mask is all ones, so one graph serves training and evaluation.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if p == 0.0:
        return x
    g = x.graph
    mask = g.add_node(REGISTRY["dropout_mask"], (), {"shape": x.shape, "dtype": x.dtype, "p": float(p)},
                      (name or "dropout") + "_mask")
    return apply(REGISTRY["multiply"], (x, mask), name=name or "dropout")
