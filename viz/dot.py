"""to_dot and render: a graphdiff graph as a Graphviz diagram people want to look at.

Conventions: params light blue, inputs orange, constants purple, ops grey, the output green; one edge per
input slot (x*x has two); one cluster per name scope. Node ids are topological indices ("n0", "n1", ...:
positions in creation order among the drawn nodes), so the same graph always gives the same DOT text.

What is drawn comes from graphs.py, each box's text from labels.py, which box a node goes in from fold.py;
this module puts them into DOT. Running a renderer on the DOT text is renderer.py's job; render() here
writes what it returns into a file (and the .gv source beside it when it fails).
"""
import os
from pathlib import Path

import graphviz
import numpy as np

import graphdiff as gd

from .fold import Folding, Repeats, ScopeError, auto_collapse, group_keys
from .graphs import is_backward, is_sum, name_list, role_of, scope_parts, select
from .health import LOG_SCALE, NO_DATA_COLOR, NONFINITE_COLOR, QUANTITIES, TITLES, Scale, first_nonfinite, \
    format_value, quantity, text_color
from .labels import FIELDS, SMALL, Notes, escape, node_label, notes_text
from .renderer import FORMATS, LAYOUT_LIMIT, RenderError, pipe

COLORS = {"param": "#b3d9ff", "input": "#ffc266", "constant": "#d9b3ff", "op": "#e6e6e6",
          "output": "#a3e4a3", "summary": "#ffffff", "backward": "#f9c4dd"}
COLORS_READ = "#b8860b"  # dashed edges: a forward value read by the backward graph
COLOR_SUM = "#7b3294"    # the border of a node where an adjoint's sum happens (add_n, or a link of the adds)
HIGHLIGHT = "#d62728"
FOLD = "#4a6fa5"         # the border of a folded run of scopes ("x k") and its edges to the next copy
CLUSTERS = ("nested", "top", "none")
MAX_NODES = 300


class Diagram(graphviz.Digraph):
    """A graphviz.Digraph that renders with the renderer renderer.find_renderer finds (so Jupyter shows it inline even
    with only graphviz-pure installed), and remembers which DOT id each node got.

    Attributes:
        ids: {node name: DOT id} (a folded node gets its drawn copy's id).  collapsed: a sentence saying what
        was collapsed, or None.  folds: {drawn scope: [the scopes it stands for]} (fold=True).
    """

    ids = None
    collapsed = None
    folds = None

    def pipe(self, format=None, renderer=None, formatter=None, neato_no_op=None, quiet=False, *,
             engine=None, encoding=None):
        """The rendered bytes (str with encoding=) from the renderer find_renderer finds; graphviz's own
        renderer=/formatter=/engine= options need the system Graphviz and go to graphviz.Digraph.pipe."""
        if renderer or formatter or neato_no_op or engine:
            return super().pipe(format=format, renderer=renderer, formatter=formatter, neato_no_op=neato_no_op,
                                quiet=quiet, engine=engine, encoding=encoding)
        data = pipe(self.source, format or self.format)
        return data.decode(encoding) if encoding else data

    def render(self, filename=None, directory=None, view=False, cleanup=False, format=None, *,
               outfile=None, **options):
        """Save the DOT source (filename, default <name>.gv) and render it beside it as <file>.<format>, as
        graphviz.Digraph.render does, with the system `dot` or else graphviz-pure; returns the output path."""
        if options:
            return super().render(filename, directory=directory, view=view, cleanup=cleanup, format=format,
                                  outfile=outfile, **options)
        format = format or (Path(outfile).suffix.lstrip(".") if outfile else self.format)
        source_path = self.save(filename, directory=directory)
        out = Path(outfile) if outfile else Path(f"{source_path}.{format}")
        out.write_bytes(pipe(self.source, format))
        if cleanup:
            os.remove(source_path)
        if view:
            graphviz.view(str(out))
        return str(out)

    def _repr_svg_(self):
        return self._repr_image_svg_xml()


def _as_set(items, what):
    out = set()
    for it in items or ():
        if isinstance(it, gd.Node):
            out.add(it.name)
        elif isinstance(it, str):
            out.add(it)
        else:
            raise TypeError(f"to_dot: highlight {what} must be Nodes or names, got {it!r}")
    return out


