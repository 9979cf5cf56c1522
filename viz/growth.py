"""How a language model's computation graph grows with sequence length: RNN-LM linear, Transformer-LM
quadratic (every position attends to every earlier one), measured on real unrolled graphs.

    graphdiff growth --max-len 64 --out out/growth

For T = 1..N it builds both unrolled graphs (graphdiff.lm.unrolled), counts nodes, edges (input slots)
and depth (edges on the longest path: the span, against the work), fits log-log slopes, plots them, and
renders both graphs at a small T with one cluster per position and the attention edges coloured.
"""
import json
import math
import os
import time

import numpy as np

from graphdiff.lm.gpt import GPT
from graphdiff.lm.rnn import RNNLM
from graphdiff.lm.unrolled import graph_stats, unroll

METRICS = ("nodes", "edges", "depth")
CONFIG = {"vocab_size": 16, "transformer": {"n_layer": 2, "n_head": 4, "n_embd": 8},
          "rnn": {"n_embd": 8, "n_hidden": 8}, "fit_from": 0.5, "seed": 0}
ATTENTION = "#d62728"   # edges that carry one position's key or value into another position's attention


def models(max_len, config=CONFIG):
    """The two (untrained) models whose unrolled graphs are measured; sizes do not change the counts."""
    V = config["vocab_size"]
    return {"rnn": RNNLM(vocab_size=V, block_size=max_len, seed=config["seed"], **config["rnn"]),
            "transformer": GPT(vocab_size=V, block_size=max_len, seed=config["seed"], **config["transformer"])}


def sequence(T, vocab_size, seed=0):
    """T + 1 random non-pad ids: inputs and next-token targets."""
    ids = np.random.default_rng(seed).integers(1, vocab_size, T + 1)
    return ids[:-1], ids[1:]


def measure(max_len, config=CONFIG, progress=None):
    """{"rnn": [{"T", "nodes", "edges", "depth"}, ...], "transformer": [...]} for T = 1..max_len."""
    out = {name: [] for name in ("rnn", "transformer")}
    for name, model in models(max_len, config).items():
        for T in range(1, max_len + 1):
            ids, targets = sequence(T, config["vocab_size"], config["seed"])
            u = unroll(model, ids, targets, dtype="float32")
            out[name].append({"T": T, **graph_stats(u.graph)})
            if progress:
                progress(name, T)
    return out


def fit(rows, fit_from=CONFIG["fit_from"]):
    """Log-log least-squares slope of each metric against T, over T >= fit_from * max T (and T >= 2):
    the exponent k in metric ~ T^k once fixed per-graph costs stop dominating."""
    t_max = rows[-1]["T"]
    use = [r for r in rows if r["T"] >= max(2, math.ceil(fit_from * t_max))] or rows
    logT = np.log([r["T"] for r in use])
    return {m: round(float(np.polyfit(logT, np.log([r[m] for r in use]), 1)[0]), 4) + 0.0 for m in METRICS}


def plot(result, paths):
    """Edges vs T (log-log, both models, fitted slopes in the legend) and depth vs T (work vs span)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    style = {"rnn": ("#1f77b4", "o", "RNN-LM"), "transformer": ("#d62728", "s", "Transformer-LM")}
    for name, (color, marker, label) in style.items():
        rows, k = result[name], result["exponents"][name]
        T = [r["T"] for r in rows]
        ax1.loglog(T, [r["edges"] for r in rows], marker=marker, ms=3, color=color,
                   label=f"{label}: edges ~ T^{k['edges']:.2f}")
        ax2.plot(T, [r["depth"] for r in rows], marker=marker, ms=3, color=color,
                 label=f"{label}: depth ~ T^{k['depth']:.2f}")
    T = np.array([r["T"] for r in result["rnn"]], dtype=float)
    for power, ls in ((1, ":"), (2, "--")):          # reference slopes through the last transformer point
        last = result["transformer"][-1]
        ax1.loglog(T, last["edges"] * (T / T[-1]) ** power, ls, color="grey", lw=1, label=f"slope {power}")
    ax1.set(xlabel="sequence length T", ylabel="edges in the unrolled graph", title="Work: graph size")
    ax2.set(xlabel="sequence length T", ylabel="longest path (edges)", title="Span: graph depth")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", fontsize=9)
    fig.suptitle("Unrolled language-model graphs: the RNN grows linearly, attention quadratically", fontsize=11)
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)


def attention_edges(graph):
    """(parent, child, slot) of every edge that carries one position's key or value into another
    position's attention (the quadratic fan-in)."""
    style = {}
    for n in graph.nodes:
        for slot, p in enumerate(n.inputs):
            a, b = _position(p), _position(n)
            if a is not None and b is not None and a != b:
                style[(p.name, n.name, slot)] = {"color": ATTENTION, "penwidth": "1.6"}
    return style


