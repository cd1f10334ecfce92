#!/usr/bin/env bash
# Start a single-node SLURM (with accounting) on this machine, for tests and CI.
#
# Why each piece is here:
#   munge        - SLURM's authentication; every daemon and command needs it.
#   mariadb      - storage for slurmdbd, reached only through a Unix socket (--skip-networking).
#   slurmdbd     - accounting: without it `sacct` fails, submitit reports every job as UNKNOWN
#                  and `job.result()` on a cancelled job waits forever.
#   slurmctld    - the controller; slurmd - the one compute node (this machine).
# No systemd here: each daemon is started directly and stopped by cluster/stop-slurm.sh via
# its PID file. Running this script again is harmless: running daemons are left alone.
#
# The config is written to /etc/slurm/slurm.conf, the path Debian's SLURM reads by default,
# so neither commands nor submitit need SLURM_CONF. An existing slurm.conf that this script
# did not write is never overwritten (set LTSWEEP_SLURM_FORCE=1 to override).
#
# Environment: LTSWEEP_SLURM_DIR (state, spool, logs, PID files, database; default
# /tmp/ltsweep-slurm), LTSWEEP_SLURM_TIMEOUT (seconds to wait for each daemon; default 60).
set -euo pipefail

DIR="${LTSWEEP_SLURM_DIR:-/tmp/ltsweep-slurm}"
TIMEOUT="${LTSWEEP_SLURM_TIMEOUT:-60}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
DBD_CONF="$CONF_DIR/slurmdbd.conf"
MARK="# written by ltsweep cluster/start-slurm.sh"
CLUSTER=ltsweep
PARTITION=debug
MYSQL_SOCK=/run/mysqld/mysqld.sock # the client library's default: slurmdbd has no socket option
T0=$(date +%s)

log() { printf '[start-slurm %3ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
die() {
    printf 'start-slurm: error: %s\n' "$*" >&2
    exit 1
}

if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then exec sudo -E bash "$0" "$@"; fi
    die "must run as root (installs packages and starts daemons)"
fi

# --- packages -------------------------------------------------------------------------------
install_packages() {
    local missing=0 cmd
    for cmd in slurmctld slurmd sbatch sacct slurmdbd munged mariadbd; do
        command -v "$cmd" >/dev/null 2>&1 || missing=1
    done
    [[ $missing -eq 0 ]] && return 0
    local need=(slurm-wlm slurm-client slurmdbd munge mariadb-server mariadb-client)
    log "installing ${need[*]}"
    # Keep package scripts from starting services: this script starts them itself.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
        apt-get update -q
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" || rc=$?
    [[ $made_policy -eq 1 ]] && rm -f "$policy"
    [[ $rc -eq 0 ]] || die "apt-get install failed (exit $rc)"
}

# --- helpers ----------------------------------------------------------------------------------
# alive PIDFILE NAME: true if the PID in PIDFILE runs a program whose name starts with NAME.
alive() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2"* ]]
}

