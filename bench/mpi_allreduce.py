"""MPI_Allreduce timing (mpi4py), for bench/compare.mjs. Run under
mpirun -np N --mca btl tcp,self python3 bench/mpi_allreduce.py ITERS WARMUP BYTES...
-> one JSON row per size on rank 0's stdout (median over iterations of the slowest rank)."""
import json, sys, time

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
iters, warmup = int(sys.argv[1]), int(sys.argv[2])
for nbytes in [int(s) for s in sys.argv[3:]]:
    x = np.ones(nbytes // 4, dtype=np.float32)
    y = np.empty_like(x)
    times = []
    for it in range(-warmup, iters):
        t0 = time.perf_counter()
        comm.Allreduce(x, y, op=MPI.SUM)
        t = time.perf_counter() - t0
        if it >= 0:
            times.append(t)
    worst = np.empty(len(times))
    comm.Allreduce(np.array(times), worst, op=MPI.MAX)
    if comm.rank == 0:
        print(json.dumps({'bytes': nbytes, 'timeUs': float(np.median(worst)) * 1e6}), flush=True)
