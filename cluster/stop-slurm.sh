#!/usr/bin/env bash
# Stop the single-node SLURM started by cluster/start-slurm.sh, by the PID files it wrote.
#
# Daemons stop in the reverse order of their start (slurmd, slurmctld, slurmdbd, mariadb,
# munged). Only those PIDs are signalled, and only if they still run the expected program,
# so a stale PID file never kills an unrelated process. State, logs and the accounting
# database stay in LTSWEEP_SLURM_DIR, so a later start resumes job ids and history.
set -euo pipefail

DIR="${LTSWEEP_SLURM_DIR:-/tmp/ltsweep-slurm}"
GRACE="${LTSWEEP_SLURM_STOP_GRACE:-20}"

if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then exec sudo -E bash "$0" "$@"; fi
    echo "stop-slurm: error: must run as root" >&2
    exit 1
fi

# stop_daemon NAME PIDFILE: SIGTERM, wait up to GRACE seconds, then SIGKILL.
stop_daemon() {
    local name=$1 pidfile=$2 pid i
    if [[ ! -s $pidfile ]]; then
        echo "$name: no PID file ($pidfile)"
        return 0
    fi
    pid=$(<"$pidfile")
    if ! [[ $pid =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null ||
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) != "$name"* ]]; then
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

stop_daemon slurmd "$DIR/run/slurmd.pid"
stop_daemon slurmctld "$DIR/run/slurmctld.pid"
stop_daemon slurmdbd "$DIR/run/slurmdbd.pid"
stop_daemon mariadbd "$DIR/run/mariadb.pid"
stop_daemon munged /run/munge/munged.pid
