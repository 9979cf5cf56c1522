"""graphdiff's ops: the registry (registry.py: each op's shape rule, forward and VJP side by side), the
modules that register them, and the functions that build their nodes. See registry.py for how an op is
defined; users add their own with gd.op.
"""
import sys

from ..graph import use_ops
from .registry import REGISTRY, OpDef, apply, broadcast_shapes, fused_kernels, kernel, op  # noqa: F401
from . import elementwise, reduce, shape, nn  # noqa: F401  (modules register their ops on import)
from . import fused_numpy, fused_cupy  # noqa: F401  (fused kernels, registered on import; CuPy's import no cupy)
from .nodes import NODES  # noqa: F401  (F for Nodes: the ops as a namespace)
from .elementwise import *  # noqa: F401,F403
from .reduce import *  # noqa: F401,F403
from .shape import *  # noqa: F401,F403
from .nn import *  # noqa: F401,F403

__all__ = (["REGISTRY", "OpDef", "op", "kernel", "fused_kernels", "apply", "broadcast_shapes"]
           + elementwise.__all__ + reduce.__all__ + shape.__all__ + nn.__all__)

use_ops(sys.modules[__name__])       # Node's operators (+, @, x[i], x.sum(), ...) build nodes with these
