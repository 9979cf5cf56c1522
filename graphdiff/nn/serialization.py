"""Save and load arrays plus JSON metadata: one NumPy .npz (never pickle), written atomically.

The .npz holds the arrays and a '__meta__' entry with the JSON text (as uint8), so one file is the
checkpoint and a crash mid-write leaves the previous one intact (write to a temporary file in the same
folder, fsync, os.replace). A readable copy of the metadata is written next to it as <name>.json.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from ..errors import GraphError

META_KEY = "__meta__"


class CheckpointError(GraphError):
    """A checkpoint that is missing, truncated, corrupt, or from another model."""


def _atomic_write(path, write):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(path, arrays, meta):
    """Write {name: array} and a JSON-able meta dict to `path` (.npz) atomically, plus `path`.json."""
    text = json.dumps(meta, indent=1, sort_keys=True)
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    if META_KEY in payload:
        raise ValueError(f"array name {META_KEY!r} is reserved")
    payload[META_KEY] = np.frombuffer(text.encode(), dtype=np.uint8)
    base = path[:-4] if path.endswith(".npz") else path
    _atomic_write(base + ".json", lambda f: f.write(text.encode()))
    _atomic_write(path, lambda f: np.savez(f, **payload))


def load(path):
    """(arrays, meta) from a checkpoint written by save; CheckpointError says what is wrong."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            if META_KEY not in z.files:
                raise CheckpointError(f"{path!r} is an .npz file but not a graphdiff checkpoint (no "
                                      f"{META_KEY!r} entry); it holds {sorted(z.files)[:5]}")
            arrays = {k: z[k] for k in z.files if k != META_KEY}
            meta = json.loads(z[META_KEY].tobytes().decode())
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        size = os.path.getsize(path)
        raise CheckpointError(f"checkpoint {path!r} ({size} bytes) is truncated or not a graphdiff .npz "
                              f"checkpoint ({type(e).__name__}: {e}); use an earlier checkpoint or train "
                              "again") from None
    return arrays, meta
