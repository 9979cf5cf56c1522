"""A micrograd-style scalar expression in eager mode: each value is computed as the node is added.

This is the expression from micrograd's README, so the numbers can be checked against it:
g = 24.7041, dg/da = 138.8338, dg/db = 645.5773.

    python examples/scalar_graph.py [--backend cupy]
"""
import argparse

import graphdiff as gd
from graphdiff.cli import add_backend_argument

_args = argparse.ArgumentParser(description=__doc__)
add_backend_argument(_args)
gd.set_backend(_args.parse_args().backend)

g_ = gd.Graph(dtype="float64", eager=True)   # eager: like micrograd, values appear as you build
a = g_.param("a", -4.0)
b = g_.param("b", 2.0)
c = a + b
d = a * b + b ** 3
c = c + (c + 1)
c = c + (1 + c + (-a))
d = d + (d * 2 + gd.relu(b + a))
d = d + (3 * d + gd.relu(b - a))
e = c - d
f = e ** 2
g = f / 2.0
g = g + 10.0 / f

print(f"g = {g.item():.4f}   ({len(g_.nodes)} nodes, eager)")
for variant in gd.VARIANTS:
    events = []
    g_.backward(g, variant=variant, trace=events)
    calls = sum(e.kind == "contribution" for e in events)
    print(f"{variant:8s}: dg/da = {a.grad.item():.4f}, dg/db = {b.grad.item():.4f}   ({calls} VJP calls)")

# The same graph re-runs with new leaf values: assign, forward, backward.
a.value = 1.0
g_.forward(outputs=g)
g_.backward(g)
print(f"with a = 1: g = {g.item():.4f}, dg/da = {a.grad.item():.4f}")
