"""Data parallelism: every rank holds the whole model, computes the gradient of its part of the global
batch, and the gradients are summed over the ranks with one all-reduce per step over one flat buffer per
(backend, dtype) group (ChainerMN's packed all-reduce), so that every rank takes the same optimizer step.

    DataParallel(model, comm): broadcast_params() from rank 0; allreduce_grads(weight) averages the gradients.
    DistributedOptimizer(opt, comm): an optimizer whose step() averages the gradients first (your own loop).
    scatter_dataset(data, comm): this rank's deterministic part of a data set.
    check_agreement(comm, **facts): DistributedError (one line) when the ranks disagree on any fact.
"""
import hashlib
import json

import numpy as np

from ..backend import backend_of
from ..nn.optim import Optimizer
from .comm import DistributedError, communicator


class DataParallel:
    """The gradient exchange of one model (a Module, its parameters, or a graph's param Nodes).

    Every parameter takes part on every rank (one with no gradient sends zeros), so the buffers have the
    same layout on all ranks.
    """

    def __init__(self, params, comm=None):
        self.params = Optimizer(params, 0.0).params    # (name, Parameter) pairs, each once
        self.comm = comm if comm is not None else communicator()

    def groups(self):
        """{(backend name, dtype): [(name, Parameter)]} in parameter order."""
        groups = {}
        for name, p in self.params:
            groups.setdefault((backend_of(p.data).name, str(p.data.dtype)), []).append((name, p))
        return groups

    def broadcast_params(self, root=0):
        """Every rank's parameters become root's (one broadcast per group)."""
        if self.comm.size == 1:
            return
        for members in self.groups().values():
            B = backend_of(members[0][1].data)
            flat = B.concat([B.reshape(p.data, (-1,)) for _, p in members])
            self.comm.bcast(flat, root)
            start = 0
            for _, p in members:
                n = p.data.size
                p.data = B.reshape(flat[start:start + n], p.data.shape)
                start += n

    def allreduce_grads(self, weight=1.0, extra=()):
        """Replace every gradient by the weighted mean over the ranks, sum_r(weight_r g_r) / sum_r(weight_r),
        with one all-reduce per (backend, dtype) group: the weights (and `extra` numbers, summed over the
        ranks) travel in the first group's buffer. weight 1 on every rank: the plain mean. A loss that is a
        mean over this rank's n items, weighted by n, gives the gradient of the mean over all ranks' items.

        Returns (sum of the weights, [sums of the extra numbers]) as Python floats."""
        groups = list(self.groups().values())
        extra = [float(x) for x in extra]
        total, sums = float(weight), extra
        for i, members in enumerate(groups):
            B = backend_of(members[0][1].data)
            dtype = B.dtype_name(members[0][1].data)
            parts = [B.reshape(B.zeros_like(p.data) if p.grad is None else p.grad, (-1,)) for _, p in members]
            if weight != 1.0:
                parts = [g * weight for g in parts]
            tail = [float(weight)] + extra if i == 0 else []
            if tail:
                parts.append(B.from_host(np.array(tail), dtype))
            flat = B.concat(parts)
            self.comm.allreduce_sum(flat)
            if tail:
                back = B.to_numpy(flat[-len(tail):]).astype(np.float64)
                total, sums = float(back[0]), [float(x) for x in back[1:]]
                flat = flat[:-len(tail)]
            if total != 1.0:
                flat = flat / total
            start = 0
            for _, p in members:
                n = p.data.size
                p.grad = B.reshape(flat[start:start + n], p.data.shape)
                start += n
        return total, sums


class DistributedOptimizer:
    """Wraps an optimizer (AdamW, SGD) for data-parallel training in your own loop: broadcasts the
    parameters from rank 0 now, and step() averages the gradients over the ranks (one packed all-reduce),
    optionally clips the averaged gradient, then steps the wrapped optimizer. Other attributes (lr,
    state_dict, ...) are the wrapped optimizer's."""

    def __init__(self, optimizer, comm=None):
        self.optimizer = optimizer
        self.comm = comm if comm is not None else communicator()
        self.data_parallel = DataParallel(optimizer.params, self.comm)
        self.data_parallel.broadcast_params()

    def step(self, weight=1.0, grad_clip=None):
        """Average the gradients (weighted by `weight`: e.g. the number of items this rank's loss is a mean
        over), clip their global norm to grad_clip (if given), then step."""
        from ..nn.optim import clip_grad_norm
        self.data_parallel.allreduce_grads(weight)
        if grad_clip:
            clip_grad_norm(self.optimizer.params, grad_clip)
        self.optimizer.step()

    def __getattr__(self, name):
        return getattr(self.optimizer, name)


def scatter_dataset(data, comm=None, shuffle=False, seed=0):
    """This rank's part of a data set (a list or an array; sliced along its first axis): the items are split
    into `size` contiguous parts as equal as possible, rank r takes part r; with shuffle, a permutation fixed
    by seed first (the same on every rank). Every rank gets a different part; together they are the whole."""
    comm = comm if comm is not None else communicator()
    n = len(data)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    lo, hi = n * comm.rank // comm.size, n * (comm.rank + 1) // comm.size
    mine = order[lo:hi]
    if isinstance(data, np.ndarray) or hasattr(data, "shape"):
        return data[mine]
    return [data[i] for i in mine]


def shard_rows(batch, comm):
    """Rank r's rows of a global batch whose first axis divides by the world size (each array alike)."""
    out = []
    for a in batch:
        b = a.shape[0] // comm.size
        out.append(a[comm.rank * b:(comm.rank + 1) * b])
    return tuple(out)


def fingerprint(obj):
    """A short hash of a JSON-able object (what check_agreement compares)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def check_agreement(comm, **facts):
    """Raise DistributedError on every rank (the same one line) when any rank's facts differ from rank 0's:
    names the first fact that differs and the ranks. facts: name -> a JSON-able value."""
    mine = {k: fingerprint(v) for k, v in facts.items()}
    everyone = comm.allgather_obj(mine)
    for name in facts:
        differ = [r for r, f in enumerate(everyone) if f.get(name) != everyone[0].get(name)]
        if differ:
            raise DistributedError(f"the ranks disagree on the {name}: rank(s) {differ} differ from rank 0 "
                                   f"({everyone[differ[0]].get(name)} vs {everyone[0].get(name)}); give every "
                                   "rank the same files and flags")
