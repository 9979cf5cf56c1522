"""What the commands, diagrams and optimizer constructors refuse, and what a training run leaves on disk."""
import glob
import os
import warnings

import numpy as np
import pytest

import graphdiff as gd
from graphdiff import nn
from graphdiff.cli import main
from graphdiff.viz.dot import to_dot

TEXT = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(120))
TINY = ["--block-size", "8", "--n-layer", "1", "--n-head", "2", "--n-embd", "8", "--batch-size", "2",
        "--sample-chars", "0", "--threads", "1", "--no-progress"]
RNN_TINY = ["--model", "rnn", "--block-size", "8", "--n-embd", "8", "--n-hidden", "8", "--batch-size", "2",
            "--sample-chars", "0", "--threads", "1", "--no-progress"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return str(path)


def refused(capsys, argv):
    """Run the command; it must end with exit 2 and a last stderr line naming the command, no traceback."""
    try:
        code = main(argv)
    except SystemExit as e:                      # argparse: usage line, then one error line
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.strip(), err
    return err.strip().splitlines()[-1]


def two_scoped_graph():
    g = gd.Graph(dtype="float64")
    x = g.input("x", (2, 3))
    with g.scope("attn"):
        W = g.param("W", np.ones((3, 3)))
        h = gd.tanh(x @ W)
    with g.scope("mlp"):
        V = g.param("V", np.ones((3, 1)))
        y = gd.sum(h @ V)
    return g, y


# --- diagrams drawn wrong without an error -------------------------------------------------------------------
def test_to_dot_refuses_nodes_of_two_graphs():
    """Nodes of two graphs are not one diagram: a GraphError names a node of each graph."""
    _, y1 = two_scoped_graph()
    g2 = gd.Graph()
    y2 = gd.sum(g2.param("other", np.ones(2)), name="loss2")
    with pytest.raises(gd.GraphError, match="'mlp/sum'.*'loss2'|'loss2'.*'mlp/sum'"):
        to_dot([y1, y2])


@pytest.mark.parametrize("max_nodes", [0, -1])
def test_to_dot_refuses_max_nodes_below_one(max_nodes):
    """max_nodes < 1 drew an empty picture (-1) or divided by zero (0)."""
    _, y = two_scoped_graph()
    with pytest.raises(ValueError, match=f"max_nodes={max_nodes}"):
        to_dot(y, max_nodes=max_nodes)


def test_to_dot_collapse_takes_one_scope_name():
    """collapse='attn' is one scope, not the scopes 'a', 't', 't', 'n'."""
    _, y = two_scoped_graph()
    as_str, as_list = to_dot(y, collapse="attn"), to_dot(y, collapse=["attn"])
    assert as_str.source == as_list.source and "collapsed scope" in as_str.source
    assert as_str.ids["attn/W"] == as_str.ids["attn/tanh"] != as_str.ids["mlp/V"]


def test_to_dot_refuses_a_collapse_name_that_is_no_scope(tmp_path, capsys):
    """collapse='atn' (a typo) collapsed nothing, silently."""
    _, y = two_scoped_graph()
    with pytest.raises(ValueError, match=r"collapse='atn' is not the scope.*'attn'"):
        to_dot(y, collapse=["attn", "atn"])
    line = refused(capsys, ["render", "transformer", "--out", str(tmp_path), "--collapse", "nosuch"])
    assert "'nosuch'" in line


def test_to_dot_highlight_takes_one_node_name():
    """highlight='attn/W' is one node, not the nodes 'a', 't', ..."""
    _, y = two_scoped_graph()
    assert to_dot(y, highlight="attn/W").source == to_dot(y, highlight=["attn/W"]).source
    assert to_dot(y, highlight="attn/W").source != to_dot(y).source


def test_render_collapse_by_scope_name(tmp_path, capsys):
    """--collapse takes a depth or scope names (repeatable); 0 is refused in one line."""
    from graphdiff.viz.cli import add_render_arguments
    import argparse
    p = argparse.ArgumentParser()
    add_render_arguments(p)
    assert p.parse_args(["transformer", "--collapse", "block"]).collapse == ["block"]
    assert p.parse_args(["transformer", "--collapse", "2"]).collapse == 2
    assert p.parse_args(["transformer", "--collapse", "a", "--collapse", "b"]).collapse == ["a", "b"]
    assert "--collapse" in refused(capsys, ["render", "transformer", "--out", str(tmp_path), "--collapse", "0"])


# --- outputs that are inputs of the run ---------------------------------------------------------------------
def test_train_refuses_out_that_is_the_corpus(tmp_path, corpus, capsys):
    """--out c.txt with --corpus c.txt overwrote the corpus with the checkpoint."""
    line = refused(capsys, ["train", "--corpus", corpus, "--out", corpus, "--steps", "1"] + TINY)
    assert "--out" in line and "--corpus" in line and open(corpus).read() == TEXT


@pytest.mark.parametrize("which", ["log", "derived"])
def test_train_refuses_log_or_derived_file_that_is_the_corpus(tmp_path, corpus, capsys, which):
    """--log, and the files written beside --out (.json, .tokenizer.json), must not be the corpus."""
    if which == "log":
        argv = ["--out", str(tmp_path / "m.npz"), "--log", os.path.join(str(tmp_path), ".", "corpus.txt")]
    else:
        argv = ["--out", str(tmp_path / "corpus.npz")]
        os.rename(corpus, tmp_path / "corpus.tokenizer.json")
        corpus = str(tmp_path / "corpus.tokenizer.json")
    line = refused(capsys, ["train", "--corpus", corpus, "--steps", "1"] + argv + TINY)
    assert "--corpus" in line and open(corpus).read() == TEXT


def test_train_refuses_out_that_is_the_init_checkpoint(tmp_path, corpus, capsys):
    """--init a.npz --out a.npz would overwrite the pre-trained weights it starts from."""
    a = str(tmp_path / "a.npz")
    assert main(["train", "--corpus", corpus, "--out", a, "--steps", "1"] + TINY) == 0
    before = open(a, "rb").read()
    line = refused(capsys, ["train", "--corpus", corpus, "--init", a, "--out", a, "--steps", "1", "--threads", "1",
                            "--no-progress", "--sample-chars", "0"])
    assert "--init" in line and open(a, "rb").read() == before


def test_train_refuses_log_that_is_the_resumed_checkpoint(tmp_path, corpus, capsys):
    a = str(tmp_path / "a.npz")
    assert main(["train", "--corpus", corpus, "--out", a, "--steps", "1"] + TINY) == 0
    line = refused(capsys, ["train", "--corpus", corpus, "--out", a, "--resume", "--log", a, "--steps", "2",
                            "--threads", "1", "--no-progress", "--sample-chars", "0"])
    assert "--log" in line


# --- --steps 0 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", [["--steps", "0"], ["--time-limit", "0"]])
def test_train_without_a_step_says_so_and_writes_nothing(tmp_path, corpus, capsys, flag):
    """A run that takes no step says that nothing was saved (not 'saved X') and writes no checkpoint."""
    out = tmp_path / "m.npz"
    assert main(["train", "--corpus", corpus, "--out", str(out)] + flag + TINY) == 0
    printed = capsys.readouterr().out
    assert "saved" not in printed.replace("nothing saved", "") and "no training step" in printed
    assert "nothing saved" in printed
    assert not os.path.exists(out) and not glob.glob(str(tmp_path / "m.*"))


# --- the tokenizer file comes with the first checkpoint -----------------------------------------------------
def test_first_checkpoint_writes_the_tokenizer_file(tmp_path, corpus):
    """A run killed after its first checkpoint left ckpt.npz without ckpt.tokenizer.json."""
    from graphdiff.lm import tokenizers
    from graphdiff.lm.checkpoint import build_model
    from graphdiff.lm.train import Trainer, prepare_data
    tok = tokenizers.CharTokenizer.train(TEXT)
    model = build_model("gpt", dict(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=8,
                                    pad_id=tok.pad_id))
    train, val = prepare_data([TEXT], tok)
    trainer = Trainer(model, tok, train, val, steps=1, batch_size=2, eval_batches=1)
    trainer.save(str(tmp_path / "c.npz"))
    assert tokenizers.load(tmp_path / "c.tokenizer.json").to_dict() == tok.to_dict()


# --- one line instead of a traceback, or a refusal instead of silence ---------------------------------------
@pytest.mark.parametrize("argv, flag", [
    (["render", "scalar", "--max-nodes", "0"], "--max-nodes"),
    (["render", "scalar", "--collapse", "0"], "--collapse"),
    (["growth", "--render-len", "0", "--max-len", "2"], "--render-len"),
    (["compare", "scalar", "--repeats", "0"], "--repeats"),
    (["compare", "scalar", "--repeats", "-2"], "--repeats"),
])
def test_viz_commands_refuse_bad_counts(tmp_path, capsys, argv, flag):
    assert f"argument {flag}" in refused(capsys, argv + ["--out", str(tmp_path / "o")])


@pytest.mark.parametrize("flag, value", [("--dropout", "1"), ("--dropout", "1.5"), ("--dropout", "0.995"),
                                         ("--lr", "inf"),
                                         ("--lr", "nan"), ("--weight-decay", "inf")])
def test_train_refuses_out_of_range_settings(tmp_path, corpus, capsys, flag, value):
    line = refused(capsys, ["train", "--corpus", corpus, "--out", str(tmp_path / "m.npz"), flag, value] + TINY)
    assert f"argument {flag}" in line and not os.path.exists(tmp_path / "m.npz")


@pytest.mark.parametrize("flag, value", [("--dropout", "0.1"), ("--n-layer", "2"), ("--n-head", "2"),
                                         ("--norm", "post"), ("--pos", "sinusoidal")])
def test_train_rnn_refuses_gpt_only_flags(tmp_path, corpus, capsys, flag, value):
    line = refused(capsys, ["train", "--corpus", corpus, "--out", str(tmp_path / "m.npz"), flag, value,
                            "--steps", "1"] + RNN_TINY)
    assert flag in line and "an rnn model" in line


@pytest.mark.parametrize("how", ["--resume", "--init"])
def test_train_from_an_rnn_checkpoint_refuses_gpt_only_flags(tmp_path, corpus, capsys, how):
    a = str(tmp_path / "r.npz")
    assert main(["train", "--corpus", corpus, "--out", a, "--steps", "1"] + RNN_TINY) == 0
    out = a if how == "--resume" else str(tmp_path / "b.npz")
    line = refused(capsys, ["train", "--corpus", corpus, "--out", out, "--n-layer", "3", "--steps", "2",
                            "--no-progress", "--sample-chars", "0"] + ([how] if how == "--resume" else [how, a]))
    assert "--n-layer" in line and "rnn" in line


def test_train_gpt_refuses_rnn_only_flag(tmp_path, corpus, capsys):
    line = refused(capsys, ["train", "--corpus", corpus, "--out", str(tmp_path / "m.npz"), "--n-hidden", "8",
                            "--steps", "1"] + TINY)
    assert "--n-hidden" in line and "gpt" in line


def test_train_out_folder_not_there_yet_is_created(tmp_path, corpus, capsys):
    """--out newdir/ names a folder: the checkpoint goes to newdir/ckpt.npz, the folder is created."""
    out = str(tmp_path / "newdir") + os.sep
    assert main(["train", "--corpus", corpus, "--out", out, "--steps", "1"] + TINY) == 0
    assert os.path.exists(tmp_path / "newdir" / "ckpt.npz")
    assert os.path.exists(tmp_path / "newdir" / "ckpt.tokenizer.json")


def _checkpoint(tmp_path, corpus):
    a = str(tmp_path / "a.npz")
    assert main(["train", "--corpus", corpus, "--out", a, "--steps", "1"] + TINY) == 0
    return a


@pytest.mark.parametrize("value", ["inf", "1e-310"])
def test_generate_extreme_temperatures(tmp_path, corpus, capsys, value):
    """inf is refused in one line; a tiny temperature samples (nearly greedy) instead of a traceback."""
    a = _checkpoint(tmp_path, corpus)
    capsys.readouterr()
    argv = ["generate", "--checkpoint", a, "--temperature", value, "--max-new-tokens", "5", "--prompt", "def"]
    if value == "inf":
        assert "argument --temperature" in refused(capsys, argv)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")            # no overflow warning printed either
            assert main(argv) == 0
        assert main(argv[:3] + ["--greedy"] + argv[5:]) == 0
        sampled, greedy = capsys.readouterr().out.splitlines()[-2:]
        assert sampled == greedy


def test_generate_function_refuses_non_finite_temperature(tmp_path, corpus):
    from graphdiff.lm import generate
    from graphdiff.lm.checkpoint import load_checkpoint
    model = load_checkpoint(_checkpoint(tmp_path, corpus))[0]
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [1, 2], 3, temperature=float("inf"))


