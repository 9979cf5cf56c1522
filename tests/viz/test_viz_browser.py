"""The stepper page in headless Chromium: it opens, the buttons and keys move the step, no console errors.

Driven by selenium with Debian's chromium + chromium-driver (.ci/run installs them). Outside CI the test
skips when they are missing; in CI (CI=true) it fails instead.
"""
import shutil
import tempfile

import pytest

import viz
from viz import gallery

from .viz_helpers import IN_CI, need_renderer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1600,1000"]


@pytest.fixture
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if IN_CI:
            pytest.fail("selenium is missing in CI; it is in the [test] extra")
        pytest.skip("selenium is not installed")
    if not (CHROMIUM and DRIVER):
        if IN_CI:
            pytest.fail("chromium / chromedriver are missing in CI; .ci/run installs chromium chromium-driver")
        pytest.skip("chromium and chromedriver are not installed")
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
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
