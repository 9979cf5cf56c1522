"""Finding the graphviz-pure renderer however pip installed it.

The graphviz-pure wheel ships a self-contained `dot` program as a script. Where pip puts it depends on how
it was installed: a venv's bin/ (used with or without activating it), ~/.local/bin for --user, or
<target>/bin for `pip install --target <target>` (then nothing is on PATH and nothing sits beside the
interpreter, but the package's own record still says where its program is). So: PATH, then the record of
the installed distribution, then the interpreter's script folders. Imports nothing outside the standard
library (no graphviz package needed to find a renderer).
"""
import importlib.metadata
import os
import shutil
import sys
import sysconfig

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
