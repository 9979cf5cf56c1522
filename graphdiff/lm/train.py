"""Training: mini-batch AdamW with warm-up + cosine learning rate, gradient clipping, periodic validation,
atomic checkpoints that resume exactly (parameters, optimizer moments, step, and both random streams).

Loading a checkpoint checks every field of its metadata and every array's shape and dtype (from the .npz,
which is the single source of truth) before building a model, and resuming checks the training state
it restores; anything wrong is a CheckpointError naming the file and the field.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import time

import numpy as np

from ..nn import serialization
from ..nn.optim import AdamW, clip_grad_norm, warmup_cosine
from ..nn.serialization import CheckpointError
from . import gpt, rnn, tokenizers
from .gpt import GPT
from .data import Sampler, tokenize_docs
from .rnn import RNNLM

FORMAT = "graphdiff-lm-checkpoint"
VERSION = 1
MODELS = {"gpt": GPT, "rnn": RNNLM}
DTYPES = ("float32", "float64")
MAX_BLOCK = 1 << 14          # longest context a checkpoint may ask for (GPT-2: 1024)
MAX_WIDTH = 1 << 16          # n_embd, n_hidden
MAX_LAYERS = 1024

TRAIN_DEFAULTS = dict(steps=1000, batch_size=16, lr=3e-3, min_lr=3e-4, warmup=50, weight_decay=0.01,
                      grad_clip=1.0, eval_every=100, eval_batches=8, seed=1337)
# settings a resumed run cannot change: they decide which batches come next
FIXED_HP = ("batch_size", "seed")


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
                if fit_schedule and time_limit is not None and len(recent) == FIT_AFTER:
                    steps = self.hp["steps"] = self.step + max(1, int((time_limit - (time.perf_counter() - t0))
                                                                      / (sum(d for _, d in recent) / FIT_AFTER)))
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


def load_checkpoint(path, backend=None, expect_kind=None):
    """(model, tokenizer, meta, arrays) from a checkpoint; CheckpointError says clearly what is wrong.

    Everything is checked before the model is built: the metadata's fields, the tokenizer, and the config
    against the shapes of the arrays actually stored, so a small file cannot make it allocate a big model.
    """
    path = os.fspath(path)
    arrays, meta = serialization.load(path)
    kind, config, dtype, tok = check_checkpoint(meta, arrays, path)
    if expect_kind is not None and kind != expect_kind:
        raise CheckpointError(f"{path!r} holds a {kind!r} model, not a {expect_kind!r} model; pass "
                              f"--model {kind} or another checkpoint")
    try:
        model = build_model(kind, config, backend=backend, dtype=dtype)
        model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path!r} does not match the {kind} model its metadata describes: {e}") from None
    return model, tok, meta, arrays


def _field(path, field, why):
    return CheckpointError(f"{path!r}: field {field!r} {why}")


def _number(value, path, field, kind=int, lo=0, hi=None):
    """value, checked to be a kind (int, or float where ints pass too; never bool) in [lo, hi]."""
    ok = type(value) is int or (kind is float and type(value) is float and np.isfinite(value))
    if not ok:
        raise _field(path, field, f"is {value!r}; expected {'an integer' if kind is int else 'a number'}")
    if value < lo or (hi is not None and value > hi):
        raise _field(path, field, f"is {value}; expected {lo} <= value" + (f" <= {hi}" if hi is not None else ""))
    return value


def _section(meta, path, field, keys):
    """meta[field] (dotted), checked to be a dict holding `keys`."""
    d = meta
    for part in field.split("."):
        if not isinstance(d, dict) or part not in d:
            raise _field(path, field, "is missing")
        d = d[part]
    if not isinstance(d, dict):
        raise _field(path, field, f"is a {type(d).__name__}, expected an object")
    for k in keys:
        if k not in d:
            raise _field(path, f"{field}.{k}", "is missing")
    return d


CONFIG_RULES = {"vocab_size": (int, 2, tokenizers.MAX_VOCAB), "block_size": (int, 1, MAX_BLOCK),
                "n_layer": (int, 1, MAX_LAYERS), "n_head": (int, 1, MAX_WIDTH), "n_embd": (int, 1, MAX_WIDTH),
                "n_hidden": (int, 1, MAX_WIDTH), "pad_id": (int, 0, tokenizers.MAX_VOCAB - 1),
                "seed": (int, 0, 2 ** 63 - 1), "dropout": (float, 0, 0.99),
                "norm": ("pre", "post"), "pos": ("learned", "sinusoidal")}
CONFIG_KEYS = {"gpt": set(gpt.DEFAULTS), "rnn": set(rnn.DEFAULTS)}


def _config_shapes(kind, cfg):
    """{array name: shape} of the arrays that fix every size in the config (the rest follow from them)."""
    V, C = cfg["vocab_size"], cfg["n_embd"]
    if kind == "rnn":
        return {"model/wte.weight": (V, C), "model/cell.weight_hh": (cfg["n_hidden"], cfg["n_hidden"])}
    want = {"model/wte.weight": (V, C)}
    if cfg["pos"] == "learned":
        want["model/wpe.weight"] = (cfg["block_size"], C)
    for i in range(cfg["n_layer"]):
        want[f"model/h.{i}.attn.c_attn.weight"] = (C, 3 * C)
    return want


def check_checkpoint(meta, arrays, path):
    """(kind, config, dtype, tokenizer) of a checkpoint, after checking its metadata and arrays.

    Args:
        meta: the metadata read from the .npz.  arrays: {name: array}.  path: named in errors.
    Raises CheckpointError naming the file and the field, before anything big is allocated."""
    if not isinstance(meta, dict):
        raise _field(path, "metadata", f"is a {'null' if meta is None else type(meta).__name__}, "
                     "expected a JSON object; the file is not a graphdiff checkpoint")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a graphdiff language-model checkpoint (format "
                              f"{meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path!r} has checkpoint version {meta.get('version')}, this graphdiff reads "
                              f"version {VERSION}")
    m = _section(meta, path, "model", ("kind", "config", "dtype"))
    kind, dtype = m["kind"], m["dtype"]
    if kind not in MODELS:
        raise _field(path, "model.kind", f"is {kind!r}; expected one of {sorted(MODELS)}")
    if dtype not in DTYPES:
        raise _field(path, "model.dtype", f"is {dtype!r}; expected one of {list(DTYPES)}")
    cfg = _section(meta, path, "model.config", sorted(CONFIG_KEYS[kind]))
    for k, v in cfg.items():
        if k not in CONFIG_KEYS[kind]:
            raise _field(path, f"model.config.{k}", f"is not a {kind} setting; known: {sorted(CONFIG_KEYS[kind])}")
        rule = CONFIG_RULES[k]
        if isinstance(rule[0], str):
            if v not in rule:
                raise _field(path, f"model.config.{k}", f"is {v!r}; expected one of {list(rule)}")
        else:
            _number(v, path, f"model.config.{k}", *rule)
    if cfg["pad_id"] >= cfg["vocab_size"]:
        raise _field(path, "model.config.pad_id", f"is {cfg['pad_id']}, not an id below vocab_size "
                     f"{cfg['vocab_size']}")
    if kind == "gpt" and cfg["n_embd"] % cfg["n_head"]:
        raise _field(path, "model.config.n_head", f"is {cfg['n_head']}, which does not divide n_embd "
                     f"{cfg['n_embd']}")
    for name, a in arrays.items():
        if a.dtype not in (np.float32, np.float64):
            raise _field(path, name, f"has dtype {a.dtype}; checkpoint arrays are float32 or float64")
    for name, shape in _config_shapes(kind, cfg).items():
        if name not in arrays:
            raise _field(path, name, "is missing: the arrays do not match the model the config describes")
        if arrays[name].shape != shape:
            raise _field(path, "model.config", f"describes {name} of shape {shape} but the file holds "
                         f"{arrays[name].shape}; the metadata does not match the weights")
    if "tokenizer" not in meta:
        raise _field(path, "tokenizer", "is missing")
    try:
        tok = tokenizers.from_dict(meta["tokenizer"], source=f"{path!r}: tokenizer")
    except tokenizers.TokenizerError as e:
        raise CheckpointError(str(e)) from None
    if (tok.vocab_size, tok.pad_id) != (cfg["vocab_size"], cfg["pad_id"]):
        raise _field(path, "tokenizer", f"has {tok.vocab_size} ids (<pad> {tok.pad_id}), the model "
                     f"{cfg['vocab_size']} (<pad> {cfg['pad_id']})")
    return kind, dict(cfg), dtype, tok


HP_RULES = {"steps": (int, 0), "batch_size": (int, 1), "lr": (float, 0), "min_lr": (float, 0),
            "warmup": (int, 0), "weight_decay": (float, 0), "grad_clip": (float, 0), "eval_every": (int, 1),
            "eval_batches": (int, 1), "seed": (int, 0)}


def check_train_state(meta, arrays, path):
    """meta["train"] after checking every field a resume restores, and the optimizer's arrays.

    Every optimizer moment must be there (once a step has been taken), with its parameter's shape."""
    tr = _section(meta, path, "train", ("hp", "step", "tokens", "elapsed", "optim", "data_rng", "dropout_rng"))
    hp = _section(meta, path, "train.hp", sorted(TRAIN_DEFAULTS))
    for k, v in hp.items():
        if k not in HP_RULES:
            raise _field(path, f"train.hp.{k}", f"is not a training setting; known: {sorted(HP_RULES)}")
        _number(v, path, f"train.hp.{k}", *HP_RULES[k])
    step = _number(tr["step"], path, "train.step")
    _number(tr["tokens"], path, "train.tokens")
    _number(tr["elapsed"], path, "train.elapsed", float)
    opt = _section(meta, path, "train.optim", ("t", "lr"))
    if _number(opt["t"], path, "train.optim.t") != step:
        raise _field(path, "train.optim.t", f"is {opt['t']} but train.step is {step}; they count the same steps")
    _number(opt["lr"], path, "train.optim.lr", float)
    for field in ("data_rng", "dropout_rng"):
        if not isinstance(tr[field], dict):
            raise _field(path, f"train.{field}", f"is {tr[field]!r}, expected a random generator state object")
    want = {f"optim/{s}.{k[len('model/'):]}": a.shape for k, a in arrays.items() if k.startswith("model/")
            for s in AdamW.state_names} if step else {}
    have = {k for k in arrays if k.startswith("optim/")}
    for name in sorted(have - set(want)):
        raise _field(path, name, f"is not an optimizer state of this model at step {step}")
    for name, shape in sorted(want.items()):
        if name not in arrays:
            raise _field(path, name, f"is missing: the optimizer state at step {step} is incomplete; use an "
                         "earlier checkpoint or start a new run")
        if arrays[name].shape != shape:
            raise _field(path, name, f"has shape {arrays[name].shape}, its parameter {shape}")
    return tr


