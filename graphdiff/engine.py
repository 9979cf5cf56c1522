"""The engine: the functions a Graph calls to run itself, and nothing else.

graph.py holds structure only and cannot import what runs it (it sits below); importing this module plugs
it in as Graph.engine. The contract, one function per Graph method:

    forward(graph, feeds, outputs, check_finite, resample)        values of outputs (execution.forward)
    backward(graph, y, variant, seed, trace, wrt, retain_grads,   {wrt node: gradient}, .grad set
             check_finite)                                         (autodiff.backward -> version_a / _b)
    forward_backward(graph, feeds, outputs, y, variant, seed,     forward then backward, releasing values
                     trace)                                        at their last use (lifetimes)
    gradients(graph, y, wrt, variant, seed)                       gradient Nodes (autodiff.gradients)
    compute(node)                                                  an eager node's value (execution.compute)

Each reads and writes the engine's per-graph State (execution.state) and nothing of the Graph's private.
"""
import sys

from . import autodiff, execution, lifetimes
from .graph import Graph


def forward(graph, feeds=None, outputs=None, check_finite=None, resample=True):
    """See Graph.forward."""
    return execution.forward(graph, feeds, outputs, check_finite=check_finite, resample=resample)


def backward(graph, y, variant="children", seed=None, trace=None, wrt=None, retain_grads=False,
             check_finite=None):
    """See Graph.backward."""
    return autodiff.backward(graph, y, variant, seed=seed, trace=trace, wrt=wrt, retain_grads=retain_grads,
                             check_finite=check_finite)


def forward_backward(graph, feeds, outputs, y, variant="children", seed=None, trace=None):
    """See Graph.forward_backward."""
    return lifetimes.forward_backward(graph, feeds, outputs, y, variant, seed=seed, trace=trace)


def gradients(graph, y, wrt, variant="children", seed=None):
    """See Graph.gradients."""
    return autodiff.gradients(graph, y, wrt, variant, seed=seed)


# compute(node): an eager graph's new node computed from its inputs' values as it is added. The function
# itself, not a wrapper: it runs once per node an eager graph adds.
compute = execution.compute

Graph.engine = sys.modules[__name__]        # this module is what every Graph runs with
