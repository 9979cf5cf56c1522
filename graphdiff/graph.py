"""Graph and Node: the structure of a computation: building, naming, scopes, leaves, shape/dtype rules.

A Graph is a list of Nodes in creation order. Every op node refers only to nodes that existed before it,
so creation order is always a valid topological order; the engine still sorts the part an output needs
(iteratively), which is what the lecture's algorithm does and what lets forward skip unneeded nodes.

Running a graph is not this module's business: `g.forward`, `g.backward` and `g.gradients` hand the graph
to `Graph.engine` (graphdiff.engine, which plugs itself in when imported), which owns every cache, plan and adjoint.
What the engine reads here is public: `node.out` (the stored value), `node.stamp` (which values it was
computed from) and `graph.version` (bumped by any change of structure that a cached plan depends on); the
engine keeps its caches in `graph.engine_state`, so they die with the graph.
"""
import contextlib
import difflib
import threading
from operator import attrgetter

import numpy as np

from . import backend as _backend
from .backend import FLOAT_DTYPES, DTYPES, get_backend
from .errors import DTypeError, GraphError, ReleasedError, ShapeError
from .values import as_value, check_shape, describe, dtype_name, host_array, leading_size

# node.stamp is a clock reading (Graph.tick: how new a value is). A value the engine let go after its last use
# (Graph.forward_backward) gets this stamp, older than any reading, so that nothing computed from it passes
# for current; Node.released says which values those are. Reading one raises ReleasedError.
RELEASED_STAMP = -2
# the attrs of every node without any, except inputs (an embedding's ids input keeps its id checks in
# attrs): one dict, never written to, instead of an empty dict per node (a 1M-node chain's 64 MB)
NO_ATTRS = {}


def is_float(dtype):
    return dtype in FLOAT_DTYPES


_ops = None    # the ops namespace behind Node's operators; graphdiff.ops installs itself (use_ops)


def use_ops(namespace):
    """Make Node's operators (+, @, x[i], x.sum(), ...) build nodes with `namespace`'s functions."""
    global _ops
    _ops = namespace


def released(node, what):
    """The message for a value forward_backward released: what the caller tried, and what to do."""
    who = f"'{node.name}'" + (f" ({node.op})" if node.op else "")
    return (f"cannot {what}: {who} was released after its last use by forward_backward (the nn path: "
            "Program.run(..., backward=...), model.loss(..., backward=True)), which keeps only outputs, leaves "
            "and gradients; run the forward again first (or ask for the node as an output)")


def to_numpy(x):
    """A NumPy array from a Node's value, any backend's array, a list or a number."""
    if isinstance(x, Node):
        if x.released:
            raise ReleasedError(released(x, "read its value"))
        if x.out is None:
            raise ValueError(f"node '{x.name}' has no value yet; run g.forward first")
        x = x.value
    return _backend.to_numpy(x)


