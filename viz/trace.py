"""The backward pass step by step: one diagram per step of a variant, and the stepper page that shows both
variants side by side (Prev/Next, arrow keys), with the report (report.py) under it.

Frames replay the trace events of `g.backward(y, variant=..., trace=events)` (see report.py). The page's
HTML, CSS and script are files in viz/assets/ (stepper.html, stepper.css, stepper.js); render_trace fills the
HTML, inlines the rest, and writes one self-contained page.
"""
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import graphdiff as gd

from .dot import to_dot
from .font import font_style, strip_font, text_width
from .graphs import select
from .labels import SMALL, Cell, array_text, escape, number
from .output import replaced_whole, write_text
from .page import asset, fill, inline_svg, script, style, viewer, viewer_style
from .renderer import pipe
from .report import ABOUT, VARIANTS, check_output, compare_variants

# the stepper's colours: the DOT frames use them, and the page's legend gets them as CSS variables
CURRENT, FINAL, LIVE, FLOW, DONE = "#d62728", "#2ca02c", "#1f77b4", "#d62728", "#9ecae1"


def events_of(graph, y, variant, wrt=None):
    """The trace events of one backward pass (run without retain_grads, so adjoints are freed)."""
    events = []
    graph.backward(y, variant=variant, trace=events, wrt=wrt)
    return events


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
    return "" if g is None else " = " + (number(g) if g.ndim == 0 else array_text(g))


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
    check_output(graph, y, variant)
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
        variants: the variants shown side by side.  renderer: see viz.renderer.find_renderer.
        repeats: timed runs per variant for the report.  title: the page heading.
        backward_graphs: {variant: Diagram} of each variant's backward graph (viz.graphs.backward_graph), or
            {variant: (Diagram, a line saying where its sums happen)}, shown under the stepper at one scale
            and written as <variant>/backward.svg.
        options: to_dot options for the frames (rankdir=..., clusters=...).
    Returns:
        the path of the HTML page (str). Prev/Next buttons and the arrow keys (Home/End) move the step.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = compare_variants(graph, y, variants=variants, repeats=repeats)
    # built in a temporary folder beside out_dir and moved into place at the end, so a failure leaves the
    # previous output (or none), never a half-written one
    with replaced_whole(out) as tmp:
        write_text(tmp / "report.json", report.to_json())
        data = {"variants": []}
        for v in variants:
            frames = trace_frames(graph, y, v, captions=False, **options)
            folder = tmp / v
            folder.mkdir()
            shown = []
            for f in frames:
                svg = pipe(f.dot.source, "svg", renderer).decode("utf-8")
                write_text(folder / f"step_{f.step + 1:03d}.svg", svg)
                # the page embeds the font once, not once per frame
                shown.append({"caption": f.caption, "svg": inline_svg(strip_font(svg)),
                              "active": f.dot.ids[f.node.name]})
            entry = {"name": v, "about": ABOUT[v], "frames": shown}
            if backward_graphs and v in backward_graphs:
                drawn, sums = (backward_graphs[v] if isinstance(backward_graphs[v], tuple)
                               else (backward_graphs[v], ""))
                svg = pipe(drawn.source, "svg", renderer).decode("utf-8")
                write_text(folder / "backward.svg", svg)
                entry["backward"], entry["sums"] = svg, sums
            data["variants"].append(entry)
        write_text(tmp / "trace.html", stepper_page(title or f"Backward step by step: '{y.name}'", data, report))
    return str(out / "trace.html")


def stepper_page(title, data, report):
    """The stepper page's HTML: stepper.html filled, with stepper.css, the font, the frames (data: {"variants":
    [{name, about, frames: [{caption, svg, active}], backward (optional SVG)}]}) and stepper.js inlined."""
    backward = [v for v in data["variants"] if "backward" in v]
    panes = pair_html("backward", [(v["name"], v["backward"], v.get("sums", ""), f'{v["name"]}/backward.svg')
                                   for v in backward]) if backward else ""
    # the backward graphs are in the page once, not in the script's data
    data = {**data, "variants": [{k: x for k, x in v.items() if k not in ("backward", "sums")}
                                 for v in data["variants"]]}
    colors = (f":root {{ --current: {CURRENT}; --final: {FINAL}; --live: {LIVE}; --flow: {FLOW}; "
              f"--done: {DONE}; }}\n")
    return fill(asset("stepper.html"), TITLE=html.escape(title),
                STYLE=style(colors + asset("stepper.css")) + viewer_style(),
                FONT=font_style(), PANES="".join(_pane(v) for v in data["variants"]),
                REPORT=report.html(), BACKWARD_HIDDEN="" if backward else " hidden", BACKWARD_PANES=panes,
                SCRIPT=script(asset("panzoom.js"), f'const DATA = {json.dumps(data)};', asset("stepper.js")))


def pair_html(group, views):
    """Each variant's drawing in a viewer of one group (one scale, assets/panzoom.js) with a line saying where
    its sums happen; views: [(variant, svg text, sums line, title)]. Side by side when the drawings are
    taller than wide, else one above the other (a wide drawing stays readable at the page's width)."""
    parts, wide = [], False
    for v, svg, sums, title in views:
        w, h = svg_size(svg)
        wide = wide or w > h
        parts.append(f'<div class="variant" data-variant="{html.escape(v)}"><p class="sums"><b>'
                     f'{html.escape(ABOUT.get(v, v))}.</b> {html.escape(sums)}</p>'
                     + viewer(strip_font(svg), title, group) + "</div>")
    return f'<div class="pz-pair{" stacked" if wide else ""}">' + "".join(parts) + "</div>"


def svg_size(svg):
    """(width, height) in points that Graphviz wrote on an SVG ((1, 1) when it wrote none)."""
    m = re.search(r'<svg[^>]*?width="([\d.]+)pt"[^>]*?height="([\d.]+)pt"', svg, re.S)
    return (float(m.group(1)), float(m.group(2))) if m else (1.0, 1.0)


def _pane(v):
    name = html.escape(v["name"])
    return (f'<section class="pane" id="pane-{name}"><h2>{html.escape(v["about"])}</h2>'
            f'<p class="caption"></p>{viewer("", "frame", "frames", "svg")}</section>')