def _position(node):
    """t of a node built in scope "t<t>/...", else None."""
    top = node.scope.split("/")[0]
    return int(top[1:]) if top[:1] == "t" and top[1:].isdigit() else None


def render_small(kind, T, path, config=CONFIG, format="svg"):
    """Render the unrolled graph of `kind` at length T: a cluster per position, attention edges coloured."""
    from .dot import render
    small = {"rnn": RNNLM(vocab_size=config["vocab_size"], block_size=T, n_embd=4, n_hidden=4),
             "transformer": GPT(vocab_size=config["vocab_size"], block_size=T, n_layer=1, n_head=1, n_embd=4)}
    ids, targets = sequence(T, config["vocab_size"], config["seed"])
    u = unroll(small[kind], ids, targets, dtype="float32")
    title = (f"{'Transformer' if kind == 'transformer' else 'RNN'}-LM unrolled over T={T}: "
             f"{len(u.graph.nodes)} nodes; red edges cross positions")
    # the RNN is a chain through time: left to right reads as time; the transformer fans in: top to bottom
    return render(u.loss, path, format=format, rankdir="LR" if kind == "rnn" else "TB", clusters="top",
                  fields=("name", "op", "shape"),
                  title=title, edge_style=attention_edges(u.graph), max_nodes=None)


def add_growth_arguments(parser):
    from graphdiff.cli import add_backend_argument
    add_backend_argument(parser)
    parser.add_argument("--max-len", type=int, default=64, help="largest sequence length T (default 64)")
    parser.add_argument("--out", default="out/growth", help="folder for growth.json and the figures")
    parser.add_argument("--render-len", type=int, default=4, help="T of the two rendered graphs (default 4)")


def run_growth(args):
    if args.max_len < 2:
        print("graphdiff growth: --max-len must be at least 2 to fit a slope")
        return 2
    from .cli import check_out_folder, write_failed
    if not check_out_folder(args.out, "growth"):
        return 2
    t0 = time.perf_counter()
    rows = measure(args.max_len)
    result = {"config": {**CONFIG, "max_len": args.max_len, "fit": f"log-log least squares over "
                         f"T >= {max(2, math.ceil(CONFIG['fit_from'] * args.max_len))}"},
              "rnn": rows["rnn"], "transformer": rows["transformer"],
              "exponents": {name: fit(rows[name]) for name in ("rnn", "transformer")}}
    try:
        with open(os.path.join(args.out, "growth.json"), "w") as f:
            json.dump(result, f, indent=1)
    except OSError as e:
        return write_failed("growth", args.out, e)
    print(f"{'T':>4s} | {'RNN nodes':>9s} {'edges':>7s} {'depth':>6s} | {'Transformer nodes':>17s} {'edges':>7s} "
          f"{'depth':>6s}")
    for r, s in zip(result["rnn"], result["transformer"]):
        if r["T"] in (1, 2, 4, 8) or r["T"] % 16 == 0 or r["T"] == args.max_len:
            print(f"{r['T']:4d} | {r['nodes']:9d} {r['edges']:7d} {r['depth']:6d} | {s['nodes']:17d} "
                  f"{s['edges']:7d} {s['depth']:6d}")
    for name in ("rnn", "transformer"):
        k = result["exponents"][name]
        print(f"fitted exponents, {name:11s}: nodes T^{k['nodes']:.2f}, edges T^{k['edges']:.2f}, "
              f"depth T^{k['depth']:.2f}")
    written = ["growth.json", "growth.png", "growth.svg"]
    try:
        plot(result, [os.path.join(args.out, "growth.png"), os.path.join(args.out, "growth.svg")])
        for kind in ("rnn", "transformer"):
            path = render_small(kind, args.render_len, os.path.join(args.out, f"{kind}_T{args.render_len}"))
            written.append(os.path.basename(path))
    except OSError as e:
        return write_failed("growth", args.out, e)
    print(f"wrote {', '.join(os.path.join(args.out, w) for w in written)} in {time.perf_counter() - t0:.1f} s")
    return 0
