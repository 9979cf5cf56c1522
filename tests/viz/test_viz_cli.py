"""`graphdiff render` and `graphdiff compare` on the built-in examples."""
import json
import xml.etree.ElementTree as ET

import pytest

from graphdiff.cli import main

from .viz_helpers import need_renderer


@pytest.mark.parametrize("name", ["scalar", "mlp", "transformer"])
def test_render(name, tmp_path, capsys):
    need_renderer("graphviz-pure")
    assert main(["render", name, "--out", str(tmp_path), "--renderer", "graphviz-pure", "--legend"]) == 0
    assert (tmp_path / f"{name}.gv").read_text().startswith("digraph")
    ET.parse(tmp_path / f"{name}.svg")
    assert f"{name}.svg" in capsys.readouterr().out


def test_compare(tmp_path, capsys):
    need_renderer("graphviz-pure")
    assert main(["compare", "scalar", "--out", str(tmp_path), "--repeats", "1", "--renderer", "graphviz-pure"]) == 0
    out = capsys.readouterr().out
    assert "VJP calls" in out and "children" in out and "parents" in out
    report = json.loads((tmp_path / "scalar-report.json").read_text())
    assert report["variants"][0]["vjp_calls"] == 6
    page = tmp_path / "scalar-trace" / "trace.html"
    assert page.exists() and "<svg" in page.read_text()
    assert len(list((tmp_path / "scalar-trace" / "children").glob("step_*.svg"))) == 7


def test_unknown_example(capsys):
    with pytest.raises(SystemExit):
        main(["render", "resnet"])
    assert "invalid choice" in capsys.readouterr().err
