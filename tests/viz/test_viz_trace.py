"""compare_variants and trace_frames, checked against hand-counted small graphs."""
import json

import pytest

import graphdiff as gd
from graphdiff import viz
from graphdiff.viz import gallery
from graphdiff.viz.trace import split_steps, events_of

from .viz_helpers import fan_chain, twice_a


def test_report_on_b_eq_a_plus_a_c_eq_b_times_b():
    # c = b*b: two VJP calls into b (one write, one +=); b = a+a: two into a (one write, one +=).
    # Live adjoints (either variant): {c} -> {c, b} -> {b} -> {b, a} -> {a}: peak 2, 2 * 8 bytes.
    g, a, b, c = twice_a()
    report = viz.compare_variants(g, c, repeats=2)
    assert [s.variant for s in report.variants] == ["children", "parents"]
    for s in report.variants:
        assert s.grads_equal and s.max_abs_diff == 0.0
        assert (s.vjp_calls, s.adjoint_writes, s.adjoint_additions) == (4, 2, 2)
        assert (s.peak_live_adjoints, s.peak_live_bytes) == (2, 16)
        assert s.median_seconds > 0
    assert float(a.grad) == 24.0                     # dc/da = 2b * 2, b = 6


def test_report_where_peaks_differ():
    # y = ((h1 + h2) + h3) + h4, h_k = a * const, a = exp(x): 11 VJP calls (3 adds x 2, 4 muls, 1 exp);
    # writes: s2, h4, s1, h3, h1, h2, a, x = 8; a gets 3 more (+=).
    # children: h1..h4 stay live until a pulls from all four, so {h1, h2, h3, h4, a} = 5.
    # parents: each h pushes into a and is freed; worst is {s1, a, h1, h2} after s1 pushes = 4.
    g, y = fan_chain()
    r = viz.compare_variants(g, y, repeats=1)
    for s in r.variants:
        assert (s.vjp_calls, s.adjoint_writes, s.adjoint_additions) == (11, 8, 3)
        assert s.grads_equal
    assert (r["children"].peak_live_adjoints, r["parents"].peak_live_adjoints) == (5, 4)
    assert (r["children"].peak_live_bytes, r["parents"].peak_live_bytes) == (40, 32)


def test_report_json_and_table():
    g, y = gallery.mlp()
    r = viz.compare_variants(g, y, repeats=1)
    data = json.loads(r.to_json())
    assert data["output"] == "J" and len(data["variants"]) == 2
    assert set(data["variants"][0]) >= {"variant", "grads_equal", "max_abs_diff", "vjp_calls", "adjoint_writes",
                                        "adjoint_additions", "peak_live_adjoints", "peak_live_bytes",
                                        "median_seconds"}
    table = str(r)
    for row in ("gradients equal", "VJP calls", "adjoint writes", "adjoint additions", "peak live adjoints",
                "peak live adjoint bytes", "median backward time"):
        assert row in table
    assert "children" in table.splitlines()[1] and "parents" in table.splitlines()[1]


def test_report_needs_forward():
    g = gd.Graph()
    x = g.param("x", 1.0)
    y = gd.exp(x)
    with pytest.raises(gd.GraphError, match="run g.forward"):
        viz.compare_variants(g, y)
    g.forward(outputs=y)
    with pytest.raises(ValueError, match="unknown variant"):
        viz.trace_frames(g, y, "siblings")


@pytest.mark.parametrize("variant", ["children", "parents"])
def test_one_step_per_final_adjoint(variant):
    g, a, b, c = twice_a()
    steps = split_steps(events_of(g, c, variant), variant)
    assert [[e.kind for e in s if e.kind == "final"] for s in steps] == [["final"]] * 3
    frames = viz.trace_frames(g, c, variant)
    assert [f.node.name for f in frames] == ["c", "b", "a"]
    assert [f.step for f in frames] == [0, 1, 2] and frames[0].steps == 3
    src = frames[1].dot.source
    if variant == "children":      # b pulls from c: the edges b -> c carry = then +=
        assert "pulls 2 contributions" in frames[1].caption
        edges = [ln for ln in src.splitlines() if "n1 -> n2" in ln]
    else:                          # b pushes into a: the edges a -> b carry = then +=
        assert "pushes into 'a' (=), 'a' (+=)" in frames[1].caption
        edges = [ln for ln in src.splitlines() if "n0 -> n1" in ln]
    assert ["<B>=</B>" in e for e in edges] == [True, False]
    assert ["<B>+=</B>" in e for e in edges] == [False, True]
    assert all("dir=back" in e for e in edges)
    assert "adjoint final" in frames[2].dot.source


def test_frames_keep_one_layout():
    # only colours and labels of fixed size change, so the layout does not jump between steps
    g, y = fan_chain()
    frames = viz.trace_frames(g, y, "children", captions=False)
    sizes = {f.dot.source.count("FIXEDSIZE") for f in frames}
    assert sizes == {len(g.nodes)}


@pytest.mark.parametrize("backend_name", ["numpy", "array_api_strict"])
def test_report_and_diagram_on_each_cpu_backend(backend_name):
    g = gd.Graph(backend=backend_name, dtype="float64")
    a = g.param("a", 3.0)
    b = gd.add(a, a, name="b")
    c = gd.multiply(b, b, name="c")
    g.forward(outputs=c)
    r = viz.compare_variants(g, c, repeats=1)
    assert [(s.vjp_calls, s.peak_live_adjoints, s.grads_equal) for s in r.variants] == [(4, 2, True)] * 2
    g.backward(c, retain_grads=True)
    assert "grad 24.0000" in viz.to_dot(c).source
    assert len(viz.trace_frames(g, c, "parents")) == 3


def test_stepper_page_is_self_contained_and_escapes_names(tmp_path):
    from .viz_helpers import need_renderer
    need_renderer("graphviz-pure")
    g = gd.Graph(dtype="float64")
    a = g.param('</script><b>"a"</b> \\ é', 2.0)
    y = gd.multiply(a, a, name="y</script>")
    g.forward(outputs=y)
    page = viz.render_trace(g, y, tmp_path / "t", renderer="graphviz-pure", repeats=1,
                            title="</script> & <title>")
    text = open(page, encoding="utf-8").read()
    assert text.count("</script>") == 1 and "<script src" not in text and "http" not in text.split("<svg")[0]
    assert "&lt;/script&gt; &amp; &lt;title&gt;" in text
    assert sorted(p.name for p in (tmp_path / "t" / "children").iterdir()) == ["step_001.svg", "step_002.svg"]
    assert (tmp_path / "t" / "report.json").exists()
