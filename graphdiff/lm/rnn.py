"""RNN-LM: token embedding, an Elman RNN cell unrolled over T steps in the graph, and an output head."""
import numpy as np

from .. import ops
from ..nn import init
from ..nn.layers import Embedding, Linear
from ..nn.module import Program
from ..nn.rnn import RNNCell
from .base import LanguageModel

DEFAULTS = dict(vocab_size=None, block_size=128, n_embd=64, n_hidden=256, pad_id=0, seed=0)


class RNNLM(LanguageModel):
    """h_t = tanh(wte[x_t] @ W_ih + h_{t-1} @ W_hh + b), logits_t = h_t @ lm_head; h_0 = 0.

    Parameter names: wte.weight, cell.weight_ih, cell.weight_hh, cell.bias, lm_head.weight, lm_head.bias.
    Right padding needs no mask: a <pad> input only affects later (also padded, ignored) positions.
    """

    kind = "rnn"

    def __init__(self, backend=None, dtype="float32", **config):
        cfg = self.merge_config(DEFAULTS, config)
        super().__init__(cfg, backend, dtype)
        rng = init.as_rng(cfg["seed"])
        kw = dict(backend=backend, dtype=dtype)
        self.wte = Embedding(cfg["vocab_size"], cfg["n_embd"], std=0.1, rng=rng, **kw)
        self.cell = RNNCell(cfg["n_embd"], cfg["n_hidden"], rng=rng, **kw)
        self.lm_head = Linear(cfg["n_hidden"], cfg["vocab_size"], rng=rng, **kw)

    def logits(self, idx, key_mask=None, extra=None, h0=None):
        """idx (B, T) int64 Node -> logits (B, T, V); extra["h"] gets the last hidden state (B, H)."""
        g = idx.graph
        B, T = idx.shape
        H = self.config["n_hidden"]
        x = self.wte(idx)                                        # (B, T, E)
        h = h0 if h0 is not None else g.constant(np.zeros((B, H)), name="h0")   # (B, H)
        hs = []
        for t in range(T):
            h = self.cell(x[:, t], h)                            # (B, H)
            hs.append(h)
        if extra is not None:
            extra["h"] = h
        hseq = ops.stack(hs, axis=1)                             # (B, T, H)
        return self.lm_head(hseq)                                # (B, T, V)

    def build_special(self, g, key):
        """("step", B): inputs idx (B, 1), h (B, H); outputs logits (B, 1, V), h (B, H)."""
        if key[0] != "step":
            return super().build_special(g, key)
        _, B = key
        idx = g.input("idx", (B, 1), "int64")
        h0 = g.input("h", (B, self.config["n_hidden"]))
        extra = {}
        logits = self.logits(idx, None, extra=extra, h0=h0)
        return Program(self, g, {"idx": idx, "h": h0}, {"logits": logits, "h": extra["h"]})
