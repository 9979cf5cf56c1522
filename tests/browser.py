"""Headless Chromium for the page tests (selenium + Debian's chromium and chromium-driver, which .ci/run
installs), and the text-fit check: every SVG text inside its node's (or cluster's) box, and no two texts on
one line overlapping, measured by the browser that shows the diagram.

Outside CI a test that needs the browser skips when it is missing; in CI (CI=true) it fails instead.
"""
import os
import shutil
import tempfile

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1600,1000"]


def missing(what, ci_fix):
    """A test needs `what`, which is missing: skip here, fail in CI (CI=true), where `ci_fix` provides it."""
    if IN_CI:
        pytest.fail(f"{what} is missing in CI; {ci_fix}")
    pytest.skip(f"{what} is not installed")


@pytest.fixture
def browser():
    """A selenium Chrome driver on headless Chromium, with the browser console log kept."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium", "it is in the [test] extra")
    if not (CHROMIUM and DRIVER):
        missing("chromium and chromedriver", ".ci/run installs chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="graphdiff-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


# every box (node outline, cluster outline) with the texts drawn in it; bounding boxes in SVG user units
_MEASURE = r"""
await document.fonts.ready;
const out = [];
for (const svg of document.querySelectorAll('svg')) {
  for (const g of svg.querySelectorAll('g.node, g.cluster')) {
    const shape = g.querySelector('polygon, path, ellipse');
    if (!shape) continue;
    const b = shape.getBBox();
    const texts = [...g.querySelectorAll('text')].map(t => {
      const r = t.getBBox();
      return {text: t.textContent, x: r.x, y: r.y, w: r.width, h: r.height, baseline: +t.getAttribute('y'),
              advance: t.getComputedTextLength(), font: getComputedStyle(t).fontFamily};
    });
    out.push({box: (g.querySelector('title') || {}).textContent, kind: g.getAttribute('class'),
              x: b.x, y: b.y, w: b.width, h: b.height, texts});
  }
}
return out;
"""


def measure_boxes(driver):
    """[{box, kind, x, y, w, h, texts: [{text, x, y, w, h, baseline, advance, font}]}] of every SVG on the page."""
    return driver.execute_script("return (async () => {" + _MEASURE + "})();")


def text_fit_problems(boxes, tol=0.5):
    """Texts sticking out of their box, and texts on one line whose advances overlap (a run-in such as
    "matmulf64[3]"), as readable strings; [] when every text fits."""
    bad = []
    for b in boxes:
        for t in b["texts"]:
            if not t["text"].strip():
                continue
            if t["x"] < b["x"] - tol or t["x"] + t["w"] > b["x"] + b["w"] + tol:
                bad.append(f"{b['kind']} {b['box']}: {t['text']!r} spans x {t['x']:.1f}..{t['x'] + t['w']:.1f}, "
                           f"box {b['x']:.1f}..{b['x'] + b['w']:.1f}")
            if b["kind"] == "node" and (t["y"] < b["y"] - tol or t["y"] + t["h"] > b["y"] + b["h"] + tol):
                bad.append(f"node {b['box']}: {t['text']!r} spans y {t['y']:.1f}..{t['y'] + t['h']:.1f}, "
                           f"box {b['y']:.1f}..{b['y'] + b['h']:.1f}")
        line = sorted((t for t in b["texts"] if t["text"].strip()), key=lambda t: (t["baseline"], t["x"]))
        for a, c in zip(line, line[1:]):
            if a["baseline"] == c["baseline"] and a["x"] + a["advance"] > c["x"] + tol:
                bad.append(f"{b['kind']} {b['box']}: {a['text']!r} runs into {c['text']!r} "
                           f"({a['x'] + a['advance'] - c['x']:.1f} units)")
    return bad
