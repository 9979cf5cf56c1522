"""Writing results: the --out folder of the viz commands (checked before any work; one line when it cannot
be written), text files that take any str, and a folder built aside and moved into place whole.

Below every writer (cli.py, tour.py, growth.py, trace.py): it imports none of them.
"""
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from graphdiff.nn.serialization import OutputError, check_writable


def check_out_folder(folder, command):
    """Create the --out folder and prove it takes files, before any work; False after one line on stderr."""
    try:
        check_writable(folder, "--out folder", folder=True)
    except OutputError as e:
        print(f"graphdiff {command}: {e}", file=sys.stderr)
        return False
    return True


def write_failed(command, folder, e):
    """Say on stderr that writing into --out failed (an OSError e) and return exit status 2."""
    print(f"graphdiff {command}: cannot write into --out {folder!r}: {e.strerror or e}; choose a writable folder",
          file=sys.stderr)
    return 2


def write_text(path, text):
    """Write text as UTF-8; any str will do: characters UTF-8 cannot hold (a lone surrogate in a node
    name) are written as their backslash escape instead of failing half-way through the output."""
    Path(path).write_bytes(text.encode("utf-8", "backslashreplace"))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def replaced_whole(out):
    """Yield a temporary folder beside `out` to build into; when the block ends, it replaces `out` (the
    previous one is removed only then). On an error the temporary folder goes, and `out` stays as it was
    (or absent): a failure never leaves a half-written output."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".tmp-{out.name}-"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())              # mkdtemp makes 0700; a plain mkdir follows the umask
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".tmp-{out.name}-old-"))
            out.rename(old / out.name)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
