"""Namespacing: viz/ installs as graphdiff.viz (no top-level `viz`, which PyPI's viz package owns), and a
source checkout run with PYTHONPATH=. imports it under the same name."""
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SNIPPET = ("import graphdiff as gd\nfrom graphdiff import viz\n"
           "g = gd.Graph(); a = g.param('a', 2.0); print(viz.__name__, 'digraph' in viz.to_dot(a * a).source)")


def test_source_checkout_imports_graphdiff_viz(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SNIPPET], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["graphdiff.viz", "True"]


@pytest.mark.slow
def test_wheel_has_graphdiff_viz_and_no_top_level_viz(tmp_path):
    src = tmp_path / "src"                          # a clean copy: no stale build/ folder to leak into the wheel
    for name in ("graphdiff", "viz"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path), str(src)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel, = tmp_path.glob("graphdiff-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert "viz" not in tops and "graphdiff/viz/__init__.py" in names and "graphdiff/viz/dot.py" in names
    folders = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "graphdiff").rglob("__init__.py")}
    assert {f + "/__init__.py" for f in folders} <= set(names), "a graphdiff subpackage is missing from setup.cfg"
