"""Straight-line Python for float graphs (every node a 0-d float64 on NumPy), where dispatching each node
through the engine would cost more than its arithmetic.

The ops' own rules run once on symbolic floats (Expr: Python source text) with a namespace `CODE` that
writes the math module's calls, and the result is compiled into one function per forward order or
backward plan. For the backward, the variant loops themselves (autodiff.version_a / version_b) run with a
CodeRun, so the function is the literal trace of Version A or Version B: same edges, same order, same sums.
No rule is written twice. Where math meets inf or NaN it raises, and the engine reruns on NumPy.
"""
import math

from .backend import SCALAR

MAX_NODES = 50_000          # beyond this, one compile takes seconds: the engine interprets
# compiling costs ~50 us a node (measured 2026-12-06: ~15 forward, ~40 backward, most of it Python's compile of
# the generated lines, about linear in their number, so compiling in pieces would not make it cheaper) and
# a compiled run saves ~0.3-1 us a node over the interpreted one: compile what runs again and again
# (training loops), not what runs once (eager use)
COMPILE_AFTER = 3


# Python's parser takes some 200 nested parentheses, its compiler a few thousand nested operations: an
# expression that nests deeper (an add_n of many inputs traced into ((a + b) + c) ...) is cut into statements
MAX_DEPTH = 50


class Expr:
    """A float known only by the Python source that computes it; depth: how deep its source nests; lines: the
    Lines it is written into, where it spills into a statement of its own when it nests MAX_DEPTH deep (the
    same operations in the same order: the same floats)."""

    __slots__ = ("src", "depth", "lines")

    def __init__(self, src, depth=0, lines=None):
        self.src, self.depth, self.lines = src, depth, lines

    def __bool__(self):             # a rule that branches on a value cannot be traced: interpret instead
        raise TypeError("a data-dependent branch cannot be compiled")

    def _op(op, swap=False):
        def f(a, b):
            x, y = (b, a) if swap else (a, b)
            return nest(f"({src(x)} {op} {src(y)})", x, y)
        return f

    __add__, __radd__ = _op("+"), _op("+", True)
    __sub__, __rsub__ = _op("-"), _op("-", True)
    __mul__, __rmul__ = _op("*"), _op("*", True)
    __truediv__, __rtruediv__ = _op("/"), _op("/", True)
    __gt__, __lt__, __ge__, __le__ = _op(">"), _op("<"), _op(">="), _op("<=")
    del _op

    def __pow__(self, b):
        return call("pow_", self, b)

    def __rpow__(self, a):
        return call("pow_", a, self)

    def __neg__(self):
        return nest(f"(-{self.src})", self)


def nest(text, *parts):
    """The Expr of source text made of parts (Exprs or numbers) inside one more level of parentheses: a
    statement of its own (Lines.emit) once it nests MAX_DEPTH deep."""
    depth, lines = 0, None
    for p in parts:
        if isinstance(p, Expr):
            depth = max(depth, p.depth)
            lines = lines or p.lines
    out = Expr(text, depth + 1, lines)
    return lines.emit(out) if depth + 1 >= MAX_DEPTH and lines is not None else out


def src(x):
    if isinstance(x, Expr):
        return x.src
    if isinstance(x, bool):
        return repr(x)
    x = float(x)
    return repr(x) if math.isfinite(x) else ("nan" if x != x else ("inf" if x > 0 else "(-inf)"))


def call(name, *args):
    return nest(f"{name}({', '.join(src(a) for a in args)})", *args)


class Lines:
    """The statements of a function being written: emit(expr) adds `tK = expr` and gives the Expr of tK."""

    def __init__(self, head):
        self.lines, self.count = [head], 0

    def emit(self, expr):
        self.count += 1
        name = f"t{self.count}"
        self.lines.append(f" {name} = {src(expr)}")
        return Expr(name, 0, self)

    def name(self, text):
        """The Expr of a name this function defines (a statement's target or an argument)."""
        return Expr(text, 0, self)


