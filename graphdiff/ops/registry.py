"""The op registry: each op's shape rule, forward and per-input VJP, side by side.

An op is a class registered with @op. Its functions take the array namespace first:

    shape(*input_shapes, **attrs) -> output shape          (raise ShapeError with the reason and the fix)
    forward(F, *inputs, **attrs) -> array
    vjp(F, i, g, inputs, out, **attrs) -> gradient for input slot i

An op whose input slots share backward work computes it once per node instead (HIPS autograd's two
stages), and may keep what its forward computed anyway (the residuals):

    forward_res(F, *inputs, **attrs) -> (array, residuals)      (instead of forward)
    make_vjp(F, inputs, out, res, **attrs) -> vjp(i, g)         (instead of vjp; res is None when the
                                                                 forward kept none: recompute it)

What the VJP reads of the forward, beyond the shapes and dtypes of its inputs and output, is declared so that
Graph.forward_backward (the nn path) can release every other value at its last use:

    saves = (0, "out")              input positions and/or "out" (a two-stage op's residuals always count)
    saves = {0: (1,), 1: (0,)}      per input slot, when the slots read different values (multiply, matmul)

An op that declares nothing is taken to read all of its inputs and its output. The VJP is then handed a
stand-in with only .shape, .dtype and .ndim for each value it does not declare; reading it raises.

At registration the rule becomes the one form every backward calls (OpDef.pullback; HIPS autograd's defvjp
does the same):

    pullback(F, **attrs)(inputs, out, res) -> (vjp, xs, out)    the contribution of slot i: vjp(i, g, xs, out)

`F` is a Backend for arrays (numpy, cupy, array_api_strict; Python floats for 0-d float64 graphs), graphdiff's
own ops on Nodes (ops/nodes.py: gradients as graphs) or the code generator's (codegen.CODE). A rule uses only
operators and the `F.<name>` functions of VOCABULARY below, which all of them provide, so one rule serves
numeric, symbolic and compiled backward alike; ARRAY_VOCABULARY adds what the array backends and Nodes
provide, for ops whose values are never 0-d floats (matmul, indexing, the nn ops). Tests check every
namespace against both lists, and every built-in VJP against them.
`slots` says what each input must be: "float" (default), "int" (ids), "bool" (masks) or "any".

The rules above are the reference: readable, and the only ones symbolic backward, the Python-float path and
array_api_strict run. A backend may add a fused kernel for speed (@kernel(name, backend)): a class with the
same functions, signatures and residuals, which the engine binds instead of the rule on that backend while
kernels are on (`fused_kernels(False)` or GRAPHDIFF_KERNELS=0 turns them off, to compare). Tests check every
kernel against its op's rule.

CuPy's kernels (ops/fused_cupy.py) are opt-in until a GPU run has validated them: GRAPHDIFF_CUPY_KERNELS=1,
or `fused_kernels(cupy=True)`, binds them; otherwise CuPy runs the rules.

An op's builder (OpDef.builder, the public function gd.exp(x) that adds its node) comes from its registration:
made there for an op of one or two inputs and no attributes (forward(F, x) or forward(F, a, b)), named after
the op and documented by its class docstring; an op with attributes or a list of inputs writes its own, which
checks and converts them, and names it the op's builder with @builds(op). The ops modules export these, and
Nodes (F for the symbolic backward) serves them under the vocabulary's names.

The registry is explicit: ops/__init__.py imports each module of ops, and each op is listed in REGISTRY.
One concept, one object: an op is its OpDef (REGISTRY[name], what @op returns); a node names it by node.op
(the name) and holds it as node.spec; a Kernel names the OpDef it implements Kernel.opdef.
"""
import builtins
import contextlib
import inspect
import os
from functools import partial

from ..errors import GraphError, ShapeError
from ..graph import NO_ATTRS, Node
from ..values import as_ints

REGISTRY = {}
# the F.<name> functions a rule may use, served by every namespace: arrays, Python floats, Nodes and codegen
VOCABULARY = ("exp", "log", "sqrt", "tanh", "erf", "pow", "abs", "sign", "maximum", "minimum", "where", "equal",
              "logical_and", "sum", "mean", "max", "reshape", "broadcast_to", "shape", "unbroadcast", "astype_like")
# ... and those the array backends and Nodes serve as well (not Python floats or codegen: never 0-d floats)
ARRAY_VOCABULARY = VOCABULARY + ("not_equal", "astype", "transpose", "matrix_transpose", "matmul", "getitem",
                                 "concat", "stack", "gather_rows", "index_add", "one_hot", "scatter_rows",
                                 "ones_like")
KERNELS = {"on": os.environ.get("GRAPHDIFF_KERNELS", "1") != "0", "epoch": 0,   # epoch: bumped per switch
           "backends": {"cupy": os.environ.get("GRAPHDIFF_CUPY_KERNELS", "0") == "1"}}   # opt-in ones


