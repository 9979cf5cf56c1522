"""Communicators: how the processes of a data-parallel job (its ranks) exchange arrays.

One small interface, three implementations:
    SingleCommunicator: one process, no communication (every collective returns its input).
    MPICommunicator: MPI through mpi4py; NumPy arrays are reduced where they are, CuPy arrays through host
        buffers (copied to the host, reduced, copied back).
    NCCLCommunicator: NCCL through cupy.cuda.nccl, one GPU per rank (the device is the rank's intra_rank,
        its index among the ranks of its machine); MPI starts it (hands out NCCL's unique id) and carries the
        Python objects that collectives of arrays do not.

communicator() picks one from how the process was started (mpiexec / mpirun / srun set the world size in the
environment) or by name. Every implementation has rank, size, intra_rank, name and:
    allreduce_sum(buf): sum a 1-d array over the ranks, in place (returns buf).
    bcast(buf, root=0): every rank's buf becomes root's, in place (returns buf).
    allgather_obj(obj): [the obj of each rank] (pickled Python objects; small ones: settings, fingerprints).
    barrier(), abort(code): end the whole job now (every rank), with this exit code.
"""
import os
import sys
import time
import traceback

import numpy as np

from ..backend import backend_of


class DistributedError(RuntimeError):
    """A data-parallel job cannot go on (ranks that disagree, a batch that does not divide, a collective that
    timed out). Raised on every rank alike where the ranks decided it together."""


# environment variables that launchers set to the number of processes (Open MPI, MPICH/Intel MPI's PMI,
# MVAPICH, Slurm's srun: SLURM_STEP_NUM_TASKS is set inside an srun step only, not in the batch script)
WORLD_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
KINDS = ("auto", "single", "mpi", "nccl")
ABORT_DRAIN = 0.5      # seconds a failing rank waits between printing its error and MPI_Abort


def launched_size():
    """The world size a launcher set in the environment (1 when none did)."""
    for var in WORLD_SIZE_VARS:
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


class SingleCommunicator:
    """One process: rank 0 of 1; the collectives return their input."""

    name = "single"
    rank, size, intra_rank, intra_size = 0, 1, 0, 1

    def allreduce_sum(self, buf):
        return buf

    def bcast(self, buf, root=0):
        return buf

    def allgather_obj(self, obj):
        return [obj]

    def bcast_obj(self, obj, root=0):
        return obj

    def barrier(self):
        pass

    def abort(self, code=1):
        sys.stderr.flush()
        raise SystemExit(code)


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError("MPI needs mpi4py and an MPI library: pip install 'graphdiff[mpi]' (mpi4py and "
                               "the mpich wheel, which brings mpiexec)") from None
    return MPI


class MPICommunicator:
    """MPI_COMM_WORLD through mpi4py. NumPy buffers go to MPI as they are; CuPy buffers through the host (a
    copy out and a copy back per collective: correct with any MPI, not the fastest on GPUs; use NCCL there).
    """

    name = "mpi"

    def __init__(self, comm=None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)    # the ranks on this machine
        self.intra_rank, self.intra_size = node.Get_rank(), node.Get_size()
        node.Free()

    def _host(self, buf):
        """(a host array to hand MPI, a function that puts the result back into buf)."""
        B = backend_of(buf)
        if B is None or B.name == "numpy":
            return buf, lambda host: None
        host = np.ascontiguousarray(B.to_numpy(buf))

        def put_back(h):
            buf[...] = B.from_host(h, B.dtype_name(buf))
        return host, put_back

    def allreduce_sum(self, buf):
        host, put_back = self._host(buf)
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        put_back(host)
        return buf

    def bcast(self, buf, root=0):
        host, put_back = self._host(buf)
        self.comm.Bcast(host, root=root)
        put_back(host)
        return buf

    def allgather_obj(self, obj):
        return self.comm.allgather(obj)

    def bcast_obj(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_DRAIN)          # mpiexec forwards this rank's last output before it kills the job
        self.comm.Abort(code)


