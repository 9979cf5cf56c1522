"""The two backward variants side by side, in numbers: run each on the same graph and output, and report
equal gradients, VJP calls, adjoint writes and additions (+=), peak live adjoints and their bytes, and time.

Everything here comes from `g.backward(y, variant=..., trace=events)`: Final(node) when an adjoint is
complete, Contribution(child, slot, parent, first) for each VJP call (first: the parent's adjoint was
written rather than added to), Freed(node) when an adjoint is released. An adjoint is live from its first
contribution (or, for y, from its seed) until it is freed; the peak of that set is what the variants differ in.
"""
import html
import json
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np

import graphdiff as gd

from .graphs import sum_sites

VARIANTS = tuple(gd.VARIANTS)
ABOUT = {"children": "Version A (children): each node pulls and sums the contributions of its children",
         "parents": "Version B (parents): each node pushes += into the adjoints of its inputs"}


def check_output(graph, y, variant=None):
    """Refuse (TypeError, GraphError, ValueError) a graph and output that cannot be traced: y not a node of
    graph, y without a value, an unknown variant."""
    if not isinstance(graph, gd.Graph) or not isinstance(y, gd.Node):
        raise TypeError(f"expected (gd.Graph, gd.Node), got ({type(graph).__name__}, {type(y).__name__})")
    if y.index >= len(graph.nodes) or graph.nodes[y.index] is not y:
        raise gd.GraphError(f"'{y.name}' is not a node of this graph; pass the graph it was built in")
    if y.value is None:
        raise gd.GraphError(f"'{y.name}' has no value; run g.forward(feeds, outputs=y) first")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {VARIANTS}")


def nbytes(node):
    """Bytes of the node's value (and so of its adjoint)."""
    return node.size * np.dtype(node.dtype).itemsize


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


def sums_text(nodes, variant):
    """One line for a drawn backward graph: where each adjoint with several contributions is summed."""
    sites = sum_sites(nodes)
    if not sites:
        return "no node has more than one contribution: no sum"
    if variant == "children":
        return "one add_n per node, when its turn comes: " + ", ".join(
            f"g_{a} = add_n of {len(s[-1].inputs)}" for a, s in sites.items())
    return "a chain of adds per node, one as each child pushes: " + ", ".join(
        f"g_{a}: {len(s)} add{'s' * (len(s) != 1)}" for a, s in sites.items())


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
    check_output(graph, y)
    for v in variants:
        check_output(graph, y, v)
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
