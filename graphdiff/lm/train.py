"""Training: mini-batch AdamW with warm-up + cosine learning rate, gradient clipping, periodic validation,
atomic checkpoints that resume exactly (parameters, optimizer moments, step, and both random streams).

The checkpoint format, its loading and checking, and the lock of a run's checkpoint are in checkpoint.py;
the Trainer writes its state there (save) and continues from it (resume), and init_trainer fine-tunes a
checkpoint's model on a new corpus.
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
from .checkpoint import (FORMAT, VERSION, check_init_settings, check_resume_settings, check_train_state,
                         load_checkpoint, tokenizer_path)
from .data import Sampler, tokenize_docs

TRAIN_DEFAULTS = dict(steps=1000, batch_size=16, lr=3e-3, min_lr=3e-4, warmup=50, weight_decay=0.01,
                      grad_clip=1.0, eval_every=100, eval_batches=8, seed=1337)
# settings a resumed run cannot change: they decide which batches come next
FIXED_HP = ("batch_size", "seed")


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
        self.changed = {}          # hp that a resume changed: {name: (checkpoint's value, value used)}
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
        self.captured = None       # a CapturedStep once use_cuda_graph() is called
        self._tokenizer_file = None    # the tokenizer file save() wrote (it never changes: once per path)

    def use_cuda_graph(self, warmup=2):
        """Run every later training step as one launch of a recorded CUDA graph (CuPy, no dropout): see
        graphdiff/lm/capture.py. The same operations as train_step's plain path, so the same numbers.
        Raises GraphError / ValueError now if the model cannot be recorded."""
        from .capture import CapturedStep
        self.captured = CapturedStep(self.model, self.opt, self.hp["batch_size"], self.model.config["block_size"],
                                     grad_clip=self.hp["grad_clip"], warmup=warmup)

    def lr_at(self, step):
        hp = self.hp
        return warmup_cosine(step, hp["lr"], hp["warmup"], hp["steps"], hp["min_lr"])

    def train_step(self):
        """One optimizer step on one batch; returns (loss, number of non-<pad> target tokens)."""
        idx, targets, mask = self.sampler.next()
        self.model.train()
        if self.captured is not None:
            self.opt.lr = self.lr_at(self.step)
            loss = self.captured(idx, targets, mask)
        else:
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
            log=None, on_eval=None, fit_schedule=False):
        """Train until `steps` (default hp["steps"]) or `time_limit` seconds of this call.

        Args:
            fit_schedule: with time_limit, set hp["steps"] (the end of the warm-up + cosine schedule) from the
                speed of the first steps, so the learning rate decays within the time given.
            checkpoint: path of the .npz written at each evaluation (and at the end).
            log: a path; one JSON line per evaluation (step, train/val loss, tokens/s, elapsed seconds).
            on_eval: called with the history entry after each evaluation (e.g. to print a sample).
        """
        steps = self.hp["steps"] if steps is None else steps
        save_every = save_every or self.hp["eval_every"]
        if checkpoint:
            serialization.check_writable(checkpoint, "checkpoint")
        if log:
            serialization.check_writable(log, "log")
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=steps, initial=self.step, unit="step", dynamic_ncols=True)
        t0 = time.perf_counter()
        start_elapsed, start_step = self.elapsed, self.step
        recent = []
        try:
            while self.step < steps:
                if time_limit is not None and self.agreed(time.perf_counter() - t0 >= time_limit):
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
                if fit_schedule and time_limit is not None and len(recent) == FIT_AFTER:
                    steps = self.hp["steps"] = self.agreed(self.step + max(1, int(
                        (time_limit - (time.perf_counter() - t0)) / (sum(d for _, d in recent) / FIT_AFTER))))
                    say = bar.write if bar is not None else print
                    say(f"fitting the schedule to --time-limit {time_limit:g} s: about {steps} steps "
                        f"({1e3 * sum(d for _, d in recent) / FIT_AFTER:.0f} ms a step so far)")
                    if bar is not None:
                        bar.total = steps
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}")
                last = self.step == steps
                if self.step % self.hp["eval_every"] == 0 or last:
                    entry["val_loss"] = self.evaluate()
                    if bar is not None:
                        bar.write(eval_line(entry))
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
        if checkpoint and self.step > start_step and self.step % save_every:
            self.save(checkpoint)
        return self.history

    def agreed(self, value):
        """A decision fit() takes from a clock (stop now; the schedule's length): here the value itself; a
        data-parallel trainer returns rank 0's, so that every rank takes the same steps."""
        return value

    # --- checkpoints ------------------------------------------------------------------------------------
    def save(self, path):
        """Write the whole training state to `path` (.npz + JSON metadata), atomically; the first save to a
        path also writes the tokenizer file beside it (tokenizer_path), first, so that a run killed after
        any checkpoint leaves both."""
        path = os.fspath(path)
        tok_file = tokenizer_path(path)
        if self._tokenizer_file != tok_file:
            tokenizers.save(self.tokenizer, tok_file)
            self._tokenizer_file = tok_file
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
        """A Trainer that continues exactly where the checkpoint stopped (same batches, same dropout).

        overrides: training settings to change (steps, lr, ...); trainer.changed lists those that differ
        from the checkpoint's. Changing batch_size or seed is a CheckpointError: the run would not continue.
        """
        path = os.fspath(path)
        model, tok, meta, arrays = load_checkpoint(path, backend=backend)
        tr = check_train_state(meta, arrays, path)
        check_resume_settings(meta, path, **{k: v for k, v in overrides.items() if k in FIXED_HP})
        hp = dict(tr["hp"], **overrides)
        trainer = cls(model, tok, train_docs, val_docs, **hp)
        trainer.changed = {k: (tr["hp"][k], v) for k, v in overrides.items() if tr["hp"].get(k, v) != v}
        if meta.get("corpus") != trainer.fingerprint:
            raise CheckpointError(f"cannot resume {path!r}: it was trained on another corpus "
                                  f"({meta.get('corpus')}, now {trainer.fingerprint}); resume with the same "
                                  "--corpus, or start a new run")
        opt_state = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
        opt_state.update(tr["optim"])
        trainer.opt.load_state_dict(opt_state)
        trainer.step, trainer.tokens, trainer.elapsed = tr["step"], tr["tokens"], tr["elapsed"]
        for field, set_state in (("data_rng", lambda s: setattr(trainer.data_rng.bit_generator, "state", s)),
                                 ("dropout_rng", lambda s: _set_rng_state(model.rng, s))):
            try:
                set_state(tr[field])
            except (TypeError, ValueError, KeyError) as e:
                raise CheckpointError(f"{path!r}: field 'train.{field}' is not a random generator state "
                                      f"({type(e).__name__}: {e})") from None
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


def init_trainer(path, docs, backend=None, settings=None, trainer_class=None, **hp):
    """Fine-tuning: a fresh Trainer (step 0, new AdamW state, this run's hp) for the pre-trained model and
    the tokenizer of a checkpoint, on new documents (text, tokenized here with that tokenizer).

    Args:
        path: the pre-trained checkpoint.  docs: the new corpus's documents (str).
        settings: model/tokenizer settings given for this run (INIT_FIXED keys; None: not given); any that
            differ from the checkpoint's are a CheckpointError.
        trainer_class: the class of the Trainer made (default Trainer; e.g. a data-parallel one).
    Returns (trainer, the checkpoint's metadata).
    """
    path = os.fspath(path)
    model, tok, meta, _ = load_checkpoint(path, backend=backend)
    check_init_settings(meta, path, **(settings or {}))
    try:
        train, val = prepare_data(docs, tok)
    except tokenizers.TokenizerError:
        if not isinstance(tok, tokenizers.CharTokenizer):
            raise
        # the tokenizer's own hint (--tokenizer bpe) cannot apply: a fine-tuned model keeps its tokenizer
        bad = sorted(set("".join(docs)) - set(tok.stoi))
        raise tokenizers.TokenizerError(
            f"cannot fine-tune {path!r} on this corpus: characters {bad[:10]!r} are not in the vocabulary of "
            f"its character tokenizer ({tok.vocab_size - 1} characters), which --init keeps; remove them from "
            "the corpus, or pre-train the checkpoint with --tokenizer bpe (byte level, covers any text)") from None
    return (trainer_class or Trainer)(model, tok, train, val, **hp), meta


FIT_AFTER = 5            # steps timed before fit_schedule sets the schedule's length


def eval_line(entry):
    """The line printed at each evaluation (under the progress bar, or alone with --no-progress)."""
    return (f"step {entry['step']}: train {entry['loss']:.4f}  val {entry['val_loss']:.4f}  "
            f"{entry['tokens_per_s']:,.0f} tok/s  {entry['time']:.0f}s")


def prepare_data(docs, tokenizer, val_fraction=0.1):
    from .data import split_documents
    train, val = split_documents(docs, val_fraction)
    return tokenize_docs(train, tokenizer), tokenize_docs(val, tokenizer)