class Code:
    """F for tracing: the ScalarBackend's functions, written as calls instead of made."""

    name = "code"

    def __getattr__(self, fname):
        if fname in _CALLS:
            return lambda *args, **_: call(_CALLS[fname], *args)
        raise AttributeError(fname)

    @staticmethod
    def where(cond, a, b):
        return nest(f"({src(a)} if {src(cond)} else {src(b)})", a, cond, b)

    @staticmethod
    def equal(a, b):
        return nest(f"({src(a)} == {src(b)})", a, b)

    @staticmethod
    def logical_and(a, b):
        return nest(f"({src(a)} and {src(b)})", a, b)

    shape, unbroadcast = staticmethod(SCALAR.shape), staticmethod(SCALAR.unbroadcast)
    reshape = broadcast_to = staticmethod(SCALAR.reshape)
    sum = mean = max = staticmethod(SCALAR.sum)

    @staticmethod
    def astype_like(x, like):
        return call("float", x)


_CALLS = {"exp": "exp", "log": "log", "sqrt": "sqrt", "tanh": "tanh", "erf": "erf", "pow": "pow_",
          "abs": "abs", "maximum": "maximum_", "minimum": "minimum_", "sign": "sign_"}
CODE = Code()
NAMESPACE = {"exp": math.exp, "log": math.log, "sqrt": math.sqrt, "tanh": math.tanh, "erf": math.erf,
             "pow_": math.pow, "maximum_": SCALAR.maximum, "minimum_": SCALAR.minimum, "sign_": SCALAR.sign,
             "inf": math.inf, "nan": math.nan}


def compile_or_none(build, subject, *args):
    """build(subject, ...) or False when it cannot be compiled (too big, or a rule branches on a value)."""
    size = len(subject) if isinstance(subject, list) else len(subject.order)
    if size > MAX_NODES:
        return False
    try:
        return build(subject, *args)
    except (TypeError, AttributeError, ValueError, ArithmeticError, RecursionError, MemoryError):
        return False


def _compile(lines, name):
    code = compile("\n".join(lines) + "\n", f"<graphdiff {name}>", "exec")
    scope = dict(NAMESPACE)
    exec(code, scope)
    return scope["run"]


def compile_forward(order):
    """run(N) -> the values of order's op nodes, computed on floats from the leaves' values (N: order)."""
    code, names, outs = Lines("def run(N):"), {}, []
    lines = code.lines
    for k, n in enumerate(order):
        names[n] = v = f"x{k}"
        if n.spec is None:
            lines.append(f" {v} = float(N[{k}].out)")
        else:
            out = n.spec.forward(CODE, *[code.name(names[p]) for p in n.inputs], **n.attrs)
            lines.append(f" {v} = {src(out)}")
            outs.append(v)
    lines.append(f" return ({''.join(v + ', ' for v in outs)})")
    return _compile(lines, "forward")


class CodeRun(Lines):
    """The Run a variant loop traces into code: each contribution, sum and += becomes one statement."""

    def __init__(self, plan, kept):
        super().__init__("def run(N, seed):")
        self.kept = kept
        self.pos = {n: k for k, n in enumerate(plan.order)}
        self.loads, self.stages = set(), {}

    def value(self, n):
        k = self.pos[n]
        self.loads.add(k)
        return self.name(f"x{k}")

    def vjp(self, u, i, g):
        bound = self.stages.get(u)
        if bound is None:
            xs, out = [self.value(p) for p in u.inputs], self.value(u)
            bound = self.stages[u] = u.spec.pullback(CODE, **u.attrs)(xs, out, None)
        rule, xs, out = bound
        return self.emit(rule(i, g, xs, out))

    def total(self, parts):                 # left to right, as NumericRun.total: nested, so it spills
        if len(parts) == 1:
            return parts[0]
        total = parts[0]
        for c in parts[1:]:
            total = total + c
        return self.emit(total)

    def accumulate(self, prev, c):
        return c if prev is None else self.emit(prev + c)

    final = None

    def free(self, adj, u):
        self.stages.pop(u, None)
        if u not in self.kept:
            del adj[u]


def compile_backward(plan, loop, kept):
    """run(N, seed) -> {node: adjoint} for the nodes in kept: `loop` (Version A or B) traced into code."""
    run = CodeRun(plan, kept)
    adj = loop(plan, run.name("seed"), run)
    held = [n for n in plan.order if n in adj]
    body = run.lines[:1] + [f" x{k} = float(N[{k}].out)" for k in sorted(run.loads)] + run.lines[1:]
    body.append(f" return ({''.join(src(adj[n]) + ', ' for n in held)})")
    fn = _compile(body, "backward")
    return lambda nodes, seed: dict(zip(held, fn(nodes, seed)))
