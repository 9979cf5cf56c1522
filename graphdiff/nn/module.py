"""Module, Parameter, and Program: models that build a graph once per input shape and are re-fed.

A Module owns Parameters (a name and a backend array); calling a module inside a graph adds its nodes to
that graph, in a scope named after the module, and turns each Parameter into one param node per graph.

How parameters are shared between the graphs of one model (a graph per input shape):
    `Parameter.data` is the single source of truth. A graph's param node is only a view of it: before
    every run, `Program` binds each param node to the Parameter's current array (`node.value = p.data`,
    no copy on the same backend), and after backward it copies the node's `.grad` to `p.grad`.
    Optimizers replace `p.data` with a new array. This works the same on numpy, cupy and
    array_api_strict, and it does not rely on NumPy aliasing (`g.param` copies on CuPy).

Called on arrays instead of Nodes, `model(X)` needs no graph from the user: the module builds a graph for
X's shape and dtype once (a Program in its ProgramCache), runs it, and returns the output as the leaf of a
new small eager graph (a Tape) in which the user's loss is built. `loss.backward()` on the Tape then seeds
the Program's backward with the output's gradient and sets p.grad, so the cached graph never grows.
"""
import itertools
import os
import weakref

import numpy as np

from ..backend import backend_of, get_backend, to_numpy
from ..errors import DTypeError, GraphError, ShapeError
from ..execution import topological_order
from ..graph import Graph, Node
from ..values import dtype_name
from . import serialization
from .serialization import CheckpointError

FORMAT = "graphdiff.nn.Module"      # the 'format' field of Module.save's metadata
_KINDS = {"c": "complex numbers: the imaginary parts would be lost", "U": "text", "S": "bytes",
          "O": "Python objects", "M": "datetimes", "m": "timedeltas", "V": "structured records"}


class GraphMemo:
    """Nodes that nn keeps per graph, by key: get(graph, key) -> the node put there, or None. Weak both ways:
    an entry goes when its graph goes (a node holds its graph, so a strong reference to one would keep every
    graph alive), and nothing is stored on the graph itself."""

    def __init__(self):
        self.graphs = weakref.WeakKeyDictionary()        # graph -> {key: weak reference to a node}

    def get(self, graph, key):
        ref = self.graphs.get(graph, {}).get(key)
        return None if ref is None else ref()

    def put(self, graph, key, node):
        self.graphs.setdefault(graph, {})[key] = weakref.ref(node)
        return node


# id(Parameter) -> its param node in a graph, so a module called twice in one graph (an RNN cell over T steps,
# tied weights) gets the same node both times
PARAM_NODES = GraphMemo()


class Parameter:
    """A trainable array owned by a Module. Attributes: data (backend array), grad (backend array or None),
    version (bumped by an optimizer that updates data in place, so a replay can tell that it changed)."""

    __slots__ = ("data", "grad", "version", "__weakref__")

    def __init__(self, data):
        self.data = data
        self.grad = None
        self.version = 0

    @property
    def shape(self):
        return tuple(self.data.shape)

    def numpy(self):
        return to_numpy(self.data)

    def __repr__(self):
        return f"<Parameter {self.shape}>"

    def as_node(self, graph=None):
        """This Parameter as a node of `graph`, so that it can be used in expressions (an L2 penalty,
        gd.sum(model.weight ** 2), added to a loss on a model's output): in a Tape (None: a new one) a leaf
        holding its current value, whose gradient Tape.backward adds to .grad; in a graph the module was
        called in, its param node there. Operators and gd.* functions on a Parameter call this."""
        if graph is None:
            B = backend_of(self.data)
            graph = Tape(B, B.dtype_name(self.data))
        if isinstance(graph, Tape):
            return graph.leaf_of(self)
        node = PARAM_NODES.get(graph, id(self))
        if node is None:
            raise GraphError(f"a Parameter {self.shape} is used in a graph its module was not called in; call "
                             "the module in this graph first, or use module.node(graph, name)")
        return node

    def __iter__(self):
        raise TypeError(f"a Parameter {self.shape} is not iterable; index it (p[i]) or use p.numpy()")