# wait_for WHAT CMD...: retry CMD until it succeeds or TIMEOUT seconds pass.
wait_for() {
    local what=$1 end=$(($(date +%s) + TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        if [[ $(date +%s) -ge $end ]]; then
            die "$what did not come up within ${TIMEOUT}s (logs: $DIR/log)"
        fi
        sleep 0.5
    done
}

CHANGED=0
write_if_changed() { # write_if_changed FILE MODE: stdin to FILE if different (sets CHANGED=1)
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    cat >"$tmp"
    chmod "$2" "$tmp"
    if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$1"
        CHANGED=1
    fi
}

# --- configs ----------------------------------------------------------------------------------
write_configs() {
    mkdir -p "$CONF_DIR" "$DIR"/{ctld,spool,log,run}
    if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF" && [[ ${LTSWEEP_SLURM_FORCE:-0} != 1 ]]; then
        die "$CONF exists and was not written by this script; not touching a real cluster's config"
    fi
    local host node cpus sockets cores threads mem realmem
    host=$(hostname -s)
    # slurmd -C prints the hardware as slurmd will see it; RealMemory above it drains the node.
    node=$(slurmd -C | head -n 1)
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
    sockets=$(sed -n 's/.* SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$node")
    cores=$(sed -n 's/.* CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$node")
    threads=$(sed -n 's/.* ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$node")
    mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    [[ -n $cpus && -n $mem ]] || die "cannot parse 'slurmd -C': $node"
    realmem=$((mem > 1024 ? mem - 512 : mem))
    write_if_changed "$CONF" 644 <<EOF
$MARK; rewritten on every start
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# submitit ignores SIGTERM, so a cancelled or requeued job waits KillWait for its SIGKILL
KillWait=5
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((realmem / cpus))
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus SocketsPerBoard=${sockets:-1} CoresPerSocket=${cores:-$cpus} ThreadsPerCore=${threads:-1} RealMemory=$realmem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    # slurmdbd refuses a config readable by others (it holds the storage credentials).
    write_if_changed "$DBD_CONF" 600 <<EOF
$MARK; rewritten on every start
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
}

# --- daemons ----------------------------------------------------------------------------------
start_munge() {
    install -d -o munge -g munge -m 700 /etc/munge /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating munge key"
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    if alive /run/munge/munged.pid munged; then
        log "munged already running"
    else
        log "starting munged"
        runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    fi
    wait_for munged bash -c 'munge -n | unmunge'
}

start_mariadb() {
    local data="$DIR/mysql"
    install -d -o mysql -g mysql -m 755 /run/mysqld
    install -d -o mysql -g mysql -m 750 "$data"
    if alive "$DIR/run/mariadb.pid" mariadbd; then
        log "mariadb already running"
    else
        if [[ ! -d $data/mysql ]]; then
            log "initialising the accounting database in $data"
            mariadb-install-db --user=mysql --datadir="$data" --skip-test-db \
                --auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1 ||
                die "mariadb-install-db failed (see $DIR/log/mariadb-install.log)"
        fi
        log "starting mariadb (socket $MYSQL_SOCK, no TCP)"
        install -m 644 /dev/null "$DIR/run/mariadb.pid"
        chown mysql:mysql "$DIR/run/mariadb.pid"
        touch "$DIR/log/mariadb.log"
        chown mysql:mysql "$DIR/log/mariadb.log"
        setsid mariadbd --no-defaults --user=mysql --datadir="$data" --socket="$MYSQL_SOCK" \
            --pid-file="$DIR/run/mariadb.pid" --skip-networking \
            --log-error="$DIR/log/mariadb.log" </dev/null >/dev/null 2>&1 &
    fi
    wait_for mariadb mariadb-admin --no-defaults --socket="$MYSQL_SOCK" ping
}

start_slurmdbd() {
    if alive "$DIR/run/slurmdbd.pid" slurmdbd; then
        log "slurmdbd already running"
    else
        log "starting slurmdbd"
        slurmdbd
    fi
    wait_for slurmdbd sacctmgr -n list cluster
    if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER" format=cluster 2>/dev/null) ]]; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
}

start_slurmctld() {
    if alive "$DIR/run/slurmctld.pid" slurmctld; then
        log "slurmctld already running"
        if [[ $CHANGED -eq 1 ]]; then
            log "config changed: scontrol reconfigure"
            scontrol reconfigure
        fi
    else
        log "starting slurmctld"
        slurmctld
    fi
    wait_for slurmctld bash -c 'scontrol ping | grep -q UP'
}

node_idle() {
    local state
    state=$(sinfo -h -p "$PARTITION" -o %T)
    case $state in
    idle | mixed | allocated) return 0 ;;
    *drain* | down*)
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        return 1
        ;;
    *) return 1 ;;
    esac
}

start_slurmd() {
    if alive "$DIR/run/slurmd.pid" slurmd; then
        log "slurmd already running"
    else
        log "starting slurmd"
        slurmd
    fi
    wait_for "the node (sinfo: $(sinfo -h -o %T 2>/dev/null || echo '?'))" node_idle
    wait_for sacct sacct -n -X -S now
}

install_packages
write_configs
start_munge
start_mariadb
start_slurmdbd
start_slurmctld
start_slurmd
log "SLURM is up: partition '$PARTITION' on $(hostname -s): $(sinfo -h -o '%c CPUs, %m MB, %T')"
echo "SLURM_CONF=$CONF (the default path: no variable needed); state, logs and PID files in $DIR"
