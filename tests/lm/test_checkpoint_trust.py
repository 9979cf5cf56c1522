"""Checkpoints a user can trust: one writer, outputs checked before training, crash-consistent saves, resume
and load that validate everything, no memory bombs, typed one-line errors."""
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from graphdiff.cli import main
from graphdiff.lm import CharTokenizer, CheckpointError, GPT, TokenizerError, tokenizers
from graphdiff.lm.checkpoint import checkpoint_lock, load_checkpoint
from graphdiff.lm.train import Trainer, prepare_data
from graphdiff.nn import serialization

TEXT = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(200))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--block-size", "8", "--n-layer", "1", "--n-head", "2", "--n-embd", "8", "--batch-size", "2",
        "--eval-every", "2", "--eval-batches", "1", "--no-progress", "--sample-chars", "0", "--threads", "0"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return str(path)


def train_cli(corpus, out, *extra):
    return main(["train", "--corpus", corpus, "--out", str(out), "--steps", "2", *TINY, *extra])


def one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def tiny_trainer(steps=2):
    tok = CharTokenizer.train(TEXT)
    train, val = prepare_data([TEXT], tok)
    m = GPT(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=8)
    tr = Trainer(m, tok, train, val, steps=steps, batch_size=2, warmup=1, eval_every=2, eval_batches=1)
    return tr, train, val


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(arrays, meta) of a valid checkpoint after two steps."""
    path = str(tmp_path_factory.mktemp("ck") / "ck.npz")
    tr, _, _ = tiny_trainer()
    tr.fit(progress=False, checkpoint=path)
    return serialization.load(path)


def write_variant(saved, tmp_path, edit):
    arrays, meta = saved
    arrays, meta = dict(arrays), json.loads(json.dumps(meta))
    replaced = edit(arrays, meta)
    if isinstance(replaced, tuple):                      # (new metadata,)
        meta, = replaced
    path = str(tmp_path / "bad.npz")
    serialization.save(path, arrays, meta)
    return path


# --- one writer per checkpoint ------------------------------------------------------------------------------
def test_second_writer_is_refused_until_the_first_dies(tmp_path, corpus, capsys):
    out = tmp_path / "run" / "ckpt.npz"
    out.parent.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from graphdiff.lm.checkpoint import checkpoint_lock\n"
         f"with checkpoint_lock({str(out)!r}):\n    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert holder.stdout.readline() == "held\n"
        assert train_cli(corpus, out) == 2
        line = one_line(capsys.readouterr().err)
        assert str(out.parent) in line and f"pid {holder.pid}" in line and "another --out" in line
        assert not out.exists()
    finally:
        holder.kill()                                   # SIGKILL: the OS releases the lock
        holder.wait()
    assert train_cli(corpus, out) == 0
    assert out.exists()


def test_lock_is_released_when_the_run_ends(tmp_path):
    path = str(tmp_path / "ck.npz")
    with checkpoint_lock(path):
        with pytest.raises(CheckpointError, match=f"pid {os.getpid()}"):
            with checkpoint_lock(path):
                pass
    with checkpoint_lock(path):                         # free again
        pass


# --- fail before training -----------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["out under a file", "out is a folder", "log under a file", "log is a folder"])
def test_unwritable_out_or_log_fails_before_training(tmp_path, corpus, capsys, where):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    out, log = tmp_path / "ok" / "ckpt.npz", tmp_path / "ok" / "log.jsonl"
    bad = {"out under a file": ("out", tmp_path / "file" / "ckpt.npz"), "out is a folder": ("out", tmp_path / "dir"),
           "log under a file": ("log", tmp_path / "file" / "log.jsonl"), "log is a folder": ("log", tmp_path / "dir")}
    flag, path = bad[where]
    out, log = (path, log) if flag == "out" else (out, path)
    assert train_cli(corpus, out, "--log", str(log)) == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert f"--{flag}" in line and str(path) in line
    assert "corpus:" not in captured.out                              # refused before any work
    assert not (tmp_path / "ok" / "ckpt.npz").exists()


def test_missing_log_folder_is_created(tmp_path, corpus):
    log = tmp_path / "logs" / "deep" / "log.jsonl"
    assert train_cli(corpus, tmp_path / "out" / "ckpt.npz", "--log", str(log)) == 0
    assert json.loads(log.read_text().splitlines()[-1])["step"] == 2
    assert (tmp_path / "out" / "ckpt.npz").exists()


# --- crash consistency --------------------------------------------------------------------------------------
def test_a_crash_between_the_two_files_leaves_the_json_behind_never_ahead(tmp_path, monkeypatch):
    path = str(tmp_path / "ck.npz")
    tr, _, _ = tiny_trainer(steps=3)
    tr.fit(steps=2, progress=False, checkpoint=path)
    real, calls = os.replace, []

    def replace_then_die(src, dst):                      # the process dies right after the first rename
        if calls:
            raise KeyboardInterrupt
        calls.append(dst)
        real(src, dst)
    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        tr.fit(steps=3, progress=False, checkpoint=path)
    monkeypatch.undo()
    json_step = json.loads((tmp_path / "ck.json").read_text())["train"]["step"]
    _, _, meta, _ = load_checkpoint(path)
    assert meta["train"]["step"] == 3 and json_step == 2                # the .npz is the truth
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_stale_temp_files_are_removed_at_the_next_start(tmp_path, corpus):
    out = tmp_path / "ckpt.npz"
    ours = [".tmp-ckpt.npz-k2j3", ".tmp-ckpt.json-x8", ".tmp-ckpt.tokenizer.json-q1", ".tmp-ckpt.npzab12cd34"]
    for name in ours + [".tmp-notes.txt-1", "keep.txt"]:
        (tmp_path / name).write_text("partial")
    assert train_cli(corpus, out) == 0
    left = sorted(os.listdir(tmp_path))
    assert not set(ours) & set(left)
    assert ".tmp-notes.txt-1" in left and "keep.txt" in left             # only our own naming pattern


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_follow_the_umask(tmp_path, corpus, umask):
    old = os.umask(umask)
    try:
        assert train_cli(corpus, tmp_path / "ckpt.npz") == 0
    finally:
        os.umask(old)
    for name in ("ckpt.npz", "ckpt.json", "ckpt.tokenizer.json"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask, name


# --- resume validates everything it restores ----------------------------------------------------------------
def _drop_moment(arrays, meta):
    del arrays["optim/exp_avg_sq.h.0.attn.c_attn.weight"]


def _zero_d_moment(arrays, meta):
    arrays["optim/exp_avg.wte.weight"] = np.float32(0.0)


def _short_moment(arrays, meta):
    arrays["optim/exp_avg.lm_head.weight"] = arrays["optim/exp_avg.lm_head.weight"][:, :3]


def _set(field, value):
    def edit(arrays, meta):
        d = meta
        *parts, last = field.split(".")
        for p in parts:
            d = d[p]
        d[last] = value
    return edit


RESUME_VARIANTS = {
    "missing moment": (_drop_moment, "optim/exp_avg_sq.h.0.attn.c_attn.weight"),
    "0-d moment": (_zero_d_moment, "optim/exp_avg.wte.weight"),
    "wrong shape moment": (_short_moment, "optim/exp_avg.lm_head.weight"),
    "step abc": (_set("train.step", "abc"), "train.step"),
    "negative step": (_set("train.step", -1), "train.step"),
    "step ahead of the optimizer": (_set("train.step", 3), "train.optim.t"),
    "tokens null": (_set("train.tokens", None), "train.tokens"),
    "hp lr text": (_set("train.hp.lr", "fast"), "train.hp.lr"),
    "data rng junk": (_set("train.data_rng", {"bit_generator": "PCG64"}), "train.data_rng"),
    "dropout rng list": (_set("train.dropout_rng", [1, 2]), "train.dropout_rng"),
    "no train section": (lambda a, m: m.pop("train") and None, "train"),
}


@pytest.mark.parametrize("variant", RESUME_VARIANTS)
def test_resume_refuses_an_inconsistent_training_state(saved, tmp_path, variant):
    edit, field = RESUME_VARIANTS[variant]
    path = write_variant(saved, tmp_path, edit)
    _, train, val = tiny_trainer()
    with pytest.raises(CheckpointError) as e:
        Trainer.resume(path, train, val)
    assert path in str(e.value) and repr(field) in str(e.value)


def test_every_training_setting_has_a_checkpoint_rule():
    """A resume checks each setting Trainer saves (train.hp) against checkpoint.HP_RULES: a setting added to
    TRAIN_DEFAULTS without a rule would make every checkpoint it writes unreadable."""
    from graphdiff.lm import checkpoint, train
    assert set(checkpoint.HP_RULES) == set(train.TRAIN_DEFAULTS)
    for k, v in train.TRAIN_DEFAULTS.items():
        kind, lo = checkpoint.HP_RULES[k]
        assert isinstance(v, kind) and v >= lo, (k, v)


@pytest.mark.parametrize("flags, field", [(["--n-embd", "16"], "model.config.n_embd"),
                                          (["--batch-size", "4"], "train.hp.batch_size"),
                                          (["--tokenizer", "bpe"], "tokenizer.type"),
                                          (["--model", "rnn"], "model.kind"),
                                          (["--dtype", "float64"], "model.dtype")])
def test_resume_refuses_flags_that_change_the_model(tmp_path, corpus, capsys, flags, field):
    out = tmp_path / "ckpt.npz"
    assert train_cli(corpus, out) == 0
    capsys.readouterr()
    assert main(["train", "--corpus", corpus, "--out", str(out), "--resume", "--no-progress", *flags]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(out) in line and repr(field) in line and flags[0] in line


def test_resume_says_which_changed_setting_it_uses(tmp_path, corpus, capsys):
    out = tmp_path / "ckpt.npz"
    assert train_cli(corpus, out) == 0
    capsys.readouterr()
    assert main(["train", "--corpus", corpus, "--out", str(out), "--resume", "--steps", "4", "--lr", "0.01",
                 "--n-embd", "8", "--no-progress", "--sample-chars", "0"]) == 0      # same n_embd: fine
    err = capsys.readouterr().err.splitlines()
    assert "graphdiff train: warning: resuming with --lr 0.01 (the checkpoint used 0.003)" in err
    assert any("--steps 4" in e for e in err) and len(err) == 2
    _, _, meta, _ = load_checkpoint(str(out))
    assert meta["train"]["step"] == 4 and meta["train"]["hp"]["lr"] == 0.01


# --- no memory bombs ----------------------------------------------------------------------------------------
def _peak(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_bpe_merges_that_double_the_token_length_are_refused_unbuilt(tmp_path):
    merges = [[0, 0]] + [[256 + k, 256 + k] for k in range(39)]          # token k is 2**(k+1) bytes
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"type": "bpe", "merges": merges}, separators=(",", ":")))
    assert path.stat().st_size < 500

    def load():
        with pytest.raises(TokenizerError, match=r"'merges\[8\]'.*512 bytes; at most 256"):
            tokenizers.load(path)
    assert _peak(load) < 1 << 20


def test_a_config_bigger_than_the_weights_is_refused_before_building(saved, tmp_path):
    path = write_variant(saved, tmp_path, _set("model.config.n_embd", 1024))
    assert os.path.getsize(path) < 100_000                 # the model it describes would take 50 MiB

    def load():
        with pytest.raises(CheckpointError, match=r"'model.config'.*wte.weight"):
            load_checkpoint(path)
    assert _peak(load) < 4 << 20


def test_an_entry_that_inflates_is_refused(tmp_path):
    path = str(tmp_path / "zip.npz")
    np.savez_compressed(path, __meta__=np.zeros(10, np.uint8), w=np.zeros((2048, 2048), np.float32))
    with pytest.raises(CheckpointError, match="compressed"):
        load_checkpoint(path)


# --- typed errors for malformed metadata --------------------------------------------------------------------
def _meta(value):
    return lambda arrays, meta: (value,)


def _drop(field):
    def edit(arrays, meta):
        d = meta
        *parts, last = field.split(".")
        for p in parts:
            d = d[p]
        del d[last]
    return edit


def _complex(arrays, meta):
    arrays["model/wte.weight"] = arrays["model/wte.weight"].astype(np.complex64)


MALFORMED = {
    "meta is a list": (_meta([1, 2]), "metadata"),
    "meta is null": (_meta(None), "metadata"),
    "no model": (_drop("model"), "model"),
    "no tokenizer": (_drop("tokenizer"), "tokenizer"),
    "no config": (_drop("model.config"), "model.config"),
    "no kind": (_drop("model.kind"), "model.kind"),
    "no dtype": (_drop("model.dtype"), "model.dtype"),
    "model is a string": (_set("model", "gpt"), "model"),
    "unknown kind": (_set("model.kind", "lstm"), "model.kind"),
    "dtype int64": (_set("model.dtype", "int64"), "model.dtype"),
    "dtype float16": (_set("model.dtype", "float16"), "model.dtype"),
    "extra config key": (_set("model.config.n_expert", 4), "model.config.n_expert"),
    "missing config key": (_drop("model.config.n_head"), "model.config.n_head"),
    "negative n_layer": (_set("model.config.n_layer", -1), "model.config.n_layer"),
    "zero n_head": (_set("model.config.n_head", 0), "model.config.n_head"),
    "n_head not dividing": (_set("model.config.n_head", 3), "model.config.n_head"),
    "float block_size": (_set("model.config.block_size", 8.5), "model.config.block_size"),
    "bool n_embd": (_set("model.config.n_embd", True), "model.config.n_embd"),
    "pad_id out of range": (_set("model.config.pad_id", 999), "model.config.pad_id"),
    "norm unknown": (_set("model.config.norm", "mid"), "model.config.norm"),
    "dropout 1.5": (_set("model.config.dropout", 1.5), "model.config.dropout"),
    "complex weights": (_complex, "model/wte.weight"),
    "tokenizer is a list": (_set("tokenizer", ["a"]), "type"),
    "tokenizer type": (_set("tokenizer.type", "wordpiece"), "type"),
    "tokenizer chars int": (_set("tokenizer.chars", 5), "chars"),
    "tokenizer chars repeat": (_set("tokenizer.chars", "aab"), "chars"),
    "tokenizer extra field": (_set("tokenizer.merges", []), "merges"),
    "tokenizer too small": (_set("tokenizer.chars", "abc"), "tokenizer"),
}


@pytest.mark.parametrize("variant", MALFORMED)
def test_malformed_metadata_is_a_checkpoint_error_naming_file_and_field(saved, tmp_path, capsys, variant):
    edit, field = MALFORMED[variant]
    path = write_variant(saved, tmp_path, edit)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert path in str(e.value) and repr(field) in str(e.value)
    assert main(["generate", "--checkpoint", path, "--max-new-tokens", "2"]) == 2
    assert one_line(capsys.readouterr().err) == f"graphdiff generate: {e.value}"


TOKENIZER_FILES = {
    "not json": ("{'type': 'char'", "not JSON"),
    "not utf-8": (b"\xff\xfe{}", "not JSON"),
    "a list": ("[1, 2]", "'type'"),
    "no type": ('{"chars": "ab"}', "'type'"),
    "unknown type": ('{"type": "wordpiece"}', "'type'"),
    "merges not a list": ('{"type": "bpe", "merges": {"0": 1}}', "'merges'"),
    "merge of three": ('{"type": "bpe", "merges": [[1, 2, 3]]}', "'merges[0]'"),
    "merge id too big": ('{"type": "bpe", "merges": [[1, 2], [3, 258]]}', "'merges[1]'"),
    "merge refers to itself": ('{"type": "bpe", "merges": [[256, 1]]}', "'merges[0]'"),
    "negative id": ('{"type": "bpe", "merges": [[-1, 2]]}', "'merges[0]'"),
    "string id": ('{"type": "bpe", "merges": [["a", 2]]}', "'merges[0]'"),
    "repeated merge": ('{"type": "bpe", "merges": [[1, 2], [1, 2]]}', "'merges[1]'"),
    "empty chars": ('{"type": "char", "chars": ""}', "'chars'"),
}


@pytest.mark.parametrize("variant", TOKENIZER_FILES)
def test_malformed_tokenizer_file_is_a_tokenizer_error(tmp_path, variant):
    text, field = TOKENIZER_FILES[variant]
    path = tmp_path / "tokenizer.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(TokenizerError) as e:
        tokenizers.load(path)
    assert str(path) in str(e.value) and field in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(TokenizerError, match="does not exist|No such file"):
        tokenizers.load(tmp_path / "missing.json")
