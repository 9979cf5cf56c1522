"""A training step recorded once as a CUDA graph and replayed (CuPy): one launch per step instead of a thousand.

On a GPU, a small model's step is host-bound: every op is a kernel launch from Python, and the GPU waits
between them. A graph engine knows the whole step before it runs, so the step can be recorded once (CUDA
stream capture) and replayed with a single launch. What replaying needs, and how it is met here:

- the same memory every step: the batch is copied into the graph's own input arrays (in place), the
  parameters and AdamW's moments stay in the flat buffers AdamW keeps (updated in place), and everything the
  step allocates comes from a memory pool of its own, which nothing else uses while the recording lives;
- no host work inside: no device -> host reads (the engine's step has none; the loss is read after the
  launch), no host -> device copies (the batch and the step's numbers go over before the launch), no random
  numbers (dropout is refused: a replay would draw the same mask every step);
- the step's numbers as data: the learning rate and AdamW's bias corrections change every step, so the
  recorded update reads them from a small device array written before each launch, not from the constants
  the recording would otherwise keep.

The first `warmup` steps run as recorded later (same arrays, same operations), then one step is recorded and
launched, and every later step is a launch. Same operations, same bits as Trainer's plain steps.
"""
import numpy as np

from ..errors import GraphError
from ..nn.layers import Dropout
from ..nn.optim import AdamW, clip_grad_norm


class CapturedStep:
    """The training step of a language model (loss, backward, optional clipping, AdamW) on (B, T) batches,
    as a CUDA graph on the CuPy backend.

        step = CapturedStep(model, opt, batch_size=B, block_size=T, grad_clip=1.0)
        opt.lr = ...                 # this step's learning rate, as for opt.step()
        loss = step(idx, targets, key_mask)     # host (B, T) arrays; returns the loss (a float)

    After a call, p.grad holds the step's (clipped) gradients and p.data the updated values, as after
    model.loss(..., backward=True), clip_grad_norm and opt.step(). Eval and generation keep working
    beside it (they use the model's other graphs); a step of another shape needs a CapturedStep of its own.
    """

    def __init__(self, model, opt, batch_size, block_size, grad_clip=0.0, warmup=2):
        B = model.backend
        if not isinstance(opt, AdamW):
            raise TypeError(f"CapturedStep records AdamW's update; got {type(opt).__name__}")
        if B.name != "cupy":
            raise GraphError(f"CUDA graphs record GPU work: the model runs on backend {B.name!r}; build it with "
                             "backend='cupy' (or leave out --cuda-graph)")
        drop = [name or "model" for name, m in model.named_modules() if isinstance(m, Dropout) and m.p > 0]
        if drop:
            raise ValueError(f"CUDA graphs replay the same dropout mask every step ({drop[0]} has p > 0); "
                             "train with dropout 0 or without --cuda-graph")
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1 (a plain step before recording), got {warmup}")
        cupy = B.xp
        self.model, self.opt, self.grad_clip, self.warmup = model, opt, grad_clip, warmup
        self.B, self.cupy = B, cupy
        self.prog = model.build_program(("loss", batch_size, block_size))   # its own graph, not the cache's
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()          # the recording's memory: used by nothing else
        self.scalars = {}                           # AdamW group -> device array of the step's numbers
        self.graph = None
        self.loss = None
        self.calls = 0

    def __call__(self, idx, targets, key_mask):
        cupy = self.cupy
        cupy.cuda.get_current_stream().synchronize()    # work queued elsewhere (eval, loading) is done
        with self.stream:
            self._feed({"idx": idx, "targets": targets, "key_mask": key_mask})
            if self.calls < self.warmup:                # plain steps: kernels compiled, buffers settled
                self.loss = self._step(write_scalars=True)
            elif self.graph is None:
                self._write_scalars()
                self.stream.begin_capture()
                try:
                    with cupy.cuda.using_allocator(self.pool.malloc):
                        self.loss = self._step(write_scalars=False)
                except BaseException:
                    try:
                        self.stream.end_capture()
                    except Exception:               # the capture was invalidated by what went wrong
                        pass
                    raise
                self.graph = self.stream.end_capture()
                self.graph.launch(stream=self.stream)
            else:
                self._write_scalars()
                self.opt.t += 1                         # what opt.step() does on the host
                self.graph.launch(stream=self.stream)
            loss = float(self.loss)                     # the step's one device -> host read
            self.stream.synchronize()
        self.calls += 1
        return loss

    def _feed(self, host):
        """Copy the batch into the graph's input arrays: their memory is what the recording reads."""
        prog = self.prog
        for name, value in host.items():
            node = prog.inputs[name]
            dev = prog.graph.as_value(node, value)      # checked (shape, dtype, ids in range), then copied
            if node.out is None:
                node.value = dev
            else:
                node.value[...] = dev                   # in place: the same memory every step

    def _step(self, write_scalars):
        (loss,) = self.prog.run({}, ("loss",), backward="loss")
        if self.grad_clip:
            clip_grad_norm(self.model, self.grad_clip)
        if write_scalars:
            self._write_scalars()
        self.opt.step(scalars=self.scalars)
        return loss

    def _write_scalars(self):
        """This step's lr and bias corrections into the device arrays the update reads (before the launch)."""
        values = np.asarray(self.opt.scalar_values(), dtype=np.float64)
        for key, members in self.opt.groups().items():
            dtype = key[1]
            buf = self.scalars.get(key)
            if buf is None:
                buf = self.scalars[key] = self.B.from_host(values, dtype)
            else:
                buf[...] = self.B.from_host(values, dtype)
