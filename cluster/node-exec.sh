#!/usr/bin/env bash
# Reach into a namespace node of the test cluster (bash cluster/start-slurm.sh --nodes N).
#
#   cluster/node-exec.sh NODE [CMD [ARG...]]   run CMD (default: an interactive bash) inside
#                                              NODE: its network, hostname and private /tmp.
#                                              Exit status: CMD's. stdin/stdout/stderr and the
#                                              environment pass through; the working directory
#                                              is kept if the node sees it (else /).
#   cluster/node-exec.sh --pids NODE           PIDs of every process in NODE, one a line
#                                              (same as `ip netns pids ltsw-NODE`)
#   cluster/node-exec.sh --list                "NODE ADDRESS" of every node, one a line
#
# NODE is a node name (node2) or just its number (2). A node's /tmp is, from outside,
# $LTSWEEP_SLURM_DIR/nodes/NODE/tmp (default /var/tmp/ltsweep-slurm/nodes/NODE/tmp).
# Processes started here belong to the node: cluster/stop-slurm.sh kills them with it.
# Needs root (entering namespaces needs CAP_SYS_ADMIN).
set -euo pipefail

NS_DIR=/run/ltsweep-ns # shared with start-slurm.sh / stop-slurm.sh

die() {
    printf 'node-exec: %s\n' "$*" >&2
    exit 125
}
usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 125
}

node_name() { # node2 or 2 -> node2, checked
    local n=$1
    [[ $n =~ ^[0-9]+$ ]] && n=node$n
    [[ $n =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad node name '$1'"
    [[ -e /run/netns/ltsw-$n ]] || die "no node $n (is the cluster started with --nodes N? see --list)"
    echo "$n"
}

[[ $# -ge 1 ]] || usage
case $1 in
-h | --help) usage ;;
--list)
    while read -r ns _; do
        n=${ns#ltsw-}
        addr=$(ip -n "$ns" -4 -o addr show dev eth0 2>/dev/null | awk '{sub(/\/.*/, "", $4); print $4}')
        echo "$n ${addr:-?}"
    done < <(ip netns list | grep '^ltsw-' | sort -V)
    exit 0
    ;;
--pids)
    [[ $# -eq 2 ]] || usage
    n=$(node_name "$2")
    exec ip netns pids "ltsw-$n"
    ;;
-*) usage ;;
esac

n=$(node_name "$1")
shift
[[ $EUID -eq 0 ]] || die "must run as root"
for f in "$NS_DIR/$n.uts" "$NS_DIR/$n.mnt"; do
    findmnt -rn --mountpoint "$f" >/dev/null || die "$n has no $f (run cluster/start-slurm.sh again)"
done
[[ $# -gt 0 ]] || set -- bash -i
# Entering a mount namespace resets the working directory to /: go back to it if visible.
# shellcheck disable=SC2016 # expanded by the inner sh
exec nsenter --net="/run/netns/ltsw-$n" --uts="$NS_DIR/$n.uts" --mount="$NS_DIR/$n.mnt" -- \
    sh -c 'cd "$0" 2>/dev/null || cd /; exec "$@"' "$PWD" "$@"