def _split_highlight(highlight):
    """highlight= holds nodes (Node or name) and edges ((parent, child) or (parent, child, slot))."""
    nodes, edges = [], set()
    for h in name_list(highlight) or ():
        if isinstance(h, tuple):
            if len(h) not in (2, 3):
                raise ValueError(f"to_dot: highlight edge {h!r} must be (parent, child) or (parent, child, slot)")
            a, b = (x.name if isinstance(x, gd.Node) else str(x) for x in h[:2])
            edges.add((a, b, h[2] if len(h) == 3 else None))
        else:
            nodes.append(h)
    return _as_set(nodes, "nodes"), edges


def to_dot(obj, *, rankdir=None, fields=FIELDS, clusters="nested", collapse=None, highlight=None,
           legend=False, max_nodes=MAX_NODES, small=SMALL, title=None, node_extra=None, node_style=None,
           edge_style=None, color_by=None, color_log=None, fold=False, expand=None):
    """A graphdiff graph (or the subgraph a node depends on) as a graphviz.Digraph.

    Args:
        obj: a gd.Graph, or a gd.Node (drawn with everything it depends on; it is the green output).
        rankdir: "LR", "TB", "RL" or "BT"; default LR for small scalar graphs, TB otherwise.
        fields: which of "name", "op", "shape", "value", "grad" the node labels show.
        clusters: "nested" (a cluster per scope, nested), "top" (top-level scopes only) or "none".
        collapse: scopes drawn as one summary node each: a depth (1 = every top-level scope), True (= 1),
            a scope name, or a list of scope names (after folding: name the drawn copy).
        fold: draw sibling scopes that repeat one structure (block0..block3, t0..t9: same ops, shapes,
            dtypes and edges; names differing by a number) once, as a cluster labelled "x k"; edges from one
            copy to the next are drawn bold blue, back into the drawn copy.
        expand: a scope name or several, drawn in full (implies fold=True): a folded copy (or anything in
            it) splits its run, so expand="h/2" draws block 2 between the folds of the others.
        highlight: a node (Node or name), or a list of nodes and edges ((parent, child) or (parent, child,
            slot)) to draw red.
        legend: add a legend of the colours.
        max_nodes: past this many nodes (at least 1), scopes are collapsed automatically (and the diagram
            says so); None draws every node however long the layout takes.
        small: arrays with at most this many elements show their values (scalars as `data | grad`).
        title: a caption at the top.
        node_extra, node_style, edge_style: hooks for trace frames: {name: [rows]}, {name: {attr: value}},
            {(parent, child, slot): {attr: value}}.
        color_by: fill each box by a per-node quantity, with a colour bar in the legend (viz/health.py):
            "grad" (gradient norm), "value" (value norm), "nonfinite" (NaN/Inf in red, the first op that
            made one named in the title), "memory" (bytes each op's VJP reads), "time" (forward + backward
            seconds of a profiled run: runs the backward), or a dict {Node or name: number}. A collapsed
            scope gets the norm of its nodes' norms ("grad", "value") or their sum.
        color_log: log scale for the colours (default: log for every quantity but "nonfinite" and a dict).
    Returns:
        a Diagram (a graphviz.Digraph); .source is the DOT text.
    """
    nodes, outputs = select(obj)
    fields = tuple(fields)
    bad = [f for f in fields if f not in FIELDS]
    if bad:
        raise ValueError(f"to_dot: unknown fields {bad}; choose from {FIELDS}")
    if clusters not in CLUSTERS:
        raise ValueError(f"to_dot: clusters={clusters!r}; use one of {CLUSTERS}")
    if max_nodes is not None and (isinstance(max_nodes, bool) or not max_nodes >= 1):
        raise ValueError(f"to_dot: max_nodes={max_nodes!r} draws no box; give a number of boxes >= 1 "
                         f"(default {MAX_NODES}), or None to draw every node")
    caption, collapsed = [title] if title else [], None
    repeats = Repeats(nodes, expand) if fold or expand is not None else None
    every, nodes = nodes, [n for n in nodes if n.index not in repeats.alias] if repeats else nodes
    if collapse is None:
        depth = auto_collapse(nodes, max_nodes)
        if depth is not None:
            collapse = depth
            collapsed = (f"{len(nodes):,} nodes > max_nodes={max_nodes}: scopes at depth {depth} are "
                         "collapsed into summary nodes (to_dot(..., max_nodes=None) draws every node)")
    keys = group_keys(nodes, collapse, repeats)
    if repeats and repeats.expand and collapsed is None:
        _check_expand_not_collapsed(repeats.expand, set(keys.values()))
    folding = Folding(nodes, keys, max_nodes if collapse is not None else None, repeats and repeats.place,
                      repeats and repeats.by_scope)
    if repeats:
        for i, n in repeats.alias.items():
            folding.box_of[i] = folding.box_of[n.index]
    if folding.banded:
        collapsed = (f"{len(nodes):,} nodes are folded into {folding.banded} topological bands to keep the "
                     "layout finite (collapse= folds by scope; max_nodes=None draws every node)")
    caption += [collapsed] if collapsed else []
    if repeats and repeats.folds and not folding.banded:
        caption.append("\u00d7 k: k sibling scopes of one structure, drawn once; bold blue edges go to the next "
                       "copy (expand=SCOPE draws one in full)")
    hl_nodes, hl_edges = _split_highlight(highlight)
    if repeats:
        hl_nodes |= {repeats.alias[n.index].name for n in every if n.index in repeats.alias and n.name in hl_nodes}
    health = _health(obj, nodes, folding, color_by, color_log) if color_by is not None else None
    if health is not None:
        caption += health["caption"]
    dot = Diagram(name="graphdiff", format="svg", graph_attr=_graph_attrs(rankdir or _default_rankdir(nodes)),
                  node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica",
                             "fontsize": "11", "color": "#555555", "margin": "0.08,0.04"},
                  edge_attr={"color": "#666666", "arrowsize": "0.7", "fontname": "Helvetica",
                             "fontsize": "9", "fontcolor": "#666666"})
    notes = Notes()
    look = {"fields": fields, "small": small, "in_cluster": clusters != "none", "notes": notes,
            "outputs": {o.name for o in outputs}, "highlight": hl_nodes, "extra": node_extra or {},
            "style": node_style or {}, "health": health}
    attrs = {b.id: _box_attrs(b, look) for b in folding.boxes}
    folds = repeats.by_scope if repeats else {}
    _emit_boxes(dot, folding, attrs, clusters, every, folds)
    _emit_edges(dot, folding, hl_edges, edge_style or {}, *((every, repeats) if repeats else ()))
    if health is not None:
        _emit_colorbar(dot, health)
    elif legend:
        _emit_legend(dot, bool(keys), any(is_backward(n) for n in nodes))
    caption += notes_text(nodes, fields, notes)
    if caption:
        dot.attr(label="<" + "<BR/>".join(escape(c) for c in caption) + ">",
                 labelloc="t", labeljust="l", fontname="Helvetica", fontsize="12")
    dot.ids = {n.name: folding.box_of[n.index].id for n in every if n.index in folding.box_of}
    dot.collapsed = collapsed
    dot.folds = {f.scope: list(f.members) for f in folds.values()}
    return dot


