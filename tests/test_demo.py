"""`graphdiff demo --out DIR`: the tour page builds (quick mode) and shows in headless Chromium: it loads,
every image shows, the stepper frame loads, no console errors."""
import pytest

from graphdiff.cli import main
from tests.browser import browser, console_errors  # noqa: F401 (fixture)


@pytest.mark.slow
def test_tour_builds_and_every_image_shows(browser, tmp_path, capsys):
    from selenium.webdriver.common.by import By
    out = tmp_path / "tour"
    assert main(["demo", "--out", str(out), "--quick", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    page = out / "index.html"
    assert f"open {page}" in printed
    for f in ("scalar.svg", "scalar.png", "mlp.svg", "growth.png", "growth.svg", "rnn_T2.png", "transformer_T2.svg",
              "gpt_loss.png", "gpt_grad_health.svg", "scalar-backward-children.svg", "shared-backward-parents.png",
              "mlp-trace/trace.html", "shared-trace/trace.html"):
        assert (out / f).stat().st_size > 500, f
    browser.get(page.as_uri())
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
    assert [h.split(".")[0] for h in headings if h[:1].isdigit()] == ["1", "2", "3", "4", "5"]
    images = browser.execute_script("""
      return [...document.images].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]);""")
    assert len(images) == 2 and all(ok for _, ok in images), images          # the plots; diagrams are inline
    drawn = browser.execute_script("""
      return [...document.querySelectorAll('.pz')].map(v => [v.querySelector('.pz-title').textContent,
        !!v.querySelector('svg g.node') && v.querySelector('svg').getBoundingClientRect().width > 100]);""")
    assert len(drawn) == 9 and all(ok for _, ok in drawn), drawn      # scalar, mlp, 4 backward, 2 growth, health
    frame = browser.find_element(By.TAG_NAME, "iframe")
    browser.switch_to.frame(frame)
    assert browser.find_element(By.ID, "counter").text.startswith("step 1 /")
    browser.switch_to.default_content()
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "+=" in text and "Greedy decoding" in text and "Ancestral sampling (temperature 1, no top-k" in text
    assert console_errors(browser) == []


def test_demo_without_out_is_the_quick_check(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "VJP calls: children 9, parents 9" in out


@pytest.mark.gpu
def test_tour_on_cupy(tmp_path, capsys):
    """The tour computes on the GPU backend and brings every value to the host through gd.to_numpy."""
    pytest.importorskip("graphviz", reason="the tour draws its graphs with the graphviz package")
    assert main(["demo", "--out", str(tmp_path), "--quick", "--no-progress", "--backend", "cupy"]) == 0
    assert "open " in capsys.readouterr().out and (tmp_path / "gpt_loss.png").stat().st_size > 500
