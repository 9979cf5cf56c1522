"""What every benchmark shares: the machine line, thread limits, alternating timing, the table and the JSON.

Benchmarks import this as `common` (they run as scripts, so benchmarks/ is on sys.path). Nothing here is
part of graphdiff; the engine never imports it.

Timing protocol (all comparisons): the engines live in one process and run in alternating rounds (the order
rotates every round), so a slow spell of this noisy machine hits every engine instead of one. Each round
times one call per engine with time.perf_counter; the figures are the median and the min-max over rounds,
and the ratio is graphdiff's median over the peer's median ("paired" ratios, round by round, give the
spread of the ratio itself).
"""
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
# these slow the current NumPy build's kernels when set; benchmarks are run with both unset and say so
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info():
    """One dict per BLAS/OpenMP library loaded in this process (threadpoolctl), or [] without it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "threading_layer", "num_threads",
            "filepath")
    return [{k: v for k, v in d.items() if k in keep} for d in threadpool_info()]


def set_threads(n):
    """n BLAS / OpenMP threads in every library threadpoolctl sees, n intra-op threads for torch, and n
    threads for graphdiff's NumPy kernels (gd.set_threads)."""
    import graphdiff
    graphdiff.set_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
    except ImportError:
        print("note: threadpoolctl is not installed; BLAS threads are the library default", file=sys.stderr)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:          # not installed as a distribution (e.g. the CuPy stand-in)
        return "installed"


def machine(threads=None):
    """The machine line of every result file: CPU, cores, versions, BLAS, threads, date."""
    import numpy as np
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "graphdiff_commit": _git_commit(), "threads": threads,
            "env": {k: os.environ.get(k) for k in BLAS_ENV}}
    for mod in ("torch", "autograd", "micrograd", "cupy"):
        m = sys.modules.get(mod)
        if m is not None:
            info[mod] = getattr(m, "__version__", None) or _dist_version(mod)
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    info["blas"] = blas_info()
    return info


def machine_line(info):
    blas = ", ".join(f"{d.get('internal_api')} {d.get('version')} {d.get('architecture') or ''}".strip()
                     + f" x{d.get('num_threads')}" for d in info["blas"] if d.get("user_api") == "blas")
    vers = ", ".join(f"{k} {info[k]}" for k in ("numpy", "torch", "autograd", "micrograd", "cupy") if k in info)
    set_env = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if info["env"].get(k)]
    return (f"{info['cpu']}, {info['cores']} cores; {vers}; BLAS: {blas or 'unknown'}; threads {info['threads']}"
            f"; {info['date']}" + (f"; NOTE {'/'.join(set_env)} set (slows OpenBLAS)" if set_env else ""))


def alternate(fns, rounds, warmup=2, sync=None, collect=True):
    """Time each of {name: fn} once per round, alternating (the order rotates each round).

    Every fn is first called `warmup` times (graphs built, plans compiled, allocators warm). sync, if
    given, is called after each fn before the clock stops (a GPU). Returns {name: [seconds per round]}.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
        if sync:
            sync()
    times = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if collect:
                gc.collect()     # no engine pays for another's garbage
            t = time.perf_counter()
            fns[name]()
            if sync:
                sync()
            times[name].append(time.perf_counter() - t)
    return times


def summary(samples):
    """{median, min, max, n} of a list of numbers."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def ratio(a, b):
    """graphdiff/peer: ratio of medians, and the min-max of the per-round (paired) ratios."""
    def div(x, y):
        return x / y if y else float("nan")
    paired = [div(x, y) for x, y in zip(a, b)]
    return {"median_ratio": div(statistics.median(a), statistics.median(b)), "paired_min": min(paired),
            "paired_max": max(paired)}


def table(rows, unit="ms", scale=1e3, baseline="graphdiff"):
    """Print rows of {"case", "engine", "samples"}: median, min-max and graphdiff / engine per case."""
    print(f"{'case':28s} {'engine':22s} {'median ' + unit:>12s} {'min-max ' + unit:>20s} "
          f"{baseline + ' / engine':>22s}")
    by_case = {}
    for r in rows:
        by_case.setdefault(r["case"], []).append(r)
    for case, rs in by_case.items():
        base = next((r for r in rs if r["engine"] == baseline), None)
        for r in rs:
            s = summary(r["samples"])
            rat = ""
            if base is not None and r is not base:
                q = ratio(base["samples"], r["samples"])
                rat = f"{q['median_ratio']:.2f} ({q['paired_min']:.2f}-{q['paired_max']:.2f})"
                r["ratio"] = q
            print(f"{case:28s} {r['engine']:22s} {s['median'] * scale:12.3f} "
                  f"{s['min'] * scale:9.3f}-{s['max'] * scale:<10.3f} {rat:>22s}")
            r.update(summary=s)


def write(name, result, path=None):
    """benchmarks/results/<name>.json (or path); returns the path written."""
    path = path or os.path.join(RESULTS, f"{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1, default=float)
    print(f"wrote {os.path.relpath(path)}")
    return path


def add_common_args(p, default_json):
    p.add_argument("--quick", action="store_true", help="a smoke run (seconds): small sizes, few rounds")
    p.add_argument("--json", default=None, help=f"result file (default benchmarks/results/{default_json}.json)")
    return p
