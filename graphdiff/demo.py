"""`graphdiff demo` and `graphdiff ops`: the engine at a glance, from the command line."""
import numpy as np

from . import autodiff, ops
from .backend import to_numpy
from .graph import Graph


def add_demo_arguments(parser):
    from .cli import add_backend_argument
    add_backend_argument(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed for the random weights")


def run_demo(args):
    """A two-layer network on a batch of 4 points, differentiated by both variants."""
    rng = np.random.default_rng(args.seed)
    g = Graph(dtype="float64")
    x = g.input("x", shape=(4, 3))
    with g.scope("layer1"):
        W1 = g.param("W", rng.standard_normal((3, 5)) * 0.5)
        b1 = g.param("b", np.zeros(5))
        h = ops.tanh(x @ W1 + b1, name="h")
    with g.scope("layer2"):
        W2 = g.param("W", rng.standard_normal((5, 1)) * 0.5)
        y = h @ W2
    loss = ops.mean(y * y, name="loss")
    value = g.forward({x: rng.standard_normal((4, 3))}, outputs=loss)
    print(f"graph: {len(g.nodes)} nodes on backend '{g.backend.name}'; loss = {float(to_numpy(value)):.6f}")
    grads, counts = {}, {}
    for variant in autodiff.VARIANTS:
        events = []
        g.backward(loss, variant=variant, trace=events)
        grads[variant] = {p.name: to_numpy(p.grad).copy() for p in g.params()}
        counts[variant] = sum(e.kind == "contribution" for e in events)
    for p in g.params():
        a, b = grads["children"][p.name], grads["parents"][p.name]
        print(f"d loss / d {p.name:9s} {str(a.shape):7s} |grad| = {np.linalg.norm(a):.6f}   "
              f"max |children - parents| = {np.max(np.abs(a - b)):.2e}")
    print(f"VJP calls: children {counts['children']}, parents {counts['parents']}")
    return 0


def add_ops_arguments(parser):
    pass


def run_ops(args):
    for name, spec in sorted(ops.REGISTRY.items()):
        arity = "n" if spec.arity is None else spec.arity
        grad = "" if spec.differentiable else "  (no gradient)"
        print(f"{name:14s} {arity}  {spec.doc.splitlines()[0] if spec.doc else ''}{grad}")
    return 0
