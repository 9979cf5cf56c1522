"""Coloured diagrams in headless Chromium: every text fits its box (the colour bar's labels and each box's
number row included) with both renderers, the colour bar shows its 12 stops, and a NaN graph shows its red
nodes and names the first op that made one. Skips outside CI when Chromium or a renderer is missing."""
import pytest

from graphdiff import viz
from graphdiff.viz import gallery, health
from tests.browser import browser, console_errors, measure_boxes, text_fit_problems  # noqa: F401 (fixture)

from .test_viz_health import nan_graph
from .viz_helpers import need_renderer

RENDERERS = ("graphviz-pure", "dot")


@pytest.mark.parametrize("renderer", RENDERERS)
def test_coloured_diagrams_fit_and_show_their_colour_bar(browser, tmp_path, renderer):
    need_renderer(renderer)
    problems = {}
    for name in ("mlp", "transformer"):
        for what in health.QUANTITIES:
            g, y = gallery.build(name)
            g.backward(y, retain_grads=True)
            path = viz.render(viz.to_dot(y, color_by=what), tmp_path / f"{name}-{what}", renderer=renderer)
            browser.get("file://" + path)
            problems[f"{name} {what}"] = text_fit_problems(measure_boxes(browser))
            fills = browser.execute_script(
                "return [...document.querySelectorAll('polygon')].map(p => p.getAttribute('fill'));")
            text = browser.find_element("tag name", "svg").text
            assert "NaN / Inf" in text and "no data" in text, (name, what)
            if what != "nonfinite":
                assert all(c in fills for c in health.Scale([1.0, 2.0]).stops(12)), (name, what)
    g, z = nan_graph()
    path = viz.render(viz.to_dot(z, color_by="nonfinite"), tmp_path / "nan", renderer=renderer)
    browser.get("file://" + path)
    fills = browser.execute_script(
        "return [...document.querySelectorAll('g.node path, g.node polygon')].map(p => p.getAttribute('fill'));")
    assert fills.count(health.NONFINITE_COLOR) >= 3
    assert "first NaN/Inf: made by log 'ly'" in browser.find_element("tag name", "svg").text
    browser.save_screenshot(str(tmp_path / f"nan-{renderer}.png"))
    assert console_errors(browser) == []
    assert {k: v for k, v in problems.items() if v} == {}