class Node:
    """One vertex of a Graph: a leaf (input, param, constant) or the result of an op on earlier nodes.

    Attributes:
        name: unique within the graph, including the scope ("block0/attn/qk"). A node named after its op
            (or "const") gets its number when a name is first needed (Graph._name_pending): the one it
            would have got when built.
        op: the op's name ("matmul"), None for leaves.  attrs: the op's static arguments (axis=...); NO_ATTRS,
            shared and never written to, where there are none (an input's own dict holds its id checks).
        inputs: tuple of Nodes, one per input slot (x*x has the same node twice).
        shape, dtype: fixed when the node is built ("float32", "int64", ...).
        kind: "input", "param", "constant" or "op".  scope: the name scope it was built in.
        value: the array computed by the last forward (or held by a leaf).  grad: set by backward.
        index: position in graph.nodes (creation order).
        out: the stored value as the engine keeps it (read .value); stamp: the clock of the newest leaf
            value (or random draw) it was computed from (leaves: when they were set; -1: none or a failed run).
    """

    __slots__ = ("graph", "_name", "op", "spec", "attrs", "inputs", "shape", "dtype", "kind", "scope",
                 "out", "stamp", "grad", "index", "_requires_grad", "__weakref__")

    # NumPy must not turn `array * node` into an object array: defer to Node's reflected operators
    __array_ufunc__ = None

    def __init__(self, graph, name, kind, shape, dtype, spec=None, inputs=(), attrs=None, scope=""):
        self.graph = graph
        self._name = name                 # None: named later, in creation order (Graph._name_pending)
        self.kind = kind
        self.shape = shape if type(shape) is tuple else tuple(shape)
        self.dtype = dtype
        self.spec = spec
        self.op = spec.name if spec is not None else None
        self.inputs = inputs if type(inputs) is tuple else tuple(inputs)
        self.attrs = attrs if attrs is not None else ({} if kind == "input" else NO_ATTRS)
        self.scope = scope
        self.out = None
        self.stamp = -1
        self.grad = None
        self.index = len(graph.nodes)
        self._requires_grad = kind == "param"

    @property
    def name(self):
        name = self._name
        return name if name is not None else self.graph.name_of(self)

    @name.setter
    def name(self, name):
        if self._name is not None:
            raise GraphError(f"node '{self._name}' is named already; a node's name never changes (feeds, "
                             "saved params and diagrams refer to it)")
        self._name = name

    def rehome(self, graph, index, name, shift):
        """Graph.absorb: the node now belongs to `graph`, at `index`, called `name`; its stamp moves by
        `shift` (past the new graph's clock)."""
        self.graph, self.index, self._name = graph, index, name
        if self.stamp > 0:
            self.stamp += shift

    @property
    def named(self):
        """Whether the node's name is given (one named after its op gets it when first asked: Graph.name_of)."""
        return self._name is not None

    # --- values --------------------------------------------------------------------------------
    @property
    def released(self):
        """True when forward_backward let this node's value go after its last use (reading it raises)."""
        return self.out is None and self.stamp == RELEASED_STAMP

    @property
    def value(self):
        v = self.out
        if v is None and self.stamp == RELEASED_STAMP:
            raise ReleasedError(released(self, "read its value"))
        return np.float64(v) if type(v) is float else v    # scalar graphs run on Python floats inside

    @value.setter
    def value(self, new):
        if self.kind == "constant":
            raise GraphError(f"constant '{self.name}' cannot change; make it g.param or g.input instead")
        if self.kind == "op":
            raise GraphError(f"'{self.name}' is computed by {self.op}; only inputs and params take values")
        graph = self.graph
        with graph.lock:                      # not in the middle of another thread's run
            if self.kind == "input":
                graph.feed({self: new})       # as a feed: a None batch axis takes the new leading size
            else:
                value = as_value(graph.backend, self, new)
                self.out = value
                self.stamp = graph.tick()
            if graph.eager:                   # micrograd-style: every value follows at once
                graph.forward()

    @property
    def requires_grad(self):
        """Whether backward computes this leaf's gradient by default (params: True; inputs: False)."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        flag = bool(flag)
        if flag == self._requires_grad:
            return
        if self.kind not in ("input", "param"):
            raise GraphError(f"requires_grad is set on inputs and params; '{self.name}' is a {self.kind}"
                             + (f" computed by {self.op}" if self.op else "")
                             + "; pass wrt=[...] to backward to get other gradients")
        if flag and not is_float(self.dtype):
            raise DTypeError(f"{self.kind} '{self.name}' has dtype {self.dtype}: integer and bool leaves have "
                             "no gradient; ids reach gradients through gd.embedding")
        self._requires_grad = flag
        self.graph.version += 1            # backward plans chose their targets from the old flags

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def numpy(self):
        """The value as a NumPy array (copied from the GPU if needed)."""
        return to_numpy(self)

    @property
    def data(self):
        """micrograd's name for .value (assigning it assigns .value)."""
        return self.value

    @data.setter
    def data(self, new):
        self.value = new

    def __array__(self, dtype=None, copy=None):
        """np.asarray(node), np.argmax(node, axis=1), ...: the value, on backends whose arrays are on the
        host. A GPU value is copied only when asked for (node.numpy()), never behind NumPy's back."""
        if self.graph.backend.name == "cupy":
            raise GraphError(f"NumPy cannot read node '{self.name}' directly: its value is on the cupy backend "
                             "(the GPU); copy it with node.numpy() or gd.to_numpy(node), as CuPy's .get() does")
        host = to_numpy(self)
        if dtype is not None and host.dtype != dtype:
            return host.astype(dtype)
        return host.copy() if copy else host

    def item(self):
        """The value of a one-element node as a Python number."""
        return self.numpy().item()

    def backward(self, variant="children", retain_grads=None, **kwargs):
        """g.backward(this node, ...), micrograd's c.backward(): in an eager graph every node on the way
        keeps its .grad too (retain_grads), as micrograd's Values do. Returns None, as PyTorch's does
        (g.backward returns {node: gradient})."""
        retain = self.graph.eager if retain_grads is None else retain_grads
        self.graph.backward(self, variant=variant, retain_grads=retain, **kwargs)

    def __float__(self):
        if self.released:
            raise ReleasedError(released(self, "read its value"))
        if self.out is None:
            raise GraphError(f"node '{self.name}' has no value yet; run g.forward first (or use an eager graph)")
        if self.shape and self.size != 1:
            raise TypeError(f"float() of node '{self.name}' with shape {self.shape}; only one-element nodes")
        return float(to_numpy(self).reshape(()))

    def __repr__(self):
        what = self.kind if self.op is None else self.op
        return f"<Node '{self.name}' {what} {describe(self.shape, self.dtype)}>"

    def __str__(self):
        """What print shows: name, op, shape and, once known, the value and the gradient."""
        def show(v):
            if v is None:
                return "None"
            v = to_numpy(v)
            return f"{float(v):.6g}" if v.ndim == 0 else np.array2string(
                v, precision=4, threshold=8, separator=", ").replace("\n", "")
        what = self.kind if self.op is None else self.op
        return (f"Node('{self.name}', {what}, {describe(self.shape, self.dtype)}, value={show(self.out)}, "
                f"grad={show(self.grad)})")

    def __bool__(self):
        raise GraphError(f"the truth value of node '{self.name}' is not known while building the graph; "
                         "use gd.where(cond, a, b) for a data-dependent choice")

    def __len__(self):
        if not self.shape:
            raise TypeError(f"len() of 0-d node '{self.name}'")
        return self.shape[0]

    def __iter__(self):
        raise TypeError(f"node '{self.name}' is not iterable; index it (x[i]) or use gd.stack/concat")

    # --- operators: each adds a node to this node's graph ---------------------------------------
    def __add__(self, o): return _ops.add(self, o)
    def __radd__(self, o): return _ops.add(o, self)
    def __sub__(self, o): return _ops.subtract(self, o)
    def __rsub__(self, o): return _ops.subtract(o, self)
    def __mul__(self, o): return _ops.multiply(self, o)
    def __rmul__(self, o): return _ops.multiply(o, self)
    def __truediv__(self, o): return _ops.divide(self, o)
    def __rtruediv__(self, o): return _ops.divide(o, self)
    def __pow__(self, o): return _ops.power(self, o)
    def __rpow__(self, o): return _ops.power(o, self)
    def __matmul__(self, o): return _ops.matmul(self, o)
    def __rmatmul__(self, o): return _ops.matmul(o, self)
    def __neg__(self): return _ops.negative(self)
    def __pos__(self): return self
    def __abs__(self): return _ops.abs(self)
    def __gt__(self, o): return _ops.greater(self, o)
    def __lt__(self, o): return _ops.less(self, o)
    def __ge__(self, o): return _ops.greater_equal(self, o)
    def __le__(self, o): return _ops.less_equal(self, o)
    __hash__ = object.__hash__   # nodes are dict keys (feeds, grads); == stays identity

    def __getitem__(self, idx): return _ops.getitem(self, idx)

    @property
    def T(self):
        return _ops.transpose(self)

    @property
    def mT(self):
        return _ops.matrix_transpose(self)

    # NumPy-style methods
    def sum(self, axis=None, keepdims=False): return _ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return _ops.max(self, axis, keepdims)
    def reshape(self, *shape): return _ops.reshape(self, shape[0] if len(shape) == 1 else shape)
    def transpose(self, *axes): return _ops.transpose(self, (axes[0] if len(axes) == 1 else axes) or None)
    def astype(self, dtype): return _ops.astype(self, dtype)
    def exp(self): return _ops.exp(self)
    def log(self): return _ops.log(self)
    def tanh(self): return _ops.tanh(self)
    def relu(self): return _ops.relu(self)
    def sigmoid(self): return _ops.sigmoid(self)


