"""Optimizers (SGD with momentum, AdamW), gradient clipping, and the warm-up + cosine schedule.

Updates use only array-API arithmetic on `Parameter.data` / `.grad`, so they run on every backend. Each
step replaces p.data with a new array (see module.py on how graphs pick it up). They take a Module, its
parameters, or the param Nodes of a raw graph (`SGD(g.params(), lr=0.1)`).
"""
import functools
import math

import numpy as np

from ..backend import backend_of, to_numpy
from ..errors import GraphError
from ..graph import Node
from ..ops import fused_maths
from ..ops.registry import KERNELS
from .module import Module, Parameter


class NodeParam:
    """A graph's param node seen as a Parameter: .data is its value (assigning it sets the node's value,
    which the next forward uses) and .grad its gradient, so optimizers train raw graphs too."""

    __slots__ = ("node",)

    def __init__(self, node):
        self.node = node

    @property
    def data(self):
        return self.node.value

    @data.setter
    def data(self, value):
        self.node.value = value

    @property
    def grad(self):
        return self.node.grad

    @grad.setter
    def grad(self, value):
        self.node.grad = value


def _named(params):
    """[(name, parameter)] from a Module, Parameters, (name, Parameter) pairs or a graph's param Nodes.

    Each parameter comes once, under its first name (PyTorch's optimizers and clip_grad_norm_ treat a tied
    or repeated one so): listed twice, it would be moved twice by a step and counted twice by a norm."""
    if isinstance(params, Module):
        return list(params.named_parameters())
    out, seen = [], set()
    for k, p in enumerate(params):
        name, p = p if isinstance(p, tuple) else (None, p)
        if id(p) in seen:
            continue
        seen.add(id(p))
        if isinstance(p, Node):
            if p.kind != "param":
                raise GraphError(f"optimizers update params; '{p.name}' is a {p.kind}: pass g.params()")
            name, p = name or p.name, NodeParam(p)
        out.append((str(k) if name is None else name, p))
    return out


class Optimizer:
    """Base: holds (name, Parameter) pairs, lr, the step count and per-parameter state arrays."""

    state_names = ()

    def __init__(self, params, lr):
        self.params = _named(params)
        self.lr = lr
        self.t = 0
        self.state = {name: {} for name, _ in self.params}

    def zero_grad(self):
        for _, p in self.params:
            p.grad = None

    def step(self):
        self.t += 1
        for name, p in self.params:
            if p.grad is None:
                continue
            p.data = self.update(p, p.grad, self.state[name])

    def state_dict(self):
        """{'t': step, 'lr': lr, '<state>.<param name>': NumPy array}."""
        out = {"t": self.t, "lr": self.lr}
        for name, st in self.state.items():
            for k, v in st.items():
                out[f"{k}.{name}"] = np.array(to_numpy(v))
        return out

    def load_state_dict(self, state):
        self.t = int(state["t"])
        self.lr = float(state["lr"])
        by_name = dict(self.params)
        for name in by_name:
            self.state[name] = {}
            for k in self.state_names:
                key = f"{k}.{name}"
                if key in state:
                    p = by_name[name]
                    self.state[name][k] = _to(p, state[key])
        return self


def _to(p, host):
    """A host array as an array like p.data (same backend and dtype)."""
    B = backend_of(p.data)
    return B.from_host(np.asarray(host), B.dtype_name(p.data))


