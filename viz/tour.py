"""`graphdiff demo --out DIR`: the tour. One page, DIR/index.html, with everything a learner opens first:

1. a scalar expression with its values and gradients (micrograd's);
2. the lecture's MLP: its diagram, both backward variants compared, and the stepper page; a graph with a
   shared node, where Version B's `+=` shows;
3. the forward and backward graphs drawn together (g.gradients), in both variants;
4. graph growth: RNN-LM linear, Transformer-LM quadratic (figure, table, both T=4 renders);
5. a tiny GPT trained for about a minute: its loss curve, a greedy and a sampled continuation.

Each stage shows a progress bar. `--quick` shrinks every stage (the tests use it); nothing else changes.
The page's HTML and CSS are viz/assets/tour.html and tour.css.
"""
import html
import json
import os
import sys
import time

import numpy as np

import graphdiff as gd
from graphdiff.lm import GPT, CharTokenizer, Trainer, generate
from graphdiff.lm.data import default_corpus
from graphdiff.lm.train import prepare_data

from . import gallery, growth, health
from .dot import render, to_dot
from .font import font_style, strip_font
from .graphs import backward_graph, select
from .output import check_out_folder, write_failed
from .page import asset, fill, style, viewer, viewer_script, viewer_style
from .renderer import RenderError
from .report import ABOUT, VARIANTS, compare_variants, sums_text
from .trace import pair_html, render_trace

QUICK = {"growth_len": 8, "render_len": 2, "gpt_seconds": 3.0, "gpt_chars": 30_000, "repeats": 1}
FULL = {"growth_len": 32, "render_len": 4, "gpt_seconds": 60.0, "gpt_chars": 400_000, "repeats": 3}


