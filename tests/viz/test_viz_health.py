"""Gradient health (viz/health.py): per-node quantities, the colour scale, to_dot(color_by=...) with its colour bar,
`graphdiff render NAME --color-by ...`, and the first op that made a NaN named in the title."""
import math
import re
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import graphdiff as gd
from graphdiff import viz
from graphdiff.cli import main
from graphdiff.viz import gallery, health
from graphdiff.viz.labels import escape

from .viz_helpers import need_renderer, svg_texts


def fills(dot):
    """{node name: fill colour} of a Diagram's boxes, read from its DOT text."""
    by_id = {}
    for line in dot.source.splitlines():
        m = re.match(r'\s*(n\d+) \[.*fillcolor="(#[0-9a-f]{6})"', line)
        if m:
            by_id[m.group(1)] = m.group(2)
    return {name: by_id[i] for name, i in dot.ids.items() if i in by_id}


def nan_graph():
    """x = [1, -1]; ly = log(x - 0.5) makes a NaN from finite inputs; it flows on into m and z."""
    g = gd.Graph(dtype="float64")
    x = g.param("x", np.array([1.0, -1.0]))
    s = gd.exp(x, name="s")
    d = gd.subtract(x, 0.5, name="d")
    with np.errstate(invalid="ignore"):
        ly = gd.log(d, name="ly")
        m = gd.multiply(ly, s, name="m")
        z = gd.sum(m, name="z")
        g.forward(outputs=z)
    return g, z


# --- the quantities ------------------------------------------------------------------------------------------
def test_grad_and_value_norms_are_the_l2_norms_of_what_the_nodes_hold():
    g, J = gallery.mlp()
    g.backward(J, retain_grads=True)
    grads, values = health.quantity(J, "grad"), health.quantity(J, "value")
    for n in g.nodes:
        if n.grad is not None:
            assert grads[n.name] == pytest.approx(np.linalg.norm(np.ravel(gd.to_numpy(n.grad))))
        assert values[n.name] == pytest.approx(np.linalg.norm(np.ravel(gd.to_numpy(n.value))))
    assert "x" not in grads and "alpha" in grads      # an input keeps no gradient; a param does


def test_no_gradient_kept_leaves_the_node_out():
    g, J = gallery.mlp()                               # forward only
    assert health.quantity(J, "grad") == {}
    g.backward(J)                                      # params only
    assert set(health.quantity(J, "grad")) == {"alpha", "beta"}


def test_nonfinite_counts_and_the_first_op_that_made_one():
    g, z = nan_graph()
    counts = health.quantity(z, "nonfinite")
    assert {k: counts[k] for k in ("x", "s", "d", "ly", "m", "z")} == {"x": 0, "s": 0, "d": 0, "ly": 1, "m": 1, "z": 1}
    assert health.first_nonfinite(z).name == "ly"
    assert health.first_nonfinite(gallery.mlp()[1]) is None
    # an Inf counts too, and is found where it is made
    g2 = gd.Graph(dtype="float64")
    w = g2.param("w", np.array([1.0, 800.0]))
    with np.errstate(over="ignore"):
        e = gd.exp(w, name="e")
        t = gd.sum(e, name="t")
        g2.forward(outputs=t)
    assert health.first_nonfinite(t) is e and health.quantity(t, "nonfinite")["e"] == 1


def test_nonfinite_diagram_draws_nan_nodes_red_and_names_the_first_op():
    g, z = nan_graph()
    dot = viz.to_dot(z, color_by="nonfinite")
    f = fills(dot)
    assert {k for k, c in f.items() if c == health.NONFINITE_COLOR} == {"ly", "m", "z"}
    assert f["s"] != health.NONFINITE_COLOR and f["x"] != health.NONFINITE_COLOR
    assert "first NaN/Inf: made by log 'ly'" in dot.source
    assert "finite inputs ('d')" in dot.source
    # every colouring draws a NaN red and names its maker
    dot = viz.to_dot(z, color_by="value")
    assert fills(dot)["ly"] == health.NONFINITE_COLOR and "made by log 'ly'" in dot.source
    assert "every value is finite" in viz.to_dot(gallery.mlp()[1], color_by="nonfinite").source


def test_saved_bytes_follow_each_ops_declared_saves_and_the_slots_that_need_a_gradient():
    g, J = gallery.mlp()                 # float64: 8 bytes an element
    saved = health.quantity(J, "memory")
    # a = alpha @ x: only alpha needs a gradient, and its VJP reads x (4 elements)
    assert saved["a"] == 4 * 8
    # b = beta @ z: both slots need one: beta's reads z (3), z's reads beta (3 x 3)
    assert saved["b"] == (3 + 9) * 8
    assert saved["z"] == 3 * 8           # sigmoid reads its output
    assert saved["multiply"] == 3 * 8    # y * log_y_hat: only log_y_hat needs a gradient; its VJP reads y
    assert saved["sum"] == 0 and "x" not in saved and "alpha" not in saved   # leaves keep nothing
    for name, v in saved.items():        # each op's declared saves
        n = next(m for m in g.nodes if m.name == name)
        assert gd.REGISTRY[n.op].differentiable and v >= 0


