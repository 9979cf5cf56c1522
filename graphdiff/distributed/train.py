"""The language-model Trainer, data parallel: `mpiexec -n N graphdiff train ...` runs this on N ranks.

Every rank draws the same global batch (the same data random stream as one process: its state is the data
position in the checkpoint) and trains on its rows: rank r of N takes rows [r B/N, (r+1) B/N). The loss of a
rank is the mean over its non-<pad> targets, so its gradient is weighted by that count in the packed
all-reduce: the averaged gradient is the gradient of the global batch's mean loss, as one process computes
it, up to rounding. Clipping and the AdamW step then run on that same gradient on every rank, so the
parameters stay equal without being sent again. Dropout: rank 0 keeps the model's stream (one rank is one
process), rank r > 0 draws from a stream seeded by (model seed, r, step at start). Rank 0 alone evaluates,
writes checkpoints and logs, and shows progress.
"""
import math
import time

import numpy as np

from ..lm.train import Trainer
from ..nn.optim import clip_grad_norm
from .comm import DistributedError, communicator
from .data_parallel import DataParallel, check_agreement, shard_rows


class DataParallelTrainer(Trainer):
    """A Trainer whose steps are shared by the ranks of `comm` (default: communicator() for the model's
    backend); hp["batch_size"] is the global batch. Same arguments as Trainer, plus comm."""

    def __init__(self, model, tokenizer, train_docs, val_docs, comm=None, **hp):
        super().__init__(model, tokenizer, train_docs, val_docs, **hp)
        self.comm = comm
        self.data_parallel = None          # set by start(), at the first step
        self.comm_seconds = 0.0            # time in the gradient all-reduce (waiting for the slowest rank too)
        self.cuda_graph_asked = False

    def use_cuda_graph(self, warmup=2):
        """Not data parallel yet: noted here, refused by start() on every rank together (DistributedError)."""
        self.cuda_graph_asked = True

    def start(self):
        """Once, before the first step: the ranks check that they agree (model, corpus, vocabulary, settings,
        step), the batch divides, rank 0's parameters are broadcast, and dropout streams are set per rank."""
        if self.data_parallel is not None:
            return
        if self.comm is None:
            self.comm = communicator(backend=self.model.backend.name)
        comm, m = self.comm, self.model
        check_agreement(comm, **{"model config": [m.kind, m.config, m.dtype], "corpus": self.fingerprint,
                                 "vocabulary": self.tokenizer.to_dict(), "training settings": self.hp,
                                 "step (of the checkpoint)": self.step, "--cuda-graph flag": self.cuda_graph_asked})
        if self.cuda_graph_asked:
            raise DistributedError("--cuda-graph records one process's training step; it does not run data "
                                   "parallel yet: leave it out on several ranks")
        B = self.hp["batch_size"]
        if B % comm.size:
            raise DistributedError(f"--batch-size {B} (the global batch) does not divide over {comm.size} ranks; "
                                   f"use a multiple of {comm.size}, e.g. {comm.size * max(1, round(B / comm.size))}")
        self.data_parallel = DataParallel(m, comm)
        self.data_parallel.broadcast_params()
        if comm.rank > 0:
            seed = int(m.config.get("seed", 0))
            m.rng.state = np.random.default_rng([seed, comm.rank, self.step]).bit_generator.state

    def train_step(self):
        """One optimizer step on this rank's rows of the global batch; returns (the global batch's mean loss,
        its number of non-<pad> target tokens), the same numbers on every rank."""
        self.start()
        idx, targets, mask = self.sampler.next()                  # the global batch
        pad = self.tokenizer.pad_id
        n_global = int((targets != pad).sum())
        idx, targets, mask = shard_rows((idx, targets, mask), self.comm)
        n = int((targets != pad).sum())
        self.model.train()
        loss = self.model.loss(idx, targets, mask, backward=True)
        t0 = time.perf_counter()
        total, (loss_sum,) = self.data_parallel.allreduce_grads(weight=n, extra=[loss * n])
        self.comm_seconds += time.perf_counter() - t0
        if self.hp["grad_clip"]:
            clip_grad_norm(self.model, self.hp["grad_clip"])
        self.opt.lr = self.lr_at(self.step)
        self.opt.step()
        self.step += 1
        return loss_sum / total, n_global

    def evaluate(self):
        """Rank 0's mean validation loss; NaN on the other ranks (they do not evaluate)."""
        return super().evaluate() if self._rank() == 0 else math.nan

    def save(self, path):
        """Rank 0 writes the checkpoint (atomically, as Trainer.save); the other ranks write nothing."""
        if self._rank() == 0:
            super().save(path)

    def agreed(self, value):
        """Rank 0's value (broadcast: with a time limit, one small broadcast per step besides the all-reduce),
        so that rank 0's clock decides when every rank stops and how long the fitted schedule is."""
        return self.comm.bcast_obj(value) if self.comm is not None and self.comm.size > 1 else value

    def fit(self, steps=None, time_limit=None, checkpoint=None, save_every=None, progress=True,
            log=None, on_eval=None, fit_schedule=False):
        """Trainer.fit on every rank; rank 0 alone shows progress, logs, calls on_eval and saves; rank 0's
        clock decides a time limit's end (agreed)."""
        self.start()
        if self.comm.rank > 0:
            progress, log, on_eval, checkpoint = False, None, None, None
        return super().fit(steps, time_limit, checkpoint, save_every, progress, log, on_eval, fit_schedule)

    def _rank(self):
        return 0 if self.comm is None else self.comm.rank
