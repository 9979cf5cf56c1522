"""Language-model checkpoints: the file format, loading, checking, and the lock a training run holds.

A checkpoint is one .npz (model and optimizer arrays, the single source of truth for every shape) with JSON
metadata (format, model kind and config, tokenizer, corpus fingerprint, training state, history), written by
Trainer.save. Loading checks every field of the metadata and every array's shape and dtype before building a
model, and resuming checks the training state it restores; anything wrong is a CheckpointError naming the
file and the field. One training run at a time writes a checkpoint: it holds checkpoint_lock.
"""
import contextlib
import fcntl
import os

import numpy as np

from ..nn import serialization
from ..nn.optim import AdamW
from ..nn.serialization import CheckpointError
from . import gpt, rnn, tokenizers
from .gpt import GPT
from .rnn import RNNLM


FORMAT = "graphdiff-lm-checkpoint"
VERSION = 1
MODELS = {"gpt": GPT, "rnn": RNNLM}
DTYPES = ("float32", "float64")
MAX_BLOCK = 1 << 14          # longest context a checkpoint may ask for (GPT-2: 1024)
MAX_WIDTH = 1 << 16          # n_embd, n_hidden
MAX_LAYERS = 1024


def build_model(kind, config, backend=None, dtype="float32"):
    """A new model of `kind` ("gpt" or "rnn") with the settings in `config` (its DEFAULTS keys)."""
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose one of {sorted(MODELS)}")
    return MODELS[kind](backend=backend, dtype=dtype, **config)


def tokenizer_path(checkpoint):
    """The readable tokenizer file written beside a checkpoint: ckpt.npz -> ckpt.tokenizer.json (one per
    checkpoint, so two checkpoints in one folder keep their own)."""
    checkpoint = os.fspath(checkpoint)
    base = checkpoint[:-4] if checkpoint.endswith(".npz") else checkpoint
    return base + ".tokenizer.json"


def lock_path(path):
    """The lock file checkpoint_lock holds beside a checkpoint: ckpt.npz -> ckpt.lock."""
    path = os.fspath(path)
    return (path[:-4] if path.endswith(".npz") else path) + ".lock"


def default_path(path):
    """path itself for a .npz, else the checkpoint ckpt.npz in the folder `path`."""
    return path if path.endswith(".npz") else os.path.join(path, "ckpt.npz")


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
    hp = _section(meta, path, "train.hp", sorted(HP_RULES))
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
