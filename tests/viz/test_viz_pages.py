"""The page templates in viz/assets (package data) and the helpers that fill and write them."""
import configparser
import fnmatch
import pathlib
import re

import pytest

from graphdiff.viz import output, page

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_asset_is_package_data_and_every_asset_read_exists():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    globs = [g.strip() for g in cfg["options.package_data"]["graphdiff.viz"].split(",")]
    files = sorted(p.relative_to(ROOT / "viz").as_posix() for p in (ROOT / "viz" / "assets").iterdir())
    assert files and [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)] == []
    read = {m for f in (ROOT / "viz").glob("*.py") for m in re.findall(r'asset\("([^"]+)"\)', f.read_text())}
    assert read and {f"assets/{name}" for name in read} <= set(files)
    for name in read:                                   # and it loads as package data (importlib.resources)
        assert page.asset(name).strip()


def test_fill_replaces_each_placeholder_once_and_refuses_a_mismatch():
    assert page.fill("<h1>@TITLE@</h1>@BODY@", TITLE="@BODY@", BODY="x") == "<h1>@BODY@</h1>x"
    with pytest.raises(KeyError, match="@BODY@ has no value"):
        page.fill("@TITLE@ @BODY@", TITLE="t")
    with pytest.raises(KeyError, match="no placeholder for \\['EXTRA'\\]"):
        page.fill("@TITLE@", TITLE="t", EXTRA="e")
    assert page.fill("@font-face { }") == "@font-face { }"          # CSS at-rules are not placeholders


def test_script_cannot_be_closed_by_its_data():
    html = page.script('const DATA = {"name": "</script><b>"};', "show(0);")
    assert html.count("</script>") == 1 and html.endswith("</script>")


def test_replaced_whole_keeps_the_old_output_on_failure_and_replaces_it_on_success(tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with output.replaced_whole(out) as tmp:
            output.write_text(tmp / "new.txt", "half")
            raise RuntimeError("the renderer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"] and (out / "old.txt").read_text() == "old"
    with output.replaced_whole(out) as tmp:
        output.write_text(tmp / "new.txt", "name \udcff")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]
    assert [p.name for p in out.iterdir()] == ["new.txt"] and (out / "new.txt").read_text() == "name \\udcff"
