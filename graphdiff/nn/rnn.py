"""The Elman RNN cell: h_t = tanh(x_t @ weight_ih + h_{t-1} @ weight_hh + bias)."""
import math

from .. import ops
from . import init
from .module import Module


class RNNCell(Module):
    """One step of an Elman RNN. weight_ih (in, hidden), weight_hh (hidden, hidden), bias (hidden,).

    Calling it T times in one graph reuses the same param nodes (the unrolled graph shares weights).
    Init as PyTorch: U(-1/sqrt(hidden), 1/sqrt(hidden)).
    """

    def __init__(self, input_size, hidden_size, nonlinearity="tanh", rng=None, backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        rng = init.as_rng(rng)
        k = 1.0 / math.sqrt(hidden_size)
        self.input_size, self.hidden_size, self.nonlinearity = input_size, hidden_size, nonlinearity
        self.add_param("weight_ih", init.uniform(rng, (input_size, hidden_size), k))
        self.add_param("weight_hh", init.uniform(rng, (hidden_size, hidden_size), k))
        self.add_param("bias", init.uniform(rng, (hidden_size,), k))

    def forward(self, x, h):                                # x (B, in), h (B, hidden) -> (B, hidden)
        g = x.graph
        a = (ops.matmul(x, self.node(g, "weight_ih"), name="ih") + ops.matmul(h, self.node(g, "weight_hh"), name="hh")
             + self.node(g, "bias"))
        return ops.tanh(a) if self.nonlinearity == "tanh" else ops.relu(a)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}"
