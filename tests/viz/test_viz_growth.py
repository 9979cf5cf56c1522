"""viz.growth and `graphdiff growth`: RNN-LM graphs grow linearly, Transformer-LM graphs quadratically."""
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from graphdiff.cli import main
from graphdiff.viz import growth


def second_differences(rows, metric):
    v = np.array([r[metric] for r in rows])
    return v[2:] - 2 * v[1:-1] + v[:-2]


def test_edge_counts_are_exactly_linear_and_quadratic():
    rows = growth.measure(10)
    rnn, tr = second_differences(rows["rnn"][2:], "edges"), second_differences(rows["transformer"][2:], "edges")
    assert np.all(rnn == 0)                                   # a line
    assert np.all(tr == tr[0]) and tr[0] > 0                  # a parabola
    assert all(r["depth"] == rows["transformer"][0]["depth"] for r in rows["transformer"])


def test_transformer_edges_split_into_exactly_quadratic_attention_and_linear_per_position():
    rows = growth.measure(9)["transformer"]
    L, nh = growth.CONFIG["transformer"]["n_layer"], growth.CONFIG["transformer"]["n_head"]
    for r in rows:
        T = r["T"]
        # per (layer, head, query t, visible key j <= t): q and k into s_j, s_j into the scores stack, v_j into V
        assert r["attention_edges"] == L * nh * 4 * T * (T + 1) // 2
        assert r["attention_edges"] + r["position_edges"] == r["edges"]
    assert np.all(second_differences(rows, "position_edges") == 0)
    slopes = [k for _, k in growth.local_slopes(rows)]
    assert all(a < b < 2 for a, b in zip(slopes, slopes[1:]))     # rising towards 2


def svg_text(path):
    return " ".join("".join(t.itertext()) for t in ET.parse(path).getroot().iter("{http://www.w3.org/2000/svg}text"))


def test_rnn_render_keeps_positions_in_order(tmp_path):
    from .viz_helpers import need_renderer
    need_renderer("graphviz-pure")
    path = growth.render_small("rnn", 4, tmp_path / "rnn", formats=("svg",), fold=False)[0]
    root = ET.parse(path).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    left = {}
    for g in root.iter(ns + "g"):
        if g.get("class") == "cluster":
            text = g.find(ns + "text")                    # the cluster's label, at its left edge
            left["".join(text.itertext()).strip()] = float(text.get("x"))
    xs = [left[f"t{t}"] for t in range(4)]
    assert all(a < b for a, b in zip(xs, xs[1:])), left         # left to right in time, none stacked


def run_cli(tmp_path, max_len, render_len=4):
    out = tmp_path / "growth"
    assert main(["growth", "--max-len", str(max_len), "--out", str(out), "--render-len", str(render_len)]) == 0
    return out, json.loads((out / "growth.json").read_text())


def check_files(out, data, max_len, R=4):
    assert set(data) == {"config", "rnn", "transformer", "exponents"}
    for name in ("rnn", "transformer"):
        assert [r["T"] for r in data[name]] == list(range(1, max_len + 1))
        assert all(set(r) == {"T", "nodes", "edges", "depth", "attention_edges", "position_edges"}
                   for r in data[name])
        assert set(data["exponents"][name]) == {"nodes", "edges", "depth"}
    for f in ("growth.png", "growth.svg", f"rnn_T{R}.svg", f"transformer_T{R}.svg", f"rnn_T{R}.png",
              f"transformer_T{R}.png"):
        assert (out / f).stat().st_size > 1000
    cfg = growth.CONFIG
    assert f"n_layer={cfg['render']['transformer']['n_layer']}" in svg_text(out / f"transformer_T{R}.svg")
    assert f"n_layer={cfg['transformer']['n_layer']}" in svg_text(out / f"transformer_T{R}.svg")   # both stated
    for f in ("growth.svg", f"rnn_T{R}.svg", f"transformer_T{R}.svg"):
        ET.parse(out / f)                                     # valid XML


def test_cli_writes_the_json_and_figures(tmp_path, capsys):
    out, data = run_cli(tmp_path, 8, render_len=2)                # T=2 renders: seconds, not ten
    check_files(out, data, 8, R=2)
    assert "fitted exponents, transformer" in capsys.readouterr().out


@pytest.mark.slow
def test_fitted_exponents_at_max_len_64(tmp_path):
    out, data = run_cli(tmp_path, 64)
    check_files(out, data, 64)
    rnn, tr = data["exponents"]["rnn"], data["exponents"]["transformer"]
    assert 0.95 <= rnn["edges"] <= 1.05 and 0.9 <= rnn["depth"] <= 1.05
    assert 1.75 <= tr["edges"] <= 2.05 and abs(tr["depth"]) < 0.02


def test_attention_edges_cross_positions_only():
    from graphdiff.lm.gpt import GPT
    from graphdiff.lm.unrolled import unroll
    u = unroll(GPT(vocab_size=5, block_size=3, n_layer=1, n_head=1, n_embd=2), [1, 2, 3], [2, 3, 4])
    edges = growth.attention_edges(u.graph)
    # position t reads the key and the value of each earlier position j < t: 2 edges per pair
    assert len(edges) == 2 * 3
    assert all(p.split("/")[0] != c.split("/")[0] for p, c, _ in edges)