def _on_node(name):
    """A Parameter method that does what the Node method `name` does, on the Parameter as a node (in the
    graph of a Node argument, else in a new Tape)."""
    def method(self, *args, **kwargs):
        return getattr(self.as_node(_graph_of(args, kwargs)), name)(*args, **kwargs)
    method.__name__ = name
    return method


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
              "__pow__", "__rpow__", "__matmul__", "__rmatmul__", "__neg__", "__abs__", "__getitem__", "sum",
              "mean", "max", "reshape", "transpose", "exp", "log", "tanh", "relu", "sigmoid"):
    setattr(Parameter, _name, _on_node(_name))
Parameter.__array_ufunc__ = None        # array * parameter: NumPy defers to Parameter.__rmul__, as for Nodes
Parameter.T = property(lambda self: self.as_node().T)


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
        object.__setattr__(self, "_programs", ProgramCache(self._build_program))   # for calls on arrays
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

    def named_parameters(self, prefix="", remove_duplicate=True):
        """(dotted name, Parameter) pairs, this module's own first, then each submodule's in order.

        A Parameter shared by several modules (tied weights) comes once, under its first name, as in
        PyTorch, so optimizers move it once and clip_grad_norm counts it once; remove_duplicate=False lists
        every name."""
        seen = set()
        every = itertools.chain(((prefix + n, p) for n, p in self._params.items()),
                                (pair for n, m in self._modules.items()
                                 for pair in m.named_parameters(prefix + n + ".", remove_duplicate=False)))
        for name, p in every:
            if remove_duplicate:
                if id(p) in seen:
                    continue
                seen.add(id(p))
            yield name, p

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
        """Copy arrays into the Parameters by name; shapes must match. strict: keys must match exactly.
        Every array is checked before any is copied, so a failed load leaves the module as it was. A tied
        Parameter may be given under any of its names (all of them, as PyTorch's state_dict has, if equal)."""
        own = dict(self.named_parameters())
        first = {id(p): k for k, p in own.items()}
        alias = {k: first[id(p)] for k, p in self.named_parameters(remove_duplicate=False)}
        given = {}                                 # first name -> the state's keys for that Parameter
        for k in state:
            if k in alias:
                given.setdefault(alias[k], []).append(k)
        missing = [k for k in own if k not in given]
        unexpected = [k for k in state if k not in alias]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                           f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}; the state "
                           f"comes from a different model or configuration")
        values = []
        for name, keys in given.items():
            p = own[name]
            for k in keys:
                v = np.asarray(to_numpy(state[k]))
                if v.dtype.kind not in "biuf":
                    what = _KINDS.get(v.dtype.kind, v.dtype.kind)
                    raise DTypeError(f"load_state_dict: '{k}' holds {v.dtype} data ({what}); parameters hold "
                                     "real numbers, so nothing was loaded")
                if tuple(v.shape) != p.shape:
                    raise ShapeError(f"load_state_dict: '{k}' has shape {tuple(v.shape)} in the state, "
                                     f"{p.shape} in the model; build the model with the same sizes")
                if k != keys[0] and not np.array_equal(v, values[-1][1]):
                    raise GraphError(f"load_state_dict: '{keys[0]}' and '{k}' are one tied Parameter in the "
                                     "model but hold different values in the state; give one of them")
                if k == keys[0]:
                    values.append((p, v))
        for p, v in values:                        # all checked: now copy
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

    def save(self, path):
        """Write the parameters to `path` (str or os.PathLike; .npz: arrays by dotted name, never pickle;
        written atomically) and their class, dtype and shapes to the same name with .json. Module.load reads
        it back."""
        state = self.state_dict()
        meta = {"format": FORMAT, "class": type(self).__name__, "dtype": self.dtype,
                "params": {k: list(v.shape) for k, v in state.items()}}
        serialization.save(path, state, meta)

    def load(self, path):
        """Copy the parameters saved by `save` at `path` (str or os.PathLike) into this module (built with
        the same sizes); returns self. Raises CheckpointError naming the file and what does not match, and
        then leaves the module as it was."""
        path = os.fspath(path)
        arrays, meta = serialization.load(path)
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path!r} is not a Module checkpoint (format {meta.get('format')!r}); "
                                  "language-model checkpoints load with graphdiff.lm.load_checkpoint")
        if meta.get("class") != type(self).__name__:
            raise CheckpointError(f"{path!r} holds a {meta.get('class')}, not a {type(self).__name__}; load it "
                                  f"into a {meta.get('class')} built with the same sizes")
        try:
            self.load_state_dict(arrays)
        except (KeyError, GraphError) as e:
            raise CheckpointError(f"{path!r}: {e.args[0]}") from None
        return self

    # --- building -----------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        g = _graph_of(args, kwargs)
        if g is None and args and all(isinstance(a, np.ndarray) or _numbers(a) or self.backend.owns(a)
                                      for a in args):
            return self.call_on_arrays(args, kwargs)
        if g is None or not self._name:
            return self.forward(*args, **kwargs)
        with g.scope(self._name):
            return self.forward(*args, **kwargs)

    def call_on_arrays(self, args, kwargs):
        """model(X, ...) with arrays (or nested lists, read as NumPy reads them): run the Program cached for
        these shapes and dtypes (built on the first call) and return its output as the leaf of a new Tape;
        kwargs are fixed options of forward."""
        listed = [_numbers(a) for a in args]
        args = [np.asarray(a) if is_list else a for a, is_list in zip(args, listed)]
        key = (tuple((tuple(a.shape), self._feed_dtype(a)) for a in args), tuple(sorted(kwargs.items())))
        try:
            hash(key)
        except TypeError as e:
            raise TypeError(f"{type(self).__name__} called on arrays: keyword options must be hashable "
                            f"(they select the cached graph): {e}") from None
        try:
            prog = self._programs(key)
        except DTypeError as e:
            ints = [k for k, a in enumerate(args) if np.dtype(self._feed_dtype(a)).kind != "f"]
            if ints and all(listed[k] for k in ints):      # lists of ints: numbers, as NumPy code reads them
                return self.call_on_arrays([a.astype(self.dtype) if k in ints else a
                                            for k, a in enumerate(args)], kwargs)
            if not ints:
                raise
            a = args[ints[0]]
            got = a.dtype if isinstance(a, np.ndarray) else self.backend.dtype_name(a)
            raise DTypeError(f"{type(self).__name__} called on arrays: argument {ints[0]} holds {got} data (shape "
                             f"{tuple(a.shape)}) where the model computes with floats; pass "
                             f"X.astype(np.{self.dtype}) ({e})") from None
        return Tape.of_call(prog.call({f"x{k}": a for k, a in enumerate(args)}), type(self).__name__)

    def _feed_dtype(self, a):
        kind = np.dtype(a.dtype if isinstance(a, np.ndarray) else self.backend.dtype_name(a)).kind
        return self.dtype if kind == "f" else dtype_name("bool" if kind == "b" else "int64")

    def _build_program(self, key):
        specs, options = key
        g = new_graph(self)
        inputs = {f"x{k}": g.input(f"x{k}", shape, dtype) for k, (shape, dtype) in enumerate(specs)}
        out = self(*inputs.values(), **dict(options))
        if not isinstance(out, Node):
            raise TypeError(f"{type(self).__name__}.forward returned {type(out).__name__}; a module called on "
                            "arrays must return one Node (build a graph yourself for several outputs)")
        return Program(self, g, inputs, {"out": out})

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward(...)")

    def node(self, graph, name):
        """The param node of Parameter `name` in `graph` (created once per graph, bound by identity)."""
        p = self._params[name]
        n = PARAM_NODES.get(graph, id(p))
        if n is None:
            # placeholder value without copying: Program binds p.data before each run
            n = graph.param(name, np.broadcast_to(np.zeros((), dtype=self.dtype), p.shape))
            n.value = p.data
            PARAM_NODES.put(graph, id(p), n)
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


