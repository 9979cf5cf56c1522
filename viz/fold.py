"""Folding: which box each drawn node goes in. A node is its own box; collapse= folds a scope into one summary
box (by depth, or by name); past max_nodes the deepest depth that fits is chosen, and when even that is too
many boxes, consecutive topological levels are folded into bands labelled with their op counts.

Boxes are numbered in topological order of their first node, so the same graph always gets the same ids.
"""
from collections import Counter

from .graphs import name_list, scope_parts
from .labels import escape, html_table

BANDS = 60                  # boxes of a graph folded into topological bands (when collapsing scopes is not enough)


def group_keys(nodes, collapse):
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
    prefixes = sorted({str(s).strip("/") for s in name_list(collapse)}, key=len)
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


def _count_boxes(nodes, depth):
    groups, loose = set(), 0
    for n in nodes:
        parts = scope_parts(n.scope)
        if len(parts) >= depth:
            groups.add("/".join(parts[:depth]))
        else:
            loose += 1
    return loose + len(groups)


def auto_collapse(nodes, max_nodes):
    """The deepest collapse depth that draws at most max_nodes boxes; 1 when none does; None if none needed.

    Args:
        nodes: the nodes to draw.  max_nodes: the most boxes a layout should get.
    """
    if max_nodes is None or len(nodes) <= max_nodes:
        return None
    deepest = max((len(scope_parts(n.scope)) for n in nodes), default=0)
    for depth in range(deepest, 0, -1):
        if _count_boxes(nodes, depth) <= max_nodes:
            return depth
    return 1


class Box:
    """One drawn box: a node, or a summary of a collapsed scope or a topological band (node None)."""

    __slots__ = ("id", "node", "scope", "label", "names")

    def __init__(self, id_, node, scope, label="", names=frozenset()):
        self.id, self.node, self.scope, self.label, self.names = id_, node, scope, label, names


def _members(item, members):
    kind, x = item
    return members[x] if kind == "group" else [x]


def _nodes_of(order, members):
    """The nodes of the boxes in order, in topological order (inputs before the nodes that read them)."""
    return sorted((n for it in order for n in _members(it, members)), key=lambda n: n.index)


class Folding:
    """Maps the drawn nodes to boxes: themselves, the summary of their collapsed scope, or the fold-away
    topological bands when even collapsed scopes are more than max_nodes."""

    def __init__(self, nodes, keys, max_nodes):
        self.boxes, self.box_of, self.banded = [], {}, 0
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
                box = Box(uid, x, x.scope)
                self.box_of[x.index] = box
            else:
                ms = members[x]
                parts = x.split("/")
                label = html_table([escape(x), escape(f"{len(ms):,} nodes, {param_count(ms):,} params"),
                                    "<I>collapsed scope</I>"])
                box = Box(uid, None, "/".join(parts[:-1]), label, frozenset(m.name for m in ms))
                for m in ms:
                    self.box_of[m.index] = box
            self.boxes.append(box)
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
            box = Box(f"b{len(self.boxes)}", None, "", html_table(rows), frozenset(n.name for n in ms))
            self.boxes.append(box)
            for n in ms:
                self.box_of[n.index] = box
        self.banded = len(self.boxes)


def param_count(nodes):
    """How many numbers the params among nodes hold."""
    return sum(n.size for n in nodes if n.kind == "param")
