"""Pages and diagrams in headless Chromium: the stepper page opens, the buttons and keys move the step, no
console errors; and in every diagram kind each text fits its box in the browser that shows it.

Driven by selenium with Debian's chromium + chromium-driver (.ci/run installs them). Outside CI the tests
skip when they are missing; in CI (CI=true) they fail instead.
"""
import pytest

import viz
from tests.browser import browser, console_errors, measure_boxes, text_fit_problems  # noqa: F401 (fixture)
from viz import gallery
from viz.dot import strip_font

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
