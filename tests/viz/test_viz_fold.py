"""Folding repeated structure (to_dot(fold=True, expand=...), `graphdiff render --fold/--expand`), collapse by
depth and by name, and the typed errors for scope names that are not in the graph."""
import re
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import graphdiff as gd
from graphdiff import viz
from graphdiff.cli import main
from graphdiff.lm import RNNLM, unroll
from graphdiff.viz import gallery, growth
from graphdiff.viz.fold import Repeats
from tests.browser import browser, measure_boxes, text_fit_problems  # noqa: F401 (fixture)

from .viz_helpers import need_renderer

FIELDS = ("name", "op", "shape")


def folded_gpt(L, **options):
    g, loss = gallery.gpt(n_layer=L)
    return g, viz.to_dot(loss, fold=True, fields=FIELDS, **options)


def test_a_gpt_with_2_3_4_blocks_folds_to_one_picture_but_the_x_L_label():
    pictures = {}
    for L in (2, 3, 4):
        g, dot = folded_gpt(L)
        assert dot.folds == {"h/0": [f"h/{k}" for k in range(L)]}
        assert f"&#215; {L}</B>" in dot.source
        per_block = sum(n.size for n in g.params() if n.scope.startswith("h/0/"))
        assert f"({per_block:,} params each)" in dot.source
        assert f"<B>h</B> <FONT POINT-SIZE=\"9\">({L * per_block:,} params)" in dot.source   # every copy counted
        src = re.sub(r"<B>0(, 1| &#8230; \d+)</B>", "<B>SPAN</B>", dot.source)
        src = re.sub(r"&#215; \d+</B>", "&#215; L</B>", src)
        pictures[L] = re.sub(r"<B>h</B> <FONT POINT-SIZE=\"9\">\([\d,]+ params\)", "<B>h</B> (P)", src)
    assert pictures[2] == pictures[3] == pictures[4]
    unfolded = viz.to_dot(gallery.gpt(n_layer=4)[1], fields=FIELDS, max_nodes=None)
    assert len(pictures[4]) < 0.5 * len(unfolded.source)


def test_the_gpt_fold_draws_the_shared_mask_beside_the_blocks_and_the_residual_back_in():
    g, dot = folded_gpt(3)
    mask = g.nodes[[n.name for n in g.nodes].index("h/0/attn/mask_bias")]
    assert mask.name in dot.ids                       # built in block 0, read by every block: drawn once, in h
    for k in (1, 2):                                  # every copy's node lands on block 0's
        assert dot.ids[f"h/{k}/attn/qk"] == dot.ids["h/0/attn/qk"]
    edges = [line.strip() for line in dot.source.splitlines() if "next" in line and "->" in line]
    assert edges and all('color="#4a6fa5"' in e and "constraint=false" in e for e in edges), edges
    out = dot.ids["h/2/add_1"]                         # the last residual add of a block, drawn as block 0's
    assert out == dot.ids["h/0/add_1"]
    assert f'{out} -> {dot.ids["h/0/ln_1/ln"]}' in " ".join(edges)           # into the next block's ln_1
    assert f'{out} -> {dot.ids["ln_f/ln"]}' in dot.source                     # and, from the last, out
    assert "h/0/ln_1" not in dot.folds                # ln_1 and ln_2 match, but attn comes between them


@pytest.mark.parametrize("T", [3, 5])
def test_an_unrolled_rnn_folds_into_one_step_x_T_with_the_hidden_state_going_to_the_next(T):
    g, loss = gallery.rnn(T=T)
    dot = viz.to_dot(loss, fold=True, fields=FIELDS)
    assert dot.folds == {"t0": [f"t{t}" for t in range(T)]}
    assert f"&#215; {T}</B>" in dot.source and f"t0 &#8230; t{T - 1}" in dot.source
    h, hh = dot.ids["t0/h"], dot.ids["t0/hh"]
    assert re.search(rf"\b{h} -> {hh} \[.*next", dot.source)          # h_t feeds h_(t+1)'s matmul
    assert all(dot.ids[f"t{t}/h"] == h for t in range(T))
    into_sum = [line for line in dot.source.splitlines() if f'-> {dot.ids["loss_sum"]} ' in line]
    assert into_sum == [f'\t{dot.ids["t0/loss"]} -> {dot.ids["loss_sum"]} [label=<0&#8230;{T - 1}>]']   # one edge