def _check_expand_not_collapsed(expand, collapsed):
    """expand= and collapse= asked for the same scope: one says draw it in full, the other as one box."""
    for e in expand:
        hit = next((k for k in sorted(collapsed) if e == k or e.startswith(k + "/")), None)
        if hit is not None:
            raise ScopeError(f"to_dot: expand={e!r} is inside collapse's scope {hit!r}, drawn as one box; "
                             "collapse deeper or other scopes, or drop expand=")


def _box_attrs(u, look):
    """Graphviz attributes of one box: a node's label and colours, or a collapsed scope's summary."""
    if u.node is None:
        attrs = {"label": u.label, "fillcolor": COLORS["summary"], "shape": "box3d", "style": "filled"}
        health = look["health"]
        if health is not None:
            attrs.update(_health_look(health, u.id))
            if u.id in health["boxes"] and attrs["label"].endswith("</TABLE>>"):    # its number, one more row
                row = f"<TR><TD>{_health_row(health, u.id)}</TD></TR>"
                attrs["label"] = attrs["label"][:-len("</TABLE>>")] + row + "</TABLE>>"
        if look["highlight"] & u.names:
            attrs.update(color=HIGHLIGHT, penwidth="3")
        return attrs
    n = u.node
    health = look["health"]
    extra = list(look["extra"].get(n.name, ()))
    if health is not None and u.id in health["boxes"]:
        extra.append(_health_row(health, u.id))
    label = node_label(n, look["fields"], look["small"], look["in_cluster"], look["notes"], extra)
    if is_backward(n):      # one colour for every gradient node, the gradients asked for included
        attrs = {"label": label, "fillcolor": COLORS["backward"], "tooltip": n.name}
        if is_sum(n):
            attrs.update(color=COLOR_SUM, penwidth="2.5")
    else:
        attrs = {"label": label, "fillcolor": COLORS["output"] if n.name in look["outputs"] else COLORS[n.kind]}
    if health is not None:
        attrs.update(_health_look(health, u.id))
    if n.name in look["highlight"]:
        attrs.update(color=HIGHLIGHT, penwidth="3")
    attrs.update(look["style"].get(n.name, {}))
    return attrs


