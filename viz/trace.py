"""The two backward variants side by side: counts from trace events, one diagram per step, a stepper page.

Everything here comes from `g.backward(y, variant=..., trace=events)`: Final(node) when an adjoint is
complete, Contribution(child, slot, parent, first) for each VJP call (first: the parent's adjoint was
written rather than added to), Freed(node) when an adjoint is released. An adjoint is live from its first
contribution (or, for y, from its seed) until it is freed; the peak of that set is what the variants differ in.
"""
import html
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import graphdiff as gd
from graphdiff.errors import GraphError

from .dot import SMALL, Cell, _array_text, _number, escape, font_style, pipe, select, strip_font, text_width, to_dot

VARIANTS = tuple(gd.VARIANTS)
ABOUT = {"children": "Version A (children): each node pulls and sums the contributions of its children",
         "parents": "Version B (parents): each node pushes += into the adjoints of its inputs"}
CURRENT, FINAL, LIVE, FLOW, DONE = "#d62728", "#2ca02c", "#1f77b4", "#d62728", "#9ecae1"


def _check(graph, y, variant=None):
    if not isinstance(graph, gd.Graph) or not isinstance(y, gd.Node):
        raise TypeError(f"expected (gd.Graph, gd.Node), got ({type(graph).__name__}, {type(y).__name__})")
    if y.index >= len(graph.nodes) or graph.nodes[y.index] is not y:
        raise GraphError(f"'{y.name}' is not a node of this graph; pass the graph it was built in")
    if y.value is None:
        raise GraphError(f"'{y.name}' has no value; run g.forward(feeds, outputs=y) first")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {VARIANTS}")


def nbytes(node):
    return node.size * np.dtype(node.dtype).itemsize


def events_of(graph, y, variant, wrt=None):
    """The trace events of one backward pass (run without retain_grads, so adjoints are freed)."""
    events = []
    graph.backward(y, variant=variant, trace=events, wrt=wrt)
    return events


def count(events):
    """VJP calls, adjoint writes and additions, and the peak number and bytes of live adjoints.

    Args:
        events: a backward trace (Final, Contribution, Freed events in order).
    Returns:
        dict with vjp_calls, adjoint_writes, adjoint_additions, peak_live_adjoints, peak_live_bytes.
    """
    calls = writes = adds = peak = peak_bytes = live_bytes = 0
    live = {}
    for e in events:
        if e.kind == "contribution":
            calls += 1
            if e.first:
                writes += 1
                if e.parent.index not in live:
                    live[e.parent.index] = nbytes(e.parent)
                    live_bytes += live[e.parent.index]
            else:
                adds += 1
        elif e.kind == "final":
            if e.node.index not in live:           # y: its seed is its adjoint
                live[e.node.index] = nbytes(e.node)
                live_bytes += live[e.node.index]
        elif e.kind == "freed":
            live_bytes -= live.pop(e.node.index, 0)
        peak = max(peak, len(live))
        peak_bytes = max(peak_bytes, live_bytes)
    return {"vjp_calls": calls, "adjoint_writes": writes, "adjoint_additions": adds,
            "peak_live_adjoints": peak, "peak_live_bytes": peak_bytes}


# --- the report ------------------------------------------------------------------------------------------
@dataclass
class VariantStats:
    """What one backward variant did on one graph."""
    variant: str
    grads_equal: bool
    tolerance: float                  # |difference| allowed: the dtype's (1e-5 f32, 1e-12 f64) x max(1, |grad|)
    max_abs_diff: float
    vjp_calls: int
    adjoint_writes: int
    adjoint_additions: int
    peak_live_adjoints: int
    peak_live_bytes: int
    median_seconds: float


ROWS = (("gradients equal", lambda s: f"{'yes' if s.grads_equal else 'NO'} (tol {s.tolerance:.1g})"),
        ("max |grad diff|", lambda s: f"{s.max_abs_diff:.3g}"),
        ("VJP calls", lambda s: str(s.vjp_calls)),
        ("adjoint writes", lambda s: str(s.adjoint_writes)),
        ("adjoint additions (+=)", lambda s: str(s.adjoint_additions)),
        ("peak live adjoints", lambda s: str(s.peak_live_adjoints)),
        ("peak live adjoint bytes", lambda s: f"{s.peak_live_bytes:,}"),
        ("median backward time", lambda s: f"{s.median_seconds * 1e3:.3f} ms"))


