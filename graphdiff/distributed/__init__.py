"""Scale out: data-parallel training over MPI (CPUs, through mpi4py) or NCCL (GPUs, through CuPy).

    comm = communicator()                       # single, or MPI / NCCL when started by mpiexec / srun
    opt = DistributedOptimizer(AdamW(model), comm)  # broadcasts rank 0's parameters
    mine = scatter_dataset(examples, comm)      # this rank's part of the data
    ... loss.backward(); opt.step(grad_clip=1.0)  # one packed all-reduce, then the step

`mpiexec -n 2 graphdiff train ...` runs DataParallelTrainer (train.py).
"""
from .comm import (DistributedError, MPICommunicator, NCCLCommunicator, SingleCommunicator, communicator,
                   install_excepthook, launched_size)
from .data_parallel import DataParallel, DistributedOptimizer, check_agreement, scatter_dataset, shard_rows
from .train import DataParallelTrainer

__all__ = ["DistributedError", "MPICommunicator", "NCCLCommunicator", "SingleCommunicator", "communicator",
           "install_excepthook", "launched_size", "DataParallel", "DistributedOptimizer", "check_agreement",
           "scatter_dataset", "shard_rows", "DataParallelTrainer"]
