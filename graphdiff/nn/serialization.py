"""Save and load arrays plus JSON metadata: one NumPy .npz (never pickle), written atomically.

The .npz holds the arrays and a '__meta__' entry with the JSON text (as uint8), so one file is the
checkpoint and the single source of truth; a crash mid-write leaves the previous one intact (write to a
temporary file '.tmp-<name>-*' in the same folder, fsync, os.replace). The writer holds an advisory lock
(flock) on its temporary file while it writes, and the OS drops it when the process ends, however it ends:
the next save to the same place removes the temporary files nobody holds (left by a writer that was killed).
A readable copy of the metadata is written next to it as <name>.json *after* the .npz, so a crash between
the two leaves the copy behind, never ahead; loading never reads it. Files follow the
umask, as files opened with open() do.

Loading reads each entry's .npy header first: entries must be stored uncompressed and hold exactly the
bytes their header declares, so reading a file never allocates more memory than the file's size.
"""
import contextlib
import fcntl
import glob
import json
import os
import tempfile
import zipfile

import numpy as np

from ..errors import GraphError

META_KEY = "__meta__"
TMP_PREFIX = ".tmp-"


class CheckpointError(GraphError, ValueError):
    """A checkpoint that is missing, truncated, corrupt, or from another model; names the file and field."""


class OutputError(OSError):
    """An output path that cannot be written (read-only folder, a file where a folder should be, ...)."""


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Call write(binary file) on a temporary file beside `path`, fsync it, and rename it onto `path`.
    Temporary files of `path` that a killed writer left are removed first (remove_stale_temps)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temps(path)
    while True:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{TMP_PREFIX}{os.path.basename(path)}-")
        fcntl.flock(fd, fcntl.LOCK_EX)             # ours while we write: remove_stale_temps leaves it alone
        if os.fstat(fd).st_nlink:
            break
        os.close(fd)                               # removed as stale between mkstemp and flock: a new one
    try:
        os.fchmod(fd, 0o666 & ~_umask())          # mkstemp makes 0600; a plain open() would follow the umask
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)                  # still locked: nobody takes it for a stale one
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)                              # the rename itself survives a power cut
    finally:
        os.close(dfd)


def remove_stale_temps(path):
    """Delete '.tmp-<name>*' files that an interrupted atomic_write of `path` left; returns their names.

    A temporary file whose writer is alive is locked (atomic_write holds a flock on it) and stays."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    pattern = os.path.join(glob.escape(folder), glob.escape(TMP_PREFIX + os.path.basename(path)) + "*")
    gone = []
    for tmp in glob.glob(pattern):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:                            # gone already, or not ours to read
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(tmp)                         # while locked: its writer, if any, sees st_nlink 0
            gone.append(os.path.basename(tmp))
        except (BlockingIOError, FileNotFoundError):
            pass                                   # a live writer's, or removed meanwhile
        finally:
            os.close(fd)
    return gone


def check_writable(path, what="output", folder=False):
    """Create `path`'s folder (or `path` itself when folder=True) and prove a file can be written there.

    Raises OutputError with one line naming `what`, the path and the fix. Works as root too: a probe file
    is created and removed instead of asking os.access."""
    path = os.fspath(path)
    target = os.path.abspath(path)
    where = target if folder else os.path.dirname(target)
    try:
        if not folder and os.path.isdir(target):
            raise OutputError(f"{what} {path!r} is a directory; give a file path")
        os.makedirs(where, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=where, prefix=f"{TMP_PREFIX}probe-")
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):    # a run holding the lock may have cleaned it up
            os.unlink(probe)
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(f"cannot write the {what} {path!r}: {e.strerror or e} ({where!r}); choose a "
                          "writable folder") from None


def save(path, arrays, meta):
    """Write {name: array} and a JSON-able meta dict to `path` (.npz; str or os.PathLike) atomically, then
    `path`.json."""
    path = os.fspath(path)
    text = json.dumps(meta, indent=1, sort_keys=True)
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    if META_KEY in payload:
        raise ValueError(f"array name {META_KEY!r} is reserved")
    payload[META_KEY] = np.frombuffer(text.encode(), dtype=np.uint8)
    base = path[:-4] if path.endswith(".npz") else path
    atomic_write(path, lambda f: np.savez(f, **payload))
    atomic_write(base + ".json", lambda f: f.write(text.encode()))


def _headers(zf, path):
    """{array name: (shape, dtype)} from each entry's .npy header, checking that reading the entry will
    allocate exactly the bytes stored in the file."""
    out = {}
    for info in zf.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{path!r}: entry {name!r} is compressed; graphdiff checkpoints store arrays "
                                  "uncompressed (np.savez, not np.savez_compressed)")
        with zf.open(info) as fp:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
            else:
                raise ValueError(f"entry {name!r} has .npy format version {version}")
            header = fp.tell()
        if dtype.hasobject:
            raise CheckpointError(f"{path!r}: entry {name!r} holds Python objects; checkpoints hold numbers only")
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != info.file_size - header:
            raise CheckpointError(f"{path!r}: entry {name!r} declares shape {shape} {dtype} but stores "
                                  f"{info.file_size - header} bytes; the file is corrupt")
        out[name] = (tuple(int(d) for d in shape), dtype)
    return out


def _open_error(path, e):
    size = os.path.getsize(path)
    return CheckpointError(f"checkpoint {path!r} ({size} bytes) is truncated or not a graphdiff .npz "
                           f"checkpoint ({type(e).__name__}: {e}); use an earlier checkpoint or train again")


def load(path, arrays=True):
    """(arrays, meta) from a checkpoint written by save; CheckpointError says what is wrong.

    arrays=False reads only the metadata and the headers: `arrays` is then {name: (shape, dtype)}.
    path: str or os.PathLike.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a directory; give the .npz file")
    try:
        with zipfile.ZipFile(path) as zf:
            headers = _headers(zf, path)
        if META_KEY not in headers:
            raise CheckpointError(f"{path!r} is an .npz file but not a graphdiff checkpoint (no "
                                  f"{META_KEY!r} entry); it holds {sorted(headers)[:5]}")
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z[META_KEY].tobytes().decode())
            if arrays:
                headers = {k: z[k] for k in z.files if k != META_KEY}
            else:
                del headers[META_KEY]
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise _open_error(path, e) from None
    if not isinstance(meta, dict):
        kind = _JSON_TYPES.get(type(meta), type(meta).__name__)
        raise CheckpointError(f"{path!r}: field 'metadata' (the {META_KEY!r} entry) is a JSON {kind}, not an "
                              "object; the file was not written by graphdiff, or was edited")
    return headers, meta


_JSON_TYPES = {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