@dataclass
class Comparison:
    """compare_variants' result: one VariantStats per variant; print it, or save it as JSON."""
    output: str
    nodes: int
    reference: str
    repeats: int
    variants: list = field(default_factory=list)

    def __getitem__(self, variant):
        for s in self.variants:
            if s.variant == variant:
                return s
        raise KeyError(f"no variant {variant!r} in this report; it has {[s.variant for s in self.variants]}")

    def to_dict(self):
        return asdict(self)

    def to_json(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent)

    def rows(self):
        """[(metric, value per variant...)] in display order."""
        return [(name, *(fmt(s) for s in self.variants)) for name, fmt in ROWS]

    def table(self):
        """The report as a plain-text table, one column per variant."""
        head = ("", *(s.variant for s in self.variants))
        rows = [head] + self.rows()
        widths = [max(len(r[k]) for r in rows) for k in range(len(head))]
        lines = [f"backward variants on '{self.output}' ({self.nodes} nodes; times: median of {self.repeats})"]
        for k, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    __str__ = table

    def html(self):
        """The report as an HTML table."""
        head = "".join(f"<th>{html.escape(s.variant)}</th>" for s in self.variants)
        body = "".join("<tr><th>" + html.escape(r[0]) + "</th>" + "".join(f"<td>{html.escape(c)}</td>" for c in r[1:])
                       + "</tr>" for r in self.rows())
        return f'<table class="report"><tr><th></th>{head}</tr>{body}</table>'


def _tolerance(dtype):
    return 1e-5 if dtype == "float32" else 1e-12


def compare_variants(graph, y, variants=VARIANTS, repeats=5, wrt=None):
    """Run each backward variant on y and report what it did.

    Args:
        graph: a gd.Graph whose forward pass has run.  y: a scalar node of it.
        variants: which variants, the first is the reference the gradients are compared to.
        repeats: timed runs per variant (the median is reported; times are never asserted).
        wrt: nodes to differentiate with respect to (default: params and requires_grad inputs).
    Returns:
        Comparison: gradients equal and max |difference| to the reference, VJP calls, adjoint writes and
        additions, peak live adjoints and their bytes, median wall time; print it or call .to_json().
    """
    _check(graph, y)
    for v in variants:
        _check(graph, y, v)
    report = Comparison(output=y.name, nodes=len(graph.nodes), reference=variants[0], repeats=repeats)
    ref = None
    for v in variants:
        events = []
        grads = graph.backward(y, variant=v, trace=events, wrt=wrt)
        host = {n.name: np.asarray(gd.to_numpy(g), dtype=np.float64) for n, g in grads.items()}
        ref = host if ref is None else ref
        diff, equal, tol = 0.0, True, _tolerance(y.dtype)
        for name, a in ref.items():
            b = host[name]
            if b.size:
                diff = max(diff, float(np.max(np.abs(a - b))))
                allowed = _tolerance(y.dtype) * max(1.0, float(np.max(np.abs(a))))
                tol = max(tol, allowed)
                equal = equal and bool(np.all(np.abs(a - b) <= allowed))
        times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            graph.backward(y, variant=v, wrt=wrt)
            times.append(time.perf_counter() - t0)
        report.variants.append(VariantStats(variant=v, grads_equal=equal, tolerance=tol, max_abs_diff=diff,
                                            median_seconds=statistics.median(times), **count(events)))
    return report


# --- one diagram per step ----------------------------------------------------------------------------------
@dataclass
class Frame:
    """One step of a backward pass: the node whose adjoint became final and the contributions that flowed.

    Attributes:
        variant, step (0-based), steps (how many), node (the gd.Node made final), events (this step's),
        caption (one sentence), live (adjoints live after the step), dot (a graphviz.Digraph).
    """
    variant: str
    step: int
    steps: int
    node: object
    events: list
    caption: str
    live: int
    dot: object


def split_steps(events, variant):
    """Group a trace into steps, one per Final event.

    children: the contributions a node pulls (and the frees they allow) come before its Final;
    parents: a node's Final comes first, then the contributions it pushes, then its Freed.
    """
    steps, cur = [], []
    if variant == "parents":
        for e in events:
            if e.kind == "final" and cur:
                steps.append(cur)
                cur = []
            cur.append(e)
        if cur:
            steps.append(cur)
        return steps
    closing = None
    for e in events:
        if closing is not None and not (e.kind == "freed" and e.node is closing):
            steps.append(cur)
            cur, closing = [], None
        cur.append(e)
        if e.kind == "final":
            closing = e.node
    if cur:
        steps.append(cur)
    return steps


