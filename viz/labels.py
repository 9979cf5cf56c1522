"""The text inside a diagram's boxes: escaping for Graphviz's HTML-like labels, number and array formats,
label tables, and each node's label (name, op and f32[4,8], small values and gradients, micrograd style
for scalars) with the caption lines that explain its placeholders.

Names only ever appear inside HTML-like labels, escaped, so quotes, < > { } |, backslashes, newlines and
non-ASCII characters cannot break the DOT source.
"""
from typing import NamedTuple

import numpy as np

from graphdiff.graph import describe

from .graphs import RELEASED_TEXT, base_name, host, is_backward, node_value, relative, role_of

FIELDS = ("name", "op", "shape", "value", "grad")
SMALL = 6            # arrays with at most this many elements show their values


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


def html_table(rows, bold_first=True):
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


def number(x):
    """A scalar as label text: 4 decimals in [1e-3, 1e5) (and for 0), else 4 significant digits."""
    x = float(x) + 0.0                      # + 0.0: no "-0.0000"
    return f"{x:.4f}" if x == 0 or 1e-3 <= abs(x) < 1e5 else f"{x:.4g}"


def array_text(arr):
    """A small array as label text: "[0.5, -1, 2]" (3 significant digits, flattened)."""
    flat = np.asarray(arr, dtype=np.float64).ravel()
    return "[" + ", ".join(f"{float(v) + 0.0:.3g}" for v in flat) + "]"


class Notes:
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
    value, grad = node_value(node), host(node.grad)
    value = value if value is RELEASED_TEXT else host(value)
    if value is None:
        notes.no_value = True
    elif value is RELEASED_TEXT:
        notes.released = True
    if grad is None and show_g:
        notes.no_grad = True
    if node.shape == ():
        cells = []
        if show_v:
            cells.append("data " + _value_text(value, number))
        if show_g:
            cells.append("grad " + ("&#8212;" if grad is None else escape(number(grad))))
        return [cells] if len(cells) > 1 else cells
    rows = []
    if show_v:
        rows.append("value " + _value_text(value, array_text))
    if show_g:
        rows.append("grad " + ("&#8212;" if grad is None else escape(array_text(grad))))
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
    notes = notes if notes is not None else Notes()
    if is_backward(node):
        return html_table(backward_rows(node, fields, small, notes, in_cluster) + list(extra), bold_first=True)
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
    return html_table(rows or [""], bold_first="name" in fields)


MANY = 3             # an adjoint shared by more forward nodes names this many, then "..."


def role_title(node, in_cluster=False):
    """The first line of a gradient node's label, in the lecture's notation: g_a (the adjoint of a; "g_d = g_e"
    where an add passed g through), g_L = 1 (the seed), g_a partial (2 of 4 in), the contribution of the
    edge h4 -> a (input 0), a step inside a node's VJP; a node backward_graph did not make says so.
    in_cluster: the node is drawn in its forward node's scope cluster: names relative to that scope."""
    r = role_of(node)
    if r is None:
        return "gradient node (draw viz.backward_graph for its role)"
    of, edge = r.of, r.edge
    if in_cluster:
        of = tuple(relative(v, r.scope) for v in of)
        edge = (relative(edge[0], r.scope), edge[1], relative(edge[2], r.scope)) if edge else ()
    if r.kind in ("seed", "adjoint"):
        names = " = ".join(f"g_{v}" for v in of[:MANY]) + (" = ..." if len(of) > MANY else "")
        return names + (" = 1 (seed)" if r.kind == "seed" else "")
    if r.kind == "partial":
        return f"g_{of[0]} partial ({r.count} of {r.total} in)"
    child, slot, parent = edge
    if r.kind == "contribution":
        return f"{child} \u2192 {parent} (input {slot})"
    return f"in the VJP of {child}"        # an op's VJP may share its work among its inputs (make_vjp)


def backward_rows(node, fields, small, notes, in_cluster=False):
    """A gradient node's rows: whose adjoint it is (role_title), its formula, shape and value (its own value is
    a gradient; a gradient node has no gradient row)."""
    r = role_of(node)
    rows = [escape(role_title(node, in_cluster))]
    what = []
    if r is not None and r.kind == "adjoint" and r.edge:
        child = relative(r.edge[0], r.scope) if in_cluster else r.edge[0]
        what.append(escape(f"from {child} (input {r.edge[1]}):"))
    if "op" in fields:
        formula = r.formula if r is not None and r.kind != "vjp" else ""
        what.append(escape("= " + formula) if formula else f"<I>{escape(node.op or node.kind)}</I>")
    if "shape" in fields:
        what.append(escape(describe(node.shape, node.dtype)))
    if what:
        rows.append(" ".join(what))
    return rows + _value_rows(node, tuple(f for f in fields if f != "grad"), small, notes)


def notes_text(nodes, fields, notes):
    """Captions explaining placeholders: gradients not computed (before backward), not kept, no value."""
    out = []
    gradients = any(is_backward(n) for n in nodes)    # a picture of gradient nodes shows their values
    if "grad" in fields and not gradients and not any(n.grad is not None for n in nodes):
        out.append("gradients not computed: run g.backward(y) first (retain_grads=True keeps every node's)")
    elif "grad" in fields and notes.no_grad:
        out.append("grad \u2014: not kept; g.backward(y, retain_grads=True) keeps every node's gradient")
    if notes.no_value:
        out.append("data \u2014: no value yet; run g.forward(feeds) first")
    if notes.released:
        out.append("released: freed after its last use by forward_backward; g.forward(feeds) computes it again")
    return out
