"""Per-node cost of forward + backward on scalar graphs, graphdiff beside micrograd, in one run.

    python benchmarks/bench_scalar.py            # needs `pip install -e ".[bench]"` for micrograd
    python benchmarks/bench_scalar.py --chain-million   # also the 1,000,000-node chain (time and peak memory)

Two workloads that micrograd can express too:
- chain: h = relu(h * w + b), repeated; w and b are params shared by every step.
- mlp:   micrograd's MLP(2, [16, 16, 1]) on a batch of points, mean squared error.

micrograd builds its graph while computing (forward = build) and sorts it recursively in backward.
graphdiff builds the graph once and re-runs it, so its steady state is forward + backward on a built
graph; the first build is reported separately. Times are CPU time per op node (time.process_time, so
other load on the machine counts less), the fastest of several repeats (noise only ever adds time). Each engine and workload runs in
a fresh process with Python's garbage collector on, as users run them: in one shared process, the
collector would walk graphdiff's built graph while micrograd allocates, and slow micrograd unfairly.
"""
import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

import graphdiff as gd


def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)           # the least disturbed run: other load only ever adds time


# --- the chain -------------------------------------------------------------------------------------------
def chain_graphdiff(steps):
    g = gd.Graph(dtype="float64")
    x = g.param("x", 0.5)
    w, b = g.param("w", 0.9), g.param("b", 0.1)
    h = x
    for _ in range(steps):
        h = gd.relu(h * w + b)
    return g, h, 3 * steps


def chain_micrograd(steps):
    from micrograd.engine import Value
    x, w, b = Value(0.5), Value(0.9), Value(0.1)

    def run():
        h = x
        for _ in range(steps):
            h = (h * w + b).relu()
        h.backward()
    return run, 3 * steps


# --- the MLP ---------------------------------------------------------------------------------------------
def mlp_data(n_points, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_points, 2))
    y = np.sign(X[:, 0] * X[:, 1])
    return X, y


def mlp_graphdiff(n_points, sizes=(2, 16, 16, 1)):
    """micrograd's MLP, neuron by neuron, as a scalar graph: the same nodes micrograd makes."""
    X, Y = mlp_data(n_points)
    rng = np.random.default_rng(1)
    g = gd.Graph(dtype="float64")
    layers = []
    for k, (nin, nout) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append([([g.param(f"l{k}/n{j}/w{i}", rng.uniform(-1, 1)) for i in range(nin)],
                        g.param(f"l{k}/n{j}/b", 0.0)) for j in range(nout)])
    losses = []
    for p in range(n_points):
        act = [g.constant(float(v)) for v in X[p]]
        for k, layer in enumerate(layers):
            out = []
            for ws, b in layer:
                s = b
                for wi, xi in zip(ws, act):
                    s = s + wi * xi
                out.append(gd.relu(s) if k < len(layers) - 1 else s)
            act = out
        d = act[0] - float(Y[p])
        losses.append(d * d)
    loss = losses[0]
    for term in losses[1:]:
        loss = loss + term
    loss = loss * (1.0 / n_points)
    ops = sum(1 for n in g.nodes if n.kind == "op")
    return g, loss, ops


def mlp_micrograd(n_points, sizes=(2, 16, 16, 1)):
    from micrograd.engine import Value
    from micrograd.nn import MLP
    X, Y = mlp_data(n_points)
    model = MLP(sizes[0], list(sizes[1:]))

    def run():
        loss = Value(0.0)
        for p in range(n_points):
            d = model([Value(float(v)) for v in X[p]]) - float(Y[p])
            loss = loss + d * d
        loss = loss * (1.0 / n_points)
        model.zero_grad()
        loss.backward()
    return run


def count_micrograd_ops(run_builder):
    """Op nodes micrograd creates (Values with a _prev), counted on one run by patching Value."""
    from micrograd import engine
    count = [0]
    orig = engine.Value.__init__

    def counting(self, data, _children=(), _op=""):
        if _children:
            count[0] += 1
        orig(self, data, _children, _op)
    engine.Value.__init__ = counting
    try:
        run_builder()
    finally:
        engine.Value.__init__ = orig
    return count[0]


WORKLOADS = {"chain": (chain_graphdiff, lambda n: chain_micrograd(n)[0]), "mlp": (mlp_graphdiff, mlp_micrograd)}


def measure(engine, workload, size, repeat):
    """One engine on one workload, in this process: {"op_nodes", "us_per_node" or per variant, "build_us"}."""
    gd_build, mg_build = WORKLOADS[workload]
    if engine == "micrograd":
        run = mg_build(size)
        ops = count_micrograd_ops(run)
        return {"op_nodes": ops, "us_per_node": _median_time(run, repeat) / ops * 1e6}
    t = time.process_time()
    g, y, ops = gd_build(size)
    row = {"op_nodes": ops, "build_us_per_node": (time.process_time() - t) / ops * 1e6}
    g.forward(outputs=y)
    for variant in gd.VARIANTS:
        g.backward(y, variant=variant)   # the first run builds the cached order and plan

        def step():
            g.forward(outputs=y)
            g.backward(y, variant=variant)
        row[f"{variant}_us_per_node"] = _median_time(step, repeat) / ops * 1e6
    return row