def _graph_attrs(rankdir):
    if rankdir not in ("LR", "TB", "RL", "BT"):
        raise ValueError(f"to_dot: rankdir={rankdir!r}; use 'LR', 'TB', 'RL' or 'BT'")
    return {"rankdir": rankdir, "nodesep": "0.25", "ranksep": "0.35", "fontname": "Helvetica"}


def _default_rankdir(nodes):
    return "LR" if len(nodes) <= 40 and all(n.shape == () for n in nodes) else "TB"


def _cluster_path(scope, clusters, folds=()):
    """The clusters a box sits in, outermost first, as scope prefixes ("a", "a/b"); a fold's cluster is kept
    with clusters="top" or "none" too (its "x k" label says what it stands for)."""
    parts = scope_parts(scope)
    path = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    if clusters == "nested":
        return tuple(path)
    keep = path[:1] if clusters == "top" else []
    return tuple(keep + [p for p in path[len(keep):] if p in folds])


def _emit_boxes(dot, folding, attrs, clusters, nodes, folds):
    """Nodes into their scope clusters, built deepest first so each cluster can hold its finished children.
    A fold's cluster is labelled "first ... last  x k" with the params of one copy; the clusters around it
    count the params of every copy."""
    by_path = {(): []}
    for u in folding.boxes:
        path = _cluster_path(role_of(u.node).scope if _aligned(u.node) else u.scope, clusters, folds)
        for k in range(len(path) + 1):
            by_path.setdefault(path[:k], [])
        by_path[path].append(u)
    params = {}
    for n in nodes:
        if n.kind == "param":
            path = _cluster_path(n.scope, clusters, folds)
            for k in range(1, len(path) + 1):
                params[path[:k]] = params.get(path[:k], 0) + n.size
    paths = sorted(by_path, key=lambda p: (-len(p), p))
    cluster_ids = {p: f"cluster_{i}" for i, p in enumerate(sorted(by_path, key=lambda p: p)) if p}
    built = {}
    for path in paths:
        g = dot if not path else graphviz.Digraph(name=cluster_ids[path])
        if path:
            count, fold = params.get(path, 0), folds.get(path[-1])
            name = escape(fold.span() if fold else path[-1].rsplit("/", 1)[-1])
            label = f"<B>{name}</B>" + (f" <FONT POINT-SIZE=\"9\">({count:,} params{' each' if fold else ''})"
                                        "</FONT>" if count else "")
            if fold:
                label += f' <FONT POINT-SIZE="13" COLOR="{FOLD}"><B>&#215; {fold.count}</B></FONT>'
            g.attr(label=f"<{label}>", style="rounded,filled", color=FOLD if fold else "#aaaaaa",
                   fillcolor="#f6f6f6" if len(path) % 2 else "#fcfcfc", fontname="Helvetica",
                   fontsize="10", labeljust="l", **({"penwidth": "2"} if fold else {}))
        for u in by_path[path]:
            g.node(u.id, **attrs[u.id])
        _emit_ranks(g, by_path[path])
        for child in sorted((p for p in built if len(p) == len(path) + 1 and p[:len(path)] == path)):
            g.subgraph(built.pop(child))
        if path:
            built[path] = g


def _aligned(node):
    """True for a gradient node that backward_graph gave a role: drawn in the cluster of the forward node it
    belongs to (not in a "grad" cluster), beside the forward node whose adjoint it is."""
    return node is not None and is_backward(node) and role_of(node) is not None