class OpDef:
    """A registered op. Attributes mirror the class given to @op; pullback is its VJP in the one form the
    engine calls (see the module docstring), saves what that VJP reads (None: everything), builder the public
    function that adds a node of it (made here for an op of one or two inputs and no attributes, else named
    by the op's module with @builds)."""

    __slots__ = ("name", "arity", "slots", "shape", "forward", "forward_res", "vjp", "make_vjp", "pullback",
                 "saves", "dtype", "differentiable", "random", "doc", "cls", "kernels", "elementwise",
                 "builder")

    def __init__(self, name, cls, arity, slots, differentiable, random):
        self.name = name
        self.cls = cls
        self.arity = arity
        self.slots = slots
        d = cls.__dict__
        self.shape = d["shape"]
        self.forward, self.forward_res, self.vjp, self.make_vjp = _rules(d)
        self.pullback = _pullback(self)
        self.saves = getattr(cls, "saves", None)
        self.dtype = d.get("dtype")
        self.differentiable = differentiable and self.vjp is not None
        self.random = random
        self.doc = (cls.__doc__ or "").strip()
        self.kernels = {}                        # backend name -> Kernel
        # float inputs of one shape and dtype give a node of that shape and dtype, and nothing to check
        # (Graph.add_node skips the rules then)
        self.elementwise = (slots == "float" and arity in (1, 2) and self.dtype is None
                            and self.shape in (broadcast_shapes, same_shape))
        self.builder = _builder(self, d.get("forward") or d["forward_res"])   # None: the op's module writes one

    def impl(self, F):
        """What runs this op on backend F: its fused kernel for F while kernels are on, else the op itself."""
        if self.kernels and KERNELS["on"] and KERNELS["backends"].get(F.name, True):
            return self.kernels.get(F.name, self)
        return self

    def __call__(self, *args, name=None, **attrs):
        """Build a node of this op: softplus(x) for an op registered as softplus = gd.op("softplus")(...)."""
        return apply(self, args, attrs, name)

    def slot_kinds(self, n):
        if self.arity is not None and n != self.arity:
            raise GraphError(f"op {self.name} takes {self.arity} inputs, got {n}")
        if isinstance(self.slots, str):
            return (self.slots,) * n
        return self.slots

    def __repr__(self):
        return f"<op {self.name}>"


