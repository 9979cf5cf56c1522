"""to_dot and render: a graphdiff graph as a Graphviz diagram people want to look at.

Conventions: params light blue, inputs orange, constants purple, ops grey, the output green; one edge per
input slot (x*x has two); one cluster per name scope. Node ids are topological indices ("n0", "n1", ...:
positions in creation order among the drawn nodes), so the same graph always gives the same DOT text.
Names only ever appear inside HTML-like labels, escaped, so quotes, < > { } |, backslashes, newlines and
non-ASCII characters cannot break the DOT source.

Rendering uses the system `dot` when installed, else the `graphviz-pure` wheel's program (pip installs it,
so a fresh machine renders with no system package), else writes the .gv source and says how to install one.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path
from collections import Counter
from typing import NamedTuple

import graphviz
import numpy as np

import graphdiff as gd
from graphdiff.graph import describe

from . import fontdata
from .render import find_graphviz_pure as _graphviz_pure

COLORS = {"param": "#b3d9ff", "input": "#ffc266", "constant": "#d9b3ff", "op": "#e6e6e6",
          "output": "#a3e4a3", "summary": "#ffffff", "backward": "#fbe3a1"}
COLORS_READ = "#b8860b"  # dashed edges: a forward value read by the backward graph
GRAD_SCOPE = "grad"      # g.gradients builds the backward graph under this scope
HIGHLIGHT = "#d62728"
FIELDS = ("name", "op", "shape", "value", "grad")
CLUSTERS = ("nested", "top", "none")
FORMATS = ("svg", "png", "pdf")
MAX_NODES = 300
BANDS = 60                  # boxes of a graph folded into topological bands (when collapsing scopes is not enough)
LAYOUT_LIMIT = 4_000        # boxes past which Graphviz layouts take minutes (and often fail): refused up front
SMALL = 6            # arrays with at most this many elements show their values


class RenderError(RuntimeError):
    """A renderer ran and failed, or cannot write the requested format."""


class LayoutTooLarge(RenderError):
    """The diagram has too many boxes to lay out in reasonable time; refused before starting."""


class RendererUnavailable(RenderError):
    """No Graphviz renderer (system `dot` or `graphviz-pure`) is installed."""


# --- escaping --------------------------------------------------------------------------------------------
def escape(text):
    """Text for an HTML-like Graphviz label: markup characters as entities, newlines as <BR/>.

    Backslashes are doubled: Graphviz expands \\N, \\G, \\L... inside HTML labels too. Non-ASCII characters
    become numeric entities (the DOT text stays ASCII); control characters and lone surrogates, which XML
    (and so SVG) cannot hold, are shown as Python escapes (\\x01).
    """
    out = []
    for ch in str(text):
        o = ord(ch)
        if ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == '"':
            out.append("&quot;")
        elif ch == "\\":
            out.append("\\\\")      # Graphviz expands \N, \G, ... even in HTML labels; \\ shows one
        elif ch == "\n":
            out.append("<BR/>")
        elif ch == "\t":
            out.append(" ")
        elif o < 32 or o == 127 or 0xD800 <= o <= 0xDFFF or o in (0xFFFE, 0xFFFF):
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii").replace("\\", "\\\\"))
        elif o > 126:
            out.append(f"&#{o};")
        else:
            out.append(ch)
    return "".join(out)


class Cell(NamedTuple):
    """A label row with TD attributes, e.g. Cell(text, 'FIXEDSIZE="TRUE" WIDTH="120" HEIGHT="14"')."""
    text: str
    attrs: str = ""


def _html(rows, bold_first=True):
    """An HTML-like label from rows; a row is a string (already escaped), a Cell, or a list of cells."""
    trs = []
    for k, row in enumerate(rows):
        if isinstance(row, Cell):
            span = max((len(r) for r in rows if isinstance(r, list)), default=1) * 2 - 1
            trs.append(f'<TR><TD COLSPAN="{span}" {row.attrs}>{row.text}</TD></TR>')
        elif isinstance(row, (list, tuple)):
            cells = '<TD BORDER="0">&#9474;</TD>'.join(f"<TD>{c}</TD>" for c in row)
            trs.append(f"<TR>{cells}</TR>")
        else:
            text = f"<B>{row}</B>" if k == 0 and bold_first else row
            span = max((len(r) for r in rows if isinstance(r, list)), default=1)
            span = 2 * span - 1
            trs.append(f'<TR><TD COLSPAN="{span}">{text}</TD></TR>' if span > 1 else f"<TR><TD>{text}</TD></TR>")
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{"".join(trs)}</TABLE>>'


# --- what is drawn -----------------------------------------------------------------------------------------
def is_backward(node):
    """True for a node of a backward graph (built by g.gradients, under the scope "grad")."""
    return node.scope == GRAD_SCOPE or node.scope.startswith(GRAD_SCOPE + "/")


def backward_graph(graph, y, variant="children", wrt=None):
    """Add y's backward pass to graph as nodes (g.gradients, under the scope "grad"), compute their values,
    and return [y, *gradient nodes]: to_dot of that list draws the forward and backward graphs together.

    Args:
        graph: a gd.Graph whose forward pass has run.  y: a scalar node.  variant: "children" (one add_n per
            node over its children's contributions) or "parents" (a chain of adds in push order).
        wrt: the nodes to differentiate with respect to (default: the params y depends on).
    """
    if wrt is None:
        wrt = [n for n in select(y)[0] if n.kind == "param"]
    grads = graph.gradients(y, wrt, variant=variant)
    graph.forward(outputs=grads)
    return [y, *grads]


def select(obj):
    """The nodes to draw (sorted by creation index, a topological order) and the outputs to colour green.

    Args:
        obj: a gd.Graph (every node; outputs are its op nodes nothing uses), a gd.Node (the subgraph it
            depends on; it is the output), or a list of Nodes of one graph (the union of their subgraphs,
            e.g. [y, *g.gradients(y, params)]: the forward and backward graphs together).
    """
    roots = [obj] if isinstance(obj, gd.Node) else obj
    if isinstance(roots, (list, tuple)) and roots and all(isinstance(r, gd.Node) for r in roots):
        other = next((r for r in roots if r.graph is not roots[0].graph), None)
        if other is not None:
            raise gd.GraphError(f"to_dot: the nodes given belong to two graphs ({roots[0].name!r} to one, "
                                f"{other.name!r} to another), which would be drawn as one; draw each graph on "
                                "its own")
        seen, stack = {r.index: r for r in roots}, list(roots)
        while stack:                                   # a loop, not recursion: graphs can be deep
            for p in stack.pop().inputs:
                if p.index not in seen:
                    seen[p.index] = p
                    stack.append(p)
        return [seen[k] for k in sorted(seen)], list(dict.fromkeys(roots))
    if isinstance(obj, gd.Graph):
        nodes = list(obj.nodes)
        used = set()
        for n in nodes:
            used.update(p.index for p in n.inputs)
        return nodes, [n for n in nodes if n.kind == "op" and n.index not in used]
    raise TypeError(f"to_dot: expected a gd.Graph or gd.Node (or a list of Nodes), got {type(obj).__name__}; "
                    "pass the graph, or the node(s) whose subgraph you want drawn")


def scope_parts(scope):
    return [s for s in scope.split("/") if s] if scope else []


def base_name(node):
    """The name without its scope prefix (the cluster shows the scope)."""
    prefix = node.scope + "/" if node.scope else ""
    return node.name[len(prefix):] if prefix and node.name.startswith(prefix) else node.name


def _number(x):
    x = float(x) + 0.0                      # + 0.0: no "-0.0000"
    return f"{x:.4f}" if x == 0 or 1e-3 <= abs(x) < 1e5 else f"{x:.4g}"


def _array_text(arr):
    flat = np.asarray(arr, dtype=np.float64).ravel()
    return "[" + ", ".join(f"{float(v) + 0.0:.3g}" for v in flat) + "]"


def _host(x):
    return None if x is None else np.asarray(gd.to_numpy(x))


RELEASED_TEXT = "released"


def node_value(node):
    """node.value (None before a forward), or RELEASED_TEXT where forward_backward freed it after its last use."""
    try:
        return node.value
    except gd.ReleasedError:
        return RELEASED_TEXT


class _Notes:
    """Which placeholders a diagram used, so its caption can say what they mean."""

    def __init__(self):
        self.no_value = self.no_grad = self.released = False


def _value_rows(node, fields, small, notes):
    """Rows showing the value and gradient of a small node, micrograd style for scalars."""
    show_v = "value" in fields
    # constants never get a gradient, and inputs only when asked for (requires_grad): no empty row for them
    show_g = ("grad" in fields and node.dtype in ("float32", "float64")
              and (node.kind in ("param", "op") or node.grad is not None))
    if not (show_v or show_g) or node.size > small:
        return []
    value, grad = node_value(node), _host(node.grad)
    value = value if value is RELEASED_TEXT else _host(value)
    if value is None:
        notes.no_value = True
    elif value is RELEASED_TEXT:
        notes.released = True
    if grad is None and show_g:
        notes.no_grad = True
    if node.shape == ():
        cells = []
        if show_v:
            cells.append("data " + _value_text(value, _number))
        if show_g:
            cells.append("grad " + ("&#8212;" if grad is None else escape(_number(grad))))
        return [cells] if len(cells) > 1 else cells
    rows = []
    if show_v:
        rows.append("value " + _value_text(value, _array_text))
    if show_g:
        rows.append("grad " + ("&#8212;" if grad is None else escape(_array_text(grad))))
    return rows


def _value_text(value, fmt):
    if value is None:
        return "&#8212;"
    return "<I>released</I>" if value is RELEASED_TEXT else escape(fmt(value))


def node_label(node, fields=FIELDS, small=SMALL, in_cluster=True, notes=None, extra=()):
    """The HTML-like label of one node: name, op and f32[4,8], small values and gradients.

    Args:
        node: a gd.Node.  fields: which of "name", "op", "shape", "value", "grad" to show.
        small: arrays with at most this many elements show values.  in_cluster: drop the scope prefix.
        extra: more rows (escaped HTML text) appended at the bottom.
    """
    notes = notes if notes is not None else _Notes()
    rows = []
    if "name" in fields:
        rows.append(escape(base_name(node) if in_cluster else node.name))
    what = []
    if "op" in fields:
        what.append(f"<I>{escape(node.op)}</I>" if node.op is not None else escape(node.kind))
    if "shape" in fields:
        what.append(escape(describe(node.shape, node.dtype)))
    if what:
        rows.append(" ".join(what))
    rows.extend(_value_rows(node, fields, small, notes))
    rows.extend(extra)
    return _html(rows or [""], bold_first="name" in fields)


# --- collapsing scopes ----------------------------------------------------------------------------------------
def _group_keys(nodes, collapse):
    """{node index: scope it is folded into} for a collapse depth (int) or a list of scope names."""
    keys = {}
    if collapse is None or collapse is False:
        return keys
    if isinstance(collapse, bool) or isinstance(collapse, int):
        depth = 1 if collapse is True else int(collapse)
        if depth < 1:
            raise ValueError(f"to_dot: collapse depth must be >= 1, got {collapse}")
        for n in nodes:
            parts = scope_parts(n.scope)
            if len(parts) >= depth:
                keys[n.index] = "/".join(parts[:depth])
        return keys
    prefixes = sorted({str(s).strip("/") for s in _names(collapse)}, key=len)
    for n in nodes:
        for p in prefixes:
            if n.scope == p or n.scope.startswith(p + "/"):
                keys[n.index] = p
                break
    unknown = sorted(set(prefixes) - set(keys.values()))
    if unknown:
        scopes = sorted({s for n in nodes for s in _scope_prefixes(n.scope)})
        raise ValueError(f"to_dot: collapse={unknown[0]!r} is not the scope of any node drawn; scopes: "
                         f"{scopes[:20] if scopes else 'none (the graph has no g.scope(...))'}")
    return keys


def _scope_prefixes(scope):
    parts = scope_parts(scope)
    return ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]


def _count_units(nodes, depth):
    groups, loose = set(), 0
    for n in nodes:
        parts = scope_parts(n.scope)
        if len(parts) >= depth:
            groups.add("/".join(parts[:depth]))
        else:
            loose += 1
    return loose + len(groups)


def auto_collapse(nodes, max_nodes):
    """The deepest collapse depth that draws at most max_nodes units; 1 when none does; None if none needed.

    Args:
        nodes: the nodes to draw.  max_nodes: the most boxes a layout should get.
    """
    if max_nodes is None or len(nodes) <= max_nodes:
        return None
    deepest = max((len(scope_parts(n.scope)) for n in nodes), default=0)
    for depth in range(deepest, 0, -1):
        if _count_units(nodes, depth) <= max_nodes:
            return depth
    return 1


# --- the diagram ------------------------------------------------------------------------------------------
class Diagram(graphviz.Digraph):
    """A graphviz.Digraph that renders with the renderer render() finds (so Jupyter shows it inline even
    with only graphviz-pure installed), and remembers which DOT id each node got.

    Attributes:
        ids: {node name: DOT id}.  collapsed: a sentence saying what was collapsed, or None.
    """

    ids = None
    collapsed = None

    def pipe(self, format=None, renderer=None, formatter=None, neato_no_op=None, quiet=False, *,
             engine=None, encoding=None):
        """The rendered bytes (str with encoding=) from the renderer render() finds; graphviz's own
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


def _names(items):
    """One name (a str, or a Node) or several: collapse= and highlight= take either."""
    return [items] if isinstance(items, (str, gd.Node)) else items


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
    for h in _names(highlight) or ():
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
           edge_style=None):
    """A graphdiff graph (or the subgraph a node depends on) as a graphviz.Digraph.

    Args:
        obj: a gd.Graph, or a gd.Node (drawn with everything it depends on; it is the green output).
        rankdir: "LR", "TB", "RL" or "BT"; default LR for small scalar graphs, TB otherwise.
        fields: which of "name", "op", "shape", "value", "grad" the node labels show.
        clusters: "nested" (a cluster per scope, nested), "top" (top-level scopes only) or "none".
        collapse: scopes drawn as one summary node each: a depth (1 = every top-level scope), True (= 1),
            a scope name, or a list of scope names.
        highlight: a node (Node or name), or a list of nodes and edges ((parent, child) or (parent, child,
            slot)) to draw red.
        legend: add a legend of the colours.
        max_nodes: past this many nodes (at least 1), scopes are collapsed automatically (and the diagram
            says so); None draws every node however long the layout takes.
        small: arrays with at most this many elements show their values (scalars as `data | grad`).
        title: a caption at the top.
        node_extra, node_style, edge_style: hooks for trace frames: {name: [rows]}, {name: {attr: value}},
            {(parent, child, slot): {attr: value}}.
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
    if collapse is None:
        depth = auto_collapse(nodes, max_nodes)
        if depth is not None:
            collapse = depth
            collapsed = (f"{len(nodes):,} nodes > max_nodes={max_nodes}: scopes at depth {depth} are "
                         "collapsed into summary nodes (to_dot(..., max_nodes=None) draws every node)")
    keys = _group_keys(nodes, collapse)
    plan = _Layout(nodes, keys, max_nodes if collapse is not None else None)
    if plan.banded:
        collapsed = (f"{len(nodes):,} nodes are folded into {plan.banded} topological bands to keep the layout "
                     "finite (collapse= folds by scope; max_nodes=None draws every node)")
    caption += [collapsed] if collapsed else []
    hl_nodes, hl_edges = _split_highlight(highlight)
    dot = Diagram(name="graphdiff", format="svg", graph_attr=_graph_attrs(rankdir or _default_rankdir(nodes)),
                  node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica",
                             "fontsize": "11", "color": "#555555", "margin": "0.08,0.04"},
                  edge_attr={"color": "#666666", "arrowsize": "0.7", "fontname": "Helvetica",
                             "fontsize": "9", "fontcolor": "#666666"})
    notes = _Notes()
    look = {"fields": fields, "small": small, "in_cluster": clusters != "none", "notes": notes,
            "outputs": {o.name for o in outputs}, "highlight": hl_nodes, "extra": node_extra or {},
            "style": node_style or {}}
    units = {u.id: _unit_attrs(u, look) for u in plan.units}
    _emit_units(dot, plan, units, clusters)
    _emit_edges(dot, plan, hl_edges, edge_style or {})
    if legend:
        _emit_legend(dot, bool(keys), any(is_backward(n) for n in nodes))
    caption += _notes_text(nodes, fields, notes)
    if caption:
        dot.attr(label="<" + "<BR/>".join(escape(c) for c in caption) + ">",
                 labelloc="t", labeljust="l", fontname="Helvetica", fontsize="12")
    dot.ids = {n.name: plan.unit_of[n.index].id for n in nodes if n.index in plan.unit_of}
    dot.collapsed = collapsed
    return dot


def _unit_attrs(u, look):
    """Graphviz attributes of one box: a node's label and colours, or a collapsed scope's summary."""
    if u.node is None:
        attrs = {"label": u.label, "fillcolor": COLORS["summary"], "shape": "box3d", "style": "filled"}
        if look["highlight"] & u.names:
            attrs.update(color=HIGHLIGHT, penwidth="3")
        return attrs
    n = u.node
    label = node_label(n, look["fields"], look["small"], look["in_cluster"], look["notes"],
                       look["extra"].get(n.name, ()))
    kind = "backward" if is_backward(n) else n.kind
    attrs = {"label": label, "fillcolor": COLORS["output"] if n.name in look["outputs"] else COLORS[kind]}
    if n.name in look["highlight"]:
        attrs.update(color=HIGHLIGHT, penwidth="3")
    attrs.update(look["style"].get(n.name, {}))
    return attrs


def _notes_text(nodes, fields, notes):
    """Captions explaining placeholders: gradients not computed (before backward), not kept, no value."""
    out = []
    if "grad" in fields and not any(n.grad is not None for n in nodes):
        out.append("gradients not computed: run g.backward(y) first (retain_grads=True keeps every node's)")
    elif "grad" in fields and notes.no_grad:
        out.append("grad \u2014: not kept; g.backward(y, retain_grads=True) keeps every node's gradient")
    if notes.no_value:
        out.append("data \u2014: no value yet; run g.forward(feeds) first")
    if notes.released:
        out.append("released: freed after its last use by forward_backward; g.forward(feeds) computes it again")
    return out


def _graph_attrs(rankdir):
    if rankdir not in ("LR", "TB", "RL", "BT"):
        raise ValueError(f"to_dot: rankdir={rankdir!r}; use 'LR', 'TB', 'RL' or 'BT'")
    return {"rankdir": rankdir, "nodesep": "0.25", "ranksep": "0.35", "fontname": "Helvetica"}


def _default_rankdir(nodes):
    return "LR" if len(nodes) <= 40 and all(n.shape == () for n in nodes) else "TB"


class _Unit:
    """One drawn box: a node, or a summary of a collapsed scope (node None)."""

    __slots__ = ("id", "node", "scope", "label", "names")

    def __init__(self, id_, node, scope, label="", names=frozenset()):
        self.id, self.node, self.scope, self.label, self.names = id_, node, scope, label, names


def _members(item, members):
    kind, x = item
    return members[x] if kind == "group" else [x]


def _nodes_of(order, members):
    """The nodes of the boxes in order, in topological order (inputs before the nodes that read them)."""
    return sorted((n for it in order for n in _members(it, members)), key=lambda n: n.index)


class _Layout:
    """Maps the drawn nodes to boxes: themselves, the summary of their collapsed scope, or the fold-away
    topological bands when even collapsed scopes are more than max_nodes."""

    def __init__(self, nodes, keys, max_nodes):
        self.units, self.unit_of, self.banded = [], {}, 0
        members = {}
        for n in nodes:
            k = keys.get(n.index)
            if k is not None:
                members.setdefault(k, []).append(n)
        order = []                                  # boxes in topological order of their first node
        for n in nodes:
            k = keys.get(n.index)
            if k is None:
                order.append(("node", n))
            elif members[k][0] is n:
                order.append(("group", k))
        if max_nodes is not None and len(order) > max_nodes:
            self._fold_bands(order, members, min(max_nodes, BANDS))
            self.nodes = nodes
            return
        for pos, (t, x) in enumerate(order):
            uid = f"n{pos}" if t == "node" else f"s{pos}"
            if t == "node":
                unit = _Unit(uid, x, x.scope)
                self.unit_of[x.index] = unit
            else:
                ms = members[x]
                parts = x.split("/")
                label = _html([escape(x), escape(f"{len(ms):,} nodes, {_param_count(ms):,} params"),
                               "<I>collapsed scope</I>"])
                unit = _Unit(uid, None, "/".join(parts[:-1]), label, frozenset(m.name for m in ms))
                for m in ms:
                    self.unit_of[m.index] = unit
            self.units.append(unit)
        self.nodes = nodes

    def _fold_bands(self, order, members, bands):
        """Too many boxes even with scopes collapsed: fold them into `bands` boxes of consecutive topological
        levels (a level is one more than the deepest input's), each labelled with its op counts, so the
        picture still shows what the graph computes, in which order."""
        level = {}
        for n in _nodes_of(order, members):
            level[n.index] = 1 + max((level[p.index] for p in n.inputs if p.index in level), default=-1)
        items = sorted(order, key=lambda it: min(level[n.index] for n in _members(it, members)))
        per = -(-len(items) // bands)
        for b in range(0, len(items), per):
            ms = [n for it in items[b:b + per] for n in _members(it, members)]
            lo, hi = min(level[n.index] for n in ms), max(level[n.index] for n in ms)
            ops = Counter(n.op if n.op else n.kind for n in ms).most_common(3)
            rows = [escape(f"levels {lo:,}-{hi:,}" if hi > lo else f"level {lo:,}"),
                    escape(f"{len(ms):,} nodes: " + ", ".join(f"{k} {op}" for op, k in ops)
                           + (", ..." if len({n.op or n.kind for n in ms}) > 3 else "")),
                    "<I>topological band</I>"]
            unit = _Unit(f"b{len(self.units)}", None, "", _html(rows), frozenset(n.name for n in ms))
            self.units.append(unit)
            for n in ms:
                self.unit_of[n.index] = unit
        self.banded = len(self.units)


def _param_count(nodes):
    return sum(n.size for n in nodes if n.kind == "param")


def _cluster_path(scope, clusters):
    parts = scope_parts(scope)
    if clusters == "none" or not parts:
        return ()
    return tuple(parts[:1]) if clusters == "top" else tuple(parts)


def _emit_units(dot, plan, attrs, clusters):
    """Nodes into their scope clusters, built deepest first so each cluster can hold its finished children."""
    by_path = {(): []}
    for u in plan.units:
        path = _cluster_path(u.scope, clusters)
        for k in range(len(path) + 1):
            by_path.setdefault(path[:k], [])
        by_path[path].append(u)
    params = {}
    for n in plan.nodes:
        if n.kind == "param":
            path = _cluster_path(n.scope, clusters)
            for k in range(1, len(path) + 1):
                params[path[:k]] = params.get(path[:k], 0) + n.size
    paths = sorted(by_path, key=lambda p: (-len(p), p))
    cluster_ids = {p: f"cluster_{i}" for i, p in enumerate(sorted(by_path, key=lambda p: p)) if p}
    built = {}
    for path in paths:
        g = dot if not path else graphviz.Digraph(name=cluster_ids[path])
        if path:
            count = params.get(path, 0)
            label = f"<B>{escape(path[-1])}</B>" + (f" <FONT POINT-SIZE=\"9\">({count:,} params)</FONT>"
                                                      if count else "")
            g.attr(label=f"<{label}>", style="rounded,filled", color="#aaaaaa",
                   fillcolor="#f6f6f6" if len(path) % 2 else "#fcfcfc", fontname="Helvetica",
                   fontsize="10", labeljust="l")
        for u in by_path[path]:
            g.node(u.id, **attrs[u.id])
        for child in sorted((p for p in built if len(p) == len(path) + 1 and p[:len(path)] == path)):
            g.subgraph(built.pop(child))
        if path:
            built[path] = g


def _emit_edges(dot, plan, hl_edges, edge_style):
    """One edge per input slot between drawn nodes; edges into or out of a summary box are merged (x k)."""
    merged = {}
    for n in plan.nodes:
        dst = plan.unit_of.get(n.index)
        if dst is None:
            continue
        multi = len(n.inputs) > 1
        for slot, p in enumerate(n.inputs):
            src = plan.unit_of[p.index]
            if src is dst:
                continue
            if src.node is None or dst.node is None:
                merged[(src.id, dst.id)] = merged.get((src.id, dst.id), 0) + 1
                continue
            attrs = {"label": str(slot)} if multi else {}
            if is_backward(n) and not is_backward(p):      # a forward value that a VJP reads
                attrs.update(style="dashed", color=COLORS_READ)
            if (p.name, n.name, slot) in hl_edges or (p.name, n.name, None) in hl_edges:
                attrs.update(color=HIGHLIGHT, penwidth="2.5")
            attrs.update(edge_style.get((p.name, n.name, slot), {}))
            dot.edge(src.id, dst.id, **attrs)
    for (a, b), k in merged.items():
        dot.edge(a, b, **({"label": f"<&#215;{k}>"} if k > 1 else {}), style="bold")


def _emit_legend(dot, collapsed, backward=False):
    kinds = ["input", "param", "constant", "op", "output"] + (["backward"] if backward else [])
    leg = graphviz.Digraph(name="cluster_legend")
    leg.attr(label="<<B>legend</B>>", style="rounded", color="#aaaaaa", fontname="Helvetica", fontsize="10")
    for k in kinds:
        leg.node(f"legend_{k}", label=k, fillcolor=COLORS[k])
    if collapsed:
        leg.node("legend_summary", label="collapsed scope", fillcolor=COLORS["summary"], shape="box3d",
                 style="filled")
    names = [f"legend_{k}" for k in kinds] + (["legend_summary"] if collapsed else [])
    for a, b in zip(names, names[1:]):
        leg.edge(a, b, style="invis")
    if backward:
        leg.node("legend_read", label="forward value", fillcolor=COLORS["op"])
        leg.node("legend_vjp", label="read by a VJP", fillcolor=COLORS["backward"])
        leg.edge("legend_read", "legend_vjp", style="dashed", color=COLORS_READ)
    dot.subgraph(leg)


# --- rendering ----------------------------------------------------------------------------------------------
def find_renderer(renderer="auto"):
    """(name, executable) of the renderer to use, or None when none is installed.

    Args:
        renderer: "auto" (system `dot`, else graphviz-pure), "dot", "graphviz-pure", or a path to a
            dot-compatible program. $GRAPHDIFF_DOT, when set, is used for "auto".
    """
    if renderer == "auto" and os.environ.get("GRAPHDIFF_DOT"):
        renderer = os.environ["GRAPHDIFF_DOT"]
    if renderer in ("auto", "dot"):
        exe = shutil.which("dot")
        if exe:
            return "dot", exe
        if renderer == "dot":
            return None
    if renderer in ("auto", "graphviz-pure"):
        exe = _graphviz_pure()
        return ("graphviz-pure", exe) if exe else None
    path = shutil.which(str(renderer)) or (str(renderer) if os.path.isfile(str(renderer)) else None)
    return (Path(str(renderer)).name, path) if path else None


RENDERERS = ("auto", "dot", "graphviz-pure")
INSTALL_HINT = ("install a renderer: `pip install graphviz-pure` (self-contained, no system package), or the "
                "system Graphviz (`apt-get install graphviz`, `brew install graphviz`, `conda install graphviz`)")


FONT_STYLE_ID = "graphdiff-font"


def font_style(svg_text=None):
    """A <style> element with the @font-face rules of the embedded font (only the faces svg_text uses)
    and a rule that draws every SVG text with it; CSS outranks the font-family attributes Graphviz writes."""
    faces = []
    for key, data in fontdata.WOFF.items():
        weight, style = key.split()
        if svg_text is not None and ((weight == "bold" and 'font-weight="bold"' not in svg_text)
                                     or (style == "italic" and 'font-style="italic"' not in svg_text)):
            continue
        faces.append(f'@font-face {{ font-family: "{fontdata.FAMILY}"; font-weight: {weight}; '
                     f'font-style: {style}; src: url(data:font/woff;base64,{data}) format("woff"); }}')
    rule = f'text {{ font-family: "{fontdata.FAMILY}", Helvetica, Arial, sans-serif; }}'
    return f'<style id="{FONT_STYLE_ID}">{" ".join(faces)} {rule}</style>'


def embed_font(svg_text):
    """SVG text from Graphviz with its font embedded, so any browser draws each label at the widths the
    layout measured: the layout uses Helvetica's advance widths (graphviz-pure always; the system `dot`
    where fontconfig maps Helvetica to Liberation Sans or Arial, and wider fonts elsewhere, which only
    leave more room), and the embedded Liberation Sans has exactly those widths."""
    if FONT_STYLE_ID in svg_text:
        return svg_text
    start = svg_text.find("<svg")
    end = svg_text.find(">", start) if start >= 0 else -1
    if end < 0:
        return svg_text
    return svg_text[:end + 1] + "\n" + font_style(svg_text) + svg_text[end + 1:]


def text_width(text, size=11.0, weight="normal"):
    """Width in points of text drawn in the diagram font (weight "normal", "bold" or "italic"); characters
    outside ASCII count as the widest letter, so the estimate never falls short."""
    table = fontdata.ADVANCE[weight]
    widest = max(table)
    return size * sum(table[ord(c) - 32] if 32 <= ord(c) < 127 else widest for c in text) / 1000.0


def strip_font(svg_text):
    """The SVG without its embedded font (for pages that hold many frames and embed the font once)."""
    start = svg_text.find(f'<style id="{FONT_STYLE_ID}">')
    if start < 0:
        return svg_text
    end = svg_text.index("</style>", start) + len("</style>")
    return svg_text[:start] + svg_text[end:]


def count_boxes(source):
    """How many nodes DOT text declares (the statements `id [...]`; attribute and edge statements excluded)."""
    ids = re.findall(r'^\s*("[^"]*"|\w+)\s*\[', source, re.M)
    return sum(1 for i in ids if i not in ("node", "edge", "graph"))


def pipe(source, format="svg", renderer="auto", timeout=300, max_boxes=LAYOUT_LIMIT):
    """Render DOT text and return the bytes (SVG with the diagram font embedded: see embed_font).

    Args:
        source: DOT text.  format: "svg", "png" or "pdf".  renderer: see find_renderer.
        timeout: seconds before giving up on a layout.
        max_boxes: more nodes than this are refused before the layout starts (None: try anyway).
    """
    boxes = count_boxes(source)
    if max_boxes is not None and boxes > max_boxes:
        raise LayoutTooLarge(f"{boxes:,} boxes are more than Graphviz lays out in reasonable time (limit "
                             f"{max_boxes:,}: past it layouts take minutes, then often fail); draw fewer: "
                             "to_dot(..., collapse=1) folds each scope into one box, max_nodes=300 folds "
                             "automatically; or pass max_boxes=None to try anyway")
    found = find_renderer(renderer)
    if found is None and renderer not in RENDERERS:
        raise RendererUnavailable(f"unknown renderer {renderer!r}: it is not one of {', '.join(RENDERERS)}, nor "
                                  "a program on PATH or a file; pass one of those names, or the path of a "
                                  "dot-compatible program")
    if found is None:
        raise RendererUnavailable(f"no Graphviz renderer found (asked for {renderer!r}); {INSTALL_HINT}")
    name, exe = found
    if format == "pdf" and name == "graphviz-pure":
        raise RenderError("graphviz-pure cannot write PDF yet; use format='svg' or 'png', or install the "
                          "system Graphviz for PDF (`apt-get install graphviz`, `brew install graphviz`)")
    try:
        res = subprocess.run([exe, f"-T{format}"], input=source.encode("utf-8"), capture_output=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RenderError(f"{name} did not finish the layout within {timeout}s; draw fewer nodes "
                          "(max_nodes=..., collapse=1) or raise timeout=") from None
    if res.returncode != 0 or not res.stdout:
        err = res.stderr.decode("utf-8", "replace").strip()
        raise RenderError(f"{name} ({exe}) failed with exit code {res.returncode}: {err[-2000:]}")
    if format == "svg":
        return embed_font(res.stdout.decode("utf-8")).encode("utf-8")
    return res.stdout


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