class SGD(Optimizer):
    """p -= lr * (g + weight_decay * p) with heavy-ball momentum: v = momentum * v + g (PyTorch's form)."""

    state_names = ("momentum_buffer",)

    def __init__(self, params, lr=0.1, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay

    def update(self, p, g, st):
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if self.momentum:
            buf = st.get("momentum_buffer")
            buf = g if buf is None else self.momentum * buf + g
            st["momentum_buffer"] = buf
            g = buf
        return p.data - self.lr * g


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's defaults and update order."""

    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr)
        if not self.params:
            raise ValueError("AdamW: no parameters to update (an empty list, or a Module without Parameters); "
                             "pass model.parameters(), a Module, or g.params() of a graph with params")
        betas = tuple(betas)
        for what, value, ok in (("lr", lr, 0 <= lr < math.inf), ("eps", eps, 0 <= eps < math.inf),
                                ("weight_decay", weight_decay, 0 <= weight_decay < math.inf),
                                ("betas", betas, len(betas) == 2 and all(0 <= b < 1 for b in betas))):
            if not ok:
                raise ValueError(f"AdamW: {what}={value!r}; expected " + (
                    "two numbers in [0, 1), e.g. (0.9, 0.999)" if what == "betas" else "a finite number >= 0"))
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay
        self._flat = {}             # group key -> _FlatGroup: its buffers, kept from step to step

    def step(self, scalars=None):
        """One update of every parameter with a gradient, run as one flat update per (backend, dtype) group:
        the gradients of a group are concatenated, the values, moments and gradients updated with a dozen
        whole-array operations in place (instead of a dozen per parameter: on a GPU, kernel launches). The
        values and moments are kept flat from step to step and handed out as views (p.data, the state), so
        their memory stays where it is (what a captured CUDA graph needs). The same operations per element
        as update(), so the same bits.

        Args:
            scalars: None (the step's numbers, lr and the bias corrections, go to the kernels as Python
                numbers), or {group key: a 1-d array of 3 on the group's backend and dtype} that the update
                reads them from (written with scalar_values() before the step): a recorded step (CapturedStep)
                then replays with each step's numbers instead of the recorded ones.
        """
        self.t += 1
        for key, members in self.groups().items():
            if len(members) == 1 and scalars is None:
                name, p = members[0]
                p.data = self.update(p, p.grad, self.state[name])
                continue
            B = backend_of(members[0][1].data)
            states = [self.state[name] for name, _ in members]
            data, m, v, views = self._flat_state(key, members, states, B)
            g = B.concat([B.reshape(p.grad, (-1,)) for _, p in members])
            self.flat_update(data, g, m, v, B, None if scalars is None else scalars[key])
            for _, p in members:                # changed in place: a replay (module.Call) must see it
                if isinstance(p, Parameter):
                    p.version += 1
            if views is not None:               # new buffers: hand out their views once updated (a graph's
                for (_, p), view in zip(members, views):    # param takes a copy of what it is given)
                    p.data = view
                if all(p.data is view for (_, p), view in zip(members, views)):
                    self._flat[key].views = views   # else (a graph's param keeps a copy) new buffers each step

    def groups(self):
        """{(backend name, dtype): [(name, Parameter)]} of the parameters with a gradient."""
        groups = {}
        for name, p in self.params:
            if p.grad is not None:
                groups.setdefault((backend_of(p.data).name, str(p.data.dtype)), []).append((name, p))
        return groups

    def _flat_state(self, key, members, states, B):
        """The group's flat values and moments: last step's buffers while the parameters and the state
        still hold the views handed out then (nothing copied), else new buffers concatenated from them (a
        missing moment is 0: b1 * 0 + (1 - b1) g is (1 - b1) g, bit for bit): then also the views of the
        values, for step() to hand out after the update. Returns (data, m, v, views or None)."""
        names = [name for name, _ in members]
        last = self._flat.get(key)
        if last is not None and last.holds(names, members, states):
            return last.data, last.m, last.v, None

        def flat(arrays):
            return B.concat([B.reshape(a, (-1,)) for a in arrays])
        zero = [B.zeros_like(p.data) for _, p in members]
        data = flat([p.data for _, p in members])
        m = flat([st.get("exp_avg", z) for st, z in zip(states, zero)])
        v = flat([st.get("exp_avg_sq", z) for st, z in zip(states, zero)])
        start, views = 0, []
        for (name, p), st in zip(members, states):
            n, shape = p.data.size, p.data.shape
            views.append(B.reshape(data[start:start + n], shape))
            st["exp_avg"] = B.reshape(m[start:start + n], shape)
            st["exp_avg_sq"] = B.reshape(v[start:start + n], shape)
            start += n
        self._flat[key] = _FlatGroup(names, data, m, v, states)
        return data, m, v, views

    def scalar_values(self, t=None):
        """The numbers of step t (default: the next one) that flat_update reads from `scalars`: the weight
        decay factor 1 - lr * wd, sqrt(1 - b2^t) and the step size lr / (1 - b1^t)."""
        t = self.t + 1 if t is None else t
        b1, b2 = self.betas
        return [1 - self.lr * self.weight_decay, math.sqrt(1 - b2 ** t), self.lr / (1 - b1 ** t)]

    def flat_update(self, data, g, m, v, B, scalars=None):
        """Update the flat data, m and v in place (they are the optimizer's own arrays): update()'s
        operations, in update()'s order (ops/fused_maths.adamw; on CuPy with its fused kernels on, that
        function compiled into one kernel). scalars: the step's numbers as a device array (see step), else
        Python numbers; either way rounded to the arrays' dtype, so the same bits."""
        b1, b2 = self.betas
        if scalars is None:
            decay, bias2, step_size = self.scalar_values(self.t)
        else:
            decay, bias2, step_size = scalars[0], scalars[1], scalars[2]
        flat_update_fn(B)(data, g, m, v, b1, 1 - b1, b2, 1 - b2, decay if self.weight_decay else None, bias2,
                          step_size, self.eps)

    def update(self, p, g, st):
        b1, b2 = self.betas
        m = st.get("exp_avg")
        v = st.get("exp_avg_sq")
        m = (1 - b1) * g if m is None else b1 * m + (1 - b1) * g
        v = (1 - b2) * (g * g) if v is None else b2 * v + (1 - b2) * (g * g)
        st["exp_avg"], st["exp_avg_sq"] = m, v
        xp = backend_of(p.data).xp
        data = p.data * (1 - self.lr * self.weight_decay) if self.weight_decay else p.data
        step_size = self.lr / (1 - b1 ** self.t)
        denom = xp.sqrt(v) / math.sqrt(1 - b2 ** self.t) + self.eps
        return data - step_size * (m / denom)