def test_expanding_one_block_draws_it_in_full_between_the_folds():
    g, dot = folded_gpt(4, expand="h/1")
    assert dot.folds == {"h/2": ["h/2", "h/3"]}
    ids = {dot.ids[f"h/{k}/attn/qk"] for k in range(4)}
    assert len(ids) == 3                               # h/0, h/1 drawn; h/3 folded into h/2
    assert dot.ids["h/3/attn/qk"] == dot.ids["h/2/attn/qk"]
    red = folded_gpt(4, highlight="h/3/attn/qk")[1].source         # a folded node: its drawn copy is red
    assert re.search(rf'\b{folded_gpt(4)[1].ids["h/0/attn/qk"]} \[.*color="#d62728"', red)
    assert viz.to_dot(gallery.gpt(n_layer=4)[1], expand=["h/0/attn", "h/3"]).folds == {"h/1": ["h/1", "h/2"]}
    assert viz.to_dot(gallery.gpt(n_layer=4)[1], expand="h").folds == {}


def block_graph(acts, shapes=None):
    """blocks block0, block1, ... in a row: x -> act(x @ W_k), one activation (and width) per block."""
    g = gd.Graph(dtype="float64")
    x = g.input("x", (2, 3))
    for k, act in enumerate(acts):
        n = (shapes or [3] * len(acts))[k]
        with g.scope(f"block{k}"):
            x = getattr(gd, act)(x @ g.param("W", np.ones((x.shape[1], n))), name="out")
    return g, gd.sum(x, name="loss")


def test_siblings_that_differ_are_not_folded():
    assert viz.to_dot(block_graph(["tanh", "relu", "tanh"])[1], fold=True).folds == {}
    assert viz.to_dot(block_graph(["tanh", "tanh", "relu"])[1], fold=True).folds == {"block0": ["block0", "block1"]}
    assert viz.to_dot(block_graph(["tanh", "tanh"], shapes=[3, 4])[1], fold=True).folds == {}   # shapes differ
    assert viz.to_dot(block_graph(["tanh"] * 3)[1], fold=True).folds == {"block0": ["block0", "block1", "block2"]}
    g = gd.Graph(dtype="float64")                      # same ops and shapes, but wired differently
    x = g.input("x", (3,))
    with g.scope("b0"):
        a = gd.multiply(gd.exp(x, name="e"), x, name="m")
    with g.scope("b1"):
        e = gd.exp(a, name="e")
        b = gd.multiply(a, a, name="m")                 # reads the input twice, not (exp, input)
    assert viz.to_dot(gd.add(b, e), fold=True).folds == {}


def test_fold_is_off_by_default_and_changes_nothing_without_repeats():
    g, loss = gallery.transformer()
    assert viz.to_dot(loss).source == viz.to_dot(loss, fold=True).source     # its ln1 and ln2: attn between
    assert viz.to_dot(gallery.gpt()[1]).folds == {}


def test_scope_names_not_in_the_graph_are_a_typed_error():
    g, loss = gallery.gpt(n_layer=3)
    for kw in ({"expand": "h/7"}, {"collapse": "mlp"}, {"collapse": ["h/0", "nope"]}):
        with pytest.raises(viz.ScopeError, match="not the scope of any node drawn"):
            viz.to_dot(loss, **kw)
    with pytest.raises(viz.ScopeError, match=r"'h/2/attn' is inside 'h/2', drawn folded into 'h/0'.*'h/0/attn'"):
        viz.to_dot(loss, fold=True, collapse="h/2/attn")
    for kw in ({"collapse": "h"}, {"collapse": 1}, {"collapse": ["wte", "h/1"]}):
        with pytest.raises(viz.ScopeError, match="expand='h/1' is inside collapse's scope"):
            viz.to_dot(loss, expand="h/1", **kw)
    assert viz.to_dot(loss, expand="h/1", collapse=3).folds == {}            # h/0, h/1, h/2: none in a run
    assert issubclass(viz.ScopeError, ValueError) and issubclass(viz.ScopeError, gd.GraphError)
    for bad in (0, -1, "", "/", [1]):
        with pytest.raises(ValueError):
            viz.to_dot(loss, collapse=bad)


