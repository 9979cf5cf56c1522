"""How a language model's computation graph grows with sequence length: RNN-LM linear, Transformer-LM
quadratic (every position attends to every earlier one), measured on real unrolled graphs.

    graphdiff growth --max-len 64 --out out/growth

For T = 1..N it builds both unrolled graphs (graphdiff.lm.unrolled), counts nodes, edges (input slots)
and depth (edges on the longest path: the span, against the work), fits log-log slopes, plots them, and
renders both graphs at a small T with one cluster per position and the attention edges coloured.

The transformer's edges split in two: attention edges (into a score node s_j, and into the stacks of
scores and of values: a fixed number per (query, visible key) pair, so exactly L * heads * 4 * T(T+1)/2)
and per-position edges (everything else: embeddings, layer norms, projections, MLPs, the loss: a fixed
number per position, so linear). The sum's local slope d log E / d log T therefore starts near 1, where
the per-position layers dominate, and tends to 2 as T grows.
"""
import math
import re

import numpy as np

from graphdiff.lm import GPT, RNNLM, graph_stats, unroll

from .dot import render, to_dot

METRICS = ("nodes", "edges", "depth")
CONFIG = {"vocab_size": 16, "transformer": {"n_layer": 2, "n_head": 4, "n_embd": 8},
          "rnn": {"n_embd": 8, "n_hidden": 8}, "fit_from": 0.5, "seed": 0,
          # the drawn graphs use smaller models, so that one can read them (the figures say so)
          "render": {"transformer": {"n_layer": 1, "n_head": 1, "n_embd": 4}, "rnn": {"n_embd": 4, "n_hidden": 4}}}
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


def sizes(kind, config=CONFIG, rendered=False):
    """The model sizes, as text for the figures: "n_layer=2, n_head=4, n_embd=8"."""
    cfg = config["render"][kind] if rendered else config[kind]
    return ", ".join(f"{k}={v}" for k, v in cfg.items())


_ATTENTION_NODE = re.compile(r"s\d+|scores|V")


def is_attention_edge(child):
    """True for the edges into `child` that attention adds per (query, visible key) pair: the inputs of a
    score node s_j (the query and key j), and of the stacks of scores and of values (graphdiff.lm.unrolled's
    names, inside a position's head scope)."""
    return child.scope.split("/")[-1].startswith("head") and bool(
        _ATTENTION_NODE.fullmatch(child.name.rsplit("/", 1)[-1]))


def edge_split(graph):
    """{"attention_edges", "position_edges"}: the graph's edges into attention's per-pair nodes, and the rest."""
    attention = sum(len(n.inputs) for n in graph.nodes if n.inputs and is_attention_edge(n))
    total = sum(len(n.inputs) for n in graph.nodes)
    return {"attention_edges": attention, "position_edges": total - attention}


def measure(max_len, config=CONFIG, progress=None):
    """{"rnn": [{"T", "nodes", "edges", "depth", "attention_edges", "position_edges"}, ...],
    "transformer": [...]} for T = 1..max_len."""
    out = {name: [] for name in ("rnn", "transformer")}
    for name, model in models(max_len, config).items():
        for T in range(1, max_len + 1):
            ids, targets = sequence(T, config["vocab_size"], config["seed"])
            u = unroll(model, ids, targets, dtype="float32")
            out[name].append({"T": T, **graph_stats(u.graph), **edge_split(u.graph)})
            if progress:
                progress(name, T)
    return out


def local_slopes(rows, metric="edges"):
    """[(T, d log metric / d log T)] by central differences, T = 2..max-1: the exponent at each length."""
    out = []
    for a, b, c in zip(rows, rows[1:], rows[2:]):
        out.append((b["T"], math.log(c[metric] / a[metric]) / math.log(c["T"] / a["T"])))
    return out


def fit(rows, fit_from=CONFIG["fit_from"]):
    """Log-log least-squares slope of each metric against T, over T >= fit_from * max T (and T >= 2):
    the exponent k in metric ~ T^k once fixed per-graph costs stop dominating."""
    t_max = rows[-1]["T"]
    use = [r for r in rows if r["T"] >= max(2, math.ceil(fit_from * t_max))] or rows
    logT = np.log([r["T"] for r in use])
    return {m: round(float(np.polyfit(logT, np.log([r[m] for r in use]), 1)[0]), 4) + 0.0 for m in METRICS}


