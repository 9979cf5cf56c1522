"""Pages and diagrams in headless Chromium: the stepper page opens, the buttons and keys move the step, no
console errors; and in every diagram kind each text fits its box in the browser that shows it.

Driven by selenium with Debian's chromium + chromium-driver (.ci/run installs them). Outside CI the tests
skip when they are missing; in CI (CI=true) they fail instead.
"""
import pytest

from graphdiff import viz
from tests.browser import browser, console_errors, measure_boxes, text_fit_problems  # noqa: F401 (fixture)
from graphdiff.viz import gallery
from graphdiff.viz.font import strip_font
from graphdiff.viz.graphs import backward_graph

from .viz_helpers import need_renderer, twice_a


def test_stepper_page(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    need_renderer("graphviz-pure")
    g, L = gallery.scalar()
    page = viz.render_trace(g, L, tmp_path / "trace", renderer="graphviz-pure", repeats=1)
    browser.get("file://" + page)

    def step():
        return browser.find_element(By.TAG_NAME, "body").get_attribute("data-step")

    def captions():
        return [p.text for p in browser.find_elements(By.CSS_SELECTOR, ".caption")]

    counter = browser.find_element(By.ID, "counter")
    assert step() == "1" and counter.text == "step 1 / 7"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".pane svg")) == 2
    assert browser.find_element(By.ID, "prev").get_attribute("disabled") is not None
    first = captions()
    browser.find_element(By.ID, "next").click()
    assert step() == "2" and counter.text == "step 2 / 7" and captions() != first
    browser.find_element(By.ID, "next").click()
    browser.find_element(By.ID, "prev").click()
    assert step() == "2"
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.ARROW_RIGHT)
    assert step() == "3"
    body.send_keys(Keys.END)
    assert step() == "7" and browser.find_element(By.ID, "next").get_attribute("disabled") is not None
    body.send_keys(Keys.ARROW_LEFT)
    assert step() == "6"
    body.send_keys(Keys.HOME)
    assert step() == "1" and captions() == first
    assert all(c.startswith("step 1/7") for c in captions())
    assert "VJP calls" in browser.find_element(By.CSS_SELECTOR, "table.report").text
    assert console_errors(browser) == []


RENDERERS = ("graphviz-pure", "dot")


def _fit(browser, path):
    browser.get("file://" + str(path))
    boxes = measure_boxes(browser)
    assert boxes and all(t["font"].startswith('"graphdiff-sans"') or t["font"].startswith("graphdiff-sans")
                         for b in boxes for t in b["texts"])
    return text_fit_problems(boxes)


@pytest.mark.parametrize("renderer", RENDERERS)
def test_text_fits_its_box_in_every_diagram_kind(browser, tmp_path, renderer):
    """Scalar, MLP, transformer block and shared-node diagrams, forward + backward graphs, both growth
    renders, and every frame of the stepper page: each text inside its node's (or cluster's) box, no run-ins, measured in Chromium."""
    from graphdiff.viz import growth
    need_renderer(renderer)
    problems = {}
    for name in ("scalar", "mlp", "transformer", "shared"):
        g, y = gallery.build(name)
        g.backward(y, retain_grads=True)
        path = viz.render(viz.to_dot(y, legend=True), tmp_path / name, renderer=renderer)
        problems[name] = _fit(browser, path)
    for name in ("scalar", "shared", "mlp"):                  # forward and backward graphs together
        for variant in ("children", "parents"):
            g, y = gallery.build(name)
            dot = viz.to_dot(backward_graph(g, y, variant), legend=True)
            problems[f"{name} backward {variant}"] = _fit(browser, viz.render(dot, tmp_path / f"{name}-bw-{variant}",
                                                                               renderer=renderer))
    for kind in ("rnn", "transformer"):
        path = growth.render_small(kind, 4, tmp_path / f"{kind}_T4", formats=("svg",), renderer=renderer)[0]
        problems[f"{kind}_T4"] = _fit(browser, path)
    for name in ("mlp", "shared"):
        g, y = gallery.build(name)
        page = viz.render_trace(g, y, tmp_path / f"{name}-trace", renderer=renderer, repeats=1)
        browser.get("file://" + page)
        steps = browser.execute_script("return N;")
        for k in range(steps):
            browser.execute_script(f"show({k});")
            problems[f"{name} stepper step {k + 1}"] = text_fit_problems(measure_boxes(browser))
        assert console_errors(browser) == []
    assert {k: v for k, v in problems.items() if v} == {}


def test_text_fit_check_catches_a_font_the_layout_did_not_measure(browser, tmp_path):
    """The bug the font embedding fixes: shown in a wider font than the layout measured, labels overflow."""
    need_renderer("graphviz-pure")
    g, y = gallery.mlp()
    g.backward(y, retain_grads=True)
    svg = (tmp_path / "mlp.svg")
    svg.write_text(viz.to_dot(y)._repr_image_svg_xml())
    assert _fit(browser, svg) == []
    text = strip_font(svg.read_text())
    cut = text.index(">", text.index("<svg")) + 1
    wide = tmp_path / "wide.svg"
    wide.write_text(text[:cut] + '<style>text { font-family: monospace; font-size: 13px; }</style>' + text[cut:])
    browser.get("file://" + str(wide))
    assert text_fit_problems(measure_boxes(browser))


def test_stepper_legend_partial_adjoints_alignment_and_active_node(browser, tmp_path):
    from selenium.webdriver.common.by import By
    need_renderer("graphviz-pure")
    g, y = gallery.shared()
    page = viz.render_trace(g, y, tmp_path / "trace", renderer="graphviz-pure", repeats=1)
    browser.set_window_size(1100, 520)                   # small: the graph needs scrolling inside the panes
    browser.get("file://" + page)
    legend = browser.find_element(By.CSS_SELECTOR, ".legend").text
    assert "adjoint partial" in legend and "+=" in legend and "no gradient path" in legend
    assert "Partial adjoints." in browser.find_element(By.CSS_SELECTOR, ".explain").text
    parents_plus = 0
    for k in range(browser.execute_script("return N;")):
        browser.execute_script(f"show({k});")
        state = browser.execute_script("""
          return [...document.querySelectorAll('.pane')].map(p => {
            const box = p.querySelector('.svg').getBoundingClientRect();
            const a = p.querySelector('g.node.active').getBoundingClientRect();
            const x = p.querySelector('g.node').getBoundingClientRect();
            return {inside: a.top >= box.top - 1 && a.bottom <= box.bottom + 1 && a.left >= box.left - 1
                            && a.right <= box.right + 1,
                    first: [x.left - box.left, x.top - box.top],
                    plus: [...p.querySelectorAll('g.edge text')].filter(t => t.textContent === '+=').length};
          });""")
        assert all(s["inside"] for s in state), k            # the active node is scrolled into view
        assert state[0]["first"] == pytest.approx(state[1]["first"], abs=1)   # the panes' layouts line up
        parents_plus += state[1]["plus"]
    assert parents_plus == 3                                  # a's adjoint: =, then += three times
    assert console_errors(browser) == []
