"""The loop the bench/*_timing.py harnesses share: what ringrun bench does per size."""
import time


def time_calls(call, iters, warmup):
    """Runs call() `warmup` times untimed, then `iters` times; those durations in seconds."""
    times = []
    for it in range(-warmup, iters):
        t0 = time.perf_counter()
        call()
        t = time.perf_counter() - t0
        if it >= 0:
            times.append(t)
    return times
