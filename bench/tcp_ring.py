"""A raw-socket ring all-reduce of float32 in Python: what kernel TCP allows on this machine, for
bench/compare.mjs --ceiling (the `tcp-ring` series). Not a library: a yardstick for Gloo and
ringreduce over the same sockets, measured in the same run. It shows what plain send/recv reaches
here, so it bounds the ceiling from below: a faster program may exist.

Usage: python3 bench/tcp_ring.py N ITERS WARMUP BYTES... [--streams S] [--chunk-bytes B]
                                  [--sockbuf B] [--check]
-> one JSON row {"bytes", "timeUs"} per size on stdout: the median over iterations of the slowest
rank (as bench/gloo_timing.py and ringrun bench). BYTES are multiples of 4 (K/M suffixes allowed).
  --streams S      TCP connections per link, chunks dealt round-robin over them (default 1)
  --chunk-bytes B  the pipelining unit (default 1M)
  --sockbuf B      SO_SNDBUF and SO_RCVBUF of every data socket (default 0: the kernel's
                   autotuning; a value above net.core.[rw]mem_max is clamped to it)
  --check          instead of timing, all-reduce integer-valued data (rank r, element i, round q:
                   (7i + 13r + 5q) mod 31 - 15) in 2 rounds per size and print per size
                   {"bytes", "wrong": [elements differing from the exact sum, per rank],
                   "values": [every rank's result of the last round]} ("values" up to 1024
                   elements, else "checksums": per rank, the sum of x[i] * (i mod 1009))

Local mode: N processes on 127.0.0.1 (this script started again per rank). Across hosts
(compare.mjs --hosts): with RANK, MASTER_ADDR and MASTER_PORT in the environment this process is
that one rank of N (WORLD_SIZE, if set, must equal N); rank 0 listens on MASTER_ADDR:MASTER_PORT
for the others' addresses and prints the rows. TCP_RING_IFNAME names the interface whose IPv4
address a rank listens on; without it, the address it reaches rank 0 from.

The schedule: the buffer is cut into N segments (the first count mod N one element longer). At
step t < N-1 (reduce-scatter) rank r sends segment r-t to its right neighbour and receives segment
r-t-1 from its left, adding it into its own; at step N-1+s (all-gather) it sends segment r+1-s and
receives segment r-s, in place. What a rank receives at step t is what it sends at step t+1, so
each segment is cut into chunks and a chunk is sent on as soon as it has arrived (and been added):
the steps overlap, as in Gloo's allreduce_ring_chunked. Per stream a sender thread and a receiver
thread (the main thread receives stream 0): sockets and numpy release the GIL, so sending right,
receiving left and adding run at once. Chunk c of every segment travels on stream c mod S, both at
the sender and at the receiver, so what a sender waits for is always its own stream's receiver."""
import argparse, fcntl, json, os, queue, socket, struct, subprocess, sys, threading, time

import numpy as np

from timing import time_calls

CONNECT_TIMEOUT_S = 60


def segments(count, n):
    """[(start, end)] of the N segments of `count` elements: the first count % n one longer."""
    base, extra = divmod(count, n)
    out, start = [], 0
    for i in range(n):
        end = start + base + (1 if i < extra else 0)
        out.append((start, end))
        start = end
    return out


def chunks(start, end, chunk_elems):
    return [(a, min(a + chunk_elems, end)) for a in range(start, end, chunk_elems)]


