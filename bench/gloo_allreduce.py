"""All-reduce timing through torch.distributed's Gloo backend, for bench/compare.mjs.
Usage: python3 bench/gloo_allreduce.py N ITERS WARMUP BYTES... -> one JSON row per size on stdout.
Time per size = median over iterations of the slowest rank (as ringrun bench)."""
import torch
import torch.distributed as dist

from gloo_timing import time_sizes


def allreduce(nbytes, n):
    x = torch.ones(nbytes // 4, dtype=torch.float32)
    return lambda: dist.all_reduce(x)


if __name__ == '__main__':
    time_sizes(allreduce)