class NCCLCommunicator:
    """NCCL through cupy.cuda.nccl: one GPU per rank, device = intra_rank (set as CuPy's current device here).

    Collectives run on CuPy's current stream; each waits for its stream with a timeout (NCCL blocks forever
    when a peer died): past `timeout` seconds, or on an asynchronous NCCL error, the NCCL communicator is
    aborted (ncclCommAbort) and DistributedError raised, which ends the job (see install_excepthook).
    Arrays must be CuPy arrays of float16/32/64 or int32/64 (NCCL refuses host memory).
    """

    name = "nccl"

    def __init__(self, timeout=300.0, mpi=None):
        import cupy
        from cupy.cuda import nccl
        self.cupy, self.nccl, self.timeout = cupy, nccl, timeout
        launched = launched_size()
        self.mpi = mpi if mpi is not None else (MPICommunicator() if launched > 1 else None)
        if self.mpi is not None and self.mpi.size > 1:
            install_excepthook(self.mpi)         # a rank that fails to start NCCL ends the job, not a hang
        try:
            self._start(nccl)
        except BaseException:
            if self.mpi is None or self.mpi.size == 1:
                raise
            sys.excepthook(*sys.exc_info())

    def _start(self, nccl):
        cupy = self.cupy
        self.rank = self.mpi.rank if self.mpi else 0
        self.size = self.mpi.size if self.mpi else 1
        self.intra_rank = self.mpi.intra_rank if self.mpi else 0
        self.intra_size = self.mpi.intra_size if self.mpi else 1
        ndev = cupy.cuda.runtime.getDeviceCount()
        if self.intra_rank >= ndev:
            raise DistributedError(f"rank {self.rank} is rank {self.intra_rank} on its machine, which has {ndev} "
                                   f"GPU(s): start at most {ndev} rank(s) per machine for NCCL (one GPU each)")
        cupy.cuda.Device(self.intra_rank).use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        if self.mpi is not None:
            uid = self.mpi.bcast_obj(uid)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._types = {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32,
                       "float64": nccl.NCCL_FLOAT64, "int32": nccl.NCCL_INT32, "int64": nccl.NCCL_INT64}

    def _args(self, buf, what):
        if not isinstance(buf, self.cupy.ndarray):
            raise TypeError(f"NCCLCommunicator.{what}: a {type(buf).__name__}; NCCL reduces GPU memory only: "
                            "pass a CuPy array (cupy.asarray(x)), or use the MPI communicator for host arrays")
        if not buf.flags.c_contiguous:
            raise ValueError(f"NCCLCommunicator.{what}: the array is not contiguous; pass a contiguous copy")
        dtype = str(buf.dtype)
        if dtype not in self._types:
            raise TypeError(f"NCCLCommunicator.{what}: dtype {dtype}; NCCL here takes {sorted(self._types)}")
        return buf.data.ptr, buf.size, self._types[dtype], self.cupy.cuda.get_current_stream()

    def _wait(self, stream, what):
        """Wait for the collective with a timeout; abort NCCL (and raise) if it does not finish."""
        deadline = time.monotonic() + self.timeout
        while not stream.done:
            self.comm.check_async_error()
            if time.monotonic() > deadline:
                self.comm.abort()
                raise DistributedError(f"NCCL {what} on rank {self.rank} did not finish in {self.timeout:g} s "
                                       "(a rank died or stopped calling it): NCCL aborted")
            time.sleep(1e-4)
        self.comm.check_async_error()

    def allreduce_sum(self, buf):
        ptr, count, dtype, stream = self._args(buf, "allreduce_sum")
        self.comm.allReduce(ptr, ptr, count, dtype, self.nccl.NCCL_SUM, stream.ptr)
        self._wait(stream, "all-reduce")
        return buf

    def bcast(self, buf, root=0):
        ptr, count, dtype, stream = self._args(buf, "bcast")
        self.comm.bcast(ptr, count, dtype, root, stream.ptr)
        self._wait(stream, "broadcast")
        return buf

    def allgather_obj(self, obj):
        return self.mpi.allgather_obj(obj) if self.mpi else [obj]

    def bcast_obj(self, obj, root=0):
        return self.mpi.bcast_obj(obj, root) if self.mpi else obj

    def barrier(self):
        if self.mpi:
            self.mpi.barrier()

    def abort(self, code=1):
        try:
            self.comm.abort()
        finally:
            (self.mpi or SingleCommunicator()).abort(code)


_WORLD = {}


def communicator(kind="auto", backend=None, timeout=300.0):
    """The communicator of this process (made once per kind, then the same object).

    Args:
        kind: "auto" (single unless a launcher started several processes: then NCCL for backend "cupy", MPI
            otherwise), "single", "mpi" or "nccl".
        backend: the name of the backend the model runs on (decides auto's choice), or None (numpy).
        timeout: seconds an NCCL collective may take before NCCL is aborted.
    On several ranks, an uncaught exception on one of them ends the whole job (install_excepthook).
    """
    if kind not in KINDS:
        raise ValueError(f"communicator kind {kind!r}; expected one of {KINDS}")
    if kind == "auto":
        if launched_size() <= 1:
            kind = "single"
        else:
            kind = "nccl" if backend == "cupy" else "mpi"
    if kind not in _WORLD:
        comm = {"single": SingleCommunicator, "mpi": MPICommunicator,
                "nccl": lambda: NCCLCommunicator(timeout)}[kind]()
        if comm.size != launched_size() and launched_size() > 1:
            raise DistributedError(f"the launcher started {launched_size()} processes but {kind} sees {comm.size}: "
                                   "mpi4py is built for another MPI than the mpiexec used (use the mpiexec of "
                                   "the same install, e.g. .venv/bin/mpiexec)")
        if comm.size > 1:
            install_excepthook(comm)
        _WORLD[kind] = comm
    return _WORLD[kind]


def install_excepthook(comm):
    """On an uncaught exception: print it, naming this rank, then end every rank (MPI_Abort; NCCL's abort
    first), so the job never hangs waiting for the rank that died."""
    def hook(kind, value, tb):
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(f"graphdiff: rank {comm.rank} of {comm.size} failed; ending the job:\n{text}")
        sys.stderr.flush()
        comm.abort(1)
    sys.excepthook = hook
