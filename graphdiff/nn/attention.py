"""Multi-head self-attention, causal by default (with a key padding mask and a KV cache), and the
transformer block. causal=False gives the "standard" (encoder) attention: every position sees every one."""
import math

import numpy as np

from .. import ops
from . import init
from .layers import Dropout, LayerNorm, Linear, MLP
from .module import GraphMemo, Module

# masked scores: exp(NEG - max) is exactly 0 in float32 and float64, as PyTorch's masked_fill(-inf), and a
# finite value keeps a fully masked row finite
NEG = -1e9


MASKS = GraphMemo()      # (key_mask index, T, causal) -> the mask's bias node in a graph


def mask_bias(g, key_mask, B, T, causal):
    """0 where a query sees a key and NEG where it does not, added to the scores: (T, T) for the causal mask
    (keys up to the query's position), (B, 1, T, T) with the key padding mask (B, T); None when every key is
    visible. Built once per graph and shared by every layer. An add, not a where: the add's VJP passes the
    gradient on untouched, and a masked score (NEG + s, which exp sends to exactly 0 as it does NEG) needs no
    gradient."""
    if key_mask is None and not causal:
        return None
    key = (None if key_mask is None else key_mask.index, T, causal)
    bias = MASKS.get(g, key)
    if bias is None:
        keys = None if key_mask is None else ops.reshape(key_mask, (B, 1, 1, T), name="key_mask")
        if causal:
            seen = g.constant(np.tril(np.ones((T, T), dtype=bool)), name="causal")          # (T, T)
            if keys is not None:
                seen = ops.logical_and(seen, keys, name="visible")                         # (B, 1, T, T)
        else:
            seen = keys
        bias = MASKS.put(g, key, ops.where(seen, 0.0, NEG, name="mask_bias"))
    return bias


class CausalSelfAttention(Module):
    """Multi-head attention where position t sees positions <= t (and no padded keys); with causal=False,
    every position sees all (non-padded) positions: the causal mask M (0 on and below the diagonal, -inf
    above) is simply not added.

    Parameters (GPT-2 names): c_attn (C -> 3C: q, k, v), c_proj (C -> C).
    """

    def __init__(self, n_embd, n_head, dropout=0.0, std=0.02, proj_std=None, rng=None, backend=None,
                 dtype="float32", causal=True):
        super().__init__(backend, dtype)
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        rng = init.as_rng(rng)
        kw = dict(backend=backend, dtype=dtype)
        self.n_embd, self.n_head, self.causal = n_embd, n_head, causal
        self.c_attn = Linear(n_embd, 3 * n_embd, std=std, rng=rng, **kw)
        self.c_proj = Linear(n_embd, n_embd, std=std if proj_std is None else proj_std, rng=rng, **kw)
        self.attn_drop = Dropout(dropout, **kw)
        self.resid_drop = Dropout(dropout, **kw)

    def forward(self, x, key_mask=None, past=None, cache_out=None):
        """Args:
            x: (B, T, C).  key_mask: (B, T) bool Node, True for real tokens, False for <pad> (or None).
            past: (past_k, past_v, past_bias) for incremental decoding: (B, nh, P, hs) keys and values of
                earlier positions and a (B, 1, 1, P + T) float additive mask (0 where visible, NEG not);
                then T must be 1 and no causal mask is needed inside the new tokens.
            cache_out: a list; (k, v) of this call, each (B, nh, T, hs), is appended (for the KV cache).
        Returns (B, T, C).
        """
        g = x.graph
        B, T, C = x.shape
        nh = self.n_head
        hs = C // nh
        q, k, v = self.project(x)                                   # each (B, nh, T, hs)
        if cache_out is not None:
            cache_out.append((k, v))
        if past is not None:
            past_k, past_v, past_bias = past
            if T != 1:
                raise ValueError(f"attention with a KV cache takes one new token at a time, got T={T}")
            k = ops.concat([past_k, k], axis=2)                     # (B, nh, P+1, hs)
            v = ops.concat([past_v, v], axis=2)                     # (B, nh, P+1, hs)
        # (q / sqrt(hs)) k^T: the same scores as (q k^T) / sqrt(hs), scaling T*hs numbers instead of T*S
        att = ops.matmul(ops.multiply(q, 1.0 / math.sqrt(hs), name="scale"), ops.matrix_transpose(k),
                         name="qk")                                 # (B, nh, T, S)
        if past is not None:
            att = att + past_bias                                   # (B, nh, 1, P+1)
        else:
            bias = mask_bias(g, key_mask, B, T, self.causal)        # (T, T) or (B, 1, T, T), or None
            if bias is not None:
                att = ops.add(att, bias, name="masked")              # (B, nh, T, T)
        att = ops.softmax(att, axis=-1, name="attn")
        att = self.attn_drop(att)
        y = ops.matmul(att, v, name="av")                           # (B, nh, T, hs)
        y = ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (B, T, C))  # (B, T, C): heads side by side
        return self.resid_drop(self.c_proj(y))

    def project(self, x):
        """q, k, v (B, nh, T, hs): x @ W + b with the q, k and v column blocks of c_attn's weight and bias,
        one GEMM each (their gradients need no slicing of a (B, T, 3C) activation, only of the weight)."""
        g = x.graph
        B, T, C = x.shape
        nh = self.n_head
        with g.scope("c_attn"):
            W, b = self.c_attn.node(g, "weight"), self.c_attn.node(g, "bias")     # (C, 3C), (3C,)
            out = []
            for j, nm in enumerate("qkv"):
                cols = slice(j * C, (j + 1) * C)
                y = ops.add(ops.matmul(x, W[:, cols], name=f"matmul_{nm}"), b[cols], name=f"bias_{nm}")
                out.append(ops.transpose(ops.reshape(y, (B, T, nh, C // nh)), (0, 2, 1, 3), name=nm))
        return out

    def extra_repr(self):
        return f"n_embd={self.n_embd}, n_head={self.n_head}" + ("" if self.causal else ", causal=False")


class Block(Module):
    """Transformer block. norm="pre" (GPT-2): x + attn(ln_1(x)), then x + mlp(ln_2(x)).
    norm="post" (the original Transformer): ln_1(x + attn(x)), then ln_2(x + mlp(x))."""

    def __init__(self, n_embd, n_head, dropout=0.0, norm="pre", mlp_ratio=4, std=0.02, proj_std=None,
                 rng=None, backend=None, dtype="float32", causal=True):
        super().__init__(backend, dtype)
        if norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' (Pre-LN) or 'post' (Post-LN), got {norm!r}")
        rng = init.as_rng(rng)
        kw = dict(backend=backend, dtype=dtype)
        self.norm = norm
        self.ln_1 = LayerNorm(n_embd, **kw)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, std=std, proj_std=proj_std, rng=rng, causal=causal,
                                        **kw)
        self.ln_2 = LayerNorm(n_embd, **kw)
        self.mlp = MLP(n_embd, mlp_ratio * n_embd, dropout, std=std, proj_std=proj_std, rng=rng, **kw)

    def forward(self, x, key_mask=None, past=None, cache_out=None):   # (B, T, C) -> (B, T, C)
        if self.norm == "pre":
            x = x + self.attn(self.ln_1(x), key_mask, past, cache_out)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, key_mask, past, cache_out))
        return self.ln_2(x + self.mlp(x))

    def extra_repr(self):
        return f"norm={self.norm!r}"
