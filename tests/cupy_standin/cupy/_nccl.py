"""cupy.cuda.nccl of the stand-in: the calls graphdiff.distributed makes, with NCCL's checks and results.

Modelled on CuPy v14's cupy/cuda/nccl.pyx (NcclCommunicator(ndev, commId, rank), get_unique_id(), allReduce,
bcast, abort, check_async_error; the NCCL_* type and operation codes) and NCCL's argument checks: a buffer
must be device memory (a host pointer is ncclInvalidArgument, raised by CuPy as NcclError), the datatype
and operation must be valid codes, the stream a stream pointer, and count elements of the datatype must fit
in the buffer (NCCL does not check that: on a GPU it reads or writes past the end, here it raises). A
datatype that differs from the array's dtype is not an error in NCCL: the bytes are reinterpreted, and so
here. The collectives run at once on the host (streams are not modelled: Stream.done is always True).

Several ranks (ndev > 1) are modelled over MPI (mpi4py's COMM_WORLD, one process per rank, the world the
same size as ndev): every rank must pass the same unique id (NCCL would hang; here it raises), and
allReduce / bcast are MPI's Allreduce / Bcast of the host arrays. Not modelled: GPUs per process, timing,
overlap, the ring/tree algorithms' rounding order (MPI's sum is used), and NCCL's hang on a dead peer (MPI's
collectives block the same way; abort() here ends the communicator's use).
"""
import os

import numpy as np

from . import cuda

NCCL_INT8, NCCL_CHAR, NCCL_UINT8, NCCL_INT32, NCCL_INT, NCCL_UINT32 = 0, 0, 1, 2, 2, 3
NCCL_INT64, NCCL_UINT64, NCCL_FLOAT16, NCCL_HALF, NCCL_FLOAT32, NCCL_FLOAT = 4, 5, 6, 6, 7, 7
NCCL_FLOAT64, NCCL_DOUBLE, NCCL_BFLOAT16 = 8, 8, 9
NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN, NCCL_AVG = 0, 1, 2, 3, 4

_TYPES = {0: np.int8, 1: np.uint8, 2: np.int32, 3: np.uint32, 4: np.int64, 5: np.uint64, 6: np.float16,
          7: np.float32, 8: np.float64}


class NcclError(RuntimeError):
    def __init__(self, status, what):
        self.status = status
        super().__init__(f"{what}: {_NAMES[status]}")


_NAMES = {1: "NCCL_ERROR_UNHANDLED_CUDA_ERROR: unhandled cuda error",
          4: "NCCL_ERROR_INVALID_ARGUMENT: invalid argument (run with NCCL_DEBUG=WARN for details)",
          5: "NCCL_ERROR_INVALID_USAGE: invalid usage (run with NCCL_DEBUG=WARN for details)"}


def get_version():
    return 22304


def get_unique_id():
    """128 bytes as a tuple of ints, as CuPy returns ncclUniqueId."""
    return tuple(int(b) for b in np.frombuffer(os.urandom(128), dtype=np.int8))


class NcclCommunicator:
    def __init__(self, ndev, commId, rank):
        if not (isinstance(commId, tuple) and len(commId) == 128):
            raise TypeError("commId must be the tuple get_unique_id() returns")
        if not 0 <= rank < ndev:
            raise NcclError(4, "ncclCommInitRank")
        self._ndev, self._rank, self._aborted = ndev, rank, False
        self._mpi = None
        if ndev > 1:
            from mpi4py import MPI
            world = MPI.COMM_WORLD
            if world.Get_size() != ndev or world.Get_rank() != rank:
                raise NcclError(5, f"ncclCommInitRank (the stand-in runs {ndev} ranks as an MPI world of {ndev})")
            if len(set(world.allgather(commId))) != 1:
                raise NcclError(5, "ncclCommInitRank (the ranks passed different unique ids: NCCL would hang)")
            self._mpi, self._MPI = world, MPI

    def device_id(self):
        return 0

    def rank_id(self):
        return self._rank

    def size(self):
        return self._ndev

    def abort(self):
        self._aborted = True

    def destroy(self):
        self._aborted = True

    def check_async_error(self):
        if self._aborted:
            raise NcclError(5, "ncclCommGetAsyncError (the communicator was aborted)")

    def _buffer(self, ptr, count, datatype, what):
        if self._aborted:
            raise NcclError(5, what)
        if datatype not in _TYPES:
            raise NcclError(4, what)
        array = cuda.device_array_at(ptr)
        if array is None:                      # NCCL's CudaPtrCheck: "... is not a valid pointer"
            raise NcclError(4, what)
        flat = array._a.reshape(-1).view(np.uint8)
        size = np.dtype(_TYPES[datatype]).itemsize
        if count * size > flat.size:
            raise IndexError(f"{what}: {count} elements of type {datatype} do not fit in the {flat.size} bytes at "
                             f"{ptr:#x} (on a GPU: memory past the buffer is read and written)")
        return flat[:count * size].view(_TYPES[datatype])

    def _stream(self, stream, what):
        if not isinstance(stream, int):
            raise TypeError(f"{what}: stream must be a stream pointer (an int: stream.ptr)")

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):  # noqa: N802
        self._stream(stream, "ncclAllReduce")
        if op not in (NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN, NCCL_AVG):
            raise NcclError(4, "ncclAllReduce")
        send = self._buffer(sendbuf, count, datatype, "ncclAllReduce")
        recv = self._buffer(recvbuf, count, datatype, "ncclAllReduce")
        out = send.copy()
        if self._mpi is not None:
            MPI = self._MPI
            mpi_op = {NCCL_SUM: MPI.SUM, NCCL_PROD: MPI.PROD, NCCL_MAX: MPI.MAX, NCCL_MIN: MPI.MIN,
                      NCCL_AVG: MPI.SUM}[op]
            self._mpi.Allreduce(MPI.IN_PLACE, out, op=mpi_op)
            if op == NCCL_AVG:
                out = (out / self._ndev).astype(out.dtype)
        recv[...] = out

    def bcast(self, buff, count, datatype, root, stream):
        self._stream(stream, "ncclBroadcast")
        if not 0 <= root < self._ndev:
            raise NcclError(4, "ncclBroadcast")
        buf = self._buffer(buff, count, datatype, "ncclBroadcast")
        if self._mpi is not None:
            host = buf.copy()
            self._mpi.Bcast(host, root=root)
            buf[...] = host