def test_adamw_refuses_negative_lr_and_empty_params():
    g = gd.Graph()
    W = g.param("W", np.ones(2))
    with pytest.raises(ValueError, match="lr"):
        nn.AdamW(g.params(), lr=-1)
    with pytest.raises(ValueError, match="no parameters"):
        nn.AdamW([])
    for bad in (dict(betas=(0.9, 1.0)), dict(eps=-1.0), dict(weight_decay=-0.1), dict(lr=float("nan"))):
        with pytest.raises(ValueError):
            nn.AdamW([W], **bad)


@pytest.mark.parametrize("p", [1.0, 1.5, -0.1])
def test_dropout_checks_p_when_built(p):
    with pytest.raises(ValueError, match="p"):
        nn.Dropout(p)


def test_render_unknown_renderer_names_it(tmp_path, capsys):
    """--renderer nosuch is not a missing install: the line names it and the valid choices."""
    assert main(["render", "scalar", "--out", str(tmp_path), "--renderer", "nosuch"]) != 0
    err = capsys.readouterr().err
    assert "'nosuch'" in err and "graphviz-pure" in err and "pip install" not in err


def test_init_hint_for_unknown_characters_is_one_init_accepts(tmp_path, corpus, capsys):
    """The checkpoint's char tokenizer lacks a character of the new corpus: --init keeps the tokenizer,
    so the hint must not be '--tokenizer bpe' for this run."""
    a = _checkpoint(tmp_path, corpus)
    other = tmp_path / "other.txt"
    other.write_text(TEXT + "ünïcode " * 20)
    line = refused(capsys, ["train", "--corpus", str(other), "--init", a, "--out", str(tmp_path / "b.npz"),
                            "--steps", "1", "--threads", "1", "--no-progress", "--sample-chars", "0"])
    assert "ü" in line and "--init" in line
    # what the line suggests works: the checkpoint pre-trained with a byte-level tokenizer
    assert "pre-train" in line and "--tokenizer bpe" in line


