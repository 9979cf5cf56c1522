"""GPT: token embedding + position embedding (learned or sinusoidal), N transformer blocks, ln_f, lm_head.

Parameter names follow GPT-2 (nanoGPT's flattened form): wte.weight, wpe.weight, h.0.ln_1.weight,
h.0.attn.c_attn.weight, h.0.attn.c_proj.weight, h.0.mlp.c_fc.weight, ..., ln_f.weight, lm_head.weight.
Linear weights are (in, out) as GPT-2's Conv1D.
"""
import math

import numpy as np

from .. import ops
from ..nn import init
from ..nn.attention import NEG, Block
from ..nn.layers import Dropout, Embedding, LayerNorm, Linear
from ..nn.module import ModuleList, Program
from .base import LanguageModel

DEFAULTS = dict(vocab_size=None, block_size=128, n_layer=4, n_head=4, n_embd=128, dropout=0.0,
                norm="pre", pos="learned", pad_id=0, seed=0)


def sinusoidal_table(block_size, n_embd):
    """(block_size, n_embd): sin on even features, cos on odd (Vaswani et al. 2017)."""
    pos = np.arange(block_size)[:, None]
    i = np.arange(0, n_embd, 2)[None, :]
    angle = pos / np.power(10000.0, i / n_embd)
    table = np.zeros((block_size, n_embd))
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : n_embd // 2])
    return table


class GPT(LanguageModel):
    """A decoder-only transformer language model.

    Args (config keys): vocab_size, block_size (longest context T), n_layer, n_head, n_embd (C),
        dropout, norm ("pre" for Pre-LN as GPT-2, "post" for Post-LN), pos ("learned" or "sinusoidal"),
        pad_id (ignored targets, masked keys), seed (initialisation and dropout).
    """

    kind = "gpt"

    def __init__(self, backend=None, dtype="float32", **config):
        cfg = self.merge_config(DEFAULTS, config)
        if cfg["pos"] not in ("learned", "sinusoidal"):
            raise ValueError(f"pos must be 'learned' or 'sinusoidal', got {cfg['pos']!r}")
        super().__init__(cfg, backend, dtype)
        rng = init.as_rng(cfg["seed"])
        V, T, C, L = cfg["vocab_size"], cfg["block_size"], cfg["n_embd"], cfg["n_layer"]
        kw = dict(backend=backend, dtype=dtype)
        self.wte = Embedding(V, C, std=0.02, rng=rng, **kw)
        if cfg["pos"] == "learned":
            self.wpe = Embedding(T, C, std=0.02, rng=rng, **kw)
        else:
            self.pos_table = sinusoidal_table(T, C)
        self.drop = Dropout(cfg["dropout"], **kw)
        proj_std = 0.02 / math.sqrt(2 * L)       # GPT-2: residual projections scaled by depth
        self.h = ModuleList([Block(C, cfg["n_head"], cfg["dropout"], norm=cfg["norm"], proj_std=proj_std,
                                   rng=rng, **kw) for _ in range(L)], **kw)
        self.ln_f = LayerNorm(C, **kw)
        self.lm_head = Linear(C, V, bias=False, std=0.02, rng=rng, **kw)

    def _pos(self, g, pos_ids):                                  # (T,) int -> (T, C)
        if self.config["pos"] == "learned":
            return self.wpe(pos_ids)
        with g.scope("wpe"):
            table = g.constant(self.pos_table, name="sinusoid")
            return ops.embedding(table, pos_ids, name="lookup")

    def logits(self, idx, key_mask=None, extra=None, pos=None, past=None):
        """Args:
            idx: (B, T) int64 Node.  key_mask: (B, T) bool Node (False at <pad>) or None.
            extra: a dict that receives the k.{l} and v.{l} nodes (B, nh, T, hs) of each layer.
            pos: (T,) int64 Node of positions (default 0..T-1).  past: per layer (past_k, past_v, bias).
        Returns logits (B, T, V).
        """
        g = idx.graph
        B, T = idx.shape
        if T > self.config["block_size"]:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config['block_size']}")
        if pos is None:
            pos = g.constant(np.arange(T, dtype=np.int64), name="pos")
        tok_emb = self.wte(idx)                                  # (B, T, C)
        pos_emb = self._pos(g, pos)                              # (T, C)
        x = self.drop(tok_emb + pos_emb)                         # (B, T, C)
        with g.scope("h"):
            for l, block in enumerate(self.h):
                cache = [] if extra is not None else None
                x = block(x, key_mask, None if past is None else past[l], cache)   # (B, T, C)
                if cache:
                    extra[f"k.{l}"], extra[f"v.{l}"] = cache[0]
        x = self.ln_f(x)                                         # (B, T, C)
        return self.lm_head(x)                                   # (B, T, V)

    def build_special(self, g, key):
        """("step", B): one new token per sequence with a KV cache of block_size - 1 past positions.

        Inputs: idx (B, 1), pos (1,), bias (B, 1, 1, P+1) (0 where a key is visible, NEG where not),
        past_k.{l}, past_v.{l} (B, nh, P, hs). Outputs: logits (B, 1, V), k.{l}, v.{l} (B, nh, 1, hs).
        """
        if key[0] != "step":
            return super().build_special(g, key)
        _, B = key
        cfg = self.config
        P, nh = cfg["block_size"] - 1, cfg["n_head"]
        hs = cfg["n_embd"] // nh
        idx = g.input("idx", (B, 1), "int64")
        pos = g.input("pos", (1,), "int64")
        bias = g.input("bias", (B, 1, 1, P + 1))
        inputs = {"idx": idx, "pos": pos, "bias": bias}
        past = []
        for l in range(cfg["n_layer"]):
            pk = g.input(f"past_k.{l}", (B, nh, P, hs))
            pv = g.input(f"past_v.{l}", (B, nh, P, hs))
            inputs[pk.name], inputs[pv.name] = pk, pv
            past.append((pk, pv, bias))
        extra = {}
        logits = self.logits(idx, None, extra=extra, pos=pos, past=past)
        return Program(self, g, inputs, {"logits": logits, **extra})


__all__ = ["GPT", "DEFAULTS", "sinusoidal_table", "NEG"]
