"""graphdiff: automatic differentiation on an explicit computation graph.

    import numpy as np, graphdiff as gd
    g = gd.Graph(dtype="float64")
    x = g.input("x", shape=(4, 3)); W = g.param("W", np.random.randn(3, 2))
    loss = gd.mean(gd.tanh(x @ W) ** 2)
    g.forward({x: np.random.randn(4, 3)})
    g.backward(loss, variant="children")     # or "parents"; W.grad holds dloss/dW
"""
from .errors import (BackendUnavailable, DTypeError, GradcheckError, GraphError, NonFiniteError,  # noqa: F401
                     ShapeError)
from .backend import get_backend, set_backend, use_backend  # noqa: F401
from .graph import Graph, Node, to_numpy  # noqa: F401
from . import autodiff
from .autodiff import (Contribution, Final, Freed, VARIANTS, hessian, hvp, jvp,  # noqa: F401
                       topological_order)
from .gradcheck import gradcheck, numeric_grads  # noqa: F401
from . import ops  # noqa: F401
from .ops import *  # noqa: F401,F403
from .ops import op, REGISTRY  # noqa: F401

Graph.engine = autodiff       # graph.py is structure only: the engine that runs graphs is plugged in here

__version__ = "0.1.0"
