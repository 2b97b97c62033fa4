"""The timing loop of bench/mpi_*.py, for bench/compare.mjs. Run under
mpirun -np N --mca btl tcp,self python3 bench/mpi_OP.py ITERS WARMUP BYTES...
-> one JSON row per size on rank 0's stdout (median over iterations of the slowest rank)."""
import json, sys

import numpy as np
from mpi4py import MPI

from timing import time_calls


def time_sizes(make_call):
    """make_call(comm, nbytes) -> a function running the operation once at that size."""
    comm = MPI.COMM_WORLD
    iters, warmup = int(sys.argv[1]), int(sys.argv[2])
    for nbytes in [int(s) for s in sys.argv[3:]]:
        call = make_call(comm, nbytes)
        times = time_calls(call, iters, warmup)
        worst = np.empty(len(times))
        comm.Allreduce(np.array(times), worst, op=MPI.MAX)
        if comm.rank == 0:
            print(json.dumps({'bytes': nbytes, 'timeUs': float(np.median(worst)) * 1e6}), flush=True)