def _subprocess(*args):
    env = dict(os.environ)
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(workload, size, repeat, rounds=3):
    """Alternate the two engines' processes `rounds` times and keep each figure's best: a slow spell of
    the machine then hits both engines alike instead of one."""
    mgs, gds = [], []
    for _ in range(rounds):
        mgs.append(_subprocess("--measure", "micrograd", workload, str(size), str(repeat)))
        gds.append(_subprocess("--measure", "graphdiff", workload, str(size), str(repeat)))
    mg = {k: min(r[k] for r in mgs) for k in mgs[0]}
    gdr = {k: min(r[k] for r in gds) for k in gds[0]}
    row = {"workload": workload, "graphdiff_op_nodes": gdr["op_nodes"], "micrograd_op_nodes": mg["op_nodes"],
           "micrograd_us_per_node": mg["us_per_node"], "graphdiff_build_us_per_node": gdr["build_us_per_node"]}
    for variant in gd.VARIANTS:
        row[f"graphdiff_{variant}_us_per_node"] = gdr[f"{variant}_us_per_node"]
        row[f"ratio_{variant}"] = gdr[f"{variant}_us_per_node"] / mg["us_per_node"]
    return row


# --- the million-node chain, one process per variant so peak RSS is its own ------------------------------
def million(variant, n=1_000_000):
    gc.collect()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    g = gd.Graph(dtype="float64")
    x = g.param("x", 0.5)
    h = x
    for _ in range(n - 1):
        h = gd.tanh(h)
    t1 = time.perf_counter()
    g.forward(outputs=h)
    t2 = time.perf_counter()
    g.backward(h, variant=variant)
    t3 = time.perf_counter()
    g.backward(h, variant=variant)
    t4 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "nodes": len(g.nodes), "build_s": t1 - t0, "forward_s": t2 - t1,
            "backward_first_s": t3 - t2, "backward_s": t4 - t3, "peak_rss_mb": peak / 1024,
            "rss_growth_mb": (peak - base) / 1024, "grad": float(gd.to_numpy(x.grad))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--chain-steps", type=int, default=2000)
    ap.add_argument("--mlp-points", type=int, default=20)
    ap.add_argument("--chain-million", action="store_true", help="also run the 1,000,000-node chain")
    ap.add_argument("--million-variant", help=argparse.SUPPRESS)
    ap.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--no-gc", action="store_true",
                    help="also measure with the garbage collector off in both engines (micrograd allocates "
                         "an object per node and pays for collections; this shows the engines without them)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    sys.setrecursionlimit(1_000_000)    # micrograd sorts recursively; graphdiff needs no such limit
    if args.million_variant:
        print(json.dumps(million(args.million_variant)))
        return
    if args.measure:
        if os.environ.get("GRAPHDIFF_BENCH_NO_GC"):
            gc.disable()
        engine, workload, size, repeat = args.measure
        print(json.dumps(measure(engine, workload, int(size), int(repeat))))
        return
    rows = [compare("chain", args.chain_steps, args.repeat), compare("mlp", args.mlp_points, args.repeat)]
    if args.no_gc:
        os.environ["GRAPHDIFF_BENCH_NO_GC"] = "1"
        rows += [dict(compare(w, n, args.repeat), workload=f"{w} (no gc)")
                 for w, n in (("chain", args.chain_steps), ("mlp", args.mlp_points))]
        del os.environ["GRAPHDIFF_BENCH_NO_GC"]
    print(f"{'workload':15s} {'ops':>7s} {'micrograd':>10s} {'children':>9s} {'parents':>9s} {'build':>7s}"
          f" {'ratio A':>8s} {'ratio B':>8s}   (CPU us per op node; ratio = graphdiff / micrograd)")
    for r in rows:
        print(f"{r['workload']:15s} {r['graphdiff_op_nodes']:7d} {r['micrograd_us_per_node']:10.2f} "
              f"{r['graphdiff_children_us_per_node']:9.2f} {r['graphdiff_parents_us_per_node']:9.2f} "
              f"{r['graphdiff_build_us_per_node']:7.2f} {r['ratio_children']:8.2f} {r['ratio_parents']:8.2f}")
    result = {"scalar": rows}
    if args.chain_million:
        result["million"] = []
        for variant in gd.VARIANTS:
            out = subprocess.run([sys.executable, __file__, "--million-variant", variant], check=True,
                                 capture_output=True, text=True, env=dict(os.environ))
            m = json.loads(out.stdout.strip().splitlines()[-1])
            result["million"].append(m)
            print(f"1,000,000-node chain, {variant:8s}: build {m['build_s']:.1f} s, forward {m['forward_s']:.2f} s, "
                  f"backward {m['backward_first_s']:.2f} s first / {m['backward_s']:.2f} s cached, "
                  f"peak RSS {m['peak_rss_mb']:.0f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