def _numbers(a):
    """Whether `a` is a (nested) list or tuple of numbers, judged by its first element: data, not Nodes
    (a tuple of state Nodes goes to forward as it is)."""
    if not isinstance(a, (list, tuple)):
        return False
    while isinstance(a, (list, tuple)) and a:
        a = a[0]
    return isinstance(a, (int, float, np.number, np.bool_))


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
        bound = ((PARAM_NODES.get(graph, id(p)), p) for p in module.parameters())
        self.bindings = [(node, p) for node, p in bound if node is not None]
        self.runs = 0           # how many times run() has refreshed the graph's values
        self.random = any(n.spec is not None and n.spec.random for n in graph.nodes)   # dropout masks

    def run(self, feeds, outputs=("loss",), backward=None, variant="children"):
        """Bind the current parameters, feed, compute `outputs`; with backward="loss" also set p.grad.
        With backward, the graph keeps only the outputs' values (Graph.forward_backward): the others are
        released as soon as the backward is done with them, so a second Program.backward raises.

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
        feeds = {self.inputs[k]: v for k, v in feeds.items()}
        if backward is None:
            vals = g.forward(feeds, outputs=want)
        else:               # only outputs and gradients are wanted: every other value goes after its last use
            vals = g.forward_backward(feeds, want, self.outputs[backward], variant=variant)
        self.runs += 1
        if backward is not None:
            for node, p in self.bindings:
                p.grad = node.grad
        return vals

    def backward(self, output, seed=None, variant="children"):
        """Backward from outputs[output] (a scalar, or any float output with seed= of its shape) after run;
        sets p.grad on the module's Parameters."""
        self.graph.backward(self.outputs[output], variant=variant, seed=seed)
        for node, p in self.bindings:
            p.grad = node.grad

    def call(self, feeds):
        """run(feeds, outputs=("out",)) for a module called on arrays; returns a Call, which can compute
        this run's values again (replay) once the Program has run on other inputs."""
        rng = self.graph.rng.state if self.random else None      # the masks this run draws, drawn again
        out, = self.run(feeds, outputs=("out",))
        return Call(self, out, rng)

    def replay(self, call):
        """Compute the values of `call` again (its inputs, the parameters as they were, its dropout masks),
        so that its backward can run after the Program ran on other inputs; the rng goes on as before."""
        g = self.graph
        for node, p, data, version in call.params:
            if p.data is not data or p.version != version:
                raise GraphError(f"backward through '{call.leaf.name}': the parameters changed (an optimizer "
                                 "step) after this output was made and the module ran again on inputs of the same "
                                 f"shape {tuple(g.inputs()[0].shape)}; call backward before the step")
        for node, p, data, version in call.params:
            node.value = data
        g.feed({node: value for node, value in call.feeds})
        g.training = call.training
        if call.rng is not None:
            now, g.rng.state = g.rng.state, call.rng
        try:
            g.forward(outputs=[self.outputs["out"]])
        finally:
            if call.rng is not None:
                g.rng.state = now
        self.runs += 1
        call.runs = self.runs