class _State:
    """Adjoint states while replaying a trace: received contributions, final, live, freed."""

    def __init__(self, events):
        self.expected, self.received = {}, {}
        self.final, self.freed, self.live = set(), set(), set()
        self.active = set()
        for e in events:
            if e.kind == "contribution":
                self.expected[e.parent.index] = self.expected.get(e.parent.index, 0) + 1
                self.active.update((e.child.index, e.parent.index))
            else:
                self.active.add(e.node.index)

    def apply(self, e):
        if e.kind == "contribution":
            k = e.parent.index
            self.received[k] = self.received.get(k, 0) + 1
            self.live.add(k)
        elif e.kind == "final":
            self.final.add(e.node.index)
            self.live.add(e.node.index)
        else:
            self.freed.add(e.node.index)
            self.live.discard(e.node.index)


def _adjoint_row(n, state, grads, current):
    """The label row saying where this node's adjoint is, in a cell of fixed size so that every frame
    (and both variants) get the same layout."""
    k = n.index
    if k not in state.active:
        text = '<FONT COLOR="#999999">no gradient path</FONT>'
    elif k in state.final:
        val = _grad_text(grads.get(k))
        word = "final, freed" if k in state.freed else "final"
        color = CURRENT if current else FINAL
        text = f'<FONT COLOR="{color}">adjoint {word}{escape(val)}</FONT>'
    elif state.received.get(k, 0):
        got, want = state.received[k], state.expected.get(k, 0)
        text = f'<FONT COLOR="{LIVE}">adjoint partial: {got} of {want} in</FONT>'
    else:
        text = '<FONT COLOR="#999999">adjoint &#8212;</FONT>'
    want = state.expected.get(k, 0)
    widest = max(text_width("adjoint final, freed" + _grad_text(grads.get(k))),
                 text_width(f"adjoint partial: {want} of {want} in"), text_width("no gradient path"))
    # the system dot measures through pango, which came out up to 16% wider than the font's advance widths
    # (Chromium's measure of the embedded font); it centres its measure in the cell, so the cell leaves room
    return Cell(text, f'FIXEDSIZE="TRUE" WIDTH="{int(widest * 1.2) + 6}" HEIGHT="15"')


def _grad_text(g):
    return "" if g is None else " = " + (_number(g) if g.ndim == 0 else _array_text(g))


def _caption(variant, k, steps, step_events, state):
    node = next(e.node for e in step_events if e.kind == "final")
    flows = [e for e in step_events if e.kind == "contribution"]
    freed = [e.node.name for e in step_events if e.kind == "freed"]
    if variant == "children":
        what = (f"'{node.name}' pulls {len(flows)} contribution{'s' * (len(flows) != 1)} from its children "
                f"({', '.join(repr(e.child.name) for e in flows)}) and sums them" if flows
                else f"'{node.name}' is the output: its adjoint is the seed (1)")
    else:
        what = (f"'{node.name}' is final and pushes into " +
                ", ".join(f"'{e.parent.name}' ({'=' if e.first else '+='})" for e in flows)
                if flows else f"'{node.name}' is final and has no inputs to push into")
    tail = f"; freed: {', '.join(repr(f) for f in freed)}" if freed else ""
    return f"step {k + 1}/{steps}: {what}{tail}; live adjoints: {len(state.live)}"


