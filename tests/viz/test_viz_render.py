"""Finding graphviz-pure however pip installed it (viz/renderer.py)."""
import importlib
import os
import sys
import textwrap


R = importlib.import_module("graphdiff.viz.renderer")


def fake_target_install(root):
    """The layout `pip install --target root graphviz-pure` leaves: the package record in root, the program
    in root/bin (nothing on PATH, nothing beside the interpreter)."""
    info = root / "graphviz_pure-0.2.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: graphviz-pure\nVersion: 0.2.2\n")
    (info / "RECORD").write_text(f"bin/{R.PROGRAM},,\ngraphviz_pure-0.2.2.dist-info/METADATA,,\n")
    exe = root / "bin" / R.PROGRAM
    exe.parent.mkdir()
    exe.write_text(textwrap.dedent("""\
        #!/bin/sh
        echo '<svg xmlns="http://www.w3.org/2000/svg"></svg>'
        """))
    exe.chmod(0o755)
    return exe


def test_found_through_its_package_record_after_pip_target(tmp_path, monkeypatch):
    exe = fake_target_install(tmp_path / "target")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "path", [str(tmp_path / "target")] + sys.path)
    monkeypatch.setattr(R.importlib.metadata, "distribution",     # only the fake install is visible
                        lambda name: next(R.importlib.metadata.distributions(name=name, path=[str(tmp_path / "target")])))
    monkeypatch.setattr(R.sysconfig, "get_path", lambda name: str(tmp_path / "empty"))
    monkeypatch.setattr(R.sys, "executable", str(tmp_path / "empty" / "python"))
    assert R.find_graphviz_pure() == os.path.normpath(str(exe))


def test_none_when_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(R, "DIST", "graphviz-pure-not-installed")
    monkeypatch.setattr(R, "_from_record", lambda dist_name=None: None)
    monkeypatch.setattr(R.sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(R.sys, "executable", str(tmp_path / "python"))
    assert R.find_graphviz_pure() is None


def test_a_record_without_the_program_is_not_a_renderer(tmp_path, monkeypatch):
    exe = fake_target_install(tmp_path / "target")
    exe.unlink()
    monkeypatch.setattr(R.importlib.metadata, "distribution",
                        lambda name: next(R.importlib.metadata.distributions(name=name, path=[str(tmp_path / "target")])))
    assert R._from_record() is None
