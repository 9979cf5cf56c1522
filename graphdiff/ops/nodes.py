"""F for Nodes: graphdiff's own ops under the names the VJP rules use, so that the same rules that compute
gradients from arrays build them as graph nodes (the symbolic backward, gradients of gradients)."""
import numpy as np

from . import elementwise as E, shape as S
from .registry import ARRAY_VOCABULARY, REGISTRY, apply
from ..backend import DTYPES, unbroadcast as _unbroadcast


class Nodes:
    """The namespace `F` of a symbolic backward: each function adds nodes to its inputs' graph."""

    name = "nodes"
    dtypes = {d: d for d in DTYPES}

    # the F names whose op is named otherwise; every other vocabulary name this class does not define itself is
    # the op of that name, built by its builder (OpDef.builder)
    OPS = {"pow": "power", "gather_rows": "embedding"}

    def __init__(self):
        for f in ARRAY_VOCABULARY:
            if not hasattr(Nodes, f):
                self.__dict__[f] = REGISTRY[self.OPS.get(f, f)].builder

    def __repr__(self):
        return "<graphdiff namespace of Nodes>"

    @staticmethod
    def shape(x):
        return x.shape

    def unbroadcast(self, g, like):
        return _unbroadcast(self, g, like if isinstance(like, tuple) else like.shape)

    matrix_transpose = staticmethod(S.matrix_transpose)    # a transpose, not an op of its own

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