def trace_frames(graph, y, variant, *, fields=("name", "op", "shape", "value"), small=SMALL, captions=True,
                 **options):
    """One diagram per backward step of `variant` on y.

    Each frame marks the node whose adjoint becomes final (red border), earlier final adjoints (green),
    partial sums (blue), and draws this step's contributions as red edges pointing the way the gradient
    flows, labelled `=` where an adjoint is written and `+=` where a parent accumulates.

    Args:
        graph: a gd.Graph whose forward pass has run.  y: a scalar node.  variant: "children" or "parents".
        captions: write the variant and the step's caption at the top of each diagram.
        fields, small, options: passed on to to_dot (rankdir=..., clusters=..., max_nodes=...).
    Returns:
        list of Frame.
    """
    _check(graph, y, variant)
    events = events_of(graph, y, variant)
    graph.backward(y, variant=variant, retain_grads=True)       # the adjoint values, to show when final
    grads = {}
    for e in events:
        n = e.node if e.kind != "contribution" else e.parent
        if n.grad is not None and n.size <= small:
            grads[n.index] = np.asarray(gd.to_numpy(n.grad))
    graph.backward(y, variant=variant)                           # leave only the usual .grad behind
    nodes = select(y)[0]
    state = _State(events)
    steps = split_steps(events, variant)
    done = set()
    frames = []
    options.setdefault("max_nodes", None)
    for k, step_events in enumerate(steps):
        for e in step_events:
            state.apply(e)
        current = next(e.node for e in step_events if e.kind == "final")
        flows = [e for e in step_events if e.kind == "contribution"]
        extra = {n.name: [_adjoint_row(n, state, grads, n is current)] for n in nodes}
        style = {n.name: _node_style(n, state, current) for n in nodes}
        edges = {(e.parent.name, e.child.name, e.slot): {"color": DONE, "penwidth": "1.5"} for e in done}
        for e in flows:                 # the gradient flows child -> parent: arrowhead at the parent
            edges[(e.parent.name, e.child.name, e.slot)] = {
                "color": FLOW, "penwidth": "2.5", "dir": "back", "labelfontcolor": FLOW, "labelfontsize": "16",
                "taillabel": "<<B>" + ("=" if e.first else "+=") + "</B>>", "labeldistance": "2.2",
                "labelangle": "-35"}
        done.update(flows)
        caption = _caption(variant, k, len(steps), step_events, state)
        dot = to_dot(y, fields=fields, small=small, node_extra=extra, node_style=style, edge_style=edges,
                     title=f"{ABOUT[variant]}\n{caption}" if captions else None, **options)
        frames.append(Frame(variant, k, len(steps), current, step_events, caption, len(state.live), dot))
    return frames


def _node_style(n, state, current):
    k = n.index
    if n is current:
        return {"color": CURRENT, "penwidth": "3.5"}
    if k not in state.active:
        return {"style": "rounded,filled,dashed", "color": "#aaaaaa", "fontcolor": "#888888"}
    if k in state.final:
        return {"color": FINAL, "penwidth": "2.5"}
    if k in state.live:
        return {"color": LIVE, "penwidth": "2.5", "style": "rounded,filled,dashed"}
    return {}


# --- the stepper page --------------------------------------------------------------------------------------
def render_trace(graph, y, out_dir, *, variants=VARIANTS, renderer="auto", repeats=5, title=None,
                 backward_graphs=None, **options):
    """Write each variant's frames as SVG plus one self-contained HTML page stepping through them side by side.

    Args:
        graph: a gd.Graph whose forward pass has run.  y: a scalar node.
        out_dir: folder to write into: <variant>/step_001.svg ..., report.json and trace.html.
        variants: the variants shown side by side.  renderer: see viz.dot.find_renderer.
        repeats: timed runs per variant for the report.  title: the page heading.
        backward_graphs: {variant: Diagram} of each variant's backward graph (viz.dot.backward_graph), shown
            under the stepper and written as <variant>/backward.svg.
        options: to_dot options for the frames (rankdir=..., clusters=...).
    Returns:
        the path of the HTML page (str). Prev/Next buttons and the arrow keys (Home/End) move the step.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = compare_variants(graph, y, variants=variants, repeats=repeats)
    # build everything in a temporary folder beside out_dir and move it into place at the end, so a failure
    # leaves the previous output (or none), never a half-written one
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".tmp-{out.name}-"))
    try:
        _write(tmp / "report.json", report.to_json())
        data = {"variants": []}
        for v in variants:
            frames = trace_frames(graph, y, v, captions=False, **options)
            folder = tmp / v
            folder.mkdir()
            shown = []
            for f in frames:
                svg = pipe(f.dot.source, "svg", renderer).decode("utf-8")
                _write(folder / f"step_{f.step + 1:03d}.svg", svg)
                # the page embeds the font once, not once per frame
                shown.append({"caption": f.caption, "svg": _inline_svg(strip_font(svg)),
                              "active": f.dot.ids[f.node.name]})
            entry = {"name": v, "about": ABOUT[v], "frames": shown}
            if backward_graphs and v in backward_graphs:
                svg = pipe(backward_graphs[v].source, "svg", renderer).decode("utf-8")
                _write(folder / "backward.svg", svg)
                entry["backward"] = _inline_svg(strip_font(svg))
            data["variants"].append(entry)
        _write(tmp / "trace.html", _page(title or f"Backward step by step: '{y.name}'", data, report))
        os.chmod(tmp, 0o777 & ~_umask())              # mkdtemp makes 0700; a plain mkdir follows the umask
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".tmp-{out.name}-old-"))
            out.rename(old / out.name)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(out / "trace.html")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write(path, text):
    """Write text as UTF-8; any str will do: characters UTF-8 cannot hold (a lone surrogate in a node
    name) are written as their backslash escape instead of failing half-way through the output."""
    path.write_bytes(text.encode("utf-8", "backslashreplace"))


def _inline_svg(svg):
    """SVG text fit for innerHTML: no XML prolog or DOCTYPE."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


