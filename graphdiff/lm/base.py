"""What the GPT and the RNN-LM share: a config, one graph per batch shape (cached), loss and gradients."""
import numpy as np

from .. import ops
from ..nn.module import Module, Program, ProgramCache, new_graph


class LanguageModel(Module):
    """A Module that maps ids (B, T) to logits (B, T, V); subclasses define `logits(idx, key_mask)`.

    Programs (graphs) are built on first use for each key and re-fed afterwards:
        ("loss", B, T): inputs idx, targets, key_mask; outputs loss (mean over non-<pad> targets), logits.
        ("logits", B, T): inputs idx, key_mask; outputs logits (and, for a GPT, each layer's k and v).
    """

    kind = "base"

    def __init__(self, config, backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        self.config = dict(config)
        self.pad_id = int(config.get("pad_id", 0))
        self.rng = self.backend.rng(config.get("seed", 0))   # dropout masks: one stream for all graphs
        self.programs = ProgramCache(self.build_program)

    @classmethod
    def merge_config(cls, defaults, config):
        """defaults updated by config; unknown keys and a missing vocab_size are errors."""
        unknown = set(config) - set(defaults)
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown config keys {sorted(unknown)}; known: {sorted(defaults)}")
        cfg = dict(defaults, **config)
        if cfg["vocab_size"] is None:
            raise TypeError(f"{cls.__name__} needs vocab_size")
        return cfg

    def build_program(self, key):
        kind = key[0]
        g = new_graph(self, rng=self.rng)
        if kind in ("loss", "logits"):
            _, B, T = key
            idx = g.input("idx", (B, T), "int64")
            mask = g.input("key_mask", (B, T), "bool")
            inputs = {"idx": idx, "key_mask": mask}
            extra = {}
            logits = self.logits(idx, mask, extra=extra)               # (B, T, V)
            outputs = {"logits": logits, **extra}
            if kind == "loss":
                targets = g.input("targets", (B, T), "int64")
                inputs["targets"] = targets
                outputs["loss"] = ops.cross_entropy(logits, targets, ignore_index=self.pad_id, name="loss")
            return Program(self, g, inputs, outputs)
        return self.build_special(g, key)

    def build_special(self, g, key):
        raise KeyError(f"{type(self).__name__} has no program {key[0]!r}")

    def loss(self, idx, targets, key_mask, backward=False):
        """Mean cross-entropy over non-<pad> targets (a float); backward=True also sets every p.grad."""
        B, T = idx.shape
        prog = self.programs(("loss", B, T))
        (loss,) = prog.run({"idx": idx, "targets": targets, "key_mask": key_mask}, ("loss",),
                           backward="loss" if backward else None)
        return float(loss)

    def forward_logits(self, idx, key_mask=None):
        """Logits (B, T, V) as a backend array, for host ids (B, T)."""
        B, T = idx.shape
        if key_mask is None:
            key_mask = np.ones((B, T), dtype=bool)
        prog = self.programs(("logits", B, T))
        (logits,) = prog.run({"idx": idx, "key_mask": key_mask}, ("logits",))
        return logits

    def get_config(self):
        return dict(self.config, kind=self.kind)