# --resume: CLI flag (or Trainer.resume setting) -> where the checkpoint keeps it
RESUME_FIELDS = {"model": "model.kind", "dtype": "model.dtype", "tokenizer": "tokenizer.type",
                 "bpe_vocab": "model.config.vocab_size", "batch_size": "train.hp.batch_size",
                 "seed": "train.hp.seed",
                 **{k: f"model.config.{k}" for k in ("block_size", "n_layer", "n_head", "n_embd", "n_hidden",
                                                     "dropout", "norm", "pos")}}


def check_resume_settings(meta, path, **given):
    """CheckpointError when a setting given for a resumed run (None: not given) differs from the
    checkpoint's: the model, its sizes, the tokenizer, the batch size and the seed cannot change."""
    _check_settings(meta, f"cannot resume {path!r}", "leave {flag} out to resume, or start a new run with "
                    "another --out", given)


# --init: the model and tokenizer come from the checkpoint; the training settings are the new run's own
INIT_FIXED = ("model", "dtype", "tokenizer", "bpe_vocab", "block_size", "n_layer", "n_head", "n_embd",
              "n_hidden", "dropout", "norm", "pos")


def check_init_settings(meta, path, **given):
    """CheckpointError when a model or tokenizer setting given for a run initialised from a checkpoint
    (`--init`, fine-tuning; None: not given) differs from the checkpoint's: the pre-trained weights fix them."""
    unknown = set(given) - set(INIT_FIXED)
    if unknown:
        raise TypeError(f"check_init_settings: {sorted(unknown)} may change when fine-tuning")
    _check_settings(meta, f"cannot initialise from {path!r}", "leave {flag} out: a fine-tuned model keeps "
                    "the pre-trained model's shape and tokenizer", given)


