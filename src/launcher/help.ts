import { DEFAULT_GRACE_SEC, DEFAULT_PREFLIGHT_SEC, DEFAULT_RSH } from './args.js';

/** ringrun --help (the bench's is launcher/bench/args.ts). */
export function helpText(): string {
  return `Usage: ringrun -np N [options] [--] command [args...]
       ringrun -H host1:2,host2:2 [options] [--] command [args...]
       ringrun bench -np N [options]     (see ringrun bench --help)

Starts N ranks of \`command\` (on this host, or on the hosts given with -H or
--hostfile), hosts their rendezvous store, tags and forwards their output, and
stops every rank as soon as one of them fails.

Options (a value may also be given as --option=value):
  -np N, -n N, --np N   number of ranks to start (required without hosts; with
                        hosts it defaults to their total slots and may not
                        exceed it)
  --tag-output          prefix each output line with [1,RANK]<stdout>: or
                        [1,RANK]<stderr>: (the default)
  --no-tag-output       forward output lines unchanged
  --timeout SEC         wall-clock limit for the whole job; when it expires the
                        ranks are stopped and ringrun exits 124
  --start-timeout SEC   how long ranks may take to find each other; passed to
                        the ranks as RINGRUN_START_TIMEOUT
  --grace SEC           when stopping ranks, wait SEC seconds after SIGTERM
                        before SIGKILL (default ${DEFAULT_GRACE_SEC})
  -x VAR=value          set VAR in every rank's environment
  -x VAR                copy VAR from ringrun's environment to every rank
                        (an error if VAR is not set); -x may be repeated
  --verbose             print the hosts, the store's address, the address each
                        rank advertises and the way each link's payloads go
                        (shared memory or socket; RINGREDUCE_VERBOSE=1 in
                        ranks); a rank's uncaught error in full, not in one line
  --bind-to slice|none  slice (the default): each host's ranks run on equal,
                        disjoint shares of the CPUs ringrun may use (taskset),
                        as mpirun binds; unbound when a host has more ranks
                        than CPUs. none: leave placement to the OS
  --hierarchical[=auto|on|off]
                        the hierarchical all-reduce across hosts (inputs of
                        1 MiB and more: reduce-scatter on each host, an
                        all-reduce of each shard between hosts, all-gather on
                        each host). auto (the default): when every host runs
                        the same number (>= 2) of ranks; on (--hierarchical
                        alone): the same, with a warning when the layout does
                        not allow it; off: always the flat ring
                        (RINGREDUCE_HIERARCHICAL=auto|1|0 in ranks)
  --servers S           also start S parameter servers (ringreduce's own
                        server, not the command: dist/ps/server-main.js), on
                        this host or round-robin over the -H hosts; the ranks
                        are the workers (RANK/WORLD_SIZE count them only) and
                        get RINGREDUCE_PS_SERVERS=S. A rank that fails no
                        longer stops the others (in sync mode they fail on
                        their own, naming it); it is reported at the end and
                        the exit status is its code. A server that fails is
                        reported at once; its workers fail naming it. The
                        servers are stopped once every rank has exited
  --allow-worker-loss   with --servers: lost ranks are reported, but the exit
                        status is 0 if every other rank succeeded (async and
                        stale modes go on without a lost worker)
  --                    end of options: what follows is the command
  -h, --help            print this help and exit
  -V, --version         print the version and the active kernel backend

Multiple hosts:
  -H LIST, --host LIST  hosts and slots, e.g. -H node1:4,node2:4 (a host
                        without :N has 1 slot); ranks fill the hosts in order:
                        ranks 0-3 on node1, 4-7 on node2. May be repeated.
  --hostfile FILE       one host per line, as \`node1 slots=4\` (Open MPI) or
                        \`node1:4\` or \`node1\` (1 slot); # starts a comment.
  --rsh CMD             how to run a command on another host (default:
                        "${DEFAULT_RSH.join(' ')}"); called as CMD [-p PORT]
                        [-i FILE] HOST 'shell command'. E.g. --rsh "ssh -o
                        StrictHostKeyChecking=accept-new"
  -p N, --ssh-port N    passed to the rsh command as -p N
  -i FILE, --ssh-identity FILE
                        passed to the rsh command as -i FILE
  --preflight-timeout SEC
                        how long each remote host has to answer the check
                        before any rank starts (default ${DEFAULT_PREFLIGHT_SEC})
  --iface NAME          the network interface that connects the hosts: the
                        store listens on its address and every rank advertises
                        its own address on NAME (RINGREDUCE_IFACE in ranks);
                        default: the interface that routes to the other hosts
  --tls-cert FILE, --tls-key FILE, --tls-ca FILE
                        TLS (wss://) for the store and the ring links, with
                        mutual verification against the CA; the files must be
                        at the same path on every host (RINGREDUCE_TLS_CERT,
                        _KEY, _CA in ranks). The token handshake stays on top.

  localhost and this host's names and addresses run without ssh. A remote rank
  runs \`node <ringreduce>/${'dist/launcher/remote.js'}\` through the rsh command, so
  node and this package must be at the same path on every host; ringrun checks
  that first (exit 1 naming each host that fails). The rank gets the same
  working directory, its rank variables and the -x variables on top of the
  remote login environment; they travel over the rsh command's stdin, never on
  its command line. When ringrun stops or the ssh session closes, the remote
  rank is stopped too.

Environment of each rank (on top of ringrun's own environment and -x):
  RANK                             this rank, 0..N-1
  LOCAL_RANK, LOCAL_WORLD_SIZE     its index among the ranks of its host, and
                                   their number
  WORLD_SIZE                       N
  RINGRUN_STORE                    host:port of the job's rendezvous store
  RINGRUN_TOKEN                    the job's secret; ranks authenticate with it
  RINGRUN_START_TIMEOUT            seconds, only with --start-timeout
  RINGRUN                          1
  RINGREDUCE_PS_SERVERS            S, only with --servers S
Each parameter server gets RINGREDUCE_PS_SERVER (its index, 0..S-1),
RINGREDUCE_PS_SERVERS, RINGRUN_STORE, RINGRUN_TOKEN and the -x variables.

Each rank runs in its own process group, and stopping a rank signals the whole
group. On SIGINT, SIGTERM or SIGHUP, ringrun sends SIGTERM to every rank, then
SIGKILL after the grace period; a second Ctrl-C sends SIGKILL at once.

Subcommands:
  bench                 time one collective over a sweep of sizes, nccl-tests
                        style (allreduce, allgather, broadcast, reducescatter,
                        alltoall, sendrecv): ringrun bench --help

Exit status:
  0              every rank exited 0
  1..255         the exit code of the first rank that failed, or 128+signal if
                 it was killed by a signal (e.g. 137 for SIGKILL)
  1              ringrun itself failed (e.g. the store could not start), or a
                 remote host failed the preflight check (no rank was started)
  2              bad command line
  124            --timeout expired
  126            the command could not be started
  127            the command was not found
  129, 130, 143  ringrun received SIGHUP, SIGINT, SIGTERM

Examples:
  ringrun -np 4 --timeout 3600 -x OMP_NUM_THREADS=1 node train.js --epochs 10
  ringrun -H node1:4,node2:4 --iface eth1 -x OMP_NUM_THREADS=1 node train.js
  ringrun --hostfile hosts.txt -np 6 -p 2222 -i ~/.ssh/cluster node train.js
  ringrun -np 4 --servers 2 --allow-worker-loss node train.js
  ringrun -H node1,node2 --tls-cert rank.pem --tls-key rank.key --tls-ca ca.pem node train.js
`;
}
