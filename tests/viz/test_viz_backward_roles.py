"""What each gradient node of viz.backward_graph stands for (graphs.role_of), checked against the numbers:
an adjoint g_v holds v's gradient from the numeric backward, a contribution names a real edge, and the
contributions into a node add up to its adjoint; the labels use the lecture's names, never an op name."""
import re

import numpy as np
import pytest

import graphdiff as gd
from graphdiff.viz import gallery, to_dot
from graphdiff.viz.graphs import backward_graph, is_backward, is_sum, role_of, sum_sites
from graphdiff.viz.report import sums_text


def _value(n):
    return np.asarray(gd.to_numpy(n.value), dtype=np.float64)


@pytest.mark.parametrize("variant", ["children", "parents"])
@pytest.mark.parametrize("name", ["scalar", "shared", "mlp", "transformer"])
def test_roles_match_the_numeric_gradients(name, variant):
    g, y = gallery.build(name)
    nodes = backward_graph(g, y, variant)
    grads = {n.name: np.asarray(gd.to_numpy(n.grad), dtype=np.float64) for n in g.nodes
             if not is_backward(n) and n.grad is not None}
    tol = 1e-4 if y.dtype == "float32" else 1e-10
    grad_nodes = [n for n in g.nodes if is_backward(n)]
    roles = {n.name: role_of(n) for n in grad_nodes}
    assert all(r is not None for r in roles.values()), [k for k, r in roles.items() if r is None]
    into = {}
    for n in grad_nodes:
        r = roles[n.name]
        if r.kind in ("seed", "adjoint"):
            for v in r.of:                               # g_v holds v's gradient
                np.testing.assert_allclose(_value(n), grads[v], rtol=tol, atol=tol, err_msg=f"{n.name} as g_{v}")
        if r.kind in ("contribution", "adjoint") and r.edge:
            child, slot, parent = r.edge
            assert g.node(child).inputs[slot] is g.node(parent)
        if r.kind == "contribution":
            into.setdefault(r.edge[2], []).append(_value(n))
    for parent, parts in into.items():                   # the contributions into a node sum to its adjoint
        if len(parts) > 1:
            np.testing.assert_allclose(sum(parts), grads[parent], rtol=tol, atol=tol)
    assert nodes[0] is y and all(role_of(n).kind in ("adjoint", "seed") for n in nodes[1:])
    dot = to_dot(nodes)
    titles = [re.search(rf"^\s*{dot.ids[n.name]} \[label=<<TABLE.*?<B>([^<]*)</B>", dot.source, re.M).group(1)
              for n in grad_nodes]
    ops = set(gd.REGISTRY)
    assert all(t.startswith("g_") or "&#8594;" in t or t.startswith("in the VJP of ") for t in titles), titles
    assert not any(t in ops or t.startswith("grad/") for t in titles)


def test_where_the_sums_happen_differs_by_variant():
    lines = {}
    for variant in ("children", "parents"):
        g, y = gallery.shared()
        nodes = backward_graph(g, y, variant)
        drawn = [n for n in g.nodes if is_backward(n)]
        sites = sum_sites(drawn)
        assert list(sites) == ["a"]                       # a = exp(x) is used four times
        ops = [n.op for n in sites["a"]]
        assert ops == (["add_n"] if variant == "children" else ["add", "add", "add"])
        assert all(is_sum(n) for n in sites["a"])
        partial = [role_of(n) for n in sites["a"] if role_of(n).kind == "partial"]
        assert [(r.count, r.total) for r in partial] == ([] if variant == "children" else [(2, 4), (3, 4)])
        lines[variant] = sums_text(drawn, variant)
        assert len(nodes) == 2
    assert "g_a = add_n of 4" in lines["children"] and "g_a: 3 adds" in lines["parents"]


def test_a_backward_picture_has_no_gradients_not_computed_line():
    g, y = gallery.scalar()
    src = to_dot(backward_graph(g, y, "children")).source
    assert "gradients not computed" not in src and "&#8212;" not in src       # every grad known
    g2, y2 = gallery.scalar()
    assert "gradients not computed" in to_dot(y2).source                     # a forward picture still says it


def test_gradient_nodes_not_from_backward_graph_say_so():
    g, y = gallery.scalar()
    dW = g.gradients(y, [g.node("a")])
    src = to_dot(dW).source
    assert "gradient node (draw viz.backward_graph for its role)" in src


@pytest.mark.parametrize("variant", ["children", "parents"])
def test_role_names_cost_linear_in_the_backward_nodes(variant, monkeypatch):
    """Naming the roles looks up only each gradient node's inputs: a microgpt-sized backward (tens of
    thousands of nodes) took ten minutes when every node's formula named every role."""
    from graphdiff.viz import graphs
    calls = []
    real = graphs.short_name
    monkeypatch.setattr(graphs, "short_name", lambda *a: calls.append(1) or real(*a))
    g = gd.Graph(dtype="float64")
    xs = [g.input(f"x{k}", ()) for k in range(60)]
    y = gd.add_n([x * x + x for x in xs])
    g.forward({x: float(k) for k, x in enumerate(xs)}, outputs=y)
    backward_graph(g, y, variant, wrt=xs)
    made = sum(is_backward(n) for n in g.nodes)
    assert made > 150 and len(calls) <= 4 * made, (len(calls), made)