def init_trainer(path, docs, backend=None, settings=None, **hp):
    """Fine-tuning: a fresh Trainer (step 0, new AdamW state, this run's hp) for the pre-trained model and
    the tokenizer of a checkpoint, on new documents (text, tokenized here with that tokenizer).

    Args:
        path: the pre-trained checkpoint.  docs: the new corpus's documents (str).
        settings: model/tokenizer settings given for this run (INIT_FIXED keys; None: not given); any that
            differ from the checkpoint's are a CheckpointError.
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
    return Trainer(model, tok, train, val, **hp), meta


def _check_settings(meta, what, hint, given):
    for key, value in given.items():
        field = RESUME_FIELDS[key]
        if value is None or (key == "bpe_vocab" and meta["tokenizer"]["type"] != "bpe"):
            continue
        have = meta
        for part in field.split("."):
            have = have.get(part) if isinstance(have, dict) else None
        if have is not None and value != have:
            flag = "--" + key.replace("_", "-")
            raise CheckpointError(f"{what}: {flag} is {value!r} but the checkpoint holds {have!r} "
                                  f"(field {field!r}); {hint.format(flag=flag)}")


def lock_path(path):
    path = os.fspath(path)
    return (path[:-4] if path.endswith(".npz") else path) + ".lock"


@contextlib.contextmanager
def checkpoint_lock(path):
    """Hold an advisory lock on checkpoint `path` (the file <name>.lock beside it) while the block runs.

    One training run writes a checkpoint at a time; a second raises CheckpointError naming the pid that
    holds the lock. The OS releases the lock when the process ends, however it ends (SIGKILL too), so a
    lock file that a killed run left blocks nothing. The file is removed when the block ends (normally, by
    an exception or Ctrl-C), while still locked: a run that opened it just before then finds, once it has
    the lock, that the path no longer names its file, and locks the file now there instead. Once held,
    temporary files that an interrupted save of this checkpoint left behind are removed."""
    path = os.fspath(path)
    lock = lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise CheckpointError(f"{os.path.dirname(os.path.abspath(path))!r} is in use: another training "
                                  f"run (pid {holder}) holds {lock!r} and writes {os.path.basename(path)!r}; "
                                  "wait for it to finish or pass another --out") from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)                    # the run before removed the file we locked: lock the one there now
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        base = path[:-4] if path.endswith(".npz") else path
        folder = os.path.dirname(os.path.abspath(path))
        for p in (path, base + ".json", tokenizer_path(path), os.path.join(folder, "probe")):
            serialization.remove_stale_temps(p)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


FIT_AFTER = 5            # steps timed before fit_schedule sets the schedule's length


def eval_line(entry):
    """The line printed at each evaluation (under the progress bar, or alone with --no-progress)."""
    return (f"step {entry['step']}: train {entry['loss']:.4f}  val {entry['val_loss']:.4f}  "
            f"{entry['tokens_per_s']:,.0f} tok/s  {entry['time']:.0f}s")


def tokenizer_path(checkpoint):
    """The readable tokenizer file written beside a checkpoint: ckpt.npz -> ckpt.tokenizer.json (one per
    checkpoint, so two checkpoints in one folder keep their own)."""
    checkpoint = os.fspath(checkpoint)
    base = checkpoint[:-4] if checkpoint.endswith(".npz") else checkpoint
    return base + ".tokenizer.json"


def prepare_data(docs, tokenizer, val_fraction=0.1):
    from .data import split_documents
    train, val = split_documents(docs, val_fraction)
    return tokenize_docs(train, tokenizer), tokenize_docs(val, tokenizer)


def default_path(path):
    return path if path.endswith(".npz") else os.path.join(path, "ckpt.npz")
