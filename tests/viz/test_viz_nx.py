"""to_networkx: node attributes and one edge per input slot."""
import networkx as nx

from graphdiff import viz
from graphdiff.viz import gallery

from .viz_helpers import twice_a


def test_multidigraph_keeps_both_edges_of_x_times_x():
    g, a, b, c = twice_a()
    G = viz.to_networkx(c)
    assert isinstance(G, nx.MultiDiGraph)
    assert sorted(G.nodes) == [0, 1, 2]
    assert G.number_of_edges(0, 1) == 2 and G.number_of_edges(1, 2) == 2
    assert sorted(d["slot"] for _, _, d in G.edges(data=True)) == [0, 0, 1, 1]
    assert G.nodes[0] == {"name": "a", "op": None, "kind": "param", "scope": "", "shape": (), "dtype": "float64",
                          "text": "f64[]", "has_value": True, "released": False, "has_grad": False,
                          "output": False}
    assert G.nodes[2]["op"] == "multiply" and G.nodes[2]["output"]
    g.backward(c, retain_grads=True)
    assert all(d["has_grad"] for _, d in viz.to_networkx(c).nodes(data=True))


def test_whole_graph_is_a_dag_in_topological_order():
    g, loss = gallery.transformer()
    G = viz.to_networkx(g)
    assert G.number_of_nodes() == len(g.nodes)
    assert G.number_of_edges() == sum(len(n.inputs) for n in g.nodes)
    assert nx.is_directed_acyclic_graph(G)
    assert all(u < v for u, v in G.edges())
    kinds = {d["kind"] for _, d in G.nodes(data=True)}
    assert kinds == {"input", "param", "constant", "op"}
    assert G.nodes[len(g.nodes) - 1]["name"] == "loss"