def _builder(spec, forward):
    """The public function that adds a node of `spec`, for an op of one or two inputs whose forward takes
    nothing else (no attributes, no ctx); None for other ops. Nodes of one graph go straight to add_node
    (most calls: the scalar path builds every node through here), anything else through apply's checks."""
    params = inspect.signature(forward).parameters.values()
    if spec.arity not in (1, 2) or len(params) != spec.arity + 1 or builtins.any(
            p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
        return None
    doc = spec.doc.rstrip(".")
    if spec.arity == 1:
        def fn(x, name=None):
            if type(x) is Node:
                return x.graph.add_node(spec, (x,), NO_ATTRS, name)
            return apply(spec, (x,), name=name)
        fn.__doc__ = f"{doc}. Args: x: a Node. name: optional node name."
    else:
        def fn(a, b, name=None):
            if type(a) is Node and type(b) is Node and a.graph is b.graph:
                return a.graph.add_node(spec, (a, b), NO_ATTRS, name)
            return apply(spec, (a, b), name=name)
        shapes = " (broadcast)" if spec.shape is broadcast_shapes else ""
        fn.__doc__ = f"{doc}. Args: a, b: Nodes, arrays or numbers{shapes}. name: optional node name."
    fn.__name__ = fn.__qualname__ = spec.name
    fn.__module__ = spec.cls.__module__              # where the op is defined (help() names it)
    return fn


def builds(spec):
    """@builds(spec) over a function names it the builder of op `spec` (an OpDef): for an op with attributes or
    a list of inputs, whose public function checks and converts them before it adds the node (gd.sum(x, axis=1))."""
    def register(fn):
        spec.builder = fn
        return fn
    return register


def _rules(d):
    """(forward, forward_res, vjp, make_vjp) of an op or kernel class's namespace; the missing ones derived."""
    forward_res = d.get("forward_res")
    forward = d.get("forward") or _first_of(forward_res)
    make_vjp = d.get("make_vjp")
    vjp = d.get("vjp") or (make_vjp and _slot_vjp(make_vjp))
    return forward, forward_res, vjp, make_vjp


def _pullback(rules):
    """The VJP of `rules` (an OpDef or a Kernel) in the one form every backward calls, chosen once here:

        pullback(F, **attrs) -> at(xs, out, res) -> (vjp, xs', out')   contribution of slot i: vjp(i, g, xs', out')

    pullback binds the backend and a node's attrs (once per plan), at binds one node's values (once per run):
    a per-slot rule needs nothing more, so `at` hands back the values as they are (a tuple: no callable made
    per node, which the scalar path would pay for on every node); a two-stage rule does its shared work
    there. The per-slot rule is read from `rules` when a plan binds it, so one set later (a spy) runs."""
    if rules.make_vjp is not None:
        make_vjp = rules.make_vjp

        def pullback(F, **attrs):
            make = partial(make_vjp, F, **attrs)

            def at(xs, out, res):
                per_slot = make(xs, out, res)
                return (lambda i, g, xs, out: per_slot(i, g)), None, None
            return at
    elif rules.vjp is not None:
        def pullback(F, **attrs):
            rule = partial(rules.vjp, F, **attrs)
            return lambda xs, out, res: (rule, xs, out)
    else:
        pullback = None
    return pullback


class Kernel:
    """A backend's fused implementation of an op (see @kernel); opdef: the op it implements."""

    __slots__ = ("opdef", "backend", "forward", "forward_res", "vjp", "make_vjp", "pullback", "doc")

    def __init__(self, opdef, backend, cls):
        self.opdef, self.backend = opdef, backend
        self.forward, self.forward_res, self.vjp, self.make_vjp = _rules(cls.__dict__)
        self.pullback = _pullback(self)
        self.doc = (cls.__doc__ or "").strip()

    def __repr__(self):
        return f"<{self.backend} kernel of {self.opdef.name}>"


def kernel(name, backend):
    """Register a fused kernel of op `name` for `backend` ("numpy", "cupy"): a class with the op's functions
    (forward or forward_res; vjp or make_vjp), the same signatures and the same residuals as the op's rule,
    computed in fewer passes. Only values change hands: a kernel's forward may keep residuals only where
    the rule does, in the rule's format, so a forward by one and a backward by the other agree."""
    def register(cls):
        spec = REGISTRY.get(name)
        if spec is None:
            raise GraphError(f"kernel for {name!r}: no such op")
        k = Kernel(spec, backend, cls)
        if (k.forward_res is None) != (spec.forward_res is None) or (k.make_vjp is None) != (spec.make_vjp is None):
            raise GraphError(f"kernel for {name!r}: define the same functions as the op (forward_res and make_vjp "
                             "exactly where the op has them), so residuals agree")
        spec.kernels[backend] = k
        return k
    return register


def run_forward(impl, F, xs, attrs):
    """(out, residuals) of an op's rule or a kernel (`impl`) on arrays xs, residuals None where it keeps
    none: how tests and benchmarks call the two side by side, outside any graph."""
    if impl.forward_res is not None:
        return impl.forward_res(F, *xs, **attrs)
    return impl.forward(F, *xs, **attrs), None


def run_vjps(impl, F, xs, out, res, attrs, g, slots):
    """The VJPs of `slots` for cotangent g, as the engine asks for them: one pullback (a two-stage rule's
    shared work), then each slot."""
    vjp, xs, out = impl.pullback(F, **attrs)(xs, out, res)
    return [vjp(i, g, xs, out) for i in slots]


@contextlib.contextmanager
def fused_kernels(enabled=True, cupy=None):
    """Run with the backends' fused kernels on (default) or off (every op by its readable rule):
    `with gd.fused_kernels(False): ...` to compare, or GRAPHDIFF_KERNELS=0 for a whole process.
    cupy=True / False also turns CuPy's kernels on or off (they are opt-in: GRAPHDIFF_CUPY_KERNELS=1)."""
    before = (KERNELS["on"], dict(KERNELS["backends"]))
    KERNELS["on"] = bool(enabled)
    if cupy is not None:
        KERNELS["backends"]["cupy"] = bool(cupy)
    KERNELS["epoch"] += 1                        # steps and VJP rules bound under the other setting are stale
    try:
        yield
    finally:
        KERNELS["on"], KERNELS["backends"] = before
        KERNELS["epoch"] += 1


def _first_of(forward_res):
    def forward(F, *xs, **attrs):
        return forward_res(F, *xs, **attrs)[0]
    return forward


def _slot_vjp(make_vjp):
    def vjp(F, i, g, xs, out, **attrs):
        return make_vjp(F, xs, out, None, **attrs)(i, g)
    return vjp


def op(name, arity=1, slots="float", differentiable=True, random=False):
    """Register an op class; see the module docstring. Public: users add their own ops with it.

    Args:
        name: the op's name (node.op), unique.
        arity: number of inputs; None for a list of inputs (concat, stack).
        slots: "float", "int", "bool" or "any", one for all inputs or a tuple with one per slot.
        differentiable: False for ops whose output has no gradient (comparisons, casts to int): the
            backward treats their output as a constant. An op that is differentiable (the default) must
            define vjp or make_vjp; `differentiable = False` in the class says the same as the argument.
        random: the forward draws random numbers; it receives ctx= (the Graph) for its rng.
    """
    def register(cls):
        if name in REGISTRY:
            raise GraphError(f"op {name!r} is already registered")
        for fns in (("shape",), ("forward", "forward_res")):
            if not any(fn in cls.__dict__ for fn in fns):
                raise GraphError(f"op {name!r}: class {cls.__name__} needs a '{fns[0]}' function")
        grad = differentiable and cls.__dict__.get("differentiable", True)
        if grad and not any(fn in cls.__dict__ for fn in ("vjp", "make_vjp")):
            # without a rule its output would be a constant to the backward: zero gradients, silently
            raise GraphError(f"op {name!r}: class {cls.__name__} has no 'vjp' (or 'make_vjp') function, so "
                             "nothing could carry gradients through it; add one (gd.gradcheck checks it), or "
                             f"register it with @gd.op({name!r}, differentiable=False) (or set differentiable = "
                             "False in the class) if its output has no gradient")
        spec = OpDef(name, cls, arity, slots, grad, random)
        REGISTRY[name] = spec
        return spec
    return register


def apply(spec, args, attrs=None, name=None):
    """Add a node computing spec(*args) to the graph of the Node arguments; numbers become constants.

    Args:
        spec: a registered op (what @op returns) or its name.
        args: the inputs: a Node, or a list of Nodes, arrays and numbers.
        attrs: the op's static arguments ({"axis": 1}).
    """
    if isinstance(spec, str):
        if spec not in REGISTRY:
            raise GraphError(f"no op named {spec!r}; register it with @gd.op({spec!r}) first")
        spec = REGISTRY[spec]
    if isinstance(args, Node):
        args = (args,)
    if type(args) is tuple:                 # Nodes of one graph, one or two of them: most nodes, at once
        if len(args) == 2:
            a, b = args
            if type(a) is Node and type(b) is Node and a.graph is b.graph:
                return a.graph.add_node(spec, args, attrs or NO_ATTRS, name)
        elif len(args) == 1 and type(args[0]) is Node:
            return args[0].graph.add_node(spec, args, attrs or NO_ATTRS, name)
    graph, wrap = None, False
    for a in args:
        if not isinstance(a, Node):
            wrap = True
        else:
            if graph is None:
                graph = a.graph
            elif a.graph is not graph:
                joined = graph.join(a.graph)          # None, except for graphs made to meet (nn's Tapes)
                if joined is None:
                    other = next(b for b in args if isinstance(b, Node) and b.graph is graph)
                    raise GraphError(f"{spec.name}: '{other.name}' and '{a.name}' belong to two different graphs; "
                                     "build every node of one computation in the same gd.Graph")
                graph = joined
    if graph is None:
        lift = next((a.as_node for a in args if hasattr(a, "as_node")), None)   # an nn.Parameter alone
        if lift is None:
            raise GraphError(f"{spec.name} needs at least one Node argument to know its graph; "
                             "wrap numbers with g.constant(...) first")
        graph = lift().graph
    if wrap:
        kinds = spec.slot_kinds(len(args))
        args = [a if isinstance(a, Node) else graph.wrap(a, k) for a, k in zip(args, kinds)]
    return graph.add_node(spec, tuple(args), attrs or {}, name)


# --- shape rules shared by many ops ----------------------------------------------------------------
def broadcast_shapes(*shapes, **_):
    """NumPy broadcasting of the input shapes."""
    if len(shapes) == 2 and shapes[0] == shapes[1]:     # the usual case, and every scalar graph's
        return shapes[0]
    ndim = builtins.max(len(s) for s in shapes)   # the star imports below shadow max and sum
    out = []
    for k in range(-ndim, 0):
        dims = {s[k] for s in shapes if len(s) >= -k} - {1}
        if len(dims) > 1:
            raise ShapeError(f"shapes {' and '.join(str(s) for s in shapes)} do not broadcast "
                             f"(axis {k}: sizes {sorted(dims)}); reshape one so that each axis is equal or 1")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def same_shape(shape, **_):
    return shape


def norm_axis(axis, ndim):
    """axis (None, int or tuple) as a sorted tuple of non-negative ints; ShapeError if out of range."""
    if axis is None:
        return tuple(range(ndim))
    axes = as_ints(axis, "axis")
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeError(f"axis {a} is out of range for a {ndim}-d input")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"axis {axis} repeats an axis")
    return tuple(sorted(out))


def reduced_shape(shape, axis, keepdims):
    axes = norm_axis(axis, len(shape))
    if keepdims:
        return tuple(1 if k in axes else n for k, n in enumerate(shape))
    return tuple(n for k, n in enumerate(shape) if k not in axes)