def _page(title, data, report):
    backward = ""
    if any("backward" in v for v in data["variants"]):
        backward = ('<h2>Each variant\'s backward graph (g.gradients)</h2><p class="explain">The backward pass '
                    "built as nodes of the same graph (yellow), run by the same loops with graphdiff's ops in place "
                    "of arrays: Version A gives each node one <i>add_n</i> over its children's contributions, "
                    "Version B a chain of <i>add</i>s in push order. Dashed edges carry a forward value that a "
                    'VJP reads.</p><div class="panes">' + "".join(
                        f'<section class="pane"><h2>{html.escape(v["about"])}</h2><div class="backward">'
                        f'{v.get("backward", "")}</div></section>' for v in data["variants"]) + "</div>")
    # the backward graphs are in the page once, not in the script's data
    data = {**data, "variants": [{k: x for k, x in v.items() if k != "backward"} for v in data["variants"]]}
    payload = json.dumps(data).replace("</", "<\\/")       # no "</script>" inside the script
    return (PAGE.replace("@TITLE@", html.escape(title)).replace("@REPORT@", report.html() + backward)
            .replace("@FONT@", font_style()).replace("@LEGEND@", LEGEND)
            .replace("@PANES@", "".join(_pane(v) for v in data["variants"])).replace("@DATA@", payload))


def _pane(v):
    name = html.escape(v["name"])
    return (f'<section class="pane" id="pane-{name}"><h2>{html.escape(v["about"])}</h2>'
            f'<p class="caption"></p><div class="svg"></div></section>')


