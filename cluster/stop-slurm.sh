#!/usr/bin/env bash
# Stop the SLURM test cluster started by cluster/start-slurm.sh (any layout), and remove the
# namespace nodes, bridge, hosts entries and mounts it made.
#
#   bash cluster/stop-slurm.sh            # stop; keep state, logs and accounting
#   bash cluster/stop-slurm.sh --purge    # stop and delete LTSWEEP_SLURM_DIR as well
#
# Daemons stop in the reverse order of their start (slurmd(s), slurmctld, slurmdbd, mariadb,
# munged). Only the PIDs in the PID files are signalled, and only if they still run the
# expected program, so a stale PID file never kills an unrelated process. The one exception
# is inside the namespace nodes: every process there (job leftovers, a Ray cluster started
# by a test) belongs to the test cluster and is killed, found by `ip netns pids ltsw-nodeK`.
# State, logs and the accounting database stay in LTSWEEP_SLURM_DIR (default
# /var/tmp/ltsweep-slurm), so a later start resumes job ids and history. A single-node
# cluster that an older version of the script started in /tmp/ltsweep-slurm is stopped too.
# Safe to run twice, and when nothing runs.
set -euo pipefail

DIR="${LTSWEEP_SLURM_DIR:-/var/tmp/ltsweep-slurm}"
LEGACY_DIR=/tmp/ltsweep-slurm
GRACE="${LTSWEEP_SLURM_STOP_GRACE:-20}"
# Names shared with start-slurm.sh and node-exec.sh.
BRIDGE=ltsw-br0
NS_DIR=/run/ltsweep-ns
HOSTS_BEGIN="# BEGIN ltsweep cluster/start-slurm.sh nodes (removed by cluster/stop-slurm.sh)"
HOSTS_END="# END ltsweep cluster/start-slurm.sh nodes"

PURGE=0
for arg in "$@"; do
    case $arg in
    --purge) PURGE=1 ;;
    -h | --help) sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' && exit 0 ;;
    *) echo "stop-slurm: unknown argument $arg (only --purge)" >&2 && exit 2 ;;
    esac
done

if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then exec sudo -E bash "$0" "$@"; fi
    echo "stop-slurm: error: must run as root" >&2
    exit 1
fi

# Not at the same time as a start (start-slurm.sh itself calls this script with the lock
# held). flock -o: the lock stays with the flock process (see start-slurm.sh).
if [[ -z ${LTSWEEP_SLURM_LOCKED:-} && -d $DIR ]]; then
    LTSWEEP_SLURM_LOCKED=1 exec flock -o "$DIR/.lock" bash "${BASH_SOURCE[0]}" "$@"
fi
unset LTSWEEP_SLURM_LOCKED

# stop_daemon NAME PIDFILE: SIGTERM, wait up to GRACE seconds, then SIGKILL.
stop_daemon() {
    local name=$1 pidfile=$2 pid i
    if [[ ! -s $pidfile ]]; then
        [[ ${QUIET_ABSENT:-0} == 1 ]] || echo "$name: no PID file ($pidfile)"
        return 0
    fi
    pid=$(<"$pidfile")
    if ! [[ $pid =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null ||
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) != "$name"* ]] ||
        grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; then # a zombie: dead
        echo "$name: not running"
        rm -f "$pidfile"
        return 0
    fi
    local t0=$SECONDS
    kill -TERM "$pid"
    for ((i = 0; i < GRACE * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$name: still running after ${GRACE}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    echo "$name: stopped (pid $pid, $((SECONDS - t0))s)"
}

# kill_namespace NETNS: every process in it, SIGTERM then (after 5 s) SIGKILL, until none is
# left (a dying job may still fork).
kill_namespace() {
    local ns=$1 pids i sig=TERM n=0
    for ((i = 0; i < 100; i++)); do
        pids=$(ip netns pids "$ns" 2>/dev/null | grep -vx "$$" || true)
        [[ -n $pids ]] || break
        [[ $i -eq 50 ]] && sig=KILL # after 5 s
        [[ $i -eq 0 || $i -eq 50 ]] && n=$(wc -w <<<"$pids") &&
            echo "$ns: SIG$sig to $n process(es): $(tr '\n' ' ' <<<"$pids")"
        # shellcheck disable=SC2086 # one PID a word
        kill -"$sig" $pids 2>/dev/null || true
        sleep 0.1
    done
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -z $pids ]] || echo "$ns: warning: still running: $(tr '\n' ' ' <<<"$pids")"
}

