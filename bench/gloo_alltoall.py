"""All-to-all timing through torch.distributed's Gloo backend (all_to_all_single), for
bench/compare.mjs --op alltoall.
Usage: python3 bench/gloo_alltoall.py N ITERS WARMUP BYTES... -> one JSON row per size on stdout.
BYTES is a rank's send buffer (nccl-tests' size), a multiple of 4N: BYTES/N go to each rank.
Time per size = median over iterations of the slowest rank (as ringrun bench). Older torch
versions' Gloo lacks all_to_all_single: then this fails, and compare.mjs skips Gloo with a note."""
import torch
import torch.distributed as dist

from gloo_timing import time_sizes


def alltoall(nbytes, n):
    if nbytes % (4 * n):
        raise SystemExit(f'gloo_alltoall.py: {nbytes} bytes is not a multiple of 4 x {n} ranks')
    x = torch.ones(nbytes // 4, dtype=torch.float32)
    y = torch.empty_like(x)
    return lambda: dist.all_to_all_single(y, x)


if __name__ == '__main__':
    time_sizes(alltoall)