class Call:
    """One run of a Program for a module called on arrays, as its Tape keeps it: the output value (and
    leaf, once in a Tape), the run count it belongs to, and what replay needs to compute it again: the
    inputs fed (the graph's own copies), the parameters' arrays, the training flag and the rng state."""

    __slots__ = ("prog", "out", "leaf", "runs", "feeds", "params", "training", "rng")

    def __init__(self, prog, out, rng):
        self.prog, self.out, self.leaf, self.runs, self.rng = prog, out, None, prog.runs, rng
        self.feeds = [(node, node.out) for node in prog.inputs.values()]
        self.params = [(node, p, p.data, p.version) for node, p in prog.bindings]
        self.training = prog.graph.training

    def backward(self, variant):
        """The Program's backward seeded with the leaf's gradient (after a replay if the Program has run
        since); the gradients are left on the Program's param nodes. Then the call lets go of its inputs."""
        prog = self.prog
        if prog.runs != self.runs:
            if self.feeds is None:
                raise GraphError(f"backward through '{self.leaf.name}': the module ran again on inputs of the "
                                 f"same shape {tuple(prog.graph.inputs()[0].shape)} since this output's "
                                 "backward ran, so its values are gone; call the module again")
            prog.replay(self)
        prog.graph.backward(prog.outputs["out"], variant=variant, seed=self.leaf.grad)
        self.feeds = self.params = self.rng = None            # done: keep nothing alive for a replay


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