def test_lock_file_is_removed_after_a_run_and_after_an_error(tmp_path, corpus, capsys):
    out = tmp_path / "m.npz"
    assert main(["train", "--corpus", corpus, "--out", str(out), "--steps", "1"] + TINY) == 0
    assert not os.path.exists(tmp_path / "m.lock")
    refused(capsys, ["train", "--corpus", str(tmp_path / "missing.txt"), "--out", str(out)] + TINY)
    assert not os.path.exists(tmp_path / "m.lock")


def test_lock_file_is_removed_on_ctrl_c(tmp_path):
    from graphdiff.lm.checkpoint import checkpoint_lock
    path = str(tmp_path / "m.npz")
    with pytest.raises(KeyboardInterrupt):
        with checkpoint_lock(path):
            assert os.path.exists(tmp_path / "m.lock")
            raise KeyboardInterrupt
    assert not os.path.exists(tmp_path / "m.lock")


def test_lock_left_by_a_dead_process_does_not_block(tmp_path):
    from graphdiff.lm.checkpoint import checkpoint_lock
    (tmp_path / "m.lock").write_text("999999999\n")          # a killed run's file: nobody holds its lock
    with checkpoint_lock(str(tmp_path / "m.npz")):
        pass
    assert not os.path.exists(tmp_path / "m.lock")


def test_lock_still_refuses_a_second_run(tmp_path):
    from graphdiff.lm.checkpoint import checkpoint_lock
    from graphdiff.nn.serialization import CheckpointError
    path = str(tmp_path / "m.npz")
    with checkpoint_lock(path):
        with pytest.raises(CheckpointError, match="in use"):
            with checkpoint_lock(path):
                pass
        assert os.path.exists(tmp_path / "m.lock")            # the refused attempt leaves the holder's file
    assert not os.path.exists(tmp_path / "m.lock")


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path, corpus, capsys):
    """Without a terminal (a log file, CI) no bar is drawn; the evaluation lines are printed instead."""
    argv = [a for a in TINY if a != "--no-progress"]
    assert main(["train", "--corpus", corpus, "--out", str(tmp_path / "m.npz"), "--steps", "2",
                 "--eval-every", "2"] + argv) == 0
    cap = capsys.readouterr()
    assert "step/s" not in cap.err and "it/s" not in cap.err and "%|" not in cap.err
    assert any(ln.startswith("step 2:") for ln in cap.out.splitlines())
