"""GPU work recorded once as a CUDA graph and replayed (CuPy): one launch per step instead of a thousand.

On a GPU, a small model's step is host-bound: every op is a kernel launch from Python, and the GPU waits
between them. A graph engine knows the whole step before it runs, so the step can be recorded once (CUDA
stream capture) and replayed with a single launch. Two steps are recorded here: the training step
(CapturedStep: loss, backward, clipping, AdamW) and the KV-cache decoding step (generate(..., cuda_graph=True)).
What replaying needs, and how it is met:

- the same memory every step: new data (a batch, a token) is copied into the graph's own input arrays, in
  place; the parameters and AdamW's moments stay in the flat buffers AdamW keeps (updated in place), the KV
  cache in the decoding graph's input arrays; everything the recorded work allocates comes from a memory pool
  of its own, which nothing else uses while the recording lives;
- no host work inside: no device -> host reads (the engine's step has none; the loss or the logits row is
  read after the launch), no host -> device copies (they go before the launch), no random numbers (dropout
  is refused: a replay would draw the same mask every step);
- numbers that change as data: the learning rate and AdamW's bias corrections change every step, so the
  recorded update reads them from a small device array written before each launch, not from the constants
  the recording would otherwise keep.

The first `warmup` calls run the work as it will be recorded (same arrays, same operations), the next one
records it and launches the recording, every later one launches it. Same operations, same bits.
"""
import numpy as np

from ..errors import GraphError
from ..nn.layers import Dropout
from ..nn.optim import AdamW, clip_grad_norm


class Recording:
    """Record body() once as a CUDA graph and replay it: see run(). backend: a CuPy backend (else GraphError,
    whose message ends with `fix`)."""

    def __init__(self, backend, warmup=2, fix="leave out --cuda-graph"):
        if backend.name != "cupy":
            raise GraphError(f"CUDA graphs record GPU work, and the model runs on backend {backend.name!r}: run "
                             f"it on cupy (--backend cupy, or backend='cupy'), or {fix}")
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1 (a plain run before recording), got {warmup}")
        cupy = backend.xp
        self.cupy, self.warmup = cupy, warmup
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()          # the recording's memory: used by nothing else
        self.graph = None
        self.result = None
        self.calls = 0

    def run(self, prepare, body, replayed=None):
        """One step: prepare() (copies of new data into the recording's arrays, every call), then body()
        run plainly (warmup), recorded and launched (the call after), or the recording launched (later calls;
        replayed() then does on the host what body() would have: counters). All on the recording's stream,
        waited for before returning. Returns what body() returned when it ran (its arrays hold this step's
        values after each launch)."""
        cupy = self.cupy
        cupy.cuda.get_current_stream().synchronize()    # work queued elsewhere (eval, cache writes) is done
        with self.stream:
            prepare()
            if self.calls < self.warmup:                # plain runs: kernels compiled, buffers settled
                self.result = body()
            elif self.graph is None:
                self.stream.begin_capture()
                try:
                    with cupy.cuda.using_allocator(self.pool.malloc):
                        self.result = body()
                except BaseException:
                    try:
                        self.stream.end_capture()
                    except Exception:               # the capture was invalidated by what went wrong
                        pass
                    raise
                self.graph = self.stream.end_capture()
                self.graph.launch(stream=self.stream)
            else:
                if replayed is not None:
                    replayed()
                self.graph.launch(stream=self.stream)
            self.stream.synchronize()
        self.calls += 1
        return self.result

    @property
    def recorded(self):
        """Whether body() has been recorded (later calls launch it)."""
        return self.graph is not None


def feed_in_place(prog, host):
    """Copy host arrays into a Program's input values, in place once they exist (their memory is what a
    recording reads): checked as any feed is (shape, dtype, ids in range), then copied."""
    for name, value in host.items():
        node = prog.inputs[name]
        dev = prog.graph.as_value(node, value)
        if node.out is None:
            node.value = dev
        else:
            node.value[...] = dev


def no_dropout(model, fix):
    drop = [name or "model" for name, m in model.named_modules() if isinstance(m, Dropout) and m.p > 0]
    if drop:
        raise ValueError(f"CUDA graphs replay the same dropout mask every step (module '{drop[0]}' has p > 0); "
                         f"{fix}")


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
        if not isinstance(opt, AdamW):
            raise TypeError(f"CapturedStep records AdamW's update; got {type(opt).__name__}")
        self.recording = Recording(model.backend, warmup)
        no_dropout(model, "train with dropout 0 or without --cuda-graph")
        self.model, self.opt, self.grad_clip, self.B = model, opt, grad_clip, model.backend
        self.prog = model.build_program(("loss", batch_size, block_size))   # its own graph, not the cache's
        self.scalars = {}                           # AdamW group -> device array of the step's numbers

    def __call__(self, idx, targets, key_mask):
        rec = self.recording

        def prepare():
            feed_in_place(self.prog, {"idx": idx, "targets": targets, "key_mask": key_mask})
            if rec.calls >= rec.warmup:             # the groups are known from the plain steps
                self._write_scalars()

        def replayed():
            self.opt.t += 1                         # what opt.step() does on the host
        if rec.recorded:
            self._check_same_arrays()
        loss = rec.run(prepare, self._step, replayed)
        if rec.calls == rec.warmup + 1:            # just recorded: the arrays it reads and writes
            self._arrays = self._state_arrays()
        return float(loss)                          # the step's one device -> host read

    def _state_arrays(self):
        out = [p.data for _, p in self.opt.params]
        for st in self.opt.state.values():
            out += list(st.values())
        return out

    def _check_same_arrays(self):
        """The recording reads and writes the arrays that held the parameters and AdamW's moments when it was
        made: if one was replaced since (load_state_dict), a launch would train arrays nobody reads."""
        now = self._state_arrays()
        if len(now) != len(self._arrays) or any(a is not b for a, b in zip(now, self._arrays)):
            raise GraphError("the parameters or the optimizer state were replaced since the training step was "
                             "recorded as a CUDA graph (load_state_dict?); make a new CapturedStep "
                             "(trainer.use_cuda_graph()) after loading")

    @property
    def graph(self):
        return self.recording.graph

    @property
    def calls(self):
        return self.recording.calls

    def _step(self):
        (loss,) = self.prog.run({}, ("loss",), backward="loss")
        if self.grad_clip:
            clip_grad_norm(self.model, self.grad_clip)
        if self.recording.calls < self.recording.warmup:     # plain steps write the numbers here
            self._write_scalars()
        self.opt.step(scalars=self.scalars)
        return loss

    def _write_scalars(self):
        """This step's lr and bias corrections into the device arrays the update reads (before the launch)."""
        values = np.asarray(self.opt.scalar_values(), dtype=np.float64)
        for key in self.opt.groups():
            dev = self.B.from_host(values, key[1])
            buf = self.scalars.get(key)
            if buf is None:
                self.scalars[key] = dev
            else:
                buf[...] = dev