class Tour:
    """Builds the tour into a folder, stage by stage; each stage adds a section to the page."""

    def __init__(self, out, quick=False, renderer="auto", progress=True):
        self.out, self.renderer, self.progress = str(out), renderer, progress
        self.cfg = QUICK if quick else FULL
        self.sections = []
        self.timings = {}

    # --- helpers -------------------------------------------------------------------------------------------
    def path(self, name):
        return os.path.join(self.out, name)

    def bar(self, stage, total):
        from tqdm import tqdm
        return tqdm(total=total, desc=f"{stage:<22s}", unit="step", disable=not self.progress, file=sys.stderr,
                    dynamic_ncols=True, leave=True)

    def draw(self, dot, name, formats=("svg", "png")):
        """Render a Diagram as NAME.svg and NAME.png; returns the SVG's file name."""
        for f in formats:
            render(dot, self.path(name), format=f, renderer=self.renderer)
        return f"{name}.svg"

    def read(self, svg):
        """The text of a drawn SVG in the tour's folder."""
        with open(self.path(svg), encoding="utf-8") as f:
            return f.read()

    def view(self, svg):
        """A drawn SVG (a file name in the tour's folder) in the pan-and-zoom viewer."""
        return viewer(strip_font(self.read(svg)), svg)

    def add(self, title, *parts):
        self.sections.append((title, "".join(parts)))

    # --- the stages ---------------------------------------------------------------------------------------
    def scalar(self):
        with self.bar("scalar expression", 2) as bar:
            g, L = gallery.scalar()
            g.backward(L, retain_grads=True)
            rows = [(n.name, n.op or n.kind, float(gd.to_numpy(n.value)), float(gd.to_numpy(n.grad)))
                    for n in g.nodes]
            bar.update(1)
            svg = self.draw(to_dot(L, legend=True, title="L = (a*b + c) * f: data and grad of every node"), "scalar")
            bar.update(1)
        table = _table(("node", "op", "value", "dL/d node"), [(a, b, f"{c:.4f}", f"{d:.4f}") for a, b, c, d in rows])
        self.add("1. A scalar expression, its values and gradients",
                 "<p>micrograd's expression, built as a graph, run forward, then backward "
                 "(<code>g.backward(L, retain_grads=True)</code> keeps every node's gradient).</p>",
                 self.view(svg), table)

    def mlp(self):
        with self.bar("lecture MLP + stepper", 5) as bar:
            g, J = gallery.mlp()
            g.backward(J, retain_grads=True)
            svg = self.draw(to_dot(J, legend=True, title="the lecture MLP: a = alpha x, z = sigmoid(a), b = beta z, "
                                                         "y_hat = softmax(b), J = cross-entropy"), "mlp")
            bar.update(1)
            report = compare_variants(g, J, repeats=self.cfg["repeats"])
            bar.update(1)
            page = render_trace(g, J, self.path("mlp-trace"), renderer=self.renderer, repeats=self.cfg["repeats"],
                                title="The lecture MLP: backward step by step, Version A beside Version B")
            bar.update(1)
            gs, ys = gallery.shared()
            shared_report = compare_variants(gs, ys, repeats=self.cfg["repeats"])
            bar.update(1)
            shared_page = render_trace(gs, ys, self.path("shared-trace"), renderer=self.renderer,
                                       repeats=self.cfg["repeats"],
                                       title="A node used four times: where Version B does +=")
            bar.update(1)
        self.add("2. The lecture MLP, both backward variants, step by step",
                 self.view(svg),
                 "<p>The two variants on the MLP: the same gradients and VJP calls. The MLP is a chain, so no "
                 "adjoint receives more than one contribution.</p>", report.html(),
                 f'<p><a href="{_rel(page, self.out)}">Open the stepper</a> (both variants side by side; '
                 "buttons or arrow keys).</p>",
                 f'<iframe src="{_rel(page, self.out)}" title="MLP stepper"></iframe>',
                 "<p>A graph where one node (<code>a = exp(x)</code>) is used four times. Version A (children) "
                 "keeps the four adjoints alive until <code>a</code> pulls and sums them; Version B (parents) "
                 "adds into <code>a</code>'s adjoint as each one pushes (<code>=</code>, then <code>+=</code> "
                 "three times) and frees each right away: a lower peak of live adjoints.</p>",
                 shared_report.html(),
                 f'<p><a href="{_rel(shared_page, self.out)}">Open its stepper</a>.</p>')

    def growth(self):
        T = self.cfg["growth_len"]
        with self.bar("graph growth", 2 * T + 3) as bar:
            rows = growth.measure(T, progress=lambda name, t: bar.update(1))
            result = {"rnn": rows["rnn"], "transformer": rows["transformer"],
                      "exponents": {k: growth.fit(rows[k]) for k in ("rnn", "transformer")}}
            growth.plot(result, [self.path("growth.png"), self.path("growth.svg")])
            bar.update(1)
            renders = []
            for kind in ("rnn", "transformer"):
                R = self.cfg["render_len"]
                renders.append(os.path.basename(growth.render_small(kind, R, self.path(f"{kind}_T{R}"),
                                                                    renderer=self.renderer)[0]))
                bar.update(1)
        k = result["exponents"]
        table = _table(("T", "RNN edges", "RNN depth", "Transformer edges", "attention edges", "per-position edges",
                        "depth"),
                       [(r["T"], r["edges"], r["depth"], s["edges"], s["attention_edges"], s["position_edges"],
                         s["depth"]) for r, s in zip(rows["rnn"], rows["transformer"])
                        if r["T"] in (1, 2, 4, 8) or r["T"] % 16 == 0 or r["T"] == T])
        self.add("4. Graph growth: the RNN-LM grows linearly, attention quadratically",
                 f"<p>Unrolled graphs for T = 1..{T}. Attention adds a fixed number of edges per (query, visible "
                 "key) pair: exactly quadratic; everything else is a fixed number per position: linear. "
                 f"Fitted exponents (edges): RNN T^{k['rnn']['edges']:.2f}, transformer "
                 f"T^{k['transformer']['edges']:.2f}, whose local slope tends to 2 as T grows. Models: GPT "
                 f"{growth.sizes('transformer')}; RNN {growth.sizes('rnn')}; the T=4 renders use GPT "
                 f"{growth.sizes('transformer', rendered=True)} and RNN {growth.sizes('rnn', rendered=True)} "
                 "so that they can be read.</p>",
                 _img("growth.png"), table, *(self.view(r) for r in renders))

    def gpt(self):
        seconds = self.cfg["gpt_seconds"]
        docs, desc = default_corpus(max_chars=self.cfg["gpt_chars"])
        tok = CharTokenizer.train("".join(docs))
        train, val = prepare_data(docs, tok)
        model = GPT(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64, pad_id=tok.pad_id)
        trainer = Trainer(model, tok, train, val, steps=100_000, batch_size=16, lr=3e-3, warmup=20,
                          eval_every=50, eval_batches=4)
        with self.bar("tiny GPT (training)", int(seconds)) as bar:
            t0, done = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                trainer.fit(steps=trainer.step + 10, progress=False)
                now = min(int(time.perf_counter() - t0), int(seconds))
                bar.update(now - done)
                done = now
            val_loss = trainer.evaluate()
        _loss_plot(trainer.history, val_loss, self.path("gpt_loss.png"))
        grads = self.gpt_health(trainer)
        prompt = tok.encode("def ")
        greedy = tok.decode(prompt + generate(model, prompt, 200, greedy=True))
        sampled = tok.decode(prompt + generate(model, prompt, 200, temperature=1.0, top_k=None, seed=0))
        self.add("5. A tiny GPT, trained for about a minute",
                 f"<p>{html.escape(desc)}; GPT with {model.num_parameters():,} parameters (2 layers, 4 heads, "
                 f"width 64, context 64), {trainer.step} steps of AdamW in {trainer.elapsed:.0f} s; validation "
                 f"loss {val_loss:.3f} nats per character (uniform guessing: {np.log(tok.vocab_size):.3f}).</p>",
                 _img("gpt_loss.png"), grads,
                 "<h3>Greedy decoding (the most likely token each step: a heuristic)</h3>",
                 f"<pre>{html.escape(greedy)}</pre>",
                 "<h3>Ancestral sampling (temperature 1, no top-k: each token drawn from the model's "
                 "distribution)</h3>", f"<pre>{html.escape(sampled)}</pre>")
        return trainer

    def gpt_health(self, trainer):
        """The trained GPT's loss graph on one validation batch, coloured by gradient norm, one box per block
        (viz/health.py); returns the figure's HTML."""
        idx, targets, mask = trainer.val_batches[0]
        y = health.program_gradients(trainer.model.programs(("loss",) + idx.shape),
                                     {"idx": idx, "targets": targets, "key_mask": mask})
        title = (f"tiny GPT after {trainer.step} steps: gradient norm per node, one box per block (the norm of "
                 "all its nodes' gradients), on one validation batch")
        svg = self.draw(to_dot(y, color_by="grad", collapse=2, title=title), "gpt_grad_health")
        return ("<p>Where the gradient is: the same graph coloured by each node's gradient norm (log scale; "
                "<code>graphdiff render NAME --color-by grad</code>, or <code>to_dot(y, color_by=\"grad\")</code>)."
                "</p>" + self.view(svg))

    def backward_graphs(self):
        """The forward and backward graphs drawn together (g.gradients), Version A beside Version B."""
        pairs = []
        with self.bar("backward graphs", 4) as bar:
            for name in ("scalar", "shared"):
                pairs.append(backward_pair(name, self.draw, self.read))
                bar.update(2)
        self.add("3. The forward and backward graphs",
                 "<p>The backward pass built as more nodes of the same graph (<code>g.gradients(y, params, "
                 "variant)</code>, under the scope <code>grad</code>, pink): the same two loops as the numeric "
                 "backward, run with graphdiff's ops. Each pink node says whose adjoint it is "
                 "(<code>g_a</code> is dL/da; <code>g_L = 1</code> the seed) or which edge's contribution it "
                 "is (<code>h4 &#8594; a (input 0)</code>: the VJP of h4 for its input 0, a), with its value; "
                 "each adjoint sits in the same column as its node, mirroring the forward graph. Dashed edges "
                 "carry a forward value that a VJP reads. Purple outlines mark where an adjoint's sum happens: "
                 "Version A (children) gives each node one <i>add_n</i> over its children's contributions; "
                 "Version B (parents) a chain of <i>add</i>s in push order: see <code>a</code>, used four "
                 "times in the second graph. Both versions at one scale (zoom one, the other follows).</p>",
                 *pairs)

    def build(self, stages=None):
        """Run the stages, write index.html; returns its path."""
        for name in stages or ("scalar", "mlp", "backward_graphs", "growth", "gpt"):
            t0 = time.perf_counter()
            getattr(self, name)()
            self.timings[name] = round(time.perf_counter() - t0, 2)
        page = self.path("index.html")
        with open(page, "w", encoding="utf-8") as f:
            f.write(_page(self.sections, self.timings))
        return page