class Tape(Graph):
    """The small eager graph that a module called on arrays puts its output in: the user's loss is built
    here and dropped with it, so cached Programs never grow. backward(y) also runs, for each module output
    held here, its Program's backward seeded with that output's gradient (two graphs chained), and sets
    each Parameter's .grad to the sum over its uses: in every call, and as a leaf in expressions.

    Tapes join: an op on nodes of two Tapes (a model called twice in one loss, a penalty on a Parameter
    added to a loss) moves the smaller one's nodes into the larger. A Program that ran again on inputs of
    the same shape before a call's backward computes that call's values again first (Program.replay)."""

    def __init__(self, backend, dtype):
        super().__init__(backend=backend, dtype=dtype, eager=True)
        self.calls = []         # Calls whose output leaves are here
        self.leaves = {}        # id(Parameter) -> (its leaf here, the Parameter): Parameters used in expressions

    @classmethod
    def of_call(cls, call, name):
        """A new Tape whose one leaf holds the output of `call` (a Program.call just made)."""
        node = call.prog.outputs["out"]
        tape = cls(call.prog.graph.backend, call.prog.graph.dtype)
        leaf = tape.input(name, node.shape, node.dtype, requires_grad=node.dtype in ("float32", "float64"))
        tape.feed({leaf: call.out})
        call.leaf, call.out = leaf, None
        tape.calls.append(call)
        return leaf

    def leaf_of(self, p):
        """The leaf holding Parameter p's value in this Tape (made on first use; its gradient goes to p.grad)."""
        held = self.leaves.get(id(p))
        if held is None:
            k = len(self.leaves)
            while f"param_{k}" in self:
                k += 1
            leaf = self.input(f"param_{k}", p.shape, self.backend.dtype_name(p.data), requires_grad=True)
            self.feed({leaf: p.data})
            held = self.leaves[id(p)] = (leaf, p)
        return held[0]

    def join(self, other):
        if not isinstance(other, Tape) or other.backend.name != self.backend.name:
            return None
        big, small = (self, other) if len(self.nodes) >= len(other.nodes) else (other, self)
        big.absorb(small)
        return big

    def absorb(self, other):
        super().absorb(other)
        self.calls += other.calls
        for key, (leaf, p) in other.leaves.items():   # a Parameter with a leaf in both keeps both: grads add
            self.leaves[key if key not in self.leaves else id(leaf)] = (leaf, p)
        other.calls, other.leaves = [], {}

    def backward(self, y, variant="children", **kwargs):
        grads = super().backward(y, variant=variant, **kwargs)
        reached = set(topological_order(self, [y]))  # a joined Tape may hold calls that y does not use
        total = {}                                  # id(Parameter) -> [Parameter, the sum of its gradients]

        def add(p, g):
            have = total.get(id(p))
            if have is None:
                total[id(p)] = [p, g]
            elif g is not None:
                have[1] = g if have[1] is None else have[1] + g
        for leaf, p in self.leaves.values():
            add(p, leaf.grad if leaf in reached else None)
        # the calls whose values are current first: a replay then spoils no other call's values
        for call in sorted(self.calls, key=lambda c: c.prog.runs != c.runs):
            used = call.leaf in reached and call.leaf.grad is not None
            if used:
                call.backward(variant)
            for node, p in call.prog.bindings:
                add(p, node.grad if used else None)
        for p, g in total.values():                 # as g.backward: zeros for a Parameter that y does not use
            p.grad = backend_of(p.data).zeros_like(p.data) if g is None else g
        return grads


def new_graph(module, seed=None, rng=None):
    """A Graph on the module's backend and dtype; `rng` (an engine rng) is shared when given."""
    g = Graph(backend=module.backend, dtype=module.dtype, seed=seed)
    if rng is not None:
        g.rng = rng
    return g


__all__ = ["Parameter", "Module", "ModuleList", "Program", "ProgramCache", "Call", "Tape", "new_graph", "GraphError"]