def ring_plan(count, n, rank, streams, chunk_elems):
    """Per stream, this rank's sends [(start, end, need)] and receives [(start, end, reduce)] in
    order. `need` is how many of that stream's receives must be done before the send: the chunk
    is the one received at the step before (0 for the first step's chunks, the rank's own data).
    Sender r and receiver r+1 derive the same chunk sequence: the segment one sends at step t is
    the one the other receives at step t."""
    segs = segments(count, n)
    sends = [[] for _ in range(streams)]
    recvs = [[] for _ in range(streams)]
    position = {}  # (step, chunk) -> index among its stream's receives
    for t in range(2 * (n - 1)):
        if t < n - 1:
            send_seg, recv_seg = (rank - t) % n, (rank - t - 1) % n
        else:
            s = t - (n - 1)
            send_seg, recv_seg = (rank + 1 - s) % n, (rank - s) % n
        for c, (a, b) in enumerate(chunks(*segs[send_seg], chunk_elems)):
            sends[c % streams].append((a, b, position[(t - 1, c)] + 1 if t > 0 else 0))
        for c, (a, b) in enumerate(chunks(*segs[recv_seg], chunk_elems)):
            position[(t, c)] = len(recvs[c % streams])
            recvs[c % streams].append((a, b, t < n - 1))
    return sends, recvs


def recv_exact(sock, view):
    """Fills view from sock; MSG_WAITALL makes that one system call unless a signal cuts it short."""
    got = 0
    while got < len(view):
        k = sock.recv_into(view[got:], len(view) - got, socket.MSG_WAITALL)
        if k == 0:
            raise ConnectionError(f'tcp_ring: the left neighbour closed the connection ({got} of {len(view)} bytes of a chunk)')
        got += k


def fatal(e):
    """Ends this rank at once: a thread left waiting for a chunk that will not come would hang it,
    and the closed sockets tell the neighbours (their receives end, and so do they)."""
    print(f'tcp_ring: rank {os.environ.get("RANK")}: {type(e).__name__}: {e}', file=sys.stderr, flush=True)
    os._exit(1)


