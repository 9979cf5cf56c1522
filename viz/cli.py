"""The viz commands: `graphdiff render NAME --out DIR [--fold] [--expand SCOPE] [--collapse DEPTH|SCOPE]
[--color-by QUANTITY]` and `graphdiff compare NAME --out DIR` on the built-in example graphs, `graphdiff growth`
(graph size against sequence length, growth.py), `graphdiff explore NAME` (the graph in Model Explorer,
explorer.py), and `graphdiff demo` (with --out DIR the tour, tour.py; without it graphdiff.demo's quick check)."""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from graphdiff.cli import POSITIVE, add_backend_argument, number
from graphdiff.demo import add_demo_arguments as add_quick_check_arguments, run_demo as quick_check

from . import growth, tour
from .dot import render, to_dot
from .explorer import ExplorerFailed, ExplorerUnavailable, PortInUse, explore, model_explorer
from .gallery import EXAMPLES, build
from .graphs import backward_graph, select
from .health import QUANTITIES
from .output import check_out_folder, write_failed
from .renderer import RenderError
from .report import VARIANTS, compare_variants, sums_text
from .trace import render_trace


def _collapse(text):
    """--collapse: a depth (an integer >= 1) or a scope name."""
    if text.lstrip("+-").isdigit():
        if int(text) < 1:
            raise argparse.ArgumentTypeError(f"depth {text} collapses nothing; give a depth >= 1 (1: every "
                                             "top-level scope) or a scope name")
        return int(text)
    if not text.strip("/"):
        raise argparse.ArgumentTypeError("give a depth >= 1 or a scope name")
    return text


class _CollapseAction(argparse.Action):
    """One depth, or scope names gathered into a list (--collapse attn --collapse mlp)."""

    def __call__(self, parser, namespace, value, option_string=None):
        have = getattr(namespace, self.dest)
        if isinstance(value, int) or isinstance(have, int):
            if have is not None:
                parser.error(f"argument {option_string}: give one depth, or scope names, not both or two depths")
            setattr(namespace, self.dest, value)
        else:
            setattr(namespace, self.dest, (have or []) + [value])


def add_render_arguments(parser):
    add_backend_argument(parser)
    parser.add_argument("name", choices=sorted(EXAMPLES), help="example graph")
    parser.add_argument("--out", default=".", help="folder for NAME.gv and NAME.<format> (default: .)")
    parser.add_argument("--format", choices=("svg", "png", "pdf"), default="svg")
    parser.add_argument("--rankdir", choices=("LR", "TB", "RL", "BT"), default=None)
    parser.add_argument("--clusters", choices=("nested", "top", "none"), default="nested")
    parser.add_argument("--collapse", type=_collapse, action=_CollapseAction, default=None, metavar="DEPTH|SCOPE",
                        help="draw scopes at this depth (1 = top level) as one box each, or the scope named "
                             "(repeat for several scopes)")
    parser.add_argument("--fold", action="store_true", help="draw sibling scopes that repeat one structure "
                        "(a GPT's blocks h/0..h/2, an unrolled RNN's steps t0..t3) once, labelled x k")
    parser.add_argument("--expand", action="append", default=None, metavar="SCOPE",
                        help="draw this scope in full (implies --fold; repeat for several)")
    parser.add_argument("--legend", action="store_true", help="add a colour legend")
    parser.add_argument("--max-nodes", type=POSITIVE, default=300, help="collapse scopes past this many nodes")
    parser.add_argument("--renderer", default="auto", help="auto (system dot, else graphviz-pure), dot, "
                        "graphviz-pure, or a program path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backward", action="store_true", help="draw the backward graph too (g.gradients: "
                        "backward nodes in their own colour, dashed edges for forward values a VJP reads)")
    parser.add_argument("--variant", choices=("children", "parents"), default="children",
                        help="with --backward: which variant builds the backward graph (default children)")
    parser.add_argument("--color-by", default=None, metavar="{" + ",".join(QUANTITIES) + "}",
                        help="colour each node by a health quantity, with a colour bar: grad (gradient norm), "
                             "value (value norm), nonfinite (NaN/Inf red; the first op that made one is named), "
                             "memory (bytes its VJP keeps for the backward), time (forward + backward per node, "
                             "profiled)")


