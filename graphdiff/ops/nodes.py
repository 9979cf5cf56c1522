"""F for Nodes: graphdiff's own ops under the names the VJP rules use, so that the same rules that compute
gradients from arrays build them as graph nodes (the symbolic backward, gradients of gradients)."""
import numpy as np

from . import elementwise as E, nn as N, reduce as R, shape as S
from .registry import REGISTRY, apply
from ..backend import DTYPES, unbroadcast as _unbroadcast


class Nodes:
    """The namespace `F` of a symbolic backward: each function adds nodes to its inputs' graph."""

    name = "nodes"
    dtypes = {d: d for d in DTYPES}

    def __init__(self):
        fns = dict(exp=E.exp, log=E.log, sqrt=E.sqrt, tanh=E.tanh, erf=E.erf, abs=E.abs, sign=E.sign,
                   pow=E.power, maximum=E.maximum, minimum=E.minimum, where=E.where, equal=E.equal,
                   not_equal=E.not_equal, logical_and=E.logical_and, sum=R.sum, mean=R.mean, max=R.max,
                   reshape=S.reshape, broadcast_to=S.broadcast_to, transpose=S.transpose,
                   matrix_transpose=S.matrix_transpose, matmul=S.matmul, getitem=S.getitem, concat=S.concat,
                   stack=S.stack, gather_rows=N.embedding, astype=E.astype)
        self.__dict__.update(fns)

    def __repr__(self):
        return "<graphdiff namespace of Nodes>"

    @staticmethod
    def shape(x):
        return x.shape

    def unbroadcast(self, g, like):
        return _unbroadcast(self, g, like if isinstance(like, tuple) else like.shape)

    @staticmethod
    def index_add(shape, idx, g):
        return S.index_add(g, shape, idx)

    # the ops themselves, not gd.one_hot and gd.scatter_rows, whose id checks are the forward's business: the
    # ids here were checked where they entered, and cross_entropy's ignored ids give zero one-hot rows
    @staticmethod
    def one_hot(ids, n, dtype):
        return apply(REGISTRY["one_hot"], (ids,), {"n": int(n), "dtype": str(dtype)})

    @staticmethod
    def scatter_rows(g, ids, rows):
        return apply(REGISTRY["scatter_rows"], (g, ids), {"rows": int(rows)})

    @staticmethod
    def astype_like(x, like):
        return E.astype(x, like.dtype)

    @staticmethod
    def ones_like(x):
        return x.graph.constant(np.ones(x.shape, dtype=x.dtype), name="ones")


NODES = Nodes()