def _emit_ranks(dot, boxes):
    """Each adjoint in the same rank as its forward node (boxes: those of one cluster): the backward graph is
    the forward's mirror, and a reader matches g_a with a at a glance."""
    ids = {u.node.name: u.id for u in boxes if u.node is not None}
    for u in boxes:
        r = role_of(u.node) if _aligned(u.node) else None
        if r is not None and r.kind in ("seed", "adjoint") and r.of[0] in ids:
            with dot.subgraph() as same:
                same.attr(rank="same")
                same.node(ids[r.of[0]])
                same.node(u.id)


def _edge(dot, a, b, back, attrs):
    if back:    # the backward flows against the forward's ranks: laid out reversed, drawn forwards
        dot.edge(b, a, dir="back", **attrs)
    else:
        dot.edge(a, b, **attrs)


def _emit_edges(dot, folding, hl_edges, edge_style, every=None, repeats=None):
    """One edge per input slot between drawn nodes; edges into or out of a summary box are merged (x k).
    With folds (every: all nodes, repeats: the folds), the edges of the copies not drawn land on the drawn
    copy: once each (slots merged, "0...3"), those into the next copy bold blue and labelled "next"."""
    merged, extra, seen, drawn = {}, {}, set(), []
    for n in folding.nodes:
        dst = folding.box_of.get(n.index)
        if dst is None:
            continue
        multi = len(n.inputs) > 1
        for slot, p in enumerate(n.inputs):
            if repeats is not None and p.index in repeats.alias:
                continue                                 # drawn below, with the copies' edges
            src = folding.box_of[p.index]
            if src is dst:
                continue
            if src.node is None or dst.node is None:
                merged[(src.id, dst.id)] = merged.get((src.id, dst.id), 0) + 1
                continue
            attrs = {"label": str(slot)} if multi else {}
            back = _aligned(n) and _aligned(p)
            if is_backward(n) and not is_backward(p):      # a forward value that a VJP reads
                attrs.update(style="dashed", color=COLORS_READ)
                if _aligned(n):
                    attrs.update(constraint="false")       # it does not pull the VJP towards the forward value
            if (p.name, n.name, slot) in hl_edges or (p.name, n.name, None) in hl_edges:
                attrs.update(color=HIGHLIGHT, penwidth="2.5")
            attrs.update(edge_style.get((p.name, n.name, slot), {}))
            drawn.append((src.id, dst.id, slot, attrs, back))
            seen.add((src.id, dst.id, slot))
    for n in every or ():
        if n.index not in repeats.alias and not any(p.index in repeats.alias for p in n.inputs):
            continue
        dst = folding.box_of[n.index]
        for slot, p in enumerate(n.inputs):
            src = folding.box_of[p.index]
            summary = src.node is None or dst.node is None
            if (src is dst and summary) or (src.id, dst.id, slot) in seen or (summary and (src.id, dst.id) in merged):
                continue
            e = extra.setdefault((src.id, dst.id), {"slots": [], "next": False, "style": {},
                                                    "multi": not summary and len(n.inputs) > 1})
            if slot not in e["slots"]:
                e["slots"].append(slot)
            e["next"] = e["next"] or repeats.crossing(p, n) is not None
            if (p.name, n.name, slot) in hl_edges or (p.name, n.name, None) in hl_edges:
                e["style"].update(color=HIGHLIGHT, penwidth="2.5")
            e["style"] = {**edge_style.get((p.name, n.name, slot), {}), **e["style"]}
    for a, b, slot, attrs, back in drawn:
        e = extra.get((a, b))
        if e is not None and not e["next"] and not attrs.get("style"):
            e["slots"].append(slot)                  # the drawn copy's edge and its copies' as one ("0...3")
        else:
            _edge(dot, a, b, back, attrs)
    for (a, b), e in extra.items():
        slots = sorted(e["slots"])
        text = [_slots_text(slots)] if e["multi"] else []
        # constraint=false: the way back into the drawn copy does not stretch its layout
        attrs = {"style": "bold", "color": FOLD, "constraint": "false"} if e["next"] else {}
        text += ["next"] if e["next"] else []
        if text:
            attrs["label"] = "<" + " ".join(text) + ">"
        attrs.update(e["style"])
        dot.edge(a, b, **attrs)
    for (a, b), k in merged.items():
        dot.edge(a, b, **({"label": f"<&#215;{k}>"} if k > 1 else {}), style="bold")


