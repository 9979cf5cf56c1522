"""Per-node cost of forward + backward on scalar graphs, graphdiff beside micrograd, in one run.

    python benchmarks/bench_scalar.py            # needs `pip install -e ".[bench]"` for micrograd
    python benchmarks/bench_scalar.py --quick    # a smoke run (seconds)
    python benchmarks/bench_scalar.py --chain-million   # also the 1,000,000-node chain (time and peak memory)

Two workloads that micrograd can express too:
- chain: h = relu(h * w + b), repeated; w and b are params shared by every step.
- mlp:   micrograd's MLP(2, [16, 16, 1]) on a batch of points, mean squared error.

micrograd builds its graph while computing (forward = build) and sorts it recursively in backward, so
its only figure is build + run. graphdiff has two:
- run alone: forward + backward of an already built graph, in the steady state: timed after 5 warm-up
  runs (graphdiff compiles a float graph into straight-line code after the 3rd run of the same plan);
- build + run: a fresh graph every time, as eager users work: "lazy" builds gd.Graph() then runs
  forward + backward, "eager" builds gd.Graph(eager=True) (values computed as nodes are added) then runs
  backward. Both pay for building the nodes and planning the new graph. They are timed after the graph of
  "run alone" is dropped, so the collector's scans of it are not counted as building costs.
Times are CPU time per op node (time.process_time, so other load on the machine counts less); the
figures are the median and min-max over all repeats of all rounds. Each engine and workload runs in a
fresh process with Python's garbage collector on, as users run them (in one shared process, the
collector would walk graphdiff's built graph while micrograd allocates, and slow micrograd unfairly);
the processes alternate engines round by round. Writes benchmarks/results/scalar.json.
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

import common
import graphdiff as gd


def _times(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return times


# --- the chain -------------------------------------------------------------------------------------------
def chain_graphdiff(steps, eager=False):
    g = gd.Graph(dtype="float64", eager=eager)
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


def mlp_graphdiff(n_points, sizes=(2, 16, 16, 1), eager=False):
    """micrograd's MLP, neuron by neuron, as a scalar graph: the same nodes micrograd makes."""
    X, Y = mlp_data(n_points)
    rng = np.random.default_rng(1)
    g = gd.Graph(dtype="float64", eager=eager)
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


def run_alone(g, y, ops, repeat):
    """Forward + backward of the built graph g in the steady state, each variant: {mode: [us per node]}."""
    row = {}
    for variant in gd.VARIANTS:
        def step():
            g.forward(outputs=y)
            g.backward(y, variant=variant)
        for _ in range(5):       # plans built, then compiled after the 3rd run: the steady state
            step()
        row[f"run alone ({variant})"] = [t / ops * 1e6 for t in _times(step, repeat)]
    return row


def measure(engine, workload, size, repeat):
    """One engine on one workload, in this process: {"op_nodes", "<mode>": [us per node per repeat]}."""
    gd_build, mg_build = WORKLOADS[workload]
    if engine == "micrograd":
        run = mg_build(size)
        ops = count_micrograd_ops(run)
        return {"op_nodes": ops, "build+run": [t / ops * 1e6 for t in _times(run, repeat)]}
    t = time.process_time()
    g, y, ops = gd_build(size)
    row = {"op_nodes": ops, "first_build": [(time.process_time() - t) / ops * 1e6]}
    row.update(run_alone(g, y, ops, repeat))
    del g, y                # build + run starts from a process holding no graph, as micrograd's does
    gc.collect()

    def lazy():
        g, y, _ = gd_build(size)
        g.forward(outputs=y)
        g.backward(y)

    def eager():
        g, y, _ = gd_build(size, eager=True)
        g.backward(y)
    row["build+run (lazy)"] = [t / ops * 1e6 for t in _times(lazy, repeat)]
    row["build+run (eager)"] = [t / ops * 1e6 for t in _times(eager, repeat)]
    return row


