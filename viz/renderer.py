"""Finding and running a Graphviz renderer: DOT text in, SVG/PNG/PDF bytes out.

The system `dot` when installed, else the `graphviz-pure` wheel's program (pip installs it, so a fresh machine
renders with no system package), else RendererUnavailable says how to install one. Where pip puts
graphviz-pure's program depends on how it was installed: a venv's bin/ (used with or without activating it),
~/.local/bin for --user, or <target>/bin for `pip install --target <target>` (then nothing is on PATH and
nothing sits beside the interpreter, but the package's own record still says where its program is). So: PATH,
then the record of the installed distribution, then the interpreter's script folders.

Named renderer.py, not render.py: `graphdiff.viz.render` is the public function (viz.dot.render), and a
module of that name would be shadowed by it (`import graphdiff.viz.render as R` would bind the function).
Knows nothing of graphs or of the graphviz package: drawing DOT is viz.dot's job.
"""
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from .font import embed_font

FORMATS = ("svg", "png", "pdf")
RENDERERS = ("auto", "dot", "graphviz-pure")
LAYOUT_LIMIT = 4_000        # boxes past which Graphviz layouts take minutes (and often fail): refused up front
INSTALL_HINT = ("install a renderer: `pip install graphviz-pure` (self-contained, no system package), or the "
                "system Graphviz (`apt-get install graphviz`, `brew install graphviz`, `conda install graphviz`)")


class RenderError(RuntimeError):
    """A renderer ran and failed, or cannot write the requested format."""


class LayoutTooLarge(RenderError):
    """The diagram has too many boxes to lay out in reasonable time; refused before starting."""


class RendererUnavailable(RenderError):
    """No Graphviz renderer (system `dot` or `graphviz-pure`) is installed."""


DIST = "graphviz-pure"
PROGRAM = "graphviz-pure.exe" if os.name == "nt" else "graphviz-pure"


def _runnable(path):
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def _from_record(dist_name=DIST):
    """The program listed in the installed distribution's RECORD (right for venvs, --user and --target)."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == PROGRAM:
            path = os.path.normpath(str(dist.locate_file(f)))
            if _runnable(path):
                return path
    return None


def find_graphviz_pure():
    """Path of the graphviz-pure program, or None: on PATH, from the package record, or beside Python."""
    exe = shutil.which(PROGRAM)
    if exe:
        return exe
    exe = _from_record()
    if exe:
        return exe
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        cand = os.path.join(folder, PROGRAM) if folder else None
        if _runnable(cand):
            return cand
    return None


def find_renderer(renderer="auto"):
    """(name, executable) of the renderer to use, or None when none is installed.

    Args:
        renderer: "auto" (system `dot`, else graphviz-pure), "dot", "graphviz-pure", or a path to a
            dot-compatible program. $GRAPHDIFF_DOT, when set, is used for "auto".
    """
    if renderer == "auto" and os.environ.get("GRAPHDIFF_DOT"):
        renderer = os.environ["GRAPHDIFF_DOT"]
    if renderer in ("auto", "dot"):
        exe = shutil.which("dot")
        if exe:
            return "dot", exe
        if renderer == "dot":
            return None
    if renderer in ("auto", "graphviz-pure"):
        exe = find_graphviz_pure()
        return ("graphviz-pure", exe) if exe else None
    path = shutil.which(str(renderer)) or (str(renderer) if os.path.isfile(str(renderer)) else None)
    return (Path(str(renderer)).name, path) if path else None


def count_boxes(source):
    """How many nodes DOT text declares (the statements `id [...]`; attribute and edge statements excluded)."""
    ids = re.findall(r'^\s*("[^"]*"|\w+)\s*\[', source, re.M)
    return sum(1 for i in ids if i not in ("node", "edge", "graph"))


def pipe(source, format="svg", renderer="auto", timeout=300, max_boxes=LAYOUT_LIMIT):
    """Render DOT text and return the bytes (SVG with the diagram font embedded: see embed_font).

    Args:
        source: DOT text.  format: "svg", "png" or "pdf".  renderer: see find_renderer.
        timeout: seconds before giving up on a layout.
        max_boxes: more nodes than this are refused before the layout starts (None: try anyway).
    """
    boxes = count_boxes(source)
    if max_boxes is not None and boxes > max_boxes:
        raise LayoutTooLarge(f"{boxes:,} boxes are more than Graphviz lays out in reasonable time (limit "
                             f"{max_boxes:,}: past it layouts take minutes, then often fail); draw fewer: "
                             "to_dot(..., collapse=1) folds each scope into one box, max_nodes=300 folds "
                             "automatically; or pass max_boxes=None to try anyway")
    found = find_renderer(renderer)
    if found is None and renderer not in RENDERERS:
        raise RendererUnavailable(f"unknown renderer {renderer!r}: it is not one of {', '.join(RENDERERS)}, nor "
                                  "a program on PATH or a file; pass one of those names, or the path of a "
                                  "dot-compatible program")
    if found is None:
        raise RendererUnavailable(f"no Graphviz renderer found (asked for {renderer!r}); {INSTALL_HINT}")
    name, exe = found
    if format == "pdf" and name == "graphviz-pure":
        raise RenderError("graphviz-pure cannot write PDF yet; use format='svg' or 'png', or install the "
                          "system Graphviz for PDF (`apt-get install graphviz`, `brew install graphviz`)")
    try:
        res = subprocess.run([exe, f"-T{format}"], input=source.encode("utf-8"), capture_output=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RenderError(f"{name} did not finish the layout within {timeout}s; draw fewer nodes "
                          "(max_nodes=..., collapse=1) or raise timeout=") from None
    if res.returncode != 0 or not res.stdout:
        err = res.stderr.decode("utf-8", "replace").strip()
        raise RenderError(f"{name} ({exe}) failed with exit code {res.returncode}: {err[-2000:]}")
    if format == "svg":
        return embed_font(res.stdout.decode("utf-8")).encode("utf-8")
    return res.stdout