# the graph makes its nodes as _new(Node), then _init(node, ...): calling the class costs more than a function, and a
# scalar graph pays it per node
_new, _init = object.__new__, Node.__init__


class Graph:
    """A computation graph: leaves, op nodes, name scopes, and the forward and backward passes.

    Args:
        backend: "numpy", "cupy" or "array_api_strict"; None uses gd.use_backend / gd.set_backend /
            $GRAPHDIFF_BACKEND / "numpy", in that order.
        dtype: "float32" or "float64": the dtype of params, constants and float inputs. Default: float32,
            or float64 in an eager graph (micrograd's arithmetic: Python floats, so 0.1 * 3 is 0.1 * 3).
        eager: compute each node's value as it is added (micrograd-style interactive use).
        seed: seeds the graph's random numbers (dropout masks).
        check_finite: raise NonFiniteError naming the first node that produces NaN or Inf.

    A run (forward, backward, forward_backward, gradients) holds `g.lock`, a re-entrant lock: threads sharing
    a graph run one at a time; hold it yourself to make several calls (forward, then backward) one step.
    """

    engine = None    # the module that runs graphs: graphdiff.engine, which sets itself here when imported

    def __init__(self, backend=None, dtype=None, eager=False, seed=None, check_finite=False):
        if dtype is None:
            dtype = "float64" if eager else "float32"
        if dtype not in FLOAT_DTYPES:
            raise DTypeError(f"Graph dtype must be one of {FLOAT_DTYPES}, got {dtype!r}")
        self.backend = get_backend(backend)
        self.dtype = dtype
        self.eager = eager
        self.check_finite = check_finite
        self.training = True
        self.nodes = []
        self._by_name = {}        # name -> node, for nodes[:_named]; later ones get their names when asked
        self._named = 0
        self._counters = {}
        self._scope = []
        self.current_scope = ""   # "block0/attn" inside g.scope("block0"), g.scope("attn")
        self.version = 0          # bumped by every change of structure: the engine's caches follow it
        self.clock = 0            # the newest stamp: each feed, assignment or run drawing random numbers takes
                                  # the next tick
        self.batch = None         # the size of every None (leading) axis, set by feeds; None: not fed yet
        self._dynamic = set()     # indices of inputs declared with a None leading axis
        self._follows = set()     # indices of those inputs and of every node built on one (its shape follows)
        self.rng = self.backend.rng(seed)
        self.engine_state = None  # the engine's caches for this graph (graphdiff.execution.State); not read here
        # held by each run (forward, backward, forward_backward, gradients, hvp, jvp) and each assignment, so a
        # run never reads another thread's values; re-entrant: hold it to make several calls one step
        self.lock = threading.RLock()

    def __repr__(self):
        return f"<Graph {len(self.nodes)} nodes, backend={self.backend.name}, dtype={self.dtype}>"

    def __len__(self):
        return len(self.nodes)

    def seed(self, seed):
        """Restart the graph's random numbers (dropout masks) from `seed`."""
        self.rng = self.backend.rng(seed)

    # --- names and scopes ----------------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self, name):
        """Nodes built inside get names prefixed by the scope: with g.scope("block0/attn"): ..."""
        if not isinstance(name, str) or not name.strip("/"):
            raise GraphError(f"scope name must be a non-empty string, got {name!r}")
        self._scope.append(name.strip("/"))
        self.current_scope = "/".join(self._scope)
        try:
            yield self
        finally:
            self._scope.pop()
            self.current_scope = "/".join(self._scope)

    @contextlib.contextmanager
    def atomic(self):
        """Build several nodes as one step: if the block raises, every node it added goes again, with its
        name and what it asked of earlier inputs (id checks), so a failed multi-node build (g.gradients,
        gd.hvp, gd.jvp) leaves the graph as it was. Feeds and values of earlier nodes are not undone."""
        by_name = self._names()               # earlier nodes named now: the names taken inside are the block's
        mark, counters = len(self.nodes), dict(self._counters)
        checks = {n: len(n.attrs["host_checks"]) for n in self.nodes if "host_checks" in n.attrs}
        try:
            yield self
        except BaseException:
            for node in self.nodes[mark:]:
                if node.named and by_name.get(node.name) is node:
                    del by_name[node.name]
            del self.nodes[mark:]
            self._named = min(self._named, mark)
            self._counters = counters
            self._dynamic = {k for k in self._dynamic if k < mark}
            self._follows = {k for k in self._follows if k < mark}
            for node in self.nodes:
                if "host_checks" in node.attrs:
                    keep = checks.get(node, 0)
                    if keep:
                        del node.attrs["host_checks"][keep:]
                    else:
                        del node.attrs["host_checks"]
            self.version += 1                 # plans cached meanwhile may hold the removed nodes
            raise

    def _full(self, name):
        s = self.current_scope
        return f"{s}/{name}" if s else name

    def _unique(self, base):
        """base, or base_k with the next free k: the name the next node called base gets (after every
        earlier node's name is known: _claim)."""
        by_name = self._by_name
        if base not in by_name:
            return base
        k = self._counters.get(base, 0) + 1      # the next free number, unless a user took that name
        cand = f"{base}_{k}"
        while cand in by_name:
            k += 1
            cand = f"{base}_{k}"
        self._counters[base] = k
        return cand

    def _names(self):
        """The name -> node index, complete: the nodes named after their op (or "const") get their names now,
        in creation order, as they would have got them when built (a name given later cannot take one
        that an earlier node would have had). Names cost a string and a dict entry per node; most scalar
        graphs never look at them."""
        nodes, by_name = self.nodes, self._by_name
        for k in range(self._named, len(nodes)):
            node = nodes[k]
            if not node.named:
                node.name = self._unique(_base_name(node))
            by_name[node.name] = node
        self._named = len(nodes)
        return by_name

    def _claim(self, base):
        """The unique name of a node being built now (an explicit name, or one an error message needs)."""
        self._names()
        return self._unique(base)

    def name_of(self, node):
        """The name of a node built without one (node.name asks this): every pending name is given now,
        in creation order, as each would have been when its node was built."""
        if node.index < len(self.nodes) and self.nodes[node.index] is node:
            self._names()
        else:                                 # built but never added (its eager computation failed)
            node.name = self._claim(_base_name(node))
        return node.name

    def _leaf_name(self, kind, name):
        if not isinstance(name, str) or not name:
            raise GraphError(f"a {kind} needs a non-empty string name, got {name!r}")
        full = self._full(name)
        by_name = self._names()
        if full in by_name:
            raise GraphError(f"name '{full}' is already used by {by_name[full]!r}; "
                             f"{kind}s are fed and saved by name, so give this one another name or scope")
        return full

    def node(self, name):
        """The node called `name` (its full, scoped name)."""
        by_name = self._names()
        try:
            return by_name[name]
        except KeyError:
            near = difflib.get_close_matches(name, list(by_name), n=3)
            hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
            raise GraphError(f"no node named {name!r} in this graph{hint}") from None

    def __getitem__(self, name):
        return self.node(name)

    def __contains__(self, name):
        """'block0/attn/qk' in g: is a node called that (its full, scoped name)?"""
        return name in self._names()

    def tick(self):
        """The next stamp: newer than every value set or computed so far."""
        self.clock += 1
        return self.clock

    def params(self):
        """The trainable leaves, in creation order."""
        return [n for n in self.nodes if n.kind == "param"]

    def inputs(self):
        """The placeholders fed at run time, in creation order."""
        return [n for n in self.nodes if n.kind == "input"]

    def batch_inputs(self):
        """The inputs declared with a None (batch) axis, in creation order (see Graph.resize)."""
        return [self.nodes[k] for k in sorted(self._dynamic)]

    # --- leaves ------------------------------------------------------------------------------------
    def input(self, name, shape, dtype=None, requires_grad=False):
        """A placeholder fed at run time.

        Args:
            name: feed key (scoped by the current scope).
            shape: e.g. (B, T) for token ids; a leading None, (None, 3), is a batch size that varies:
                every None axis of the graph takes the leading size of the feed (see Graph.resize).
            dtype: defaults to the graph's float dtype; "int64"/"int32" for ids, "bool" for masks.
            requires_grad: also compute d y / d input in backward (float inputs only).
        """
        dtype = self.dtype if dtype is None else dtype_name(dtype)
        full = self._leaf_name("input", name)
        dynamic = isinstance(shape, (tuple, list)) and len(shape) > 0 and shape[0] is None
        if isinstance(shape, (tuple, list)) and any(n is None for n in shape[1:]):
            raise ShapeError(f"input '{full}': shape {tuple(shape)}: only the leading (batch) axis may be "
                             "None; give every other size")
        if dynamic:
            shape = (1 if self.batch is None else self.batch,) + tuple(shape[1:])   # the sizes rules see now
        shape = check_shape(shape, full)
        if requires_grad and not is_float(dtype):
            raise DTypeError(f"input '{full}' has dtype {dtype}: integer and bool inputs have no gradient; "
                             "drop requires_grad=True (ids reach gradients through gd.embedding)")
        node = self._register(Node(self, full, "input", shape, dtype, scope=self.current_scope))
        node.requires_grad = requires_grad
        if dynamic:
            self._dynamic.add(node.index)
            self._follows.add(node.index)
        return node

    def param(self, name, value, dtype=None):
        """A trainable leaf holding `value` (NumPy array, list or number); cast to the graph's dtype."""
        full = self._leaf_name("param", name)
        arr = host_array(value, f"param '{full}'")
        dtype = self.dtype if dtype is None else dtype_name(dtype)
        if not is_float(dtype):
            raise DTypeError(f"param '{full}' must hold floating-point numbers, got {arr.dtype} / {dtype}")
        node = Node(self, full, "param", arr.shape, dtype, scope=self.current_scope)
        node.out = self.backend.from_host(arr, dtype)      # a copy: the caller's array stays theirs
        return self._register(node)

    def constant(self, value, name=None, dtype=None):
        """A non-trainable leaf. Python numbers and arrays given to ops are wrapped in one automatically."""
        if type(value) is float and dtype is None:
            return self._number(value, name)
        host = host_array(value, f"constant {name!r}" if name else "a constant")
        if dtype is None:
            dtype = {"b": "bool", "i": "int64", "u": "int64", "f": self.dtype}.get(host.dtype.kind)
            if dtype is None:
                raise DTypeError(f"constant {name or ''} of dtype {host.dtype} is not supported; "
                                 f"use one of {', '.join(DTYPES)}")
        dtype = dtype_name(dtype)
        full = self._claim(self._full(name or "const"))
        node = Node(self, full, "constant", host.shape, dtype, scope=self.current_scope)
        node.out = self.backend.from_host(host, dtype)
        return self._register(node)

    def _number(self, value, name=None):
        """What constant(value, name) makes of a Python number in the graph's float dtype, made directly:
        x * 2.0 and micrograd-style graphs make one constant per number, so its cost is per node."""
        scope = self.current_scope
        full = None if name is None else self._claim(f"{scope}/{name}" if scope else name)
        node = _new(Node)
        _init(node, self, full, "constant", (), self.dtype, None, (), None, scope)
        node.out = self.backend.from_host(value, self.dtype)
        node.stamp = 0
        self.nodes.append(node)
        self.version += 1
        return node

    def _register(self, node):
        """Add a leaf named when built (its name claimed after every earlier node's: _names)."""
        self.nodes.append(node)
        if node.kind == "constant":
            node.stamp = 0
        elif node.out is not None and node.kind != "op":
            node.stamp = self.tick()
        self.version += 1
        return node

    def feed(self, feeds):
        """Give inputs new values: {input Node or name: array}, each checked, copied and stamped. A Python
        float fed to a 0-d float64 input of a NumPy graph is kept as it is, as a float run leaves its leaves
        (.value gives it as np.float64): a micrograd-style graph feeds thousands of them per run."""
        if self._dynamic:
            self._resize_for(feeds)
        numpy = self.backend.name == "numpy"
        for key, value in feeds.items():
            node = key if type(key) is Node and key.graph is self and key.kind == "input" else self._fed_node(key)
            if type(value) is float and numpy and node.dtype == "float64" and node.shape == () and not node.attrs:
                node.out = value
            else:
                node.out = as_value(self.backend, node, value)
            node.stamp = self.tick()

    def _fed_node(self, key):
        node = self.node(key) if isinstance(key, str) else key
        if not isinstance(node, Node):
            raise TypeError(f"feeds keys must be Nodes or names, got {type(key).__name__}")
        if node.graph is not self:
            raise GraphError(f"forward: node '{node.name}' belongs to another graph; "
                             "call forward/backward on the graph that built it")
        if node.kind != "input":
            hint = f"assign {node.name}.value = ... instead" if node.kind == "param" else "feed an input instead"
            raise GraphError(f"forward: '{node.name}' is a {node.kind}, not an input; {hint}")
        return node

    def _resize_for(self, feeds):
        """Resize to the leading size of the feeds of None-batch inputs, which must all agree: one batch size
        per run (feeding x 3 rows and y 4 would otherwise drop x's value when y resized the graph)."""
        first = None
        for key, value in feeds.items():
            node = self._fed_node(key)
            if node.index not in self._dynamic:
                continue
            rows = leading_size(value, node)
            if first is None:
                first = node, rows
            elif rows != first[1]:
                raise ShapeError(f"forward: input '{first[0].name}' was fed {first[1]} rows and input "
                                 f"'{node.name}' {rows} rows; inputs with a None batch axis share one batch "
                                 "size, so feed each of them the same number of rows")
        if first is not None:
            self.resize(first[1])

    def resize(self, batch):
        """Give every None (batch) axis the size `batch`: inputs declared (None, ...) and every node whose
        shape follows from them take their new shapes (each op's shape rule, in creation order), and values
        of the old size are dropped. The engine keeps its plans per batch size, so switching back is cheap.
        Slices and a reshape's -1 follow the new size; a node that cannot is refused: a reshape or broadcast_to
        given sizes when it is built (Graph.add_node), a dropout mask (built with x's shape) here.
        """
        if batch == self.batch:
            return
        old = 1 if self.batch is None else self.batch
        if batch == old:                            # the first feed, of the size the graph was built for
            self.batch = batch
            return
        shapes, depends = {}, set(self._dynamic)    # node index -> new shape; nodes that follow the batch
        for node in self.nodes:                     # creation order: each node after its inputs
            if node.index in self._dynamic:
                shapes[node.index] = (batch,) + node.shape[1:]
                continue
            follows = not node.inputs or any(x.index in depends for x in node.inputs)   # no inputs: a mask
            if node.spec is None or not follows:
                continue
            depends.add(node.index)
            fixed = _fixed_shape(node.attrs)     # a dropout mask (no inputs: built on x's shape)
            if fixed is not None:
                raise ShapeError(f"{node.op} '{node.name}' was built with the fixed shape "
                                 f"{node.attrs[fixed]} (batch size {old}) and cannot follow batch size {batch}; "
                                 "give the input a fixed shape and build a graph per batch size, or call an "
                                 "nn.Module on arrays (it caches a graph per input shape)")
            try:
                shapes[node.index] = tuple(node.spec.shape(*(shapes.get(x.index, x.shape) for x in node.inputs),
                                                           **node.attrs))
            except ShapeError as e:
                raise ShapeError(f"batch size {batch} (built for {old}): {node.op} '{node.name}': {e}") from None
        for node in self.nodes:                     # all shapes checked: now commit them
            shape = shapes.get(node.index, node.shape)
            if shape != node.shape:
                node.shape, node.out, node.stamp, node.grad = shape, None, -1, None
        self.batch = batch

    def as_value(self, node, value, what=None):
        """A copy of a feed or assigned value (or a backward seed) on this graph's backend, checked against
        the node's shape and dtype (graphdiff.values.as_value). what: how messages name the value."""
        return as_value(self.backend, node, value, what)

    def wrap(self, x, slot_kind):
        """A constant node for a Python number or array given to an op in a slot of this kind."""
        if slot_kind == "float" and (type(x) is float or (type(x) is int and -_EXACT < x < _EXACT)):
            return self._number(x)             # the common x * 2.0: as below, without the array round trip
        as_node = getattr(x, "as_node", None)  # graphdiff.nn's Parameter: a leaf with a gradient, not a constant
        if as_node is not None:
            return as_node(self)
        host = to_numpy(x)                    # numbers, lists, NumPy or any backend's array (built once)
        kind = host.dtype.kind
        if slot_kind == "int" and kind not in "iu":
            raise DTypeError(f"expected integer ids, got {host.dtype} data; "
                             "pass np.asarray(ids, dtype=np.int64)")
        if slot_kind == "float" and kind in "biuf":
            return self.constant(host, dtype=self.dtype)   # x * 2 means x * 2.0 in the graph's dtype
        return self.constant(host)

    # --- op nodes ---------------------------------------------------------------------------------
    def add_node(self, spec, inputs, attrs, name=None):
        """Build one op node: check dtypes and shapes now, so mistakes surface where they are made.

        inputs: a tuple of this graph's Nodes; attrs: a dict (the node keeps it)."""
        scope = self.current_scope
        full = None if name is None else self._claim(f"{scope}/{name}" if scope else name)
        n = len(inputs)
        x = inputs[0] if n else None
        if (spec.elementwise and n == spec.arity and x.dtype in FLOAT_DTYPES
                and (n == 1 or (inputs[1].shape == x.shape and inputs[1].dtype == x.dtype))):
            shape, dtype = x.shape, x.dtype   # float inputs of one shape and dtype: no rule can fail
        else:
            try:
                shape, dtype = self._rules(spec, inputs, attrs, full)
            except Exception:
                if full is not None:
                    raise
                # the message names the node: its number is taken now, as if it had been added
                full = self._claim(f"{scope}/{spec.name}" if scope else spec.name)
                shape, dtype = self._rules(spec, inputs, attrs, full)
        follows = self._follows and self._follows_batch(spec, inputs, attrs, full)
        node = _new(Node)
        _init(node, self, full, "op", shape, dtype, spec, inputs, attrs, scope)
        if self.eager:
            for x in inputs:
                if x.out is None:
                    break
            else:
                try:
                    self.engine.compute(node)     # before it joins the graph: a failed op leaves no node
                except BaseException:
                    node.name                      # its number is taken, as if it had been added
                    raise
        self.nodes.append(node)
        self.version += 1
        if follows:
            self._follows.add(node.index)
        return node

    def _follows_batch(self, spec, inputs, attrs, full):
        """Whether a node of spec on inputs follows the batch axis (an input does); refused now when its shape
        is given in sizes (reshape without -1, broadcast_to), which no other batch size would fit."""
        for x in inputs:
            if x.index in self._follows:
                break
        else:
            return False
        key = _fixed_shape(attrs)
        if key is not None:
            full = full or self._claim(f"{self.current_scope}/{spec.name}" if self.current_scope else spec.name)
            batch = self.nodes[min(self._dynamic)]
            hint = "write -1 for the size that follows the batch, " if spec.name == "reshape" else ""
            raise ShapeError(f"{spec.name} '{full}': shape {attrs[key]} is given in sizes, but input '{x.name}' "
                             f"{describe(x.shape, x.dtype)} follows the batch axis of input '{batch.name}' "
                             f"(None, now {batch.shape[0]}), so no other batch size would fit it; {hint}give the "
                             "input a fixed shape and build a graph per batch size, or call an nn.Module on arrays "
                             "(it caches a graph per input shape)")
        return True

    def _rules(self, spec, inputs, attrs, full):
        """(shape, dtype) of a node of spec on inputs by the op's rules; errors name the node `full`."""
        n = len(inputs)
        if spec.slots == "float" and (spec.arity is None or spec.arity == n):   # most ops: a quick pass
            dtype = inputs[0].dtype if n else None
            for x in inputs:
                if x.dtype != dtype:
                    dtype = None
                    break
            if dtype not in FLOAT_DTYPES:      # mixed dtypes, or one not a float: the full checks below
                dtype = self._check_slots(spec, inputs, full)
        else:
            dtype = self._check_slots(spec, inputs, full)
        if spec.dtype:
            dtype = spec.dtype(*map(_DTYPE, inputs), **attrs)
        try:
            if n == 2:                         # spelled out: map and * cost more than most shape rules
                shape = spec.shape(inputs[0].shape, inputs[1].shape, **attrs)
            elif n == 1:
                shape = spec.shape(inputs[0].shape, **attrs)
            else:
                shape = spec.shape(*map(_SHAPE, inputs), **attrs)
        except ShapeError as e:
            ins = ", ".join(f"{x.name!r} {describe(x.shape, x.dtype)}" for x in inputs)
            raise ShapeError(f"{spec.name} '{full}': {e} (inputs: {ins})") from None
        return shape, dtype

    def _check_slots(self, spec, inputs, full):
        """Check each input against its slot's kind (float, int, bool, any); the dtype the node gets
        unless the op has a dtype rule: float64 if any input is, else float32 (the graph's when none is)."""
        kinds = spec.slot_kinds(len(inputs))
        for i, x in enumerate(inputs):
            want = kinds[i]
            if want == "float":
                ok = x.dtype in FLOAT_DTYPES
            else:
                ok = want == "any" or (x.dtype.startswith("int") if want == "int" else x.dtype == "bool")
            if not ok:
                raise DTypeError(_dtype_message(spec.name, full, i, x, want))
        return _promote(inputs, self.dtype)

    # --- running ----------------------------------------------------------------------------------
    def forward(self, feeds=None, outputs=None, *, check_finite=None, resample=True):
        """Compute the value of every node the outputs need (all nodes when outputs is None).

        Args:
            feeds: {input Node or name: array}; inputs not fed keep their last value.
            outputs: a Node or a list of Nodes.
            check_finite: raise NonFiniteError at the first node that produces NaN/Inf (default:
                the graph's check_finite).
            resample: draw new dropout masks (False keeps the last ones, as gradcheck needs).
        Returns:
            the output's value (or a list of values); None when outputs is None.
        """
        with self.lock:
            return self.engine.forward(self, feeds, outputs, check_finite=check_finite, resample=resample)

    def backward(self, y, variant="children", seed=None, trace=None, wrt=None, retain_grads=False,
                 check_finite=None):
        """Reverse-mode gradients of y; sets .grad on params (and on wrt / requires_grad inputs).

        Args:
            y: a scalar node, or any node with seed= (its cotangent, same shape).
            variant: "children" (Version A: each node sums over its children) or "parents"
                (Version B: each node increments its parents' adjoints).
            trace: a list (or callable) receiving Final, Contribution and Freed events in order.
            wrt: nodes to differentiate with respect to (default: params and requires_grad inputs).
            retain_grads: also keep .grad on every intermediate node (for drawing the graph).
        Returns:
            {node: gradient} for the wrt nodes.
        """
        with self.lock:
            return self.engine.backward(self, y, variant=variant, seed=seed, trace=trace, wrt=wrt,
                                        retain_grads=retain_grads, check_finite=check_finite)

    def forward_backward(self, feeds, outputs, y, variant="children", seed=None, trace=None):
        """forward(feeds, outputs), then backward(y, variant, seed), keeping only what the backward still needs:
        the values no VJP reads go right after their last use in the forward, the others once the last VJP
        that reads them has run (PyTorch frees saved tensors the same way), so the peak memory is the
        activations the backward needs, not every value of the graph. The nn path trains with it.

        Leaves, the outputs and the gradients (.grad, as backward sets them) stay; reading another node's
        value, or a second backward before the next forward, raises ReleasedError. Trace events are those
        of backward. Eager graphs and graphs of Python floats keep every value (plain forward and backward).

        Args:
            feeds: {input Node or name: array}.  outputs: a list of Nodes (or names).
            y: the node to differentiate (a scalar unless seed= is given; it need not be in outputs).
        Returns:
            the list of the outputs' values.
        """
        with self.lock:
            return self.engine.forward_backward(self, feeds, outputs, y, variant=variant, seed=seed, trace=trace)

    def gradients(self, y, wrt, variant="children", seed=None):
        """The gradients of y as Nodes of this graph (the backward pass as a graph), under scope "grad".

        The same two loops as backward, run with Nodes and graphdiff's ops in place of arrays: "children"
        gives each node one add_n over its children's contributions, "parents" an accumulation chain of
        adds in push order. The result can be run (g.forward), drawn, and differentiated again.

        Args:
            y: a scalar float node, or any float node with seed= (a Node or array of y's shape).
            wrt: a Node or a list of Nodes.
        Returns:
            a list of Nodes, one per wrt node, each of that node's shape.
        """
        with self.lock:
            return self.engine.gradients(self, y, wrt, variant=variant, seed=seed)

    def zero_grad(self):
        """Clear .grad on every node."""
        for n in self.nodes:
            n.grad = None

    def join(self, other):
        """The graph in which nodes of this graph and of `other` can meet in one op, or None: graphs built
        apart stay apart (the default). graphdiff.nn's Tapes join: one absorbs the other."""
        return None

    def absorb(self, other):
        """Move every node of `other`, an eager graph, into this one (after its own nodes), values and
        gradients kept; `other` is left empty. A name this graph has already gets the next free number;
        stamps move past this graph's clock, so they still order every value set or computed."""
        nodes, clock = other.hand_over(self)
        by_name, shift = self._names(), self.clock
        for node in nodes:
            name = node.name
            node.rehome(self, len(self.nodes), self._unique(name) if name in by_name else name, shift)
            self.nodes.append(node)
            by_name[node.name] = node
        self._named = len(self.nodes)
        self.clock += clock
        self.version += 1

    def hand_over(self, to):
        """absorb's other half: this eager graph's nodes (every name given) and its clock, for the graph
        `to`; this graph is left empty."""
        if not (self.eager and to.eager) or self._dynamic or self.backend.name != to.backend.name:
            raise GraphError(f"absorb: only eager graphs of one backend without a None batch axis merge "
                             f"({to!r} and {self!r})")
        self._names()
        nodes = self.nodes
        self.nodes, self._by_name, self._named, self.engine_state = [], {}, 0, None
        self.version += 1
        return nodes, self.clock


