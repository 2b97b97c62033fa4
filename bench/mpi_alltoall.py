"""MPI_Alltoall timing (mpi4py), for bench/compare.mjs --op alltoall. Run under
mpirun -np N --mca btl tcp,self python3 bench/mpi_alltoall.py ITERS WARMUP BYTES...
BYTES is a rank's send buffer (nccl-tests' size), a multiple of 4N: BYTES/N go to each rank.
-> one JSON row per size on rank 0's stdout (median over iterations of the
slowest rank)."""
import sys

import numpy as np

from mpi_timing import time_sizes


def alltoall(comm, nbytes):
    if nbytes % (4 * comm.size):
        sys.exit(f'mpi_alltoall.py: {nbytes} bytes is not a multiple of 4 x {comm.size} ranks')
    per_peer = nbytes // 4 // comm.size
    x = np.ones(per_peer * comm.size, dtype=np.float32)
    y = np.empty_like(x)
    return lambda: comm.Alltoall(x, y)


time_sizes(alltoall)