def _slots_text(slots):
    """Input slots as an edge label: "2", "0&#8230;3" (a range), "0, 2"."""
    if len(slots) > 2 and slots == list(range(slots[0], slots[-1] + 1)):
        return f"{slots[0]}&#8230;{slots[-1]}"
    return ", ".join(map(str, slots))


def _emit_legend(dot, collapsed, backward=False):
    kinds = ["input", "param", "constant", "op", "output"] + (["backward"] if backward else [])
    leg = graphviz.Digraph(name="cluster_legend")
    leg.attr(label="<<B>legend</B>>", style="rounded", color="#aaaaaa", fontname="Helvetica", fontsize="10")
    for k in kinds:
        leg.node(f"legend_{k}", label="backward: g_a, contributions" if k == "backward" else k,
                 fillcolor=COLORS[k])
    if collapsed:
        leg.node("legend_summary", label="collapsed scope", fillcolor=COLORS["summary"], shape="box3d",
                 style="filled")
    names = [f"legend_{k}" for k in kinds] + (["legend_summary"] if collapsed else [])
    for a, b in zip(names, names[1:]):
        leg.edge(a, b, style="invis")
    if backward:
        leg.node("legend_read", label="forward value", fillcolor=COLORS["op"])
        leg.node("legend_vjp", label="read by a VJP", fillcolor=COLORS["backward"])
        leg.node("legend_sum", label="an adjoint's sum", fillcolor=COLORS["backward"], color=COLOR_SUM,
                 penwidth="2.5")
        leg.edge("legend_read", "legend_vjp", style="dashed", color=COLORS_READ)
    dot.subgraph(leg)


# --- colouring by a health quantity (viz/health.py) -----------------------------------------------------------
SHORT = {"grad": "|g|", "value": "|x|", "nonfinite": "NaN/Inf", "memory": "saved", "time": "time"}
FINITE_COLOR = "#e6e6e6"


def _health(obj, nodes, folding, color_by, color_log):
    """What colouring by color_by needs: each box's number, the scale, the colour bar's text, the caption."""
    if isinstance(color_by, dict):
        what, values = None, {(k.name if isinstance(k, gd.Node) else str(k)): float(v) for k, v in color_by.items()}
    elif color_by in QUANTITIES:
        what, values = color_by, quantity(obj, color_by)
    else:
        raise ValueError(f"to_dot: color_by={color_by!r}; use one of {', '.join(QUANTITIES)} or a dict "
                         "{node or name: number}")
    log = (LOG_SCALE[what] if what else False) if color_log is None else bool(color_log)
    norm = what in ("grad", "value")
    boxes = {}
    for u in folding.boxes:
        have = [values[k] for k in ([u.node.name] if u.node is not None else sorted(u.names)) if k in values]
        if have:
            boxes[u.id] = float(np.sqrt(sum(v * v for v in have))) if norm else float(sum(have))
    scale = Scale(boxes.values(), log=log)
    caption = []
    bad = first_nonfinite(nodes)
    if bad is not None:
        ins = ", ".join(f"'{p.name}'" for p in bad.inputs)
        caption.append(f"first NaN/Inf: made by {bad.op} '{bad.name}' from finite inputs ({ins})")
    elif what == "nonfinite":
        caption.append("every value is finite (no NaN or Inf)")
    title = TITLES.get(what, "colour") + (" (log scale)" if log else "")
    if what == "grad" and not values:
        caption.append("no gradients kept: run g.backward(y, retain_grads=True) first")
    return {"what": what or "dict", "short": SHORT.get(what, "value"), "boxes": boxes, "scale": scale,
            "title": title, "caption": caption}


def _health_row(health, box_id):
    """The label row giving a box's number: "|g| 0.2400"."""
    return f"<I>{escape(health['short'])}</I> {escape(format_value(health['what'], health['boxes'][box_id]))}"


def _health_look(health, box_id):
    """A box's fill and text colour by its number (white: no number; red: NaN/Inf or, by "nonfinite", any)."""
    v = health["boxes"].get(box_id)
    if v is None:
        fill = NO_DATA_COLOR
    elif health["what"] == "nonfinite":
        fill = NONFINITE_COLOR if v > 0 or not np.isfinite(v) else FINITE_COLOR
    else:
        fill = health["scale"].color(v)
    return {"fillcolor": fill, "fontcolor": text_color(fill)}