class Ring:
    """One rank's side of the ring: S sockets to the right, S from the left, and the threads."""

    def __init__(self, n, rank, right, left, chunk_bytes):
        self.n, self.rank, self.right, self.left = n, rank, right, left
        self.streams = len(right)
        self.chunk_elems = max(1, chunk_bytes // 4)
        self.tmp = [np.empty(self.chunk_elems, np.float32) for _ in range(self.streams)]
        self.done = [0] * self.streams
        self.cond = [threading.Condition() for _ in range(self.streams)]
        self.plans = {}
        self.finished = queue.SimpleQueue()
        self.jobs = []
        # Threads that live as long as the ring: starting threads per call costs more than a
        # small all-reduce. The main thread is stream 0's receiver.
        workers = [(self.send, k) for k in range(self.streams)] + [(self.recv, k) for k in range(1, self.streams)]
        for fn, k in workers:
            q = queue.SimpleQueue()
            self.jobs.append(q)
            threading.Thread(target=self.serve, args=(q, fn, k), daemon=True).start()

    def serve(self, q, fn, k):
        while True:
            job = q.get()
            if job is None:
                return
            try:
                fn(k, *job)
            except BaseException as e:
                fatal(e)
            self.finished.put(None)

    def send(self, k, x, plan):
        mv = memoryview(x).cast('B')
        sock, cond = self.right[k], self.cond[k]
        for a, b, need in plan[0][k]:
            if self.done[k] < need:
                with cond:
                    while self.done[k] < need:
                        cond.wait()
            sock.sendall(mv[a * 4:b * 4])

    def recv(self, k, x, plan):
        mv = memoryview(x).cast('B')
        sock, cond, tmp = self.left[k], self.cond[k], self.tmp[k]
        tmv = memoryview(tmp).cast('B')
        for a, b, reduce in plan[1][k]:
            if reduce:
                recv_exact(sock, tmv[:(b - a) * 4])
                np.add(x[a:b], tmp[:b - a], out=x[a:b])
            else:
                recv_exact(sock, mv[a * 4:b * 4])
            with cond:
                self.done[k] += 1
                cond.notify()

    def allreduce(self, x):
        """Sums x (float32, contiguous) over the ranks, in place."""
        plan = self.plans.get(x.size)
        if plan is None:
            plan = self.plans[x.size] = ring_plan(x.size, self.n, self.rank, self.streams, self.chunk_elems)
        self.done = [0] * self.streams
        for q in self.jobs:
            q.put((x, plan))
        try:
            self.recv(0, x, plan)
        except BaseException as e:
            fatal(e)
        for _ in self.jobs:
            self.finished.get()

    def close(self):
        for q in self.jobs:
            q.put(None)
        for s in self.right + self.left:
            s.close()


def parse_size(s):
    m = {'': 1, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    s = s.strip().upper()
    unit = s[-1] if s and s[-1] in 'KMG' else ''
    value = int(s[:len(s) - len(unit)]) * m[unit]
    if value < 0 or value % 4:
        raise argparse.ArgumentTypeError(f"'{s}' is not a byte count that is a multiple of 4")
    return value


def interface_address(name):
    """The IPv4 address of interface `name` (SIOCGIFADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack('256s', name.encode()[:15])
        try:
            return socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, req)[20:24])
        except OSError as e:
            raise SystemExit(f'tcp_ring: TCP_RING_IFNAME={name}: no IPv4 address ({e})')


def send_msg(sock, obj):
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack('!I', len(data)) + data)


def recv_msg(sock):
    head = bytearray(4)
    recv_exact(sock, memoryview(head))
    body = bytearray(struct.unpack('!I', head)[0])
    recv_exact(sock, memoryview(body))
    return json.loads(body)


def tune(sock, sockbuf):
    if sockbuf > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sockbuf)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sockbuf)


def connect(addr, port, sockbuf=0):
    """Connects, retrying while the other side is not listening yet."""
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tune(s, sockbuf)  # before connecting: the receive buffer sets the window scale
        try:
            s.connect((addr, port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def form_ring(rank, n, master_addr, master_port, streams, sockbuf):
    """Rendezvous through rank 0, then S connections to the right neighbour and S from the left.
    Returns (ring sockets right, left, control sockets: rank 0 -> the others by rank, else [rank 0])."""
    iface = os.environ.get('TCP_RING_IFNAME')
    if rank == 0:
        ctl_listener = socket.create_server((master_addr, master_port), backlog=n)
        peers = {}
        while len(peers) < n - 1:
            c, _ = ctl_listener.accept()
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hello = recv_msg(c)
            peers[hello['rank']] = (c, hello)
        ctl_listener.close()
        my_addr = interface_address(iface) if iface else (peers[1][0].getsockname()[0] if n > 1 else master_addr)
    else:
        ctl = connect(master_addr, master_port)
        my_addr = interface_address(iface) if iface else ctl.getsockname()[0]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tune(listener, sockbuf)  # accepted sockets inherit it
    listener.bind((my_addr, 0))
    listener.listen(streams)
    me = {'rank': rank, 'addr': my_addr, 'port': listener.getsockname()[1]}
    if rank == 0:
        table = [me] + [peers[r][1] for r in range(1, n)]
        controls = [peers[r][0] for r in range(1, n)]
        for c in controls:
            send_msg(c, table)
    else:
        send_msg(ctl, me)
        table = recv_msg(ctl)
        controls = [ctl]
    # Connecting completes in the kernel's backlog before the peer accepts: connect first, then
    # accept, and no two ranks wait for each other.
    to = table[(rank + 1) % n]
    right = []
    for k in range(streams):
        s = connect(to['addr'], to['port'], sockbuf)
        s.sendall(struct.pack('!II', rank, k))
        right.append(s)
    left = [None] * streams
    for _ in range(streams):
        s, _ = listener.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = bytearray(8)
        recv_exact(s, memoryview(head))
        who, k = struct.unpack('!II', head)
        if who != (rank - 1) % n or not 0 <= k < streams or left[k] is not None:
            raise RuntimeError(f'tcp_ring: rank {rank} expected stream connections from rank {(rank - 1) % n}, got rank {who} stream {k}')
        left[k] = s
    listener.close()
    return right, left, controls


def fill(x, rank, round_):
    i = np.arange(x.size, dtype=np.int64)
    x[:] = (7 * i + 13 * rank + 5 * round_) % 31 - 15


def expected(count, n, round_):
    i = np.arange(count, dtype=np.int64)
    return sum((7 * i + 13 * r + 5 * round_) % 31 - 15 for r in range(n)).astype(np.float32)


def run_rank(rank, n, opts, master_addr, master_port):
    right, left, controls = form_ring(rank, n, master_addr, master_port, opts.streams, opts.sockbuf)
    ring = Ring(n, rank, right, left, opts.chunk_bytes)
    try:
        for nbytes in opts.bytes:
            x = np.ones(nbytes // 4, np.float32)
            if opts.check:
                wrong = 0
                for round_ in range(2):
                    fill(x, rank, round_)
                    ring.allreduce(x)
                    wrong += int(np.count_nonzero(x != expected(x.size, n, round_)))
                mine = {'wrong': wrong, 'values': x.tolist()} if x.size <= 1024 else {'wrong': wrong, 'checksum': float(np.dot(x.astype(np.float64), np.arange(x.size) % 1009))}
            else:
                mine = {'times': time_calls(lambda: ring.allreduce(x), opts.iters, opts.warmup)}
            if rank != 0:
                send_msg(controls[0], mine)
                continue
            everyone = [mine] + [recv_msg(c) for c in controls]
            row = {'bytes': nbytes}
            if opts.check:
                row['wrong'] = [m['wrong'] for m in everyone]
                if 'values' in mine:
                    row['values'] = [m['values'] for m in everyone]
                else:
                    row['checksums'] = [m['checksum'] for m in everyone]
            else:
                slowest = np.max(np.array([m['times'] for m in everyone]), axis=0)
                row['timeUs'] = float(np.median(slowest)) * 1e6
            print(json.dumps(row), flush=True)
    finally:
        ring.close()
        for c in controls:
            c.close()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_local(n):
    """N copies of this script, one per rank, on 127.0.0.1; the first failure stops the others."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, *sys.argv], env={**os.environ, 'RANK': str(r), 'WORLD_SIZE': str(n), 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port)},
                              stdout=None if r == 0 else subprocess.DEVNULL) for r in range(n)]
    code = 0
    try:
        while procs:
            for p in list(procs):
                rc = p.poll()
                if rc is None:
                    continue
                procs.remove(p)
                if rc != 0:
                    code = rc if rc > 0 else 1
                    return code
            time.sleep(0.01)
        return code
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], usage='python3 bench/tcp_ring.py N ITERS WARMUP BYTES... [--streams S] [--chunk-bytes B] [--sockbuf B] [--check]')
    ap.add_argument('n', type=int)
    ap.add_argument('iters', type=int)
    ap.add_argument('warmup', type=int)
    ap.add_argument('bytes', type=parse_size, nargs='+')
    ap.add_argument('--streams', type=int, default=1)
    ap.add_argument('--chunk-bytes', type=parse_size, default=1 << 20)
    ap.add_argument('--sockbuf', type=parse_size, default=0)
    ap.add_argument('--check', action='store_true')
    opts = ap.parse_intermixed_args()
    if opts.n < 2:
        ap.error(f'N must be at least 2, got {opts.n}')
    if opts.streams < 1:
        ap.error(f'--streams must be a positive integer, got {opts.streams}')
    if opts.chunk_bytes < 4:
        ap.error(f'--chunk-bytes must be at least 4, got {opts.chunk_bytes}')
    if opts.iters < 1 or opts.warmup < 0:
        ap.error('ITERS must be positive and WARMUP not negative')
    if 'RANK' not in os.environ:
        sys.exit(run_local(opts.n))
    if int(os.environ.get('WORLD_SIZE', opts.n)) != opts.n:
        ap.error(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but N={opts.n}")
    run_rank(int(os.environ['RANK']), opts.n, opts, os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']))


if __name__ == '__main__':
    main()
