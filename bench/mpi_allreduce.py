"""MPI_Allreduce timing (mpi4py), for bench/compare.mjs. Run under
mpirun -np N --mca btl tcp,self python3 bench/mpi_allreduce.py ITERS WARMUP BYTES...
-> one JSON row per size on rank 0's stdout (median over iterations of the slowest rank)."""
import numpy as np
from mpi4py import MPI

from mpi_timing import time_sizes


def allreduce(comm, nbytes):
    x = np.ones(nbytes // 4, dtype=np.float32)
    y = np.empty_like(x)
    return lambda: comm.Allreduce(x, y, op=MPI.SUM)


time_sizes(allreduce)