def plot(result, paths, config=CONFIG):
    """Three panels: edges vs T (log-log: RNN, transformer attention edges and per-position edges, with
    slope-1 and slope-2 guides), the transformer's local slope d log E / d log T tending to 2, and depth vs T
    (work against span). The models' sizes are written under the title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.6))
    rnn, tr = result["rnn"], result["transformer"]
    T = np.array([r["T"] for r in tr], dtype=float)
    k_rnn, k_tr = result["exponents"]["rnn"], result["exponents"]["transformer"]
    ax1.loglog(T, [r["edges"] for r in rnn], "o-", ms=3, color="#1f77b4",
               label=f"RNN-LM: all edges ~ T^{k_rnn['edges']:.2f}")
    ax1.loglog(T, [r["edges"] for r in tr], "s-", ms=3, color="#444444", label="Transformer-LM: all edges")
    ax1.loglog(T, [r["attention_edges"] for r in tr], "^-", ms=3, color=ATTENTION,
               label="  attention edges (exactly quadratic)")
    ax1.loglog(T, [r["position_edges"] for r in tr], "v-", ms=3, color="#2ca02c",
               label="  per-position edges (linear)")
    last = tr[-1]["edges"]
    for power, ls in ((1, ":"), (2, "--")):
        ax1.loglog(T, last * (T / T[-1]) ** power, ls, color="grey", lw=1, label=f"slope {power}")
    ax1.set(xlabel="sequence length T", ylabel="edges in the unrolled graph", title="Work: edges")
    for metric, color, label in (("edges", "#444444", "all edges"), ("attention_edges", ATTENTION, "attention"),
                                 ("position_edges", "#2ca02c", "per-position")):
        pts = local_slopes(tr, metric)
        ax2.plot([t for t, _ in pts], [k for _, k in pts], color=color, label=f"Transformer-LM {label}")
    pts = local_slopes(rnn, "edges")
    ax2.plot([t for t, _ in pts], [k for _, k in pts], color="#1f77b4", label="RNN-LM all edges")
    ax2.axhline(2, ls="--", color="grey", lw=1)
    ax2.axhline(1, ls=":", color="grey", lw=1)
    ax2.set(xlabel="sequence length T", ylabel="d log E / d log T", title="Local slope: tends to 2 (quadratic)",
            ylim=(0, 2.3))
    ax3.plot(T, [r["depth"] for r in rnn], "o-", ms=3, color="#1f77b4",
             label=f"RNN-LM: depth ~ T^{k_rnn['depth']:.2f}")
    ax3.plot(T, [r["depth"] for r in tr], "s-", ms=3, color=ATTENTION,
             label=f"Transformer-LM: depth ~ T^{k_tr['depth']:.2f}")
    ax3.set(xlabel="sequence length T", ylabel="longest path (edges)", title="Span: depth")
    for ax in (ax1, ax2, ax3):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("Unrolled language-model graphs: the RNN grows linearly, attention quadratically\n"
                 f"measured models: GPT {sizes('transformer', config)}; RNN {sizes('rnn', config)}; "
                 f"vocabulary {config['vocab_size']}; the drawn T-small graphs use GPT "
                 f"{sizes('transformer', config, True)}, RNN {sizes('rnn', config, True)}", fontsize=10)
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=110)
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


def render_small(kind, T, path, config=CONFIG, formats=("svg", "png"), renderer="auto", fold=None):
    """Render the unrolled graph of `kind` at length T (with the config's "render" sizes, stated in the
    title): a cluster per position, in order, attention edges coloured. Returns the paths written.

    fold (default: for the RNN): the RNN's T steps have one structure, so they are drawn once, "x T", with
    the red edge carrying the hidden state into the next step (919 pt wide instead of 3,283 at T=4: text
    about 14 px high instead of 4 in a 1,168-px column). The transformer's positions differ (position t
    attends to t + 1 keys): nothing repeats across them, so they are drawn in full."""
    V = config["vocab_size"]
    cfg = config["render"][kind]
    model = (RNNLM(vocab_size=V, block_size=T, **cfg) if kind == "rnn"
             else GPT(vocab_size=V, block_size=T, **cfg))
    ids, targets = sequence(T, V, config["seed"])
    u = unroll(model, ids, targets, dtype="float32")
    name = "Transformer" if kind == "transformer" else "RNN"
    title = (f"{name}-LM unrolled over T={T} ({'GPT' if kind == 'transformer' else 'RNN'} "
             f"{sizes(kind, config, True)}; the growth table uses {sizes(kind, config)}): "
             f"{len(u.graph.nodes)} nodes;\nred edges carry "
             + ("the hidden state to the next position" if kind == "rnn" else "a key or value to a later position"))
    fold = kind == "rnn" if fold is None else fold
    if fold and kind == "rnn":
        title += f";\nits {T} steps have one structure: drawn once (\u00d7 {T})"
    # unfolded, the RNN is a chain through time: left to right reads as time; folded (one step, x T) and the
    # transformer (fanning in) read top to bottom
    dot = to_dot(u.loss, rankdir="LR" if kind == "rnn" and not fold else "TB", clusters="top",
                 fields=("name", "op", "shape"), title=title, edge_style=attention_edges(u.graph), max_nodes=None,
                 fold=fold)
    if not dot.folds:
        _keep_positions_in_order(dot, u)
    return [render(dot, path, format=f, renderer=renderer) for f in formats]


def _keep_positions_in_order(dot, u):
    """Invisible heavy edges from each position's hidden node to the next one's first node: dot keeps
    clusters in that order (t0, t1, ... along the rank direction) instead of where crossings are fewest."""
    firsts = {}
    for n in u.graph.nodes:
        t = _position(n)
        if t is not None and t not in firsts and n.name in dot.ids:
            firsts[t] = n
    for t, h in enumerate(u.hidden[:-1]):
        if t + 1 in firsts and h.name in dot.ids:
            dot.edge(dot.ids[h.name], dot.ids[firsts[t + 1].name], style="invis", weight="10")
