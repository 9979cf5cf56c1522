"""Typed errors. Each message names the node, the op, the shapes and dtypes involved, and the fix."""


class GraphError(RuntimeError):
    """A graph is used in a way that cannot work (wrong graph, missing feed, bad backward call)."""


class ReleasedError(GraphError):
    """A value was released after its last use (Graph.forward_backward, the nn path) and is read again, or a
    second backward runs through it; run the forward again."""


class ShapeError(GraphError, ValueError):
    """Shapes do not fit together; raised when the node is built, not when it runs."""


class DTypeError(GraphError, TypeError):
    """A dtype cannot be used here (integer ids where a gradient is asked for, int mixed with float)."""


class NonFiniteError(GraphError, FloatingPointError):
    """A NaN or Inf appeared; names the first node that produced one from finite inputs."""


class KernelError(GraphError):
    """A backend's fused kernel failed to compile or run; names the kernel and the switch that turns it off."""


class BackendUnavailable(ImportError):
    """The requested array backend (CuPy, array_api_strict) cannot be used on this machine."""


class GradcheckError(AssertionError):
    """Analytic and finite-difference gradients disagree."""
