"""The floor of a small all-reduce: N processes on 127.0.0.1, a full mesh of blocking TCP sockets
(TCP_NODELAY), one round per operation (send 4 bytes to every peer, receive from every peer, add).
No agreement, no checks, no event loop: what the kernel's loopback costs, for bench/PERFORMANCE
figures next to Gloo's and ringreduce's 4-byte all-reduce (docs/PERFORMANCE.md).
Usage: python3 bench/mesh_floor.py N [ITERS] -> one line: us per operation (slowest rank)."""
import multiprocessing as mp
import os
import socket
import struct
import sys
import time


def rank_main(r, n, base, q, iters, warmup):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(('127.0.0.1', base + r))
    ls.listen(n)
    peers = {}
    time.sleep(0.5)  # every rank listening before anyone connects
    for p in range(r + 1, n):
        s = socket.create_connection(('127.0.0.1', base + p))
        s.sendall(struct.pack('i', r))
        peers[p] = s
    for _ in range(r):
        c, _a = ls.accept()
        peers[struct.unpack('i', c.recv(4))[0]] = c
    for s in peers.values():
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    order = sorted(peers)
    one = struct.pack('f', 1.0)

    def op():
        for p in order:
            peers[p].sendall(one)
        total = 1.0
        for p in order:
            b = peers[p].recv(4)
            while len(b) < 4:
                b += peers[p].recv(4 - len(b))
            total += struct.unpack('f', b)[0]
        return total

    for _ in range(warmup):
        op()
    t0 = time.perf_counter()
    for _ in range(iters):
        if op() != n:
            raise SystemExit('wrong sum')
    q.put(('time', (time.perf_counter() - t0) / iters * 1e6))


if __name__ == '__main__':
    n = int(sys.argv[1])
    iters = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    base = 30000 + os.getpid() % 20000
    q = mp.Queue()
    procs = [mp.Process(target=rank_main, args=(r, n, base, q, iters, 500)) for r in range(n)]
    for p in procs:
        p.start()
    times = []
    while len(times) < n:
        kind, v = q.get()
        if kind == 'time':
            times.append(v)
    for p in procs:
        p.join()
    print('mesh floor (Python, blocking sockets), 4-byte all-reduce, N=%d: %.1f us/op' % (n, max(times)))