def run_render(args):
    """Build the example, run forward and backward (keeping every gradient), write the DOT and the picture;
    with --backward, draw the backward graph that g.gradients adds, beside the forward graph."""
    if not check_out_folder(args.out, "render"):
        return 2
    if args.color_by is not None and args.color_by not in QUANTITIES:     # one line, not argparse's usage
        print(f"graphdiff render: --color-by {args.color_by!r} is not a quantity; choose from "
              f"{', '.join(QUANTITIES)}", file=sys.stderr)
        return 2
    g, y = build(args.name, seed=args.seed)
    if args.backward:
        what, name = backward_graph(g, y, args.variant), f"{args.name}-backward-{args.variant}"
        if args.color_by == "grad":            # the forward nodes' gradients too, to colour them by
            g.backward(y, retain_grads=True)
    else:
        g.backward(y, retain_grads=True)
        what, name = y, args.name
    name += f"-{args.color_by}" if args.color_by else ""
    try:
        dot = to_dot(what, rankdir=args.rankdir, clusters=args.clusters, collapse=args.collapse, legend=args.legend,
                     max_nodes=args.max_nodes, color_by=args.color_by, fold=args.fold, expand=args.expand)
    except ValueError as e:                      # --collapse or --expand naming no scope of the example
        print(f"graphdiff render: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    gv = out / f"{name}.gv"
    try:
        gv.write_text(dot.source, encoding="utf-8")
        print(f"wrote {gv}")
        print(f"wrote {render(dot, out / name, args.format, renderer=args.renderer)}")
    except RenderError as e:
        print(f"graphdiff render: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        return write_failed("render", args.out, e)
    return 0


def add_compare_arguments(parser):
    add_backend_argument(parser)
    parser.add_argument("name", choices=sorted(EXAMPLES), help="example graph")
    parser.add_argument("--out", default=".", help="folder for the report and the stepper page (default: .)")
    parser.add_argument("--repeats", type=POSITIVE, default=5, help="timed backward runs per variant")
    parser.add_argument("--renderer", default="auto", help="auto, dot, graphviz-pure, or a program path")
    parser.add_argument("--seed", type=int, default=0)


def run_compare(args):
    """Print the two variants' table; write NAME-report.json and the stepper page NAME-trace/trace.html."""
    if not check_out_folder(args.out, "compare"):
        return 2
    # each variant's backward graph, drawn on a graph of its own (g.gradients adds nodes to the graph)
    backward, rankdir = {}, None
    for v in VARIANTS:              # one direction for both, so that they compare side by side
        gv, yv = build(args.name, seed=args.seed)
        nodes = backward_graph(gv, yv, v)
        dot = to_dot(nodes, legend=True, rankdir=rankdir)
        rankdir = rankdir or dot.graph_attr["rankdir"]
        backward[v] = (dot, sums_text(select(nodes)[0], v))
    g, y = build(args.name, seed=args.seed)
    report = compare_variants(g, y, repeats=args.repeats)
    print(report.table())
    out = Path(args.out)
    js = out / f"{args.name}-report.json"
    try:
        js.write_text(report.to_json(), encoding="utf-8")
        print(f"wrote {js}")
        page = render_trace(g, y, out / f"{args.name}-trace", renderer=args.renderer, repeats=args.repeats,
                            title=f"graphdiff compare {args.name}: backward step by step",
                            backward_graphs=backward)
    except RenderError as e:
        print(f"graphdiff compare: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        return write_failed("compare", args.out, e)
    print(f"wrote {page}")
    return 0


def add_demo_arguments(parser):
    add_quick_check_arguments(parser)
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="build the tour into DIR (DIR/index.html: diagrams, stepper, growth, a tiny GPT; "
                             "a few minutes); without it, print the quick two-variant check")
    tour.add_arguments(parser)


def run_demo(args):
    """With --out: the tour (viz.tour). Else graphdiff.demo's two-layer network by both variants."""
    if args.out is None:
        return quick_check(args)
    return tour.run(args)


def add_explore_arguments(parser):
    add_backend_argument(parser)
    parser.add_argument("name", choices=sorted(EXAMPLES), help="example graph")
    parser.add_argument("--backward", action="store_true", help="the backward graph too (g.gradients, under "
                        "the layers grad/<scope>)")
    parser.add_argument("--variant", choices=("children", "parents"), default="children",
                        help="with --backward: which variant builds the backward graph (default children)")
    parser.add_argument("--export", default=None, metavar="FILE.json",
                        help="only write Model Explorer's graph JSON (and FILE.<quantity>.json node data beside "
                             "it); needs no extra")
    parser.add_argument("--port", type=number(int, 1, "a port (1-65535)", 65535), default=None,
                        help="serve on this localhost port (default: a free one)")
    parser.add_argument("--no-browser", action="store_true", help="serve without opening a browser tab")
    parser.add_argument("--seed", type=int, default=0)


def run_explore(args):
    """Build the example, run forward and backward (keeping every gradient; with --backward also the backward
    graph as nodes), and serve it in Model Explorer on localhost until Ctrl+C, or write it with --export."""
    if args.export is None:
        try:
            model_explorer()
        except ExplorerUnavailable as e:
            print(f"graphdiff explore: {e}", file=sys.stderr)
            return 2
    g, y = build(args.name, seed=args.seed)
    g.backward(y, retain_grads=True)
    what = backward_graph(g, y, args.variant) if args.backward else y
    label = f"{args.name}-backward-{args.variant}" if args.backward else args.name
    if args.export is not None:
        try:
            for path in explore(what, export=args.export):
                print(f"wrote {path}")
        except OSError as e:
            print(f"graphdiff explore: cannot write {args.export!r}: {e.strerror or e}; choose a writable path",
                  file=sys.stderr)
            return 2
        return 0
    try:
        explore(what, label=label, port=args.port, open_browser=not args.no_browser, block=True)
    except (PortInUse, ExplorerUnavailable) as e:
        print(f"graphdiff explore: {e}", file=sys.stderr)
        return 2
    except ExplorerFailed as e:
        print(f"graphdiff explore: {e}", file=sys.stderr)
        return 1
    return 0


def add_growth_arguments(parser):
    add_backend_argument(parser)
    parser.add_argument("--max-len", type=POSITIVE, default=64, help="largest sequence length T (default 64)")
    parser.add_argument("--out", default="out/growth", help="folder for growth.json and the figures")
    parser.add_argument("--render-len", type=POSITIVE, default=4, help="T of the two rendered graphs (default 4)")


def run_growth(args):
    if args.max_len < 2:
        print("graphdiff growth: --max-len must be at least 2 to fit a slope")
        return 2
    if not check_out_folder(args.out, "growth"):
        return 2
    t0 = time.perf_counter()
    rows = growth.measure(args.max_len)
    result = {"config": {**growth.CONFIG, "max_len": args.max_len, "fit": f"log-log least squares over "
                         f"T >= {max(2, math.ceil(growth.CONFIG['fit_from'] * args.max_len))}"},
              "rnn": rows["rnn"], "transformer": rows["transformer"],
              "exponents": {name: growth.fit(rows[name]) for name in ("rnn", "transformer")}}
    try:
        with open(os.path.join(args.out, "growth.json"), "w") as f:
            json.dump(result, f, indent=1)
    except OSError as e:
        return write_failed("growth", args.out, e)
    print(f"models: GPT {growth.sizes('transformer')}; RNN {growth.sizes('rnn')}; vocabulary {growth.CONFIG['vocab_size']}")
    print(f"{'T':>4s} | {'RNN nodes':>9s} {'edges':>7s} {'depth':>6s} | {'Transformer nodes':>17s} {'edges':>7s} "
          f"{'attention':>9s} {'per-pos.':>8s} {'depth':>6s}")
    for r, s in zip(result["rnn"], result["transformer"]):
        if r["T"] in (1, 2, 4, 8) or r["T"] % 16 == 0 or r["T"] == args.max_len:
            print(f"{r['T']:4d} | {r['nodes']:9d} {r['edges']:7d} {r['depth']:6d} | {s['nodes']:17d} "
                  f"{s['edges']:7d} {s['attention_edges']:9d} {s['position_edges']:8d} {s['depth']:6d}")
    for name in ("rnn", "transformer"):
        k = result["exponents"][name]
        print(f"fitted exponents, {name:11s}: nodes T^{k['nodes']:.2f}, edges T^{k['edges']:.2f}, "
              f"depth T^{k['depth']:.2f}")
    if args.max_len >= 3:
        T, k = growth.local_slopes(result["transformer"])[-1]
        print(f"transformer local slope d log E / d log T at T={T}: {k:.3f} (tends to 2)")
    written = ["growth.json", "growth.png", "growth.svg"]
    try:
        growth.plot(result, [os.path.join(args.out, "growth.png"), os.path.join(args.out, "growth.svg")])
        for kind in ("rnn", "transformer"):
            for path in growth.render_small(kind, args.render_len, os.path.join(args.out, f"{kind}_T{args.render_len}")):
                written.append(os.path.basename(path))
    except OSError as e:
        return write_failed("growth", args.out, e)
    print(f"wrote {', '.join(os.path.join(args.out, w) for w in written)} in {time.perf_counter() - t0:.1f} s")
    return 0