def flat_update_fn(B):
    """AdamW's flat update on backend B: fused_maths.adamw run by B's array library, or on CuPy with its
    fused kernels on (gd.fused_kernels(cupy=True), GRAPHDIFF_CUPY_KERNELS=1) compiled by cupy.fuse."""
    if B.name == "cupy" and KERNELS["on"] and KERNELS["backends"].get("cupy"):
        from ..ops import fused_cupy
        return fused_cupy.ADAMW
    return functools.partial(fused_maths.adamw, fused_maths.Maths(B.xp))


class _FlatGroup:
    """One AdamW group's flat buffers and the views handed out of them (views: of the values, set once the
    parameters are seen to hold them; None while they do not)."""

    __slots__ = ("names", "data", "m", "v", "views", "m_views", "v_views")

    def __init__(self, names, data, m, v, states):
        self.names, self.data, self.m, self.v, self.views = names, data, m, v, None
        self.m_views = [st["exp_avg"] for st in states]
        self.v_views = [st["exp_avg_sq"] for st in states]

    def holds(self, names, members, states):
        """Whether the parameters and their state still hold this group's views (nothing replaced them)."""
        return (self.names == names and self.views is not None
                and all(p.data is a for (_, p), a in zip(members, self.views))
                and all(st.get("exp_avg") is a for st, a in zip(states, self.m_views))
                and all(st.get("exp_avg_sq") is a for st, a in zip(states, self.v_views)))


def clip_grad_norm(params, max_norm):
    """Scale all gradients so that their global L2 norm is at most max_norm (PyTorch's clip_grad_norm_).

    Computed on the device without reading anything back (no sync): every gradient is multiplied by
    min(1, max_norm / (norm + 1e-6)). Returns the norm before clipping as a 0-d array on the gradients'
    backend (float() it to read it, one device sync), or 0.0 when there are no gradients.
    """
    held = [p for _, p in _named(params) if p.grad is not None]
    if not held:
        return 0.0
    xp = backend_of(held[0].grad).xp
    total = xp.sqrt(sum(xp.sum(p.grad * p.grad) for p in held))
    scale = xp.clip(max_norm / (total + 1e-6), None, 1.0)
    for p in held:
        p.grad = p.grad * scale
    return total


def warmup_cosine(step, lr, warmup, total, min_lr=0.0):
    """Learning rate at `step` (0-based): linear warm-up to lr over `warmup` steps, then a cosine decay to
    min_lr at `total` steps, then min_lr."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    frac = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * frac))