def backward_pair(name, draw, read):
    """Version A and Version B of gallery graph `name`, forward and backward graphs together, drawn in one
    direction with draw(dot, file stem) (which returns the SVG's file name, read(file) its text), shown in two
    viewers of one scale, each with a line saying where its sums happen. Returns the HTML."""
    views, rankdir = [], None
    for v in VARIANTS:
        g, y = gallery.build(name)
        nodes = backward_graph(g, y, v)
        dot = to_dot(nodes, legend=True, rankdir=rankdir, title=f"{name}: {ABOUT[v]}")
        rankdir = rankdir or dot.graph_attr["rankdir"]
        svg = draw(dot, f"{name}-backward-{v}")
        views.append((v, read(svg), sums_text(select(nodes)[0], v), svg))
    return pair_html(f"{name}-backward", views)


def _rel(path, folder):
    return os.path.relpath(path, folder).replace(os.sep, "/")


def _img(src):
    return f'<figure><a href="{html.escape(src)}"><img src="{html.escape(src)}" alt="{html.escape(src)}"></a></figure>'


def _table(head, rows):
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="report"><tr>{th}</tr>{body}</table>'


def _loss_plot(history, val_loss, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot([e["step"] for e in history], [e["loss"] for e in history], lw=1, color="#1f77b4", label="training loss")
    evals = [e for e in history if "val_loss" in e]
    if evals:
        ax.plot([e["step"] for e in evals], [e["val_loss"] for e in evals], "o-", color="#d62728",
                label="validation loss")
    ax.set(xlabel="step", ylabel="cross-entropy (nats per character)",
           title=f"tiny GPT: final validation loss {val_loss:.3f}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _page(sections, timings):
    body = "".join(f'<section><h2>{html.escape(t)}</h2>{content}</section>' for t, content in sections)
    return fill(asset("tour.html"), STYLE=style(asset("tour.css")) + viewer_style() + font_style(), BODY=body,
                TIMINGS=html.escape(json.dumps(timings)), SCRIPT=viewer_script())


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true", help="a smaller tour in seconds (tests use it)")
    parser.add_argument("--renderer", default="auto", help="auto (system dot, else graphviz-pure), dot, "
                        "graphviz-pure, or a program path")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (default: bars on a terminal)")


def run(args):
    """Build the tour into args.out; print where the page is."""
    if not check_out_folder(args.out, "demo"):
        return 2
    t0 = time.perf_counter()
    try:
        page = Tour(args.out, quick=args.quick, renderer=args.renderer,
                    progress=not args.no_progress and sys.stderr.isatty()).build()
    except RenderError as e:
        print(f"graphdiff demo: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        return write_failed("demo", args.out, e)
    print(f"built the tour in {time.perf_counter() - t0:.0f} s: open {os.path.abspath(page)}")
    return 0