def _subprocess(*args):
    env = dict(os.environ)
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(workload, size, repeat, rounds=3, label=None):
    """Alternate the two engines' processes `rounds` times, pooling their repeats: a slow spell of the
    machine then hits both engines alike instead of one. Returns rows for common.table."""
    mgs, gds = [], []
    for _ in range(rounds):
        mgs.append(_subprocess("--measure", "micrograd", workload, str(size), str(repeat)))
        gds.append(_subprocess("--measure", "graphdiff", workload, str(size), str(repeat)))
    label = label or workload
    mg = [x for r in mgs for x in r["build+run"]]
    rows = []
    for mode in [k for k in gds[0] if k != "op_nodes"]:
        samples = [x for r in gds for x in r[mode]]
        case = f"{label}: {mode}"
        rows.append({"case": case, "workload": label, "mode": mode, "engine": "graphdiff",
                     "op_nodes": gds[0]["op_nodes"], "samples": samples})
        if mode != "first_build":
            rows.append({"case": case, "workload": label, "mode": mode, "engine": "micrograd (build+run)",
                         "op_nodes": mgs[0]["op_nodes"], "samples": mg})
    return rows


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
    g.backward(h, variant=variant)      # a plan is kept from its second use on: the third runs with it
    t5 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "nodes": len(g.nodes), "build_s": t1 - t0, "forward_s": t2 - t1,
            "backward_first_s": t3 - t2, "backward_second_s": t4 - t3, "backward_s": t5 - t4,
            "peak_rss_mb": peak / 1024,
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
    ap.add_argument("--rounds", type=int, default=3, help="alternating process pairs per workload")
    common.add_common_args(ap, "scalar")
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
    if args.quick:
        args.chain_steps, args.mlp_points, args.repeat, args.rounds = 200, 2, 3, 1
    rows = compare("chain", args.chain_steps, args.repeat, args.rounds) + \
        compare("mlp", args.mlp_points, args.repeat, args.rounds)
    if args.no_gc:
        os.environ["GRAPHDIFF_BENCH_NO_GC"] = "1"
        rows += compare("chain", args.chain_steps, args.repeat, args.rounds, "chain (no gc)") + \
            compare("mlp", args.mlp_points, args.repeat, args.rounds, "mlp (no gc)")
        del os.environ["GRAPHDIFF_BENCH_NO_GC"]
    import micrograd  # noqa: F401  (named in the machine line)
    info = common.machine(threads=None)
    print(common.machine_line(info))
    print("CPU us per op node (process_time); ratio = graphdiff / micrograd's build + run")
    common.table(rows, unit="us", scale=1.0)
    result = {"benchmark": "scalar", "machine": info, "quick": args.quick, "rows": rows,
              "sizes": {"chain_steps": args.chain_steps, "mlp_points": args.mlp_points},
              "timing": "CPU time (process_time) per op node in microseconds; each repeat one sample; "
                        "'run alone' after 5 warm-up runs (steady state, compiled); 'build+run' a fresh "
                        "graph each time; ratio = graphdiff median / micrograd build+run median"}
    if args.chain_million:
        result["million"] = []
        for variant in gd.VARIANTS:
            out = subprocess.run([sys.executable, __file__, "--million-variant", variant], check=True,
                                 capture_output=True, text=True, env=dict(os.environ))
            m = json.loads(out.stdout.strip().splitlines()[-1])
            result["million"].append(m)
            print(f"1,000,000-node chain, {variant:8s}: build {m['build_s']:.1f} s, forward {m['forward_s']:.2f} s, "
                  f"backward {m['backward_first_s']:.2f} s first / {m['backward_second_s']:.2f} s second / "
                  f"{m['backward_s']:.2f} s with its plan kept, "
                  f"peak RSS {m['peak_rss_mb']:.0f} MB")
    common.write("scalar", result, args.json)


if __name__ == "__main__":
    main()
