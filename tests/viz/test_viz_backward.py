"""The backward pass drawn (g.gradients): backward nodes in their own colour, dashed edges for the forward
values a VJP reads; for b = a + a; c = b * b the drawing matches a hand count in both variants."""
import re

import pytest

import graphdiff as gd
from graphdiff.cli import main
from graphdiff.viz.dot import COLORS, to_dot
from graphdiff.viz.graphs import backward_graph, is_backward

from .viz_helpers import need_renderer, svg_texts, twice_a

# the hand count. Forward: a -> b twice (a + a), b -> c twice (b * b): 4 edges.
# Backward: the seed dc/dc = 1; c = b * b has two VJPs, g * b for each slot: 2 multiply nodes, each reading
# the seed and (dashed) the forward b; b sums them: one node with 2 inputs; a = b's two slots of b = a + a,
# whose VJP passes g through, so a sums b's adjoint twice: one node with 2 inputs (the same node twice).
# children: each sum is one add_n; parents: each an add (a chain of one link, in push order).
HAND = {"children": "add_n", "parents": "add"}


@pytest.mark.parametrize("variant", ["children", "parents"])
def test_drawn_backward_graph_of_b_eq_a_plus_a_c_eq_b_times_b(variant):
    g, a, b, c = twice_a()
    nodes = backward_graph(g, c, variant, wrt=[a])
    assert float(gd.to_numpy(nodes[1].value)) == 24.0                 # dc/da = 2 * 2b = 4a at a = 3
    dot = to_dot(nodes)
    grad = [n for n in g.nodes if is_backward(n)]
    assert sorted(n.op or n.kind for n in grad) == sorted(["constant", "multiply", "multiply", HAND[variant],
                                                           HAND[variant]])
    src = dot.source
    ids = dot.ids
    edges = re.findall(r"^\s*(\w+) -> (\w+)(.*)$", src, re.M)
    by_name = {v: k for k, v in ids.items()}
    solid_fwd = [e for e in edges if not is_backward(g.node(by_name[e[1]]))]
    into_grad = [e for e in edges if is_backward(g.node(by_name[e[1]]))]
    dashed = [e for e in into_grad if "dashed" in e[2]]
    assert len(solid_fwd) == 4
    assert len(into_grad) == 8 and len(dashed) == 2                   # 2 + 2 + 2 backward edges, 2 reads of b
    assert all(by_name[e[0]] == "b" for e in dashed)
    # every backward node in the backward colour, the gradient asked for included (not the output's green)
    for n in grad:
        fill = re.search(rf'^\s*{ids[n.name]} \[.*fillcolor="([^"]+)"', src, re.M).group(1)
        assert fill == COLORS["backward"], n.name
    # whose adjoint each node is: g_c = 1 (the seed), g_b, g_a; contributions name their edge
    titles = re.findall(r"<B>([^<]*)</B>", src)
    assert "g_c = 1 (seed)" in titles and "g_b" in titles and "g_a" in titles
    assert titles.count("c &#8594; b (input 0)") == 1 and titles.count("c &#8594; b (input 1)") == 1
    assert not any(t in ("multiply", "add", "add_n", "seed") or t.startswith("grad/") for t in titles)


def test_render_backward_cli(tmp_path, capsys):
    need_renderer("graphviz-pure")
    for variant in ("children", "parents"):
        assert main(["render", "shared", "--backward", "--variant", variant, "--out", str(tmp_path),
                     "--renderer", "graphviz-pure", "--legend"]) == 0
        text = svg_texts(tmp_path / f"shared-backward-{variant}.svg")
        assert "read by a VJP" in text and ("add_n" in text) == (variant == "children")
    assert "shared-backward-parents.svg" in capsys.readouterr().out


def test_compare_page_shows_each_variants_backward_graph(tmp_path):
    need_renderer("graphviz-pure")
    assert main(["compare", "shared", "--out", str(tmp_path), "--repeats", "1", "--renderer", "graphviz-pure"]) == 0
    page = (tmp_path / "shared-trace" / "trace.html").read_text()
    assert "Each variant's backward graph" in page and page.count('data-group="backward"') == 2
    for variant in ("children", "parents"):
        text = svg_texts(tmp_path / "shared-trace" / variant / "backward.svg")
        # a's adjoint: one add_n over its four contributions, or a chain of three adds (two partial sums)
        assert text.count("g_a partial (") == (0 if variant == "children" else 2)
        assert "h4 \u2192 a (input 0)" in text and "g_x" in text
        assert "gradients not computed" not in text
