"""Training: mini-batch AdamW with warm-up + cosine learning rate, gradient clipping, periodic validation,
atomic checkpoints that resume exactly (parameters, optimizer moments, step, and both random streams).
"""
import hashlib
import json
import os
import time

import numpy as np

from ..nn import serialization
from ..nn.optim import AdamW, clip_grad_norm, warmup_cosine
from ..nn.serialization import CheckpointError
from . import tokenizers
from .data import Sampler, tokenize_docs
from .gpt import GPT
from .rnn import RNNLM

FORMAT = "graphdiff-lm-checkpoint"
VERSION = 1
MODELS = {"gpt": GPT, "rnn": RNNLM}

TRAIN_DEFAULTS = dict(steps=1000, batch_size=16, lr=3e-3, min_lr=3e-4, warmup=50, weight_decay=0.01,
                      grad_clip=1.0, eval_every=100, eval_batches=8, seed=1337)


def build_model(kind, config, backend=None, dtype="float32"):
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose one of {sorted(MODELS)}")
    return MODELS[kind](backend=backend, dtype=dtype, **config)


class Trainer:
    """Trains a language model on tokenized documents.

    Args:
        model: a GPT or RNNLM.  tokenizer: its tokenizer (saved in checkpoints).
        train_docs, val_docs: lists of 1-d int arrays of token ids.
        hp: training hyper-parameters (TRAIN_DEFAULTS keys).
    """

    def __init__(self, model, tokenizer, train_docs, val_docs, **hp):
        unknown = set(hp) - set(TRAIN_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown training settings {sorted(unknown)}")
        self.hp = dict(TRAIN_DEFAULTS, **hp)
        self.model, self.tokenizer = model, tokenizer
        self.fingerprint = corpus_fingerprint(train_docs, val_docs)
        T, B = model.config["block_size"], self.hp["batch_size"]
        self.data_rng = np.random.default_rng(self.hp["seed"])
        self.sampler = Sampler(train_docs, T, B, tokenizer.pad_id, self.data_rng)
        # the validation batches are fixed by the seed, so every evaluation (and every resume) sees the same
        val = Sampler(val_docs, T, B, tokenizer.pad_id, np.random.default_rng(self.hp["seed"] + 1))
        self.val_batches = [val.next() for _ in range(self.hp["eval_batches"])]
        self.opt = AdamW(model, lr=self.hp["lr"], weight_decay=self.hp["weight_decay"])
        self.step = 0
        self.history = []          # {"step", "loss", "lr", "tokens", "time"} per step; val entries too
        self.tokens = 0
        self.elapsed = 0.0

    def lr_at(self, step):
        hp = self.hp
        return warmup_cosine(step, hp["lr"], hp["warmup"], hp["steps"], hp["min_lr"])

    def train_step(self):
        """One optimizer step on one batch; returns (loss, number of non-<pad> target tokens)."""
        idx, targets, mask = self.sampler.next()
        self.model.train()
        loss = self.model.loss(idx, targets, mask, backward=True)
        if self.hp["grad_clip"]:
            clip_grad_norm(self.model, self.hp["grad_clip"])
        self.opt.lr = self.lr_at(self.step)
        self.opt.step()
        self.step += 1
        return loss, int((targets != self.tokenizer.pad_id).sum())

    def evaluate(self):
        """Mean loss over the fixed validation batches (dropout off)."""
        self.model.eval()
        losses = [self.model.loss(*b) for b in self.val_batches]
        self.model.train()
        return float(np.mean(losses))

    def fit(self, steps=None, time_limit=None, checkpoint=None, save_every=None, progress=True,
            log=None, on_eval=None):
        """Train until `steps` (default hp["steps"]) or `time_limit` seconds of this call.

        Args:
            checkpoint: path of the .npz written at each evaluation (and at the end).
            log: a path; one JSON line per evaluation (step, train/val loss, tokens/s, elapsed seconds).
            on_eval: called with the history entry after each evaluation (e.g. to print a sample).
        """
        steps = self.hp["steps"] if steps is None else steps
        save_every = save_every or self.hp["eval_every"]
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=steps, initial=self.step, unit="step", dynamic_ncols=True)
        t0 = time.perf_counter()
        start_elapsed = self.elapsed
        recent = []
        try:
            while self.step < steps:
                if time_limit is not None and time.perf_counter() - t0 >= time_limit:
                    break
                ts = time.perf_counter()
                loss, ntok = self.train_step()
                dt = time.perf_counter() - ts
                self.elapsed = start_elapsed + time.perf_counter() - t0
                self.tokens += ntok
                recent = (recent + [(ntok, dt)])[-20:]
                tps = sum(n for n, _ in recent) / max(1e-9, sum(d for _, d in recent))
                entry = {"step": self.step, "loss": loss, "lr": self.opt.lr, "tokens": self.tokens,
                         "time": round(self.elapsed, 3), "tokens_per_s": round(tps, 1)}
                self.history.append(entry)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}")
                last = self.step == steps
                if self.step % self.hp["eval_every"] == 0 or last:
                    entry["val_loss"] = self.evaluate()
                    if bar is not None:
                        bar.write(f"step {self.step}: train {loss:.4f}  val {entry['val_loss']:.4f}  "
                                  f"{tps:,.0f} tok/s  {self.elapsed:.0f}s")
                    if log:
                        with open(log, "a") as f:
                            f.write(json.dumps(entry) + "\n")
                    if on_eval is not None:
                        on_eval(entry)
                if checkpoint and (self.step % save_every == 0 or last):
                    self.save(checkpoint)
        finally:
            if bar is not None:
                bar.close()
        if checkpoint and self.history and self.step % save_every:
            self.save(checkpoint)
        return self.history

    # --- checkpoints ------------------------------------------------------------------------------------
    def save(self, path):
        """Write the whole training state to `path` (.npz + JSON metadata), atomically."""
        arrays = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        opt = self.opt.state_dict()
        arrays.update({f"optim/{k}": v for k, v in opt.items() if isinstance(v, np.ndarray)})
        meta = {
            "format": FORMAT, "version": VERSION,
            "model": {"kind": self.model.kind, "config": self.model.config, "dtype": self.model.dtype},
            "tokenizer": self.tokenizer.to_dict(),
            "corpus": self.fingerprint,
            "train": {"hp": self.hp, "step": self.step, "tokens": self.tokens, "elapsed": self.elapsed,
                      "optim": {"t": opt["t"], "lr": opt["lr"]},
                      "data_rng": self.data_rng.bit_generator.state,
                      "dropout_rng": _rng_state(self.model.rng)},
            "history": self.history[-2000:],
        }
        serialization.save(path, arrays, meta)

    @classmethod
    def resume(cls, path, train_docs, val_docs, backend=None, **overrides):
        """A Trainer that continues exactly where the checkpoint stopped (same batches, same dropout)."""
        model, tok, meta, arrays = load_checkpoint(path, backend=backend)
        tr = meta["train"]
        hp = dict(tr["hp"], **overrides)
        trainer = cls(model, tok, train_docs, val_docs, **hp)
        if meta.get("corpus") != trainer.fingerprint:
            raise CheckpointError(f"cannot resume {path!r}: it was trained on another corpus "
                                  f"({meta.get('corpus')}, now {trainer.fingerprint}); resume with the same "
                                  "--corpus, or start a new run")
        opt_state = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
        opt_state.update(tr["optim"])
        trainer.opt.load_state_dict(opt_state)
        trainer.step, trainer.tokens, trainer.elapsed = tr["step"], tr["tokens"], tr["elapsed"]
        trainer.data_rng.bit_generator.state = tr["data_rng"]
        _set_rng_state(model.rng, tr["dropout_rng"])
        trainer.history = list(meta.get("history", []))
        return trainer