def _emit_colorbar(dot, health):
    """The legend of a coloured diagram, one table: a colour bar from the smallest number to the largest
    (labelled; "finite" by "nonfinite"), then swatches for NaN/Inf and "no data"."""
    scale, what = health["scale"], health["what"]
    table = '<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="{}" CELLPADDING="{}">{}</TABLE>'
    rows = [f'<TR><TD><B>{escape(health["title"])}</B></TD></TR>']
    if what == "nonfinite":
        swatches = [(FINITE_COLOR, "finite")]
    else:
        lo = format_value(what, scale.lo) if scale.lo is not None else "\u2014"
        hi = format_value(what, scale.hi) if scale.hi is not None else "\u2014"
        lo = ("\u2264 " if scale.zero else "") + lo      # values <= 0 sit at the bottom of a log scale
        bar = "".join(f'<TD BGCOLOR="{c}" WIDTH="18" HEIGHT="14" FIXEDSIZE="TRUE"> </TD>' for c in scale.stops(12))
        ends = f'<TD ALIGN="LEFT">{escape(lo)}</TD><TD ALIGN="RIGHT">{escape(hi)}</TD>'
        rows.append("<TR><TD>" + table.format(0, 0, f"<TR>{bar}</TR>") + "</TD></TR>")
        rows.append('<TR><TD WIDTH="216">' + table.format(0, 0, f"<TR>{ends}</TR>") + "</TD></TR>")
        swatches = []
    swatches += [(NONFINITE_COLOR, "NaN / Inf"), (NO_DATA_COLOR, "no data")]
    cells = "".join(f'<TD BGCOLOR="{c}" BORDER="1"><FONT COLOR="{text_color(c)}">{t}</FONT></TD>'
                    for c, t in swatches)
    rows.append("<TR><TD>" + table.format(4, 3, f"<TR>{cells}</TR>") + "</TD></TR>")
    leg = graphviz.Digraph(name="cluster_legend")
    leg.attr(label="<<B>legend</B>>", style="rounded", color="#aaaaaa", fontname="Helvetica", fontsize="10")
    leg.node("legend_colors", label="<" + table.format(2, 1, "".join(rows)) + ">", shape="box", style="filled",
             fillcolor="#ffffff", color="#ffffff", margin="0.04")     # an outline around the table: its box
    dot.subgraph(leg)


# --- into a file ------------------------------------------------------------------------------------------
def render(obj, path, format="svg", *, renderer="auto", timeout=300, max_boxes=LAYOUT_LIMIT, **options):
    """Draw obj into a file and return the path written.

    Args:
        obj: a gd.Graph, a gd.Node (its subgraph) or a graphviz.Digraph (e.g. from to_dot).
        path: the file to write; ".svg" (etc.) is appended when it has no such suffix.
        format: "svg", "png" or "pdf" (PDF needs the system Graphviz).
        renderer: "auto" (system `dot`, else graphviz-pure), "dot", "graphviz-pure" or a program path.
        timeout: seconds before giving up on a layout.
        max_boxes: more nodes than this are refused before the layout starts (None: try anyway).
        options: to_dot options (max_nodes=..., rankdir=..., ...) when obj is a graph or node.
    Returns:
        the path of the file written (str). With no renderer, the DOT source is written to path.gv and
        RendererUnavailable says how to install one.
    """
    if format not in FORMATS:
        raise ValueError(f"render: format={format!r}; use one of {FORMATS}")
    if isinstance(obj, graphviz.Digraph):
        if options:
            raise TypeError(f"render: {sorted(options)} are to_dot options; pass a graph or node, not a Digraph")
        dot = obj
    else:
        dot = to_dot(obj, **options)
    path = Path(path)
    if path.suffix.lower().lstrip(".") in FORMATS + ("gv", "dot") and path.suffix.lower() != "." + format:
        raise ValueError(f"render: path {str(path)!r} does not end in .{format}; drop the suffix or match it")
    if path.suffix.lower() != "." + format:
        path = path.with_name(path.name + "." + format)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = pipe(dot.source, format, renderer, timeout, max_boxes)
    except RenderError as e:
        gv = path.with_suffix(".gv")
        gv.write_text(dot.source, encoding="utf-8")
        raise type(e)(f"{e} (the DOT source is in {gv})") from None
    path.write_bytes(data)
    return str(path)