# --- slurmd(s) --------------------------------------------------------------------------------
shopt -s nullglob
node_pidfiles=("$DIR"/run/slurmd-*.pid) # namespace nodes: slurmd-nodeK.pid
if [[ ${#node_pidfiles[@]} -eq 0 ]]; then
    stop_daemon slurmd "$DIR/run/slurmd.pid" # the single-node layout
else
    QUIET_ABSENT=1 stop_daemon slurmd "$DIR/run/slurmd.pid"
    # All at once: each takes a second or two to stop.
    for f in "${node_pidfiles[@]}"; do
        node=${f##*/slurmd-}
        stop_daemon slurmd "$f" | sed "s/^slurmd/slurmd of ${node%.pid}/" &
    done
    wait
fi

# --- namespace nodes: their processes, namespaces, network ----------------------------------
mapfile -t NETNS < <(ip netns list 2>/dev/null | awk '$1 ~ /^ltsw-/ {print $1}')
for ns in "${NETNS[@]}"; do kill_namespace "$ns"; done
if [[ -d $NS_DIR ]]; then
    for f in "$NS_DIR"/*.uts "$NS_DIR"/*.mnt; do
        umount "$f" 2>/dev/null || umount -l "$f" 2>/dev/null || true
        rm -f "$f"
    done
    umount "$NS_DIR" 2>/dev/null || true
    rmdir "$NS_DIR" 2>/dev/null || true
fi
for ns in "${NETNS[@]}"; do
    ip netns del "$ns" && echo "$ns: deleted"
    if [[ -f /etc/netns/$ns/hosts ]] && grep -q 'ltsweep cluster/start-slurm.sh' "/etc/netns/$ns/hosts"; then
        rm -f "/etc/netns/$ns/hosts"
    fi
    rmdir "/etc/netns/$ns" 2>/dev/null || true
done
# Files of nodes whose namespace is already gone (a half-finished start).
for d in /etc/netns/ltsw-*; do
    grep -qs 'ltsweep cluster/start-slurm.sh' "$d/hosts" && rm -f "$d/hosts"
    rmdir "$d" 2>/dev/null || true
done
rmdir /etc/netns 2>/dev/null || true # made by start-slurm.sh (mkdir -p) if it was missing
# The host ends of the veths (deleting the namespace usually took them along already).
while read -r link; do
    ip link del "$link" 2>/dev/null && echo "$link: deleted"
done < <(ip -o link show type veth 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | grep -E '^ltsw-v[0-9]+$' || true)
if ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link del "$BRIDGE" && echo "$BRIDGE: deleted"
fi
if command -v iptables >/dev/null 2>&1; then
    while iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment ltsweep-slurm -j ACCEPT 2>/dev/null; do
        echo "iptables: removed the FORWARD rule for $BRIDGE"
    done
fi
if grep -qxF "$HOSTS_BEGIN" /etc/hosts; then
    # Rewritten in place: /etc/hosts may be a bind mount.
    hosts=$(awk -v b="$HOSTS_BEGIN" -v e="$HOSTS_END" '$0 == b {skip = 1} !skip {print} $0 == e {skip = 0}' /etc/hosts)
    printf '%s\n' "$hosts" >/etc/hosts
    echo "/etc/hosts: removed the node names"
fi

# --- the controller side ----------------------------------------------------------------------
stop_daemon slurmctld "$DIR/run/slurmctld.pid"
stop_daemon slurmdbd "$DIR/run/slurmdbd.pid"
stop_daemon mariadbd "$DIR/run/mariadb.pid"
if [[ $DIR != "$LEGACY_DIR" ]]; then
    # Daemons of an older version of start-slurm.sh (state in /tmp); quiet when absent.
    QUIET_ABSENT=1 stop_daemon slurmd "$LEGACY_DIR/run/slurmd.pid"
    QUIET_ABSENT=1 stop_daemon slurmctld "$LEGACY_DIR/run/slurmctld.pid"
    QUIET_ABSENT=1 stop_daemon slurmdbd "$LEGACY_DIR/run/slurmdbd.pid"
    QUIET_ABSENT=1 stop_daemon mariadbd "$LEGACY_DIR/run/mariadb.pid"
fi
stop_daemon munged /run/munge/munged.pid

if [[ $PURGE -eq 1 && -d $DIR ]]; then
    case $(realpath -m "$DIR") in
    / | /tmp | /var/tmp | /var | /root | /home) echo "stop-slurm: not purging $DIR" >&2 ;;
    *) rm -rf "$DIR" && echo "purged $DIR" ;;
    esac
fi