LEGEND = f"""<div class="legend">
  <span><i class="box" style="border:3px solid {CURRENT}"></i>this step's node: its adjoint becomes final</span>
  <span><i class="box" style="border:2.5px solid {FINAL}"></i>adjoint final</span>
  <span><i class="box" style="border:2.5px dashed {LIVE}"></i>adjoint partial (live, still summing)</span>
  <span><i class="box" style="border:1.5px dashed #aaaaaa"></i>no gradient path to it</span>
  <span><i class="line" style="background:{FLOW}"></i>this step's contributions (arrow: the way the gradient
    flows; <b>=</b> writes an adjoint, <b>+=</b> adds to one)</span>
  <span><i class="line" style="background:{DONE}"></i>earlier contributions</span>
</div>
<p class="explain"><b>Partial adjoints.</b> A node's adjoint is the sum of one contribution per edge to a
node that uses it (its children). "adjoint partial: k of n in" means k of those n contributions have arrived
and the sum is not finished: the value is not yet the gradient and must not be used. It becomes final when
the n-th arrives. In Version A (children) a node pulls all n at once when its turn comes, so its adjoint goes
from nothing to final in one step; in Version B (parents) each child pushes its contribution when the
child's own turn comes, so the parent's adjoint is born with the first (<b>=</b>), grows with each
<b>+=</b>, and stays live and partial until the pass reaches the node itself (even "1 of 1 in": every
contribution is in, but only the node's own turn declares it final).</p>"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@TITLE@</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; margin: 0 16px 24px;
         color: #222; }
  h1 { font-size: 20px; margin: 12px 0 4px; }
  .bar { position: sticky; top: 0; z-index: 2; background: #fff; display: flex; gap: 8px; align-items: center;
         padding: 8px 0; border-bottom: 1px solid #ddd; }
  .bar button { font-size: 15px; padding: 4px 12px; border: 1px solid #888; border-radius: 6px; background: #f4f4f4;
                cursor: pointer; }
  .bar button:disabled { color: #aaa; border-color: #ccc; cursor: default; }
  #counter { font-weight: 600; min-width: 8em; text-align: center; }
  .hint { color: #777; font-size: 13px; }
  .panes { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; margin-top: 12px; }
  .pane { border: 1px solid #ddd; border-radius: 8px; padding: 8px 12px; min-width: 0; }
  .pane h2 { font-size: 15px; margin: 4px 0; }
  .caption { font-size: 13px; min-height: 3.2em; margin: 4px 0 8px; color: #333; }
  .svg { max-height: 75vh; overflow: auto; }
  .svg svg, .backward svg { max-width: 100%; height: auto; }
  .legend { display: flex; flex-wrap: wrap; gap: 6px 18px; font-size: 13px; margin: 10px 0 4px; }
  .legend span { display: inline-flex; align-items: center; gap: 6px; }
  .legend .box { display: inline-block; width: 22px; height: 12px; border-radius: 3px; background: #e6e6e6; }
  .legend .line { display: inline-block; width: 26px; height: 3px; }
  .explain { font-size: 13px; color: #333; max-width: 70em; margin: 4px 0 0; }
  table.report { border-collapse: collapse; margin-top: 8px; font-size: 14px; }
  table.report th, table.report td { border: 1px solid #ddd; padding: 3px 10px; }
  table.report td { text-align: right; font-variant-numeric: tabular-nums; }
  table.report th { text-align: left; background: #fafafa; }
</style>
@FONT@
</head>
<body>
<h1>@TITLE@</h1>
<div class="bar">
  <button id="first" title="first step (Home)">First</button>
  <button id="prev" title="previous step (&#8592;)">&#9664; Prev</button>
  <span id="counter">step 1 / 1</span>
  <button id="next" title="next step (&#8594;)">Next &#9654;</button>
  <button id="last" title="last step (End)">Last</button>
  <span class="hint">keys: &#8592; &#8594; Home End</span>
</div>
@LEGEND@
<div class="panes">@PANES@</div>
<h2>Report</h2>
@REPORT@
<script>
"use strict";
const DATA = @DATA@;
const N = Math.max(1, ...DATA.variants.map(v => v.frames.length));
let step = 0;
function show(k) {
  step = Math.max(0, Math.min(N - 1, k));
  for (const v of DATA.variants) {
    const pane = document.getElementById("pane-" + v.name);
    const f = v.frames[Math.min(step, v.frames.length - 1)];
    if (!f) continue;
    const box = pane.querySelector(".svg");
    const top = box.scrollTop, left = box.scrollLeft;
    box.innerHTML = f.svg;
    box.scrollTop = top; box.scrollLeft = left;
    pane.querySelector(".caption").textContent = f.caption;
    // the active node: found by its DOT id (each node's <title>), scrolled into view inside its pane
    const active = [...box.querySelectorAll("g.node")].find(g => g.querySelector("title").textContent === f.active);
    if (active) {
      active.classList.add("active");
      const a = active.getBoundingClientRect(), b = box.getBoundingClientRect();
      if (a.top < b.top || a.bottom > b.bottom) box.scrollTop += (a.top + a.bottom) / 2 - (b.top + b.bottom) / 2;
      if (a.left < b.left || a.right > b.right) box.scrollLeft += (a.left + a.right) / 2 - (b.left + b.right) / 2;
    }
  }
  document.getElementById("counter").textContent = "step " + (step + 1) + " / " + N;
  document.getElementById("prev").disabled = document.getElementById("first").disabled = step === 0;
  document.getElementById("next").disabled = document.getElementById("last").disabled = step === N - 1;
  document.body.dataset.step = String(step + 1);
}
// both panes draw the same graph with the same layout: scrolling one scrolls the other to the same place
for (const box of document.querySelectorAll(".pane .svg")) {
  box.addEventListener("scroll", () => {
    for (const other of document.querySelectorAll(".pane .svg")) {
      if (other !== box && (other.scrollTop !== box.scrollTop || other.scrollLeft !== box.scrollLeft)) {
        other.scrollTop = box.scrollTop; other.scrollLeft = box.scrollLeft;
      }
    }
  });
}
document.getElementById("first").addEventListener("click", () => show(0));
document.getElementById("prev").addEventListener("click", () => show(step - 1));
document.getElementById("next").addEventListener("click", () => show(step + 1));
document.getElementById("last").addEventListener("click", () => show(N - 1));
document.addEventListener("keydown", e => {
  const to = {ArrowRight: step + 1, ArrowLeft: step - 1, Home: 0, End: N - 1}[e.key];
  if (to !== undefined) { e.preventDefault(); show(to); }
});
show(0);
</script>
</body>
</html>
"""