def test_collapse_takes_a_depth_or_one_name_or_several():
    g, loss = gallery.gpt(n_layer=2)
    by_depth = viz.to_dot(loss, collapse=2)
    boxes = set(by_depth.ids.values())
    assert by_depth.ids["h/0/attn/qk"] == by_depth.ids["h/0/ln_1/ln"] != by_depth.ids["h/1/attn/qk"]
    assert viz.to_dot(loss, collapse=True).source == viz.to_dot(loss, collapse=1).source
    one = viz.to_dot(loss, collapse="h")                          # one name: not read letter by letter
    assert one.ids["h/0/attn/qk"] == one.ids["h/1/mlp/c_fc/matmul"]
    several = viz.to_dot(loss, collapse=["wte", "h/1"])
    assert several.ids["wte/weight"] == several.ids["wte/lookup"] and several.ids["h/1/attn/qk"] != \
        several.ids["h/0/attn/qk"]
    folded = viz.to_dot(loss, fold=True, collapse=3)              # folded first, then the drawn copy collapsed
    assert folded.folds == {"h/0": ["h/0", "h/1"]} and folded.ids["h/1/attn/qk"] == folded.ids["h/0/attn/av"]
    assert len(set(folded.ids.values())) < len(set(viz.to_dot(loss, collapse=3).ids.values()))
    assert len(boxes) < len(g.nodes)
    summary = viz.to_dot(loss, fold=True, collapse=2)             # the drawn copy itself collapsed: still x 2
    assert summary.ids["h/1/attn/qk"] == summary.ids["h/0/mlp/gelu"] and "<B>h/0 &#215; 2</B>" in summary.source
    banded = viz.to_dot(loss, fold=True, max_nodes=3)             # folded, and still too many: bands
    assert "topological bands" in banded.collapsed and len(set(banded.ids.values())) == 3


def test_folding_tens_of_thousands_of_nodes_takes_linear_time():
    def graph(T):
        model = RNNLM(vocab_size=16, block_size=T, n_embd=4, n_hidden=4)
        ids = np.random.default_rng(0).integers(1, 16, T + 1)
        return unroll(model, ids[:-1], ids[1:]).graph.nodes

    def seconds(nodes):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            rep = Repeats(nodes)
            best = min(best, time.perf_counter() - t0)
        return best, rep

    small, big = graph(1000), graph(4000)
    assert len(big) > 40_000
    t_small, _ = seconds(small)
    t_big, rep = seconds(big)
    assert [len(f.members) for f in rep.folds] == [4000]
    assert t_big < 10 and t_big < 8 * t_small + 0.05, (t_small, t_big)   # 4x the nodes: ~4x the time, not 16x


def test_render_fold_expand_collapse_on_the_command_line(tmp_path, capsys):
    need_renderer("graphviz-pure")
    out = str(tmp_path)
    args = ["--out", out, "--renderer", "graphviz-pure"]
    assert main(["render", "gpt", "--fold", *args]) == 0
    assert "&#215; 3" in (tmp_path / "gpt.gv").read_text()
    ET.parse(tmp_path / "gpt.svg")
    assert main(["render", "rnn", "--expand", "t2", "--collapse", "2", *args]) == 0
    assert "&#215; 2" in (tmp_path / "rnn.gv").read_text()        # t0, t1 folded; t2 in full; t3 alone
    capsys.readouterr()
    for bad in (["--expand", "h/9"], ["--fold", "--collapse", "h/2/mlp"], ["--collapse", "nope"]):
        assert main(["render", "gpt", *bad, *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("graphdiff render: to_dot:"), err


def test_the_growth_render_of_the_rnn_is_folded_and_fits_the_page(tmp_path):
    need_renderer("graphviz-pure")
    path = growth.render_small("rnn", 4, tmp_path / "rnn", formats=("svg",), renderer="graphviz-pure")[0]
    root = ET.parse(path).getroot()
    width = float(root.get("width").rstrip("pt"))
    # 11-pt text in the tour's 1,168-px column: 11 * 1168 / width (pt cancel) must be >= 10 px
    assert 11 * 1168 / width >= 10, width
    text = " ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "\u00d7 4" in text and "t0 \u2026 t3" in text


@pytest.mark.parametrize("renderer", ("graphviz-pure", "dot"))
def test_folded_diagrams_text_fits_its_box_in_chromium(browser, tmp_path, renderer):  # noqa: F811 (fixture)
    """The "x k" cluster labels, the hoisted mask and the merged edges' labels fit, in the browser."""
    need_renderer(renderer)
    problems = {}
    for name, options in (("gpt", {"fold": True}), ("gpt", {"fold": True, "collapse": 3}),
                          ("gpt", {"expand": "h/1"}), ("rnn", {"fold": True})):
        g, y = gallery.build(name)
        path = viz.render(viz.to_dot(y, **options), tmp_path / f"{name}-{len(problems)}", renderer=renderer)
        browser.get("file://" + path)
        problems[f"{name} {options}"] = text_fit_problems(measure_boxes(browser))
    assert {k: v for k, v in problems.items() if v} == {}
