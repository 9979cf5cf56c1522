"""cupy.cuda of the stand-in: one device; streams, stream capture into CUDA graphs, memory pools.

Capture is modelled as CUDA does it (checked against CuPy v14's cupy/cuda/stream.pyx and graph.pyx, and the
CUDA runtime's rules for stream capture): work issued on a capturing stream is recorded, not run, so the
arrays it produces hold garbage (NaN, or 0 for integers) until the graph is launched, and in-place updates do
not happen; Graph.launch() replays the recorded work, in order, on the same arrays. A device -> host or host
-> device copy on the capturing stream raises CuPy's RuntimeError ("the current stream is capturing, so D2H
transfers are disallowed", cupy/cuda/memory.pyx) before reaching CUDA, so the capture goes on; a
synchronize while capturing raises cudaErrorStreamCaptureUnsupported and invalidates the capture (end_capture
then raises cudaErrorStreamCaptureInvalidated), as CuPy's tests/cupy_tests/cuda_tests/test_graph.py shows.
Work on another stream runs at once. What the stand-in does not model: memory addresses (an array freed during
capture stays alive here, held by the recording; on a GPU its memory goes back to the pool), timing, and the
order between streams (everything here runs in the order it is issued; on a GPU, work on a non-blocking
stream may overlap work on another until one waits for the other).
"""
import contextlib


class CUDARuntimeError(RuntimeError):
    pass


class runtime:  # noqa: N801  (a module in CuPy)
    CUDARuntimeError = CUDARuntimeError
    streamCaptureModeGlobal, streamCaptureModeThreadLocal, streamCaptureModeRelaxed = 0, 1, 2  # noqa: N815

    @staticmethod
    def getDeviceCount():  # noqa: N802
        return device_count()

    @staticmethod
    def getDeviceProperties(device):  # noqa: N802
        return {"name": b"CuPy stand-in (NumPy on the host)", "totalGlobalMem": 0}

    @staticmethod
    def runtimeGetVersion():  # noqa: N802
        return 12080


def device_count():
    """The devices the stand-in models: $GRAPHDIFF_STANDIN_GPUS (default 1), so that a job of several ranks
    on one machine (one GPU each, as NCCL wants) can be modelled; all of them are the host."""
    import os
    value = os.environ.get("GRAPHDIFF_STANDIN_GPUS", "1")
    return int(value) if value.isdigit() and int(value) > 0 else 1


class Device:
    def __init__(self, device=0):
        self.id = device

    def synchronize(self):
        if _CAPTURE["stream"] is not None:
            _refuse("cudaDeviceSynchronize")

    def use(self):
        """Make this the current device (checked against device_count(); the work still runs on the host)."""
        if not 0 <= self.id < device_count():
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
        return self


_CAPTURE = {"stream": None, "work": None, "invalid": False}


def recording():
    """The list recorded work goes to, when the current stream is capturing; else None."""
    if _CAPTURE["stream"] is not None and _CURRENT[-1] is _CAPTURE["stream"] and not _CAPTURE["invalid"]:
        return _CAPTURE["work"]
    return None


def _refuse(what):
    """A device -> host read (or a synchronization) while a stream captures: CUDA refuses it and invalidates
    the capture."""
    _CAPTURE["invalid"] = True
    raise CUDARuntimeError(f"cudaErrorStreamCaptureUnsupported: operation not permitted when stream is "
                           f"capturing ({what})")


def _capturing_here():
    return _CAPTURE["stream"] is not None and _CURRENT[-1] is _CAPTURE["stream"]


def check_host_read(what):
    """A device -> host copy (.get(), float(), ...): CuPy refuses it on a capturing stream."""
    if _capturing_here():
        raise RuntimeError("the current stream is capturing, so D2H transfers are disallowed")


def check_host_copy(what):
    """A host -> device copy (cupy.asarray of host data, ...): CuPy refuses it on a capturing stream."""
    if _capturing_here():
        raise RuntimeError("the current stream is capturing, so H2D transfers are disallowed")


class Stream:
    null = None

    def __init__(self, null=False, non_blocking=False, ptr=0, priority=None):
        self.ptr = 0 if null else id(self)
        self.non_blocking = non_blocking

    def __enter__(self):
        _CURRENT.append(self)
        return self

    def __exit__(self, *exc):
        _CURRENT.pop()

    def use(self):
        _CURRENT[0] = self
        return self

    def synchronize(self):
        if _CAPTURE["stream"] is not None:
            _refuse("cudaStreamSynchronize")

    def begin_capture(self, mode=None):
        if self.ptr in (0, 1):
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if _CAPTURE["stream"] is not None:
            raise CUDARuntimeError("cudaErrorIllegalState: a stream is already capturing")
        _CAPTURE.update(stream=self, work=[], invalid=False)

    def end_capture(self):
        if _CAPTURE["stream"] is not self:
            raise CUDARuntimeError("cudaErrorIllegalState: this stream is not capturing")
        work, invalid = _CAPTURE["work"], _CAPTURE["invalid"]
        _CAPTURE.update(stream=None, work=None, invalid=False)
        if invalid:
            raise CUDARuntimeError("cudaErrorStreamCaptureInvalidated: operation failed due to a previous "
                                   "error during capture")
        g = Graph.__new__(Graph)
        g._work = work
        return g

    def is_capturing(self):
        return _CAPTURE["stream"] is self

    @property
    def done(self):
        """Whether the stream's work has finished (cudaStreamQuery): here work runs when issued."""
        return True


Stream.null = Stream(null=True)
_CURRENT = [Stream.null]


def get_current_stream():
    return _CURRENT[-1]


class Graph:
    """A captured CUDA graph: launch() replays the recorded work on the arrays it was recorded with."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("currently this class cannot be initiated by the user and must be created "
                                  "via stream capture")

    def launch(self, stream=None):
        if _CAPTURE["stream"] is not None:
            raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: launching a graph while capturing")
        for work in self._work:
            work()

    def upload(self, stream=None):
        pass


class MemoryPool:
    """Device memory is host memory here: a pool only counts what it hands out."""

    def __init__(self, allocator=None):
        self._used = 0

    def malloc(self, size):
        self._used += size
        return None

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass


_DEFAULT_POOL = MemoryPool()


def get_allocator():
    return _DEFAULT_POOL.malloc


@contextlib.contextmanager
def using_allocator(allocator=None):
    yield


def is_available():
    return True


_DEVICE_MEMORY = {}     # address -> the stand-in array registered there by .data (a weak registry would
                        # lose views; entries are small and replaced when the address is reused)


class MemoryPointer:
    """cupy.cuda.MemoryPointer of a stand-in array: .ptr, the address of its first element."""

    def __init__(self, array):
        self.ptr = array._a.__array_interface__["data"][0]
        _DEVICE_MEMORY[self.ptr] = array


def device_array_at(ptr):
    """The stand-in array whose memory starts at ptr, or None (not device memory: e.g. a NumPy array's)."""
    return _DEVICE_MEMORY.get(ptr)


from . import _nccl as nccl  # noqa: E402  (cupy.cuda.nccl; it needs the names above)
import sys as _sys  # noqa: E402
_sys.modules[__name__ + ".nccl"] = nccl
