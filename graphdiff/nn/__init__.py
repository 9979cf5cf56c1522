"""graphdiff.nn: modules that build graph nodes, optimizers, schedules, and checkpoint files.

    model = Block(64, 4)                  # parameters live in the module
    g = gd.Graph(); x = g.input("x", (8, 16, 64))
    y = model(x)                          # nodes added to g, in scopes named after the modules
"""
from .module import Module, ModuleList, Parameter, Program, ProgramCache, Tape, new_graph  # noqa: F401
from .layers import Dropout, Embedding, LayerNorm, Linear, MLP  # noqa: F401
from .attention import Block, CausalSelfAttention  # noqa: F401
from .rnn import RNNCell  # noqa: F401
from .optim import SGD, AdamW, Optimizer, clip_grad_norm, warmup_cosine  # noqa: F401
from .serialization import CheckpointError  # noqa: F401
from . import init, serialization  # noqa: F401
