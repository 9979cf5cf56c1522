"""The `graphdiff` command on bad input: one line and exit 2, never a traceback."""
import os
import subprocess
import sys

import numpy as np
import pytest

import graphdiff as gd
from graphdiff.cli import main

from .viz.viz_helpers import need_renderer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "graphdiff", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), **kw)


@pytest.mark.parametrize("flag, value", [("--temperature", "-1"), ("--prompt", ""), ("--top-k", "-3"),
                                         ("--top-k", "0"), ("--max-new-tokens", "-5"), ("--temperature", "nan")])
def test_generate_refuses_bad_settings_before_loading(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--checkpoint", str(tmp_path / "none.npz"), flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"argument {flag}" in err.splitlines()[-1]


@pytest.mark.parametrize("command", [["render", "scalar"], ["compare", "scalar", "--repeats", "1"],
                                     ["growth", "--max-len", "2"]])
def test_unwritable_out_is_one_line(tmp_path, capsys, command):
    need_renderer("graphviz-pure")
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "sub"
    assert main(command + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"graphdiff {command[0]}: " in err and str(out) in err


def test_ops_into_a_closed_pipe_ends_quietly():
    r, w = os.pipe()
    os.close(r)                                         # the reader is gone before the first line is written
    try:
        proc = subprocess.run([sys.executable, "-m", "graphdiff", "ops"], stdout=w, stderr=subprocess.PIPE,
                              text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    finally:
        os.close(w)
    assert proc.stderr == "" and proc.returncode == 141


def test_ops_piped_into_head():
    proc = subprocess.run(f"{sys.executable} -m graphdiff ops | head -3", shell=True, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert len(proc.stdout.splitlines()) == 3 and proc.stderr == ""


def test_no_command_prints_usage_and_exits_2():
    proc = run()
    assert proc.returncode == 2 and proc.stderr.startswith("usage: graphdiff") and proc.stdout == ""
    assert run("--help").returncode == 0


def _surrogate_graph():
    g = gd.Graph(dtype="float64")
    x = g.param("x\udcff", np.ones(3))
    y = gd.sum(gd.tanh(x * x, name="a\udcff"), name="loss\udcff")
    g.forward({})
    return g, y


def test_render_trace_takes_any_str_name(tmp_path):
    from graphdiff.viz.trace import render_trace
    need_renderer("graphviz-pure")
    g, y = _surrogate_graph()
    page = render_trace(g, y, tmp_path / "t", renderer="graphviz-pure", repeats=1)
    assert "loss\\udcff" in open(page, encoding="utf-8").read()
    assert sorted(os.listdir(tmp_path)) == ["t"]


def test_render_trace_failure_leaves_no_partial_output(tmp_path):
    from graphdiff.viz.dot import RenderError
    from graphdiff.viz.trace import render_trace
    g, y = _surrogate_graph()
    with pytest.raises(RenderError):
        render_trace(g, y, tmp_path / "t", renderer=str(tmp_path / "no-such-dot"), repeats=1)
    assert os.listdir(tmp_path) == []


def test_tf32_is_a_cupy_setting(monkeypatch, capsys):
    """--tf32 sets CuPy's CUPY_TF32 (read at its first float32 product); on another backend it is an error."""
    from graphdiff.cli import main, use_tf32
    monkeypatch.delenv("CUPY_TF32", raising=False)
    assert main(["generate", "--checkpoint", "missing.npz", "--tf32", "--backend", "numpy"]) == 2
    assert "--tf32 is a GPU setting (backend cupy); the backend here is numpy" in capsys.readouterr().err
    assert "CUPY_TF32" not in __import__("os").environ
    args = type("Args", (), {"tf32": True})()
    assert use_tf32(args, "cupy") is None and __import__("os").environ["CUPY_TF32"] == "1"
    assert use_tf32(type("Args", (), {"tf32": False})(), "numpy") is None
