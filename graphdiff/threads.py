"""Threads for the NumPy kernels' element-wise and row-wise work (gd.set_threads).

BLAS spreads a matmul over its own threads; NumPy's element-wise passes (and the Numba row loops of
fused_numba.py) use one core. With set_threads(n), n > 1, the fused NumPy kernels split a large array
into n contiguous parts (whole rows where they work on rows) and run them at once: n - 1 on a small pool
of worker threads, the last on the calling thread. NumPy's ufuncs and the Numba loops (nogil) release the
GIL, so the parts run in parallel (fused_numpy.flat_parts: why a part makes few, large NumPy calls).
backend.NumpyBackend's matmul splits two stacks of matrices along their first axis the same way. Every
element, row and matrix is computed by the same code in the same order as in one part, so the results are
the same numbers as one thread's (a column sum over rows, layer norm's gamma and beta gradients, adds its
parts' float64 partial sums at the end).

The count: gd.set_threads(n), else the environment variable GRAPHDIFF_THREADS, else 1. With 1 (the
default), nothing changes: no pool is made, and each kernel runs as one part on the calling thread.
Arrays below MIN_PART elements per part run as one part whatever the count: a part handed to a thread
costs some tens of microseconds. CuPy and array_api_strict never use these threads.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

MIN_PART = 1 << 16                  # elements a part must have at least (smaller arrays: fewer parts)
_state = {"n": None, "pool": None, "size": 0}
_lock = threading.Lock()


def _from_env():
    raw = os.environ.get("GRAPHDIFF_THREADS", "1")
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"GRAPHDIFF_THREADS={raw!r}: give a whole number of threads, at least 1") from None
    if n < 1:
        raise ValueError(f"GRAPHDIFF_THREADS={raw!r}: give a whole number of threads, at least 1")
    return n


def get_threads():
    """The number of threads the NumPy kernels use (set_threads, else GRAPHDIFF_THREADS, else 1)."""
    n = _state["n"]
    if n is None:
        n = _state["n"] = _from_env()
    return n


def set_threads(n):
    """Use n threads (n >= 1) for the NumPy kernels' element-wise and row-wise work; returns the previous
    count. BLAS's threads are set apart (threadpoolctl, or the library's environment variables)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_threads: n must be an int >= 1, got {n!r}")
    before = get_threads()
    _state["n"] = n
    return before


def parts(count, per_item=1):
    """Contiguous (start, stop) ranges covering range(count), one per thread to use: as many as the threads
    allow with at least MIN_PART elements each (per_item elements per item: a row's length); one range when
    the threads are 1 or the work is small."""
    n = min(get_threads(), (count * per_item) // MIN_PART, count)
    if n <= 1:
        return [(0, count)]
    step, extra = divmod(count, n)
    out, start = [], 0
    for k in range(n):
        stop = start + step + (k < extra)
        out.append((start, stop))
        start = stop
    return out


def _pool(workers):
    with _lock:
        if _state["size"] < workers:
            old = _state["pool"]
            _state["pool"] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="graphdiff")
            _state["size"] = workers
            if old is not None:
                old.shutdown(wait=False)
        return _state["pool"]


def run(fn, ranges):
    """fn(start, stop) for each range, the last on this thread and the others on the pool, at once; returns
    their results in order. One range: a plain call."""
    if len(ranges) == 1:
        return [fn(*ranges[0])]
    pool = _pool(len(ranges) - 1)
    futures = [pool.submit(fn, a, b) for a, b in ranges[:-1]]
    last = fn(*ranges[-1])
    return [f.result() for f in futures] + [last]
