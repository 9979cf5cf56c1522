"""Linear, Embedding, LayerNorm, Dropout, MLP: each builds its nodes in the graph of its input."""
import math

from .. import ops
from . import init
from .module import Module


class Linear(Module):
    """y = x @ weight + bias.

    weight is stored (in_features, out_features), GPT-2's Conv1D layout (PyTorch's nn.Linear stores the
    transpose), so the graph needs no transpose node. Init: U(-1/sqrt(in), 1/sqrt(in)) unless std= is given.
    """

    def __init__(self, in_features, out_features, bias=True, std=None, rng=None, backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        rng = init.as_rng(rng)
        self.in_features, self.out_features = in_features, out_features
        w = (init.normal(rng, (in_features, out_features), std) if std is not None
             else init.uniform(rng, (in_features, out_features), 1.0 / math.sqrt(in_features)))
        self.add_param("weight", w)
        self.has_bias = bias
        if bias:
            b = (init.zeros(out_features) if std is not None
                 else init.uniform(rng, (out_features,), 1.0 / math.sqrt(in_features)))
            self.add_param("bias", b)

    def forward(self, x):                                   # (..., in) -> (..., out)
        y = ops.matmul(x, self.node(x.graph, "weight"), name="matmul")
        if self.has_bias:
            y = ops.add(y, self.node(x.graph, "bias"), name="bias")
        return y

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.has_bias}"


class Embedding(Module):
    """weight[ids]: a (num_embeddings, dim) table, N(0, std^2) init."""

    def __init__(self, num_embeddings, dim, std=1.0, rng=None, backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        self.num_embeddings, self.dim = num_embeddings, dim
        self.add_param("weight", init.normal(init.as_rng(rng), (num_embeddings, dim), std))

    def forward(self, ids):                                 # (...) int -> (..., dim)
        return ops.embedding(self.node(ids.graph, "weight"), ids, name="lookup")

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.dim}"


class LayerNorm(Module):
    """Normalise the last axis, then scale by weight and shift by bias (PyTorch's names)."""

    def __init__(self, dim, eps=1e-5, backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        self.dim, self.eps = dim, eps
        self.add_param("weight", init.ones(dim))
        self.add_param("bias", init.zeros(dim))

    def forward(self, x):
        g = x.graph
        return ops.layer_norm(x, self.node(g, "weight"), self.node(g, "bias"), eps=self.eps, name="ln")

    def extra_repr(self):
        return str(self.dim)


class Dropout(Module):
    """Zero with probability p while training (the graph's g.training, set from module.training per run)."""

    def __init__(self, p=0.0, backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        if not 0.0 <= p < 1.0:                  # also NaN; checked here, not at the first call
            raise ValueError(f"Dropout: p must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x):
        return ops.dropout(x, self.p) if self.p > 0 else x

    def extra_repr(self):
        return f"p={self.p}"


class MLP(Module):
    """c_fc (C -> hidden), GELU (tanh approximation, as GPT-2), c_proj (hidden -> C), dropout."""

    def __init__(self, dim, hidden, dropout=0.0, std=0.02, proj_std=None, activation="gelu", rng=None,
                 backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        rng = init.as_rng(rng)
        kw = dict(backend=backend, dtype=dtype)
        self.c_fc = Linear(dim, hidden, std=std, rng=rng, **kw)
        self.c_proj = Linear(hidden, dim, std=std if proj_std is None else proj_std, rng=rng, **kw)
        self.drop = Dropout(dropout, **kw)
        self.activation = activation

    def forward(self, x):                                   # (B, T, C) -> (B, T, C)
        h = self.c_fc(x)                                    # (B, T, hidden)
        h = ops.gelu(h, approximate="tanh") if self.activation == "gelu" else ops.relu(h)
        return self.drop(self.c_proj(h))