def test_saved_bytes_count_a_two_stage_ops_residuals():
    g, loss = gallery.transformer()      # float32, T=4, C=8
    saved = health.quantity(loss, "memory")
    # layer_norm declares gamma, and keeps xhat (T, C) and 1/std (T, 1) from its forward
    T, C, item = 4, 8, 4
    assert saved["block/ln1/out"] == C * item + T * C * item + T * item
    assert not any(k.startswith("grad") for k in saved)


def test_saved_bytes_of_a_batch_axis_follow_the_fed_size():
    g = gd.Graph(dtype="float32")
    x = g.input("x", (None, 3))
    t = gd.tanh(x @ g.param("W", np.ones((3, 2))), name="t")
    y = gd.mean(t, name="y")
    g.forward({x: np.ones((5, 3))})
    saved = health.quantity(y, "memory")
    assert saved["t"] == 5 * 2 * 4 and saved["matmul"] == 5 * 3 * 4      # tanh reads out; W's VJP reads x


def test_profile_times_each_op_and_each_vjp_and_finds_the_slow_one():
    g = gd.Graph(dtype="float64")
    rng = np.random.default_rng(0)
    W = g.param("W", rng.standard_normal((400, 400)))
    x = g.input("x", (400, 400))
    big = gd.matmul(x, W, name="big")                    # 400^3 multiply-adds, forward and backward
    small = gd.add(gd.sum(big, name="s"), 1.0, name="small")
    g.forward({x: rng.standard_normal((400, 400))}, outputs=small)
    forward, backward = health.profile(small, repeats=5)
    assert set(forward) == {"big", "s", "small"} and all(t > 0 for t in forward.values())
    assert max(forward, key=forward.get) == "big" and max(backward, key=backward.get) == "big"
    total = health.quantity(small, "time", repeats=5)
    assert set(total) >= {"big", "s", "small"} and max(total, key=total.get) == "big"
    # the per-node backward times add up to about what a whole backward takes (medians of 5 runs each)
    wholes = []
    for _ in range(5):
        t0 = time.perf_counter()
        g.backward(small)
        wholes.append(time.perf_counter() - t0)
    assert sum(backward.values()) < 3 * float(np.median(wholes)) + 0.02


def test_profile_refuses_what_it_cannot_time():
    g, J = gallery.mlp()
    with pytest.raises(ValueError, match="repeats"):
        health.profile(J, repeats=0)
    with pytest.raises(gd.GraphError, match="pass y="):
        health.profile(g.nodes[:3])                     # no scalar output among them
    with pytest.raises(ValueError, match="unknown health quantity 'norm'"):
        health.quantity(J, "norm")


