#!/bin/sh
# The "ssh" of bench/netns.mjs's emulated hosts: `rsh-netns.sh [-p N] [-i FILE] [-T] [-o OPT] HOST COMMAND`
# runs the shell text COMMAND (as ssh would) inside the rrnb- network namespace that owns the
# address HOST, under a host name of its own (a UTS namespace named after the network namespace:
# the emulated hosts share /tmp, and Open MPI's daemons name their session directories after the
# host), in a session of its own: as on a real remote host, signals to this script do not reach
# the remote side; only the end of its stdin (the ssh session closing) does. Needs root.
# RSH_NETNS_PREFIX picks other namespaces (test/fixtures/rsh-netns.sh: the tests' rr7-).
while [ $# -gt 0 ]; do
  case "$1" in
    -p|-i|-o|-l) shift 2 ;;
    -T|-x|-n) shift ;;
    *) break ;;
  esac
done
host=$1
shift
for ns in $(ip netns list | awk '{print $1}' | grep "^${RSH_NETNS_PREFIX:-rrnb-}"); do
  if ip -n "$ns" -o -4 addr show | grep -q " inet $host/"; then
    exec ip netns exec "$ns" unshare -u sh -c 'hostname "$0" && exec setsid -w sh -c "$1"' "$ns" "$*"
  fi
done
echo "rsh-netns: ssh: connect to host $host port 22: No route to host" >&2
exit 255