def corpus_fingerprint(train_docs, val_docs):
    """{'tokens': n, 'sha1': ...} of the tokenized corpus, so a resume on other data is caught."""
    h = hashlib.sha1()
    n = 0
    for part in (train_docs, val_docs):
        for d in part:
            a = np.ascontiguousarray(d, dtype=np.int64)
            h.update(a.tobytes())
            h.update(b"|")
            n += len(a)
        h.update(b"#")
    return {"tokens": n, "sha1": h.hexdigest()}


def _rng_state(engine_rng):
    return engine_rng.state


def _set_rng_state(engine_rng, state):
    engine_rng.state = state


def load_checkpoint(path, backend=None, expect_kind=None):
    """(model, tokenizer, meta, arrays) from a checkpoint; CheckpointError says clearly what is wrong."""
    arrays, meta = serialization.load(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a graphdiff language-model checkpoint (format "
                              f"{meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path!r} has checkpoint version {meta.get('version')}, this graphdiff reads "
                              f"version {VERSION}")
    kind = meta["model"]["kind"]
    if expect_kind is not None and kind != expect_kind:
        raise CheckpointError(f"{path!r} holds a {kind!r} model, not a {expect_kind!r} model; pass "
                              f"--model {kind} or another checkpoint")
    model = build_model(kind, meta["model"]["config"], backend=backend, dtype=meta["model"]["dtype"])
    state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path!r} does not match the {kind} model its metadata describes: {e}") from None
    tok = tokenizers.from_dict(meta["tokenizer"])
    if tok.vocab_size != model.config["vocab_size"]:
        raise CheckpointError(f"{path!r}: tokenizer has {tok.vocab_size} ids, model {model.config['vocab_size']}")
    return model, tok, meta, arrays


def check_resume_compatible(meta, kind, path):
    if meta["model"]["kind"] != kind:
        raise CheckpointError(f"cannot resume {path!r}: it holds a {meta['model']['kind']!r} model and "
                              f"--model is {kind!r}")


def prepare_data(docs, tokenizer, val_fraction=0.1):
    from .data import split_documents
    train, val = split_documents(docs, val_fraction)
    return tokenize_docs(train, tokenizer), tokenize_docs(val, tokenizer)


def default_path(path):
    return path if path.endswith(".npz") else os.path.join(path, "ckpt.npz")