def test_program_gradients_match_the_training_path_and_step_nothing():
    from graphdiff.lm import GPT
    model = GPT(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8, pad_id=0)
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(1, 11, (2, 6)), rng.integers(1, 11, (2, 6))
    mask = np.ones((2, 6), dtype=bool)
    model.loss(idx, targets, mask, backward=True)
    expected = {id(p): np.array(gd.to_numpy(p.grad)) for p in model.parameters()}
    before = {id(p): np.array(gd.to_numpy(p.data)) for p in model.parameters()}
    prog = model.programs(("loss", 2, 6))
    y = health.program_gradients(prog, {"idx": idx, "targets": targets, "key_mask": mask})
    assert y is prog.outputs["loss"]
    for node, p in prog.bindings:
        np.testing.assert_allclose(gd.to_numpy(node.grad), expected[id(p)], rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(gd.to_numpy(p.data), before[id(p)])
        np.testing.assert_array_equal(gd.to_numpy(p.grad), expected[id(p)])
    assert sum(n.grad is not None for n in prog.graph.nodes) > len(prog.bindings)   # every node's, not just params
    with pytest.raises(gd.GraphError, match="inputs"):
        health.program_gradients(prog, {"ids": idx})


# --- the scale and the diagram -------------------------------------------------------------------------------
def test_scale_maps_min_to_max_along_the_ramp_log_or_linear():
    s = health.Scale([1e-3, 1e-1, 10.0], log=True)
    assert (s.lo, s.hi) == (1e-3, 10.0)
    assert s.position(1e-3) == 0 and s.position(10.0) == 1 and s.position(1e-1) == pytest.approx(0.5)
    assert s.color(1e-3) == health.STOPS[0] and s.color(10.0) == health.STOPS[-1]
    assert s.color(float("nan")) == s.color(float("inf")) == health.NONFINITE_COLOR
    lin = health.Scale([0.0, 5.0, 10.0])
    assert lin.position(5.0) == pytest.approx(0.5) and not lin.zero
    z = health.Scale([0.0, 1.0, 100.0], log=True)
    assert z.zero and z.lo == 1.0 and z.position(0.0) == 0
    assert health.text_color(health.STOPS[0]) == "#ffffff" and health.text_color(health.STOPS[-1]) == "#000000"


@pytest.mark.parametrize("name", ["scalar", "mlp", "shared", "transformer"])
@pytest.mark.parametrize("what", health.QUANTITIES)
def test_to_dot_colours_every_box_by_its_number_with_a_colour_bar(name, what):
    g, y = gallery.build(name)
    g.backward(y, retain_grads=True)
    dot = viz.to_dot(y, color_by=what)
    values = health.quantity(y, what) if what != "time" else None
    f = fills(dot)
    assert "legend_colors" in dot.source and escape(health.TITLES[what]) in dot.source
    if what == "nonfinite":
        assert set(f.values()) == {"#e6e6e6"}                       # all finite
        return
    if what == "time":                                           # timings differ run to run: read the labels
        assert any(c not in (health.NO_DATA_COLOR,) for c in f.values())
        return
    scale = health.Scale(values.values(), log=health.LOG_SCALE[what])
    for node, v in values.items():
        assert f[node] == scale.color(v), node
    for node in set(f) - set(values):
        assert f[node] == health.NO_DATA_COLOR
    lo, hi = health.format_value(what, scale.lo), health.format_value(what, scale.hi)
    assert f'ALIGN="LEFT">{"&#8804; " if scale.zero else ""}{lo}</TD>' in dot.source
    assert f'ALIGN="RIGHT">{hi}</TD>' in dot.source
    assert dot.source.count('WIDTH="18" HEIGHT="14"') == 12                      # the bar's 12 stops


def test_collapsed_scope_takes_the_norm_of_its_nodes_norms():
    g, y = gallery.transformer()
    g.backward(y, retain_grads=True)
    grads = health.quantity(y, "grad")
    dot = viz.to_dot(y, color_by="grad", collapse=1)
    block = [v for k, v in grads.items() if k.startswith("block/")]
    want = math.sqrt(sum(v * v for v in block))
    assert health.format_value("grad", want) in dot.source
    scale = health.Scale([want] + [v for k, v in grads.items() if "/" not in k], log=True)
    assert f'fillcolor="{scale.color(want)}"' in dot.source


def test_color_by_a_dict_and_bad_options():
    g, y = gallery.scalar()
    a = g.nodes[0]
    dot = viz.to_dot(y, color_by={a: 1.0, "L": 3.0})
    f = fills(dot)
    assert f["a"] == health.STOPS[0] and f["L"] == health.STOPS[-1] and f["b"] == health.NO_DATA_COLOR
    with pytest.raises(ValueError, match="color_by='norm'"):
        viz.to_dot(y, color_by="norm")


def test_rendered_svg_shows_the_colour_bar_and_numbers(tmp_path):
    need_renderer("graphviz-pure")
    g, J = gallery.mlp()
    g.backward(J, retain_grads=True)
    path = viz.render(viz.to_dot(J, color_by="grad"), tmp_path / "mlp", renderer="graphviz-pure")
    text = svg_texts(path)
    assert "gradient norm" in text and "NaN / Inf" in text and "no data" in text and "|g|" in text


# --- the command ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["scalar", "mlp", "shared", "transformer"])
def test_render_color_by_every_quantity(name, tmp_path, capsys):
    need_renderer("graphviz-pure")
    for what in health.QUANTITIES:
        assert main(["render", name, "--out", str(tmp_path), "--color-by", what, "--renderer", "graphviz-pure"]) == 0
        ET.parse(tmp_path / f"{name}-{what}.svg")
        assert health.TITLES[what] in svg_texts(tmp_path / f"{name}-{what}.svg")
    assert main(["render", name, "--out", str(tmp_path), "--color-by", "grad", "--backward",
                 "--renderer", "graphviz-pure"]) == 0
    assert (tmp_path / f"{name}-backward-children-grad.svg").exists()


def test_render_unknown_color_by_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["render", "mlp", "--out", str(tmp_path), "--color-by", "norm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--color-by 'norm'" in err and "grad, value, nonfinite, memory, time" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.gpu
def test_health_on_cupy_matches_numpy():
    """The quantities read device arrays through gd.to_numpy; the profiler waits for the device per event."""
    pytest.importorskip("cupy", reason="needs CuPy (or GRAPHDIFF_CUPY_STANDIN=1)")
    per_backend = {}
    for backend in ("numpy", "cupy"):
        with gd.use_backend(backend):
            g, y = gallery.transformer()
        g.backward(y, retain_grads=True)
        per_backend[backend] = {w: health.quantity(y, w) for w in ("grad", "value", "nonfinite", "memory")}
        forward, backward = health.profile(y, repeats=2)
        assert set(forward) == {n.name for n in g.nodes if n.op is not None} and all(t > 0 for t in forward.values())
        assert backward and all(t >= 0 for t in backward.values())
        assert "legend_colors" in viz.to_dot(y, color_by="time").source
    for w, values in per_backend["numpy"].items():
        assert set(values) == set(per_backend["cupy"][w])
        for k, v in values.items():
            assert per_backend["cupy"][w][k] == pytest.approx(v, rel=1e-4, abs=1e-6), (w, k)
