"""The tour's and `graphdiff compare`'s backward pictures in headless Chromium at 1400 px wide: each gradient
node says whose adjoint it is (g_a) or which edge's contribution it is, never a bare op name; one backward
colour, distinct from every forward kind; Version A and Version B at one scale; every node's text at least
10 px high on screen (font size times the drawn scale) in the pan-and-zoom viewers. Screenshots go into the
test's folder (the path is printed)."""
import re

import pytest

from graphdiff.cli import main
from graphdiff.ops import REGISTRY
from graphdiff.viz.dot import COLORS
from graphdiff.viz.tour import Tour
from tests.browser import browser, console_errors  # noqa: F401 (fixture)

from .viz_helpers import has, need_renderer

WIDTH = 1400
MIN_PX = 10.0

# per viewer: its group, its drawn scale (screen px per SVG unit), and per node: fill, texts, and the smallest
# on-screen text height (font-size times the text's screen transform)
_READ = r"""
await document.fonts.ready;
const out = [];
for (const pz of document.querySelectorAll('.pz')) {
  const svg = pz.querySelector('.pz-view svg');
  if (!svg) continue;
  const nodes = [];
  for (const g of svg.querySelectorAll('g.node')) {
    const shape = g.querySelector('polygon, path, ellipse');
    const texts = [...g.querySelectorAll('text')];
    const px = texts.map(t => parseFloat(t.getAttribute('font-size')) * t.getScreenCTM().a);
    nodes.push({id: g.id, fill: shape ? shape.getAttribute('fill') : null, texts: texts.map(t => t.textContent),
                bold: texts.filter(t => t.getAttribute('font-weight') === 'bold').map(t => t.textContent),
                px: px.length ? Math.min(...px) : null});
  }
  out.push({group: pz.dataset.group || null, title: pz.querySelector('.pz-title').textContent,
            scale: svg.getScreenCTM().a, nodes: nodes});
}
return out;
"""
OPS = set(REGISTRY) | {"seed", "const", "constant"}


def _renderer():
    return "dot" if has("dot") else need_renderer("graphviz-pure") or "graphviz-pure"


def _read(browser, url):
    browser.set_window_size(WIDTH, 1000)
    browser.get(url)
    assert browser.execute_script("return window.innerWidth") <= WIDTH
    return browser.execute_script("const f = async () => {" + _READ + "}; return f();")


def _check_backward(viewers, where):
    """The checks on the viewers of the backward pairs: labels, colours, one scale per pair."""
    groups = {}
    for v in viewers:
        if v["group"] and v["group"].endswith("backward"):
            groups.setdefault(v["group"], []).append(v)
    assert groups, f"{where}: no backward pair"
    forward = {COLORS[k].lower() for k in ("param", "input", "constant", "op", "output")}
    assert COLORS["backward"].lower() not in forward
    for name, pair in groups.items():
        assert len(pair) == 2, f"{where} {name}: {len(pair)} viewers, expected Version A and Version B"
        a, b = pair
        assert abs(a["scale"] - b["scale"]) < 1e-3 * a["scale"], f"{where} {name}: scales {a['scale']} {b['scale']}"
        for v in pair:
            grad = [n for n in v["nodes"] if (n["fill"] or "").lower() == COLORS["backward"].lower()]
            assert len(grad) >= 4, f"{where} {v['title']}: {len(grad)} backward-coloured nodes"
            # the gradients asked for are backward-coloured too: no g_ node in the output's green
            for n in v["nodes"]:
                if n["bold"] and n["bold"][0].startswith("g_") and not n["id"].startswith("legend"):
                    assert n in grad, f"{where} {v['title']}: {n['bold']} drawn in {n['fill']}"
            for n in grad:
                if n["id"].startswith("legend") or not n["bold"]:
                    continue
                title = n["bold"][0]
                assert re.match(r"^(g_[\w/]+|[\w/]+ \u2192 [\w/]+ \(input \d+\)|in the VJP of [\w/]+$)", title), \
                    (where, title)
                assert title not in OPS and not title.startswith("grad/"), (where, title)
            titles = [n["bold"][0] for n in grad if n["bold"]]
            assert any(t.startswith("g_") and "(seed)" in t for t in titles), titles
    return groups


def _min_px(viewers):
    return min(n["px"] for v in viewers for n in v["nodes"] if n["px"] is not None)


def test_tour_backward_pictures_read_like_the_lecture(browser, tmp_path):
    renderer = _renderer()
    page = Tour(tmp_path / "tour", quick=True, renderer=renderer, progress=False).build(
        stages=("scalar", "mlp", "backward_graphs", "growth"))
    viewers = _read(browser, "file://" + page)
    groups = _check_backward(viewers, "tour")
    assert set(groups) == {"scalar-backward", "shared-backward"}
    text = browser.find_element("tag name", "body").text
    assert "gradients not computed" not in text
    # where the sums happen, said for each variant
    assert "g_a = add_n of 4" in text and "g_a: 3 adds" in text
    # every node's text at least 10 px high at the default zoom, the growth renders included
    assert len(viewers) >= 7
    low = [(v["title"], n["texts"][:1], n["px"]) for v in viewers for n in v["nodes"] if n["px"] < MIN_PX]
    assert low == [], low
    # the stepper in the tour's frame: its frames too
    frame = browser.find_element("css selector", "iframe")
    browser.switch_to.frame(frame)
    inner = _read_again(browser)
    browser.switch_to.default_content()
    assert {v["group"] for v in inner} == {"frames"}
    low = [(v["title"], n["texts"][:1], n["px"]) for v in inner for n in v["nodes"] if n["px"] < MIN_PX]
    assert low == [], low
    # the viewer zooms a pair together: one scale after "+" on Version A
    browser.execute_script("document.querySelector('.pz[data-group=\"shared-backward\"] .pz-in').click()")
    after = {v["title"]: v["scale"] for v in _read_again(browser) if v["group"] == "shared-backward"}
    before = {v["title"]: v["scale"] for v in viewers if v["group"] == "shared-backward"}
    assert all(abs(after[k] / before[k] - 1.25) < 1e-3 for k in before)
    assert max(after.values()) - min(after.values()) < 1e-3
    browser.execute_script("document.querySelector('.pz[data-group=\"shared-backward\"] .pz-fit').click()")
    browser.execute_script("document.querySelector('.pz[data-group=\"scalar-backward\"]').scrollIntoView()")
    shot = tmp_path / "tour-backward.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot} (min node text {_min_px(viewers):.1f} px)")
    assert console_errors(browser) == []


def _read_again(browser):
    return browser.execute_script("const f = async () => {" + _READ + "}; return f();")


@pytest.mark.parametrize("name", ["shared", "transformer"])
def test_compare_backward_pictures_read_like_the_lecture(browser, tmp_path, name):
    renderer = _renderer()
    assert main(["compare", name, "--out", str(tmp_path), "--repeats", "1", "--renderer", renderer]) == 0
    page = tmp_path / f"{name}-trace" / "trace.html"
    viewers = _read(browser, "file://" + str(page))
    _check_backward(viewers, "compare")
    frames = [v for v in viewers if v["group"] == "frames"]
    assert len(frames) == 2 and abs(frames[0]["scale"] - frames[1]["scale"]) < 1e-3
    low = [(v["title"], n["texts"][:1], n["px"]) for v in viewers for n in v["nodes"] if n["px"] < MIN_PX]
    assert low == [], low
    browser.execute_script("document.getElementById('backward-graphs').scrollIntoView()")
    shot = tmp_path / f"compare-{name}-backward.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot} (min node text {_min_px(viewers):.1f} px)")
    assert console_errors(browser) == []
