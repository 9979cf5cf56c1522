"""Module, Parameter, and Program: models that build a graph once per input shape and are re-fed.

A Module owns Parameters (a name and a backend array); calling a module inside a graph adds its nodes to
that graph, in a scope named after the module, and turns each Parameter into one param node per graph.

How parameters are shared between the graphs of one model (a graph per input shape):
    `Parameter.data` is the single source of truth. A graph's param node is only a view of it: before
    every run, `Program` binds each param node to the Parameter's current array (`node.value = p.data`,
    no copy on the same backend), and after backward it copies the node's `.grad` to `p.grad`.
    Optimizers replace `p.data` with a new array. This works the same on numpy, cupy and
    array_api_strict, and it does not rely on NumPy aliasing (`g.param` copies on CuPy).
"""
import numpy as np

from ..backend import get_backend, to_numpy
from ..errors import GraphError, ShapeError
from ..graph import Graph, Node


def _bound(graph):
    """{id(Parameter): param Node} of a graph, so a module called twice in one graph (an RNN cell over T
    steps, tied weights) gets the same node both times. Kept on the graph, so it goes when the graph goes."""
    return graph.__dict__.setdefault("_nn_params", {})


class Parameter:
    """A trainable array owned by a Module. Attributes: data (backend array), grad (backend array or None)."""

    __slots__ = ("data", "grad", "__weakref__")

    def __init__(self, data):
        self.data = data
        self.grad = None

    @property
    def shape(self):
        return tuple(self.data.shape)

    def numpy(self):
        return to_numpy(self.data)

    def __repr__(self):
        return f"<Parameter {self.shape}>"


class Module:
    """Base class: subclasses create Parameters and submodules in __init__ and build nodes in forward.

    Calling `module(x, ...)` runs `forward` inside a graph scope named after the module (its attribute
    name in the parent), so nodes are named like "h.0/attn/qk". Args of __init__ common to all layers:
    backend (None: the current default) and dtype ("float32" or "float64").
    """

    def __init__(self, backend=None, dtype="float32"):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_name", "")
        self.backend = get_backend(backend)
        self.dtype = dtype
        self.training = True

    # --- registration --------------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._params[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
            object.__setattr__(value, "_name", name)
        object.__setattr__(self, name, value)

    def add_param(self, name, host_value):
        """Register a Parameter from a NumPy array, cast to the module's dtype and moved to its backend."""
        p = Parameter(self.backend.from_host(np.asarray(host_value), self.dtype))
        setattr(self, name, p)
        return p

    def add_module(self, name, module):
        setattr(self, name, module)
        return module

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) pairs, this module's own first, then each submodule's in order."""
        for n, p in self._params.items():
            yield prefix + n, p
        for n, m in self._modules.items():
            yield from m.named_parameters(prefix + n + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_modules(self, prefix=""):
        yield prefix.rstrip("."), self
        for n, m in self._modules.items():
            yield from m.named_modules(prefix + n + ".")

    def num_parameters(self):
        return sum(int(np.prod(p.shape)) for p in self.parameters())

    # --- state --------------------------------------------------------------------------------------
    def state_dict(self):
        """{dotted name: NumPy array} (copies on the host), e.g. 'h.0.attn.c_attn.weight'."""
        return {n: np.array(to_numpy(p.data)) for n, p in self.named_parameters()}

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the Parameters by name; shapes must match. strict: keys must match exactly."""
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                           f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}; the state "
                           f"comes from a different model or configuration")
        for k, p in own.items():
            if k not in state:
                continue
            v = np.asarray(to_numpy(state[k]))
            if tuple(v.shape) != p.shape:
                raise ShapeError(f"load_state_dict: '{k}' has shape {tuple(v.shape)} in the state, "
                                 f"{p.shape} in the model; build the model with the same sizes")
            p.data = self.backend.from_host(v, self.dtype)
        return self

    def train(self, mode=True):
        for _, m in self.named_modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # --- building -----------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        g = _graph_of(args, kwargs)
        if g is None or not self._name:
            return self.forward(*args, **kwargs)
        with g.scope(self._name):
            return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward(...)")

    def node(self, graph, name):
        """The param node of Parameter `name` in `graph` (created once per graph, bound by identity)."""
        p = self._params[name]
        bound = _bound(graph)
        n = bound.get(id(p))
        if n is None:
            # placeholder value without copying: Program binds p.data before each run
            n = graph.param(name, np.broadcast_to(np.zeros((), dtype=self.dtype), p.shape))
            n.value = p.data
            bound[id(p)] = n
        return n

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for n, m in self._modules.items():
            lines.append(f"  ({n}): " + repr(m).replace("\n", "\n  "))
        return lines[0] + (")" if len(lines) == 1 else "\n" + "\n".join(lines[1:]) + "\n)")

    def extra_repr(self):
        return ""


class ModuleList(Module):
    """An indexable list of submodules, named "0", "1", ... (so names read 'h.0.attn...')."""

    def __init__(self, modules, backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        for k, m in enumerate(modules):
            setattr(self, str(k), m)

    def __getitem__(self, k):
        return self._modules[str(k)]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


def _graph_of(args, kwargs):
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, Node):
            return a.graph
    return None


class Program:
    """One graph built for one input shape, plus what is needed to re-feed it batch after batch.

    Attributes:
        graph: the Graph.  inputs: {name: input Node}.  outputs: {name: Node}.
        bindings: [(param Node, Parameter)] for the module's parameters that this graph uses.
    """

    def __init__(self, module, graph, inputs, outputs):
        self.module = module
        self.graph = graph
        self.inputs = inputs
        self.outputs = outputs
        bound = _bound(graph)
        self.bindings = [(bound[id(p)], p) for p in module.parameters() if id(p) in bound]

    def run(self, feeds, outputs=("loss",), backward=None, variant="children"):
        """Bind the current parameters, feed, compute `outputs`; with backward="loss" also set p.grad.

        Args:
            feeds: {input name: array}.  outputs: names of outputs to return.
        Returns:
            a list of output values (backend arrays) in the order of `outputs`.
        """
        g = self.graph
        for node, p in self.bindings:         # the graph owns a copy: in-place changes to p.data count too
            node.value = p.data
        g.training = self.module.training
        want = [self.outputs[k] for k in outputs]
        vals = g.forward({self.inputs[k]: v for k, v in feeds.items()}, outputs=want)
        if backward is not None:
            g.backward(self.outputs[backward], variant=variant)
            for node, p in self.bindings:
                p.grad = node.grad
        return vals


class ProgramCache:
    """Programs keyed by (kind, shapes...): "a graph per shape, cached". build(key) makes one on a miss."""

    def __init__(self, build, max_size=32):
        self.build = build
        self.max_size = max_size
        self.programs = {}

    def __call__(self, key):
        prog = self.programs.get(key)
        if prog is None:
            if len(self.programs) >= self.max_size:          # drop the oldest (insertion order)
                self.programs.pop(next(iter(self.programs)))
            prog = self.programs[key] = self.build(key)
        return prog

    def clear(self):
        self.programs.clear()


def new_graph(module, seed=None, rng=None):
    """A Graph on the module's backend and dtype; `rng` (an engine rng) is shared when given."""
    g = Graph(backend=module.backend, dtype=module.dtype, seed=seed)
    if rng is not None:
        g.rng = rng
    return g


__all__ = ["Parameter", "Module", "ModuleList", "Program", "ProgramCache", "new_graph", "GraphError"]