_SHAPE, _DTYPE = attrgetter("shape"), attrgetter("dtype")
_EXACT = 2 ** 53      # ints below this are exact in float64: wrap makes them constants directly


def _fixed_shape(attrs):
    """The attr holding a shape given in sizes ("shape", "newshape"), or None: such a node cannot follow a
    batch axis. A reshape's -1 is resolved by its rule for each batch size, so it is not fixed."""
    for key in ("shape", "newshape"):
        if key in attrs and -1 not in attrs[key]:
            return key
    return None


def _base_name(node):
    """What a node built without a name is called before its number: scope/op (or scope/const)."""
    base = node.op or "const"
    return f"{node.scope}/{base}" if node.scope else base


def _promote(inputs, default):
    """float64 if any input is float64, else float32 (the graph's dtype when no input is float)."""
    seen = None
    for x in inputs:
        if x.dtype == "float64":
            return "float64"
        if x.dtype == "float32":
            seen = "float32"
    return seen or default


def _dtype_message(opname, full, i, x, want):
    what = {"float": "a float", "int": "an integer", "bool": "a bool"}[want]
    fix = {"float": f"cast it with gd.astype({x.name!r} node, 'float32')",
           "int": "build ids with g.input(name, shape, dtype='int64') or pass an integer array",
           "bool": "pass a comparison such as x > 0 or a bool array"}[want]
    return (f"{opname} '{full}': input {i} ('{x.name}', {describe(x.shape, x.dtype)}) must be {what} "
            f"node; {fix}")
