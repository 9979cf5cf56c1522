"""Folding: which box each drawn node goes in. A node is its own box; fold= draws sibling scopes that repeat
one structure once, labelled "x k" (Repeats); collapse= folds a scope into one summary box (by depth, or by
name); past max_nodes the deepest depth that fits is chosen, and when even that is too many boxes,
consecutive topological levels are folded into bands labelled with their op counts.

Boxes are numbered in topological order of their first node, so the same graph always gets the same ids.
"""
import re
from bisect import bisect_right
from collections import Counter

import graphdiff as gd

from .graphs import name_list, scope_parts
from .labels import escape, html_table

BANDS = 60                  # boxes of a graph folded into topological bands (when collapsing scopes is not enough)


def group_keys(nodes, collapse, repeats=None):
    """{node index: scope it is folded into} for a collapse depth (int, True = 1) or scope names (one str or
    several); a name that is no scope of the nodes drawn raises ScopeError (naming the fold that holds it
    when repeats folded it away)."""
    keys = {}
    if collapse is None or collapse is False:
        return keys
    if isinstance(collapse, bool) or isinstance(collapse, int):
        depth = 1 if collapse is True else int(collapse)
        if depth < 1:
            raise ValueError(f"to_dot: collapse depth must be >= 1 (1: every top-level scope), got {collapse}")
        for n in nodes:
            parts = scope_parts(n.scope)
            if len(parts) >= depth:
                keys[n.index] = "/".join(parts[:depth])
        return keys
    names = name_list(collapse)
    bad = [s for s in names if not isinstance(s, str) or not s.strip("/")]
    if bad:
        raise ValueError(f"to_dot: collapse={bad[0]!r}: give a depth (an int >= 1) or scope names (str)")
    prefixes = sorted({s.strip("/") for s in names}, key=len)
    for n in nodes:
        for p in prefixes:
            if n.scope == p or n.scope.startswith(p + "/"):
                keys[n.index] = p
                break
    unknown = sorted(set(prefixes) - set(keys.values()))
    if unknown:
        hit = repeats.folded_away(unknown[0]) if repeats is not None else None
        if hit:
            fold, member = hit
            raise ScopeError(f"to_dot: collapse={unknown[0]!r} is inside {member!r}, drawn folded into "
                             f"{fold.scope!r} (x {fold.count}); collapse the drawn copy "
                             f"{fold.scope + unknown[0][len(member):]!r}, or pass expand={member!r}")
        raise ScopeError(f"to_dot: collapse={unknown[0]!r} is not the scope of any node drawn; scopes: "
                         f"{_some({s for n in nodes for s in _scope_prefixes(n.scope)})}")
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

    def __init__(self, nodes, keys, max_nodes, place=None, folds=None):
        self.boxes, self.box_of, self.banded = [], {}, 0
        place, folds = place or {}, folds or {}
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
                box = Box(uid, x, place.get(x.index, x.scope))
                self.box_of[x.index] = box
            else:
                ms = members[x]
                parts = x.split("/")
                f = folds.get(x)                    # a folded run's drawn copy, collapsed: still "x k"
                label = html_table([escape(x + (f" \u00d7 {f.count}" if f else "")),
                                    escape(f"{len(ms):,} nodes, {param_count(ms):,} params" + (" each" if f else "")),
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


# --- repeated structure: sibling scopes drawn once, labelled "x k" ------------------------------------------
class ScopeError(gd.GraphError, ValueError):
    """A scope named in collapse= or expand= is not the scope of any node drawn (or is folded away)."""


_INDEXED = re.compile(r"^(.*?)(\d+)(\D*)$")      # block0, t12, h.3, layer_2_attn: an index in the name


class Fold:
    """One run of sibling scopes with the same structure, drawn once: `scope` (the first, drawn) stands for
    `members` (all of them, in index order); `parent` is the scope they sit in."""

    __slots__ = ("scope", "members", "parent")

    def __init__(self, members, parent):
        self.scope, self.members, self.parent = members[0], members, parent

    @property
    def count(self):
        return len(self.members)

    def span(self):
        """"block0 ... block3": the first and last member's own names."""
        first, last = (m.rsplit("/", 1)[-1] for m in (self.members[0], self.members[-1]))
        return f"{first} \u2026 {last}" if self.count > 2 else f"{first}, {last}"


class Repeats:
    """Finds sibling scopes that repeat one structure (a model's blocks, an unrolled RNN's time steps) and
    maps every node of a repeat to the node at the same place in the first one, which alone is drawn.

    Siblings are candidates when their names differ only by a number (block0..block3, t0..t9, h/0..h/3);
    they fold when their nodes match one to one in creation order: kind, op, shape, dtype, scope inside the
    sibling, and where each input comes from (the node at the same place in the same sibling, or outside it,
    with its shape and dtype). Names are not compared, and a run stops where another sibling scope's nodes
    come between two copies (a block's ln_1 and ln_2 match, but attn comes between them). What the first
    sibling computes once for all of them (a GPT's attention mask, built in block 0 and read by every block)
    is drawn beside the fold, not in it. Runs of consecutive matching siblings fold; a scope in `expand` (or
    inside one, or holding one) is drawn in full and splits the run. Folds nest (heads inside layers).

    Cost: one pass over the nodes per scope level plus one over the edges: linear in nodes x scope depth.

    Attributes:
        folds: [Fold] in scope order.  alias: {node index: the drawn node it is folded into}.
        place: {node index: scope to draw it in} for what the first sibling computes for all of them.
    """

    def __init__(self, nodes, expand=None):
        self.folds, self.alias, self.place = [], {}, {}
        self.expand = [str(e).strip("/") for e in (name_list(expand) or ())]
        scopes = {p for n in nodes for p in _scope_prefixes(n.scope)}
        for e in self.expand:
            if e not in scopes:
                raise ScopeError(f"to_dot: expand={e!r} is not the scope of any node drawn; scopes: "
                                 f"{_some(scopes)}")
        groups = {}                                  # (parent, stem, tail) -> [(index, scope)]
        for s in scopes:
            parent, _, own = s.rpartition("/")
            m = _INDEXED.match(own)
            if m:
                groups.setdefault((parent, m.group(1), m.group(3)), []).append((int(m.group(2)), s))
        groups = {k: sorted(v) for k, v in groups.items() if len(v) > 1}
        wanted = {s for v in groups.values() for _, s in v}
        subtree = {s: [] for s in wanted}            # scope -> its nodes (nested scopes included), in order
        inside = {k[0]: [] for k in groups}          # parent -> [(node index, child scope it is in)]
        for n in nodes:
            path = _scope_prefixes(n.scope)
            for p in path:
                if p in wanted:
                    subtree[p].append(n)
            for k, p in enumerate([""] + path[:-1] if path else []):
                if p in inside:
                    inside[p].append((n.index, path[k]))
        self._consumers = None
        self._nodes = nodes
        gone = set()                                 # members folded into another: their inner scopes too
        for key in sorted(groups, key=lambda k: (len(scope_parts(k[0])), k)):       # outer folds first
            members = [s for _, s in groups[key] if not any(p in gone for p in _scope_prefixes(s))]
            if len(members) > 1:
                self._fold_group(key[0], members, subtree, gone, inside[key[0]])
        for i in list(self.alias):                   # nested folds: follow to the node that is drawn
            rep = self.alias[i]
            while rep.index in self.alias:
                rep = self.alias[rep.index]
            self.alias[i] = rep
        self.folds.sort(key=lambda f: f.scope)
        self.by_scope = {f.scope: f for f in self.folds}
        self.member_of = {m: (f, k) for f in self.folds for k, m in enumerate(f.members)}

    def _expanded(self, s):
        return any(e == s or s.startswith(e + "/") or e.startswith(s + "/") for e in self.expand)

    def _fold_group(self, parent, members, subtree, gone, inside):
        lists = [[n for n in subtree[s] if n.index not in self.place] for s in members]
        ours = set(members)
        others = [i for i, c in inside if c not in ours]            # another sibling scope's nodes, in order
        spans = [(ns[0].index, ns[-1].index) if ns else (-1, -1) for ns in lists]
        apart = [k > 0 and bisect_right(others, spans[k - 1][0]) < len(others)
                 and others[bisect_right(others, spans[k - 1][0])] < spans[k][1] for k in range(len(members))]
        hoisted = self._hoisted(members, lists)
        sigs = [_signature(s, ns) for s, ns in zip(members, lists)]
        if hoisted:
            kept = [n for n in lists[0] if n.index not in hoisted]
            sig = _signature(members[0], kept)
            if sig == sigs[1]:
                lists[0], sigs[0] = kept, sig
            else:
                hoisted = set()
        run = []
        for k in range(len(members) + 1):
            if (k < len(members) and run and sigs[k] == sigs[run[0]] and not apart[k]
                    and not self._expanded(members[k])):
                run.append(k)
                continue
            if len(run) > 1:
                self.folds.append(Fold([members[j] for j in run], parent))
                rep = lists[run[0]]
                for j in run[1:]:
                    gone.add(members[j])
                    for a, b in zip(lists[j], rep):
                        self.alias[a.index] = b
                if run[0] == 0:
                    for i in hoisted:
                        self.place[i] = parent
            run = [k] if k < len(members) and not self._expanded(members[k]) else []

    def _hoisted(self, members, lists):
        """Nodes of the first member that every later member reads where the first reads them itself (an
        attention mask built once), with what only they read: drawn beside the fold."""
        first, nodes0 = members[0], lists[0]
        cut = len(first) + 1
        by_rel = {n.name[cut:]: n for n in nodes0}
        in0 = {n.index for n in nodes0}
        shared = None
        for s, ns in zip(members[1:], lists[1:]):
            c = len(s) + 1
            found = set()
            for n in ns:
                n0 = by_rel.get(n.name[c:])
                for slot, p in enumerate(n.inputs):
                    if (p.index in in0 and n0 is not None and slot < len(n0.inputs)
                            and n0.inputs[slot] is p):
                        found.add(p.index)
            shared = found if shared is None else shared & found
            if not shared:
                return set()
        if self._consumers is None:                  # who reads each node: built once, on first need
            self._consumers = {}
            for n in self._nodes:
                for p in n.inputs:
                    self._consumers.setdefault(p.index, []).append(n.index)
        for n in reversed(nodes0):                   # consumers before their inputs
            users = self._consumers.get(n.index)
            if n.index not in shared and users and all(u in shared for u in users):
                shared.add(n.index)
        return shared

    def crossing(self, p, n):
        """The fold whose different members p and n sit in (an edge to the next block or time step), or None."""
        a, b = self._members(p), self._members(n)
        for f, k in a:
            for g, j in b:
                if f is g and k != j:
                    return f
        return None

    def _members(self, node):
        return [self.member_of[s] for s in _scope_prefixes(node.scope) if s in self.member_of]

    def folded_away(self, scope):
        """(fold, member) when scope lies inside a member that is drawn as the fold's first, else None."""
        for s in _scope_prefixes(scope):
            hit = self.member_of.get(s)
            if hit and hit[1] > 0:
                return hit[0], s
        return None


def _signature(scope, nodes):
    """What must match for two siblings to fold: per node in creation order, its scope inside the sibling,
    kind, op, shape and dtype, and for each input the position of the input inside the sibling, or (for an
    input from outside) its shape and dtype."""
    local = {n.index: k for k, n in enumerate(nodes)}
    cut = len(scope) + 1
    return tuple((n.scope[cut:], n.kind, n.op, n.shape, str(n.dtype),
                  tuple(local[p.index] if p.index in local else (p.shape, str(p.dtype)) for p in n.inputs))
                 for n in nodes)


def _some(scopes):
    scopes = sorted(scopes)
    return (f"{scopes[:20]}{' ...' if len(scopes) > 20 else ''}" if scopes
            else "none (the graph has no g.scope(...))")
