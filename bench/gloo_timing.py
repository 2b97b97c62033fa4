"""The harness of bench/gloo_*.py, for bench/compare.mjs: N processes form a torch.distributed Gloo
group on 127.0.0.1 and time one collective per size.
Usage: python3 bench/gloo_OP.py N ITERS WARMUP BYTES... -> one JSON row per size on stdout.
Time per size = median over iterations of the slowest rank (as ringrun bench).
Across hosts (compare.mjs --hosts): with RANK, MASTER_ADDR and MASTER_PORT in the environment this
process is that one rank of N (started on its host by compare.mjs through the rsh command), found
through tcp://MASTER_ADDR:MASTER_PORT; rank 0 prints the rows. GLOO_SOCKET_IFNAME names the
interface Gloo uses (torch otherwise resolves the host name, or falls back to loopback)."""
import json, os, sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from timing import time_calls


def worker(rank, n, port, iters, warmup, sizes, q, make_call, addr='127.0.0.1'):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://{addr}:{port}', rank=rank, world_size=n)
    rows = []
    for nbytes in sizes:
        call = make_call(nbytes, n)
        times = time_calls(call, iters, warmup)
        t = torch.tensor(times, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        rows.append({'bytes': nbytes, 'timeUs': float(t.median()) * 1e6})
    if rank == 0 and q is not None:
        q.put(rows)
    elif rank == 0:
        for row in rows:
            print(json.dumps(row), flush=True)
    dist.destroy_process_group()


def time_sizes(make_call):
    """make_call(nbytes, n) -> a function running the collective once (a module-level function:
    the ranks are spawned processes)."""
    n, iters, warmup = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    sizes = [int(s) for s in sys.argv[4:]]
    if 'RANK' in os.environ:
        worker(int(os.environ['RANK']), n, int(os.environ['MASTER_PORT']), iters, warmup, sizes, None, make_call, os.environ['MASTER_ADDR'])
        return
    port = 29000 + os.getpid() % 1000
    ctx = mp.get_context('spawn')
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, n, port, iters, warmup, sizes, q, make_call)) for r in range(n)]
    for p in procs:
        p.start()
    rows = q.get(timeout=600)
    for p in procs:
        p.join()
    for row in rows:
        print(json.dumps(row))
