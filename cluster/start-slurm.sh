#!/usr/bin/env bash
# Start a SLURM test cluster (with accounting) on this machine, for tests and CI.
#
#   bash cluster/start-slurm.sh                 # one compute node: this machine (loopback)
#   bash cluster/start-slurm.sh --nodes 3       # three compute nodes, each a set of namespaces
#   bash cluster/start-slurm.sh --nodes 3 --share /tmp/ci-checkout --share /tmp/venv
#   bash cluster/stop-slurm.sh [--purge]        # stop all of it (--purge: also the state dir)
#
# Why each piece is here:
#   munge        - SLURM's authentication; every daemon and command needs it.
#   mariadb      - storage for slurmdbd, reached only through a Unix socket (--skip-networking).
#   slurmdbd     - accounting: without it `sacct` fails, submitit reports every job as UNKNOWN
#                  and `job.result()` on a cancelled job waits forever.
#   slurmctld    - the controller; slurmd - one per compute node.
# No systemd here: each daemon is started directly and stopped by cluster/stop-slurm.sh via
# its PID file. Running this script again is harmless: running daemons are left alone, and
# a slurmd that died (or a node whose processes were all killed) is started again.
#
# --nodes 1 (the default): slurmd runs on this machine itself, NodeName=$(hostname -s),
# everything on 127.0.0.1, exactly like a plain single-node install.
#
# --nodes N (N >= 2, or --netns with N = 1): N "machines" on this one, so that multi-node
# code (srun across nodes, a Ray cluster spanning nodes, files a node cannot see) is tested
# for real. Compute node K is called nodeK and is:
#   - a network namespace ltsw-nodeK with one interface eth0 = 10.213.57.(10+K)/24, a veth
#     whose other end is a port of the bridge ltsw-br0 (10.213.57.1 in the root namespace).
#     No NAT, no default route: nodes reach each other and the controller, nothing else.
#   - a UTS namespace (hostname nodeK) and a mount namespace in which /tmp is the private
#     directory $LTSWEEP_SLURM_DIR/nodes/nodeK/tmp (look into it from outside there) and
#     /etc/hosts is /etc/netns/ltsw-nodeK/hosts (every node name -> its bridge address, the
#     controller's hostname -> 10.213.57.1). Everything else, /dev/shm included, is the
#     machine's own filesystem, shared like a cluster filesystem.
#   - one `slurmd -N nodeK` started inside those namespaces. The namespaces are kept alive
#     by bind mounts (/run/netns/ltsw-nodeK, /run/ltsweep-ns/nodeK.{uts,mnt}), not by a
#     process: killing every process of a node leaves the node, and the next start-slurm.sh
#     starts its slurmd again.
# One munged, mariadb, slurmdbd and slurmctld serve all nodes from the root namespace
# (SlurmctldHost=<this host>(10.213.57.1); munge's socket in /run is shared). The root
# namespace resolves the node names through a marked block in /etc/hosts.
#
# Paths under /tmp are invisible inside the nodes (their /tmp is private). So that jobs can
# still import the project, these host paths are bound into every node's /tmp at the same
# path, if they are under /tmp: the repository (this script's ..), the sys.prefix and
# sys.base_prefix of `python3` (LTSWEEP_SLURM_PYTHON) and the folder ltsweep is imported
# from. `--share PATH` (repeatable) adds more (a missing PATH is created as a directory).
# Shares are added to running nodes on the next start; removing one needs a stop. Run
# directories of sweeps must be visible to the nodes: not under /tmp (or shared).
#
# Tests reach into a node with cluster/node-exec.sh:
#   cluster/node-exec.sh node2 CMD [ARG...]   run CMD in node2 (net + uts + mount namespaces)
#   cluster/node-exec.sh --pids node2         PIDs of every process of node2
#   cluster/node-exec.sh --list               "name address" of every node
# and see a node's /tmp at $LTSWEEP_SLURM_DIR/nodes/node2/tmp. `ip netns pids ltsw-node2`
# also lists its PIDs; `ip netns exec ltsw-node2 CMD` gives only its network and /etc/hosts.
#
# Switching between layouts (--nodes 1 and --nodes 3) stops the running cluster first;
# job ids and accounting continue (they live in the state dir).
#
# The config is written to /etc/slurm/slurm.conf, the path Debian's SLURM reads by default,
# so neither commands nor submitit need SLURM_CONF. An existing slurm.conf that this script
# did not write is never overwritten (set LTSWEEP_SLURM_FORCE=1 to override).
#
# Environment: LTSWEEP_SLURM_DIR (state, spool, logs, PID files, database, node /tmp dirs;
# default /var/tmp/ltsweep-slurm - not under /tmp, which the nodes do not share),
# LTSWEEP_SLURM_TIMEOUT (seconds to wait for each daemon; default 60),
# LTSWEEP_SLURM_NODE_MEM_MB (RealMemory of each namespace node; default 6000, at most what
# slurmd detects minus 512), LTSWEEP_SLURM_PYTHON (the python whose prefix is shared).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR="${LTSWEEP_SLURM_DIR:-/var/tmp/ltsweep-slurm}"
LEGACY_DIR=/tmp/ltsweep-slurm # the default of older versions of this script
TIMEOUT="${LTSWEEP_SLURM_TIMEOUT:-60}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
DBD_CONF="$CONF_DIR/slurmdbd.conf"
MARK="# written by ltsweep cluster/start-slurm.sh"
CLUSTER=ltsweep
PARTITION=debug
MYSQL_SOCK=/run/mysqld/mysqld.sock # the client library's default: slurmdbd has no socket option
# Namespace nodes. Names are shared with stop-slurm.sh and node-exec.sh: keep them in step.
NET=10.213.57          # one private /24: .1 the bridge (controller), .(10+K) node K
BRIDGE=ltsw-br0
NS_DIR=/run/ltsweep-ns # bind mounts that keep each node's UTS and mount namespace alive
HOSTS_BEGIN="# BEGIN ltsweep cluster/start-slurm.sh nodes (removed by cluster/stop-slurm.sh)"
HOSTS_END="# END ltsweep cluster/start-slurm.sh nodes"
T0=$(date +%s)

log() { printf '[start-slurm %3ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
die() {
    printf 'start-slurm: error: %s\n' "$*" >&2
    exit 1
}
usage() {
    sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

ARGS=("$@")
NODES=1
FORCE_NETNS=0
SHARES=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --nodes | -N)
        [[ $# -ge 2 ]] || die "$1 needs a number"
        NODES=$2
        shift 2
        ;;
    --nodes=*) NODES=${1#*=} && shift ;;
    --share)
        [[ $# -ge 2 ]] || die "--share needs a path"
        SHARES+=("$2")
        shift 2
        ;;
    --share=*) SHARES+=("${1#*=}") && shift ;;
    --netns) FORCE_NETNS=1 && shift ;;
    -h | --help) usage 0 ;;
    *) printf 'start-slurm: unknown argument %q\n' "$1" >&2 && usage 2 ;;
    esac
done
[[ $NODES =~ ^[1-9][0-9]*$ && $NODES -le 200 ]] || die "--nodes must be 1..200, not '$NODES'"
MODE=single
[[ $NODES -gt 1 || $FORCE_NETNS -eq 1 ]] && MODE=netns
NODE_NAMES=()
for ((k = 1; k <= NODES; k++)); do NODE_NAMES+=("node$k"); done
[[ $MODE == single ]] && [[ ${#SHARES[@]} -gt 0 ]] && log "note: --share only matters with namespace nodes (--nodes N>1)"

if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then exec sudo -E bash "$0" "${ARGS[@]}"; fi
    die "must run as root (installs packages, starts daemons, makes namespaces)"
fi

if [[ $MODE == netns ]]; then
    case $(realpath -m "$DIR")/ in
    /tmp/*) die "LTSWEEP_SLURM_DIR=$DIR is under /tmp, which namespace nodes do not share" ;;
    esac
    for n in "${NODE_NAMES[@]}"; do
        [[ $n != "$(hostname -s)" ]] || die "this machine is itself called $n: node names would clash"
    done
fi

mkdir -p "$DIR"
# One start (or stop) at a time: tests may call this from several processes. The lock is held
# by the flock process around this script, not by a file descriptor of this shell: the
# daemons started below would inherit that and keep the lock for ever. stop-slurm.sh, which
# this script may call, sees LTSWEEP_SLURM_LOCKED and does not wait for it.
if [[ -z ${LTSWEEP_SLURM_LOCKED:-} ]]; then
    LTSWEEP_SLURM_LOCKED=1 exec flock -o "$DIR/.lock" bash "${BASH_SOURCE[0]}" "${ARGS[@]}"
fi
unset LTSWEEP_SLURM_LOCKED # not into the daemons' environment

# --- packages -------------------------------------------------------------------------------
install_packages() {
    local missing=0 cmd
    # iptables: the bridge check below, and the tests that cut one node's traffic
    for cmd in slurmctld slurmd sbatch sacct slurmdbd munged mariadbd iptables; do
        command -v "$cmd" >/dev/null 2>&1 || missing=1
    done
    [[ $missing -eq 0 ]] && return 0
    local need=(slurm-wlm slurm-client slurmdbd munge mariadb-server mariadb-client iptables)
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
# A zombie does not count: a killed daemon may wait a while for init to reap it.
alive() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2"* ]] || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
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

# write_in_place FILE: stdin to FILE, keeping its inode, only if different. /etc/hosts may be
# a bind mount (containers), and each node's /etc/hosts is a bind mount of its file: a rename
# would fail on the first and be invisible through the second.
write_in_place() {
    local new
    new=$(cat)
    if [[ ! -f $1 ]] || [[ $(<"$1") != "$new" ]]; then
        printf '%s\n' "$new" >"$1"
    fi
}

node_ip() { echo "$NET.$((10 + ${1#node}))"; } # node_ip nodeK

# in_node NAME CMD...: run CMD in the node's network, UTS and mount namespaces.
in_node() {
    local n=$1
    shift
    nsenter --net="/run/netns/ltsw-$n" --uts="$NS_DIR/$n.uts" --mount="$NS_DIR/$n.mnt" -- "$@"
}

# --- layout changes ---------------------------------------------------------------------------
# A different node set needs slurmctld and every slurmd restarted (SLURM 22.05 cannot add or
# remove configured nodes on reconfigure), so switching layouts stops the running cluster.
LAYOUT="mode=$MODE net=$NET nodes=${NODE_NAMES[*]}"
stop_if_other_layout() {
    local running=0 f
    for f in "$DIR/run/slurmctld.pid" "$DIR/run/slurmd.pid" "$DIR"/run/slurmd-*.pid; do
        [[ -e $f ]] && alive "$f" slurm && running=1
    done
    ip netns list 2>/dev/null | grep -q '^ltsw-' && running=1
    ip link show "$BRIDGE" >/dev/null 2>&1 && running=1
    if [[ $DIR != "$LEGACY_DIR" ]]; then
        for f in slurmctld slurmd slurmdbd mariadb; do
            if alive "$LEGACY_DIR/run/$f.pid" "${f/mariadb/mariadbd}"; then
                log "a cluster an older version started in $LEGACY_DIR is running: stopping it"
                LTSWEEP_SLURM_LOCKED=1 bash "$SCRIPT_DIR/stop-slurm.sh"
                running=0
                break
            fi
        done
    fi
    if [[ $running -eq 1 ]] && [[ $(cat "$DIR/layout" 2>/dev/null) != "$LAYOUT" ]]; then
        log "the running cluster has another layout ($(cat "$DIR/layout" 2>/dev/null || echo unknown)): stopping it first"
        LTSWEEP_SLURM_LOCKED=1 bash "$SCRIPT_DIR/stop-slurm.sh"
    fi
    echo "$LAYOUT" >"$DIR/layout"
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
    # (Inside a node's namespaces it sees the same: the whole machine.)
    node=$(slurmd -C | head -n 1)
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
    sockets=$(sed -n 's/.* SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$node")
    cores=$(sed -n 's/.* CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$node")
    threads=$(sed -n 's/.* ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$node")
    mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    [[ -n $cpus && -n $mem ]] || die "cannot parse 'slurmd -C': $node"
    realmem=$((mem > 1024 ? mem - 512 : mem))
    local hw="CPUs=$cpus SocketsPerBoard=${sockets:-1} CoresPerSocket=${cores:-$cpus} ThreadsPerCore=${threads:-1}"
    local ctld_addr=127.0.0.1 dbd_host=localhost spool=$DIR/spool pidf=$DIR/run/slurmd.pid
    local slog=$DIR/log/slurmd.log nodes_conf part_nodes=$host timeouts=""
    nodes_conf="NodeName=$host NodeAddr=127.0.0.1 $hw RealMemory=$realmem State=UNKNOWN"
    if [[ $MODE == netns ]]; then
        # Every node declares the whole machine's CPUs (oversubscribed across nodes, fine
        # for tests) and a slice of its memory that slurmd accepts.
        local want=${LTSWEEP_SLURM_NODE_MEM_MB:-6000}
        [[ $want =~ ^[0-9]+$ ]] || die "LTSWEEP_SLURM_NODE_MEM_MB must be a number of MB"
        realmem=$((want < realmem ? want : realmem))
        # The nodes reach the controller (and sacct/sacctmgr run inside a job reach
        # slurmdbd) at the bridge address: their own 127.0.0.1 is their own loopback.
        ctld_addr=$NET.1 dbd_host=$NET.1
        # Tests kill nodes on purpose. A node whose slurmd is gone is declared DOWN (its jobs
        # requeued or failed) after 30 s instead of 300 s. A node restarted before that has
        # its lost batch jobs noticed when it registers, if they are older than ~20 s
        # (BatchStartTimeout + MessageTimeout), else at a periodic registration (about every
        # 20 pings = 200 s here; `scontrol reconfigure` forces one).
        timeouts="SlurmdTimeout=30"
        # %n is the node name: each slurmd gets its own spool, PID file and log.
        spool=$DIR/nodes/%n/spool pidf=$DIR/run/slurmd-%n.pid slog=$DIR/log/slurmd-%n.log
        nodes_conf="NodeName=DEFAULT $hw RealMemory=$realmem State=UNKNOWN"
        local n
        for n in "${NODE_NAMES[@]}"; do
            nodes_conf+=$'\n'"NodeName=$n NodeAddr=$(node_ip "$n") NodeHostname=$n"
        done
        part_nodes=$(
            IFS=,
            echo "${NODE_NAMES[*]}"
        )
    fi
    write_if_changed "$CONF" 644 <<EOF
$MARK; rewritten on every start
# layout: $LAYOUT
ClusterName=$CLUSTER
SlurmctldHost=$host($ctld_addr)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$pidf
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$slog
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
# a node that was down (killed, restarted) is usable again as soon as its slurmd registers
ReturnToService=2
# submitit ignores SIGTERM, so a cancelled or requeued job waits KillWait for its SIGKILL
KillWait=5
$timeouts
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((realmem / cpus))
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$dbd_host
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$nodes_conf
PartitionName=$PARTITION Nodes=$part_nodes Default=YES MaxTime=INFINITE State=UP
EOF
    # slurmdbd refuses a config readable by others (it holds the storage credentials).
    # It listens on every address, so the nodes reach it at the bridge address too.
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
        LEFTOVERS=1
    fi
    wait_for slurmctld bash -c 'scontrol ping | grep -q UP'
}

# When the whole cluster was down (a stopped session, a rebooted machine), the slurmctld
# started here recovers the previous start's jobs from its state files, but their processes
# ended with that start's slurmds: they would hold the nodes until SLURM gave up on them.
# Cancel them (the accounting keeps their records) and wait until they are gone. A slurmd
# still up means jobs may still run: then nothing is cancelled.
LEFTOVERS=0
SLURMD_WAS_UP=0
no_jobs() { [[ -z $(squeue -h -o %i) && -z $(sinfo -h -N -p "$PARTITION" -o %T | grep -v '^idle') ]]; }
cancel_leftover_jobs() {
    [[ $LEFTOVERS -eq 1 && $SLURMD_WAS_UP -eq 0 ]] || return 0
    local ids
    ids=$(squeue -h -o %i | tr '\n' ' ')
    [[ -n ${ids// /} ]] || return 0
    log "cancelling the jobs left from the previous start (their processes are gone): $ids"
    # shellcheck disable=SC2086 # one word per job id
    scancel $ids
    wait_for "the cancelled jobs to end (see squeue)" no_jobs
}

# nodes_idle: true once every node of the partition can run jobs; resumes down/drained ones.
nodes_idle() {
    local name state ok=0
    while read -r name state; do
        case $state in
        idle* | mixed* | allocated* | completing*) ;;
        *drain* | down*)
            scontrol update nodename="$name" state=resume >/dev/null 2>&1 || true
            ok=1
            ;;
        *) ok=1 ;;
        esac
    done < <(sinfo -h -N -p "$PARTITION" -o '%N %T')
    return $ok
}

wait_nodes() {
    wait_for "the nodes (see sinfo -N -l)" nodes_idle
    wait_for sacct sacct -n -X -S now
}

start_slurmd() { # the single-node layout: slurmd on this machine
    if alive "$DIR/run/slurmd.pid" slurmd; then
        log "slurmd already running"
        SLURMD_WAS_UP=1
    else
        log "starting slurmd"
        slurmd
    fi
}

# --- namespace nodes --------------------------------------------------------------------------
# Bridged frames go through iptables' FORWARD chain when br_netfilter is active
# (net.bridge.bridge-nf-call-iptables=1). If that chain could drop them, accept traffic
# between the bridge's own ports (stop-slurm.sh removes the rule). Nothing else is touched.
IPT_RULE=(FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment ltsweep-slurm -j ACCEPT)
allow_bridged_traffic() {
    local nf
    nf=$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo 0)
    [[ $nf == 1 ]] || return 0
    if ! command -v iptables >/dev/null 2>&1; then
        log "bridge-nf-call-iptables=1, no iptables command: assuming no rules (checked below)"
        return 0
    fi
    if iptables -C "${IPT_RULE[@]}" 2>/dev/null; then return 0; fi
    if [[ $(iptables -S FORWARD 2>/dev/null) == "-P FORWARD ACCEPT" ]]; then
        log "bridge-nf-call-iptables=1; FORWARD accepts everything: no rule needed"
        return 0
    fi
    log "bridge-nf-call-iptables=1 and FORWARD may drop: accepting traffic within $BRIDGE (iptables rule)"
    iptables -I "${IPT_RULE[@]}"
}

setup_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        # The subnet must be ours alone: an address of it on another interface means a clash.
        if ip -o -4 addr show | grep -v " $BRIDGE " | grep -q " $NET\."; then
            die "$NET.0/24 is already used on this machine: $(ip -o -4 addr show | grep " $NET\.")"
        fi
        log "creating bridge $BRIDGE ($NET.1/24)"
        ip link add "$BRIDGE" type bridge
    fi
    ip addr replace "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    allow_bridged_traffic
}

# The hosts files: the root namespace gets a marked block with the node names; each node gets
# the machine's /etc/hosts without any line that maps a node name or the controller's name
# elsewhere (e.g. to 127.0.1.1: a node's own 127.x is its own loopback), plus all nodes and
# the controller at their bridge addresses.
hosts_block() {
    local n
    echo "$HOSTS_BEGIN"
    for n in "${NODE_NAMES[@]}"; do echo "$(node_ip "$n") $n"; done
    echo "$HOSTS_END"
}
hosts_without_block() { # /etc/hosts without our block
    awk -v b="$HOSTS_BEGIN" -v e="$HOSTS_END" '$0 == b {skip = 1} !skip {print} $0 == e {skip = 0}' /etc/hosts
}
write_hosts() {
    local ctl names n
    ctl=$(hostname -s)
    local taken
    taken=$(hosts_without_block | awk -v names="${NODE_NAMES[*]}" '
        BEGIN { split(names, a, " "); for (i in a) ours[a[i]] = 1 }
        !/^[[:space:]]*#/ { for (i = 2; i <= NF && $i !~ /^#/; i++) if ($i in ours) print $i }' | sort -u | xargs)
    [[ -z $taken ]] || log "warning: /etc/hosts already names $taken; this namespace may resolve them there (the nodes do not)"
    { hosts_without_block && hosts_block; } | write_in_place /etc/hosts
    names="$ctl $(hostname) ${NODE_NAMES[*]}"
    for n in "${NODE_NAMES[@]}"; do
        mkdir -p "/etc/netns/ltsw-$n"
        {
            echo "# /etc/hosts of namespace node $n: $MARK"
            hosts_without_block | awk -v names="$names" '
                BEGIN { split(names, a, " "); for (i in a) drop[a[i]] = 1 }
                /^[[:space:]]*(#|$)/ { print; next }
                { line = $1; kept = 0
                  for (i = 2; i <= NF && $i !~ /^#/; i++) if (!($i in drop)) { line = line " " $i; kept++ }
                  if (kept) print line }'
            echo "$NET.1 $ctl"
            hosts_block
        } | write_in_place "/etc/netns/ltsw-$n/hosts"
    done
}

# share_list: the host paths under /tmp that nodes must see (deduplicated, nested ones dropped).
share_list() {
    local py=${LTSWEEP_SLURM_PYTHON:-python3} p out=() s
    local cand=("$SCRIPT_DIR/..")
    if command -v "$py" >/dev/null 2>&1; then
        # sys.prefix: the environment; the folder ltsweep is imported from: an editable
        # install's source. find_spec does not import the package.
        while IFS= read -r p; do [[ -n $p ]] && cand+=("$p"); done < <("$py" -c '
import sys, os, importlib.util as u
print(sys.prefix); print(sys.base_prefix)
s = u.find_spec("ltsweep")
if s and s.origin: print(os.path.dirname(os.path.dirname(s.origin)))
' 2>/dev/null || true)
    fi
    cand+=("${SHARES[@]}")
    for p in "${cand[@]}"; do
        p=$(realpath -m "$p")
        case $p/ in
        /tmp/*) out+=("$p") ;; # (/tmp itself too: start_nodes refuses it)
        esac
    done
    [[ ${#out[@]} -gt 0 ]] || return 0
    # Sorted, a nested path follows its parent, whose bind mount already shows it.
    printf '%s\n' "${out[@]}" | sort -u | while IFS= read -r s; do
        [[ -n ${prev:-} && $s/ == "$prev"/* ]] && continue
        echo "$s"
        prev=$s
    done
}

# setup_node NAME: the node's network, namespaces and shares; only what is missing.
# A node's firewall is this cluster's alone, and empty: the tests that cut a node's traffic
# add rules to it, and a test killed before its clean-up (a stopped session, a Ctrl-C) leaves
# them, so that node hears nothing from the others. Each start empties it again, in both
# iptables back ends, and says what it removed.
open_node_firewall() {
    local n=$1 cmd rules
    for cmd in iptables iptables-legacy; do
        command -v "$cmd" >/dev/null 2>&1 || continue
        rules=$(ip netns exec "ltsw-$n" "$cmd" -S 2>/dev/null | grep -c -v '^-P ' || true)
        [[ $rules -gt 0 ]] || continue
        log "$n: removing $rules firewall rule(s) left in its namespace ($cmd)"
        ip netns exec "ltsw-$n" "$cmd" -F
        ip netns exec "ltsw-$n" "$cmd" -X
        ip netns exec "ltsw-$n" "$cmd" -P INPUT ACCEPT
        ip netns exec "ltsw-$n" "$cmd" -P OUTPUT ACCEPT
    done
}

setup_node() {
    local n=$1 k=${1#node} ip ndir
    ip=$(node_ip "$n")
    ndir=$DIR/nodes/$n
    mkdir -p "$ndir/spool" "$ndir/hosttmp"
    install -d -m 1777 "$ndir/tmp"
    # network: netns, veth (host end ltsw-vK on the bridge, node end eth0), loopback up
    [[ -e /run/netns/ltsw-$n ]] || ip netns add "ltsw-$n"
    if ! ip link show "ltsw-v$k" >/dev/null 2>&1; then
        ip -n "ltsw-$n" link del eth0 2>/dev/null || true
        ip link add "ltsw-v$k" type veth peer name eth0 netns "ltsw-$n"
    fi
    ip link set "ltsw-v$k" master "$BRIDGE" up
    ip -n "ltsw-$n" link set lo up
    ip -n "ltsw-$n" addr replace "$ip/24" dev eth0
    ip -n "ltsw-$n" link set eth0 up
    open_node_firewall "$n"
    # UTS + mount namespaces, made persistent by unshare's bind mounts of their ns files.
    # (A mount namespace file may only be bind-mounted on a private mount: hence NS_DIR.)
    if ! findmnt -rn --mountpoint "$NS_DIR/$n.mnt" >/dev/null; then
        umount "$NS_DIR/$n.uts" 2>/dev/null || true
        touch "$NS_DIR/$n.uts" "$NS_DIR/$n.mnt"
        # Inside: the hostname; the host's /tmp kept reachable at $ndir/hosttmp (shares are
        # bound from there, also later); the node's own /tmp; its /etc/hosts. The copies of
        # /run/netns and NS_DIR are dropped so a node does not pin other nodes' namespaces.
        # shellcheck disable=SC2016 # expanded by the inner sh
        nsenter --net="/run/netns/ltsw-$n" unshare --uts="$NS_DIR/$n.uts" --mount="$NS_DIR/$n.mnt" \
            --propagation private sh -ec '
                hostname "$1"
                mount --rbind /tmp "$2/hosttmp"
                mount --rbind "$2/tmp" /tmp
                mount --bind "/etc/netns/ltsw-$1/hosts" /etc/hosts
                umount -l /run/netns 2>/dev/null || true
                umount -l "$3" 2>/dev/null || true
            ' sh "$n" "$ndir" "$NS_DIR" || die "cannot make the namespaces of $n"
    fi
    # Shares: host path /tmp/X appears in the node at /tmp/X, bound from hosttmp/X.
    local s
    for s in "${SHARE_PATHS[@]}"; do
        # shellcheck disable=SC2016 # expanded by the inner sh
        in_node "$n" sh -ec '
            findmnt -rn --mountpoint "$1" >/dev/null && exit 0
            src=$2/hosttmp/${1#/tmp/}
            if [ -d "$src" ]; then mkdir -p "$1"; else mkdir -p "$(dirname "$1")"; touch "$1"; fi
            mount --rbind "$src" "$1"
        ' sh "$s" "$ndir" || die "cannot share $s with $n"
    done
}

start_node_slurmd() {
    local n=$1
    if alive "$DIR/run/slurmd-$n.pid" slurmd; then
        log "slurmd of $n already running"
        SLURMD_WAS_UP=1
        return 0
    fi
    log "starting slurmd in $n ($(node_ip "$n"))"
    in_node "$n" slurmd -N "$n"
}

# can_reach FROM HOST PORT: a TCP connection from node FROM (5 s at most).
# shellcheck disable=SC2016 # expanded by the inner bash
can_reach() { nsenter --net="/run/netns/ltsw-$1" timeout 5 bash -c ': </dev/tcp/$0/$1' "$2" "$3"; }

check_controller_reachable() {
    local n
    for n in "${NODE_NAMES[@]}"; do
        can_reach "$n" "$NET.1" 6817 || die "$n cannot reach slurmctld at $NET.1:6817 (a firewall INPUT rule on $BRIDGE?)"
    done
}

check_nodes_reach_each_other() { # once the slurmds listen
    local n first=${NODE_NAMES[0]}
    for n in "${NODE_NAMES[@]:1}"; do
        can_reach "$first" "$(node_ip "$n")" 6818 ||
            die "$first cannot reach $n's slurmd at $(node_ip "$n"):6818 (bridged traffic filtered? see net.bridge.bridge-nf-call-iptables and: ip netns exec ltsw-$n iptables -S)"
    done
}

start_nodes() {
    mkdir -p "$NS_DIR"
    if ! findmnt -rn --mountpoint "$NS_DIR" >/dev/null; then
        mount --bind "$NS_DIR" "$NS_DIR"
    fi
    mount --make-private "$NS_DIR"
    mapfile -t SHARE_PATHS < <(share_list)
    local s
    for s in "${SHARE_PATHS[@]}"; do
        [[ $s != /tmp ]] || die "cannot share all of /tmp: each node has its own"
        if [[ ! -e $s ]]; then
            log "creating $s (to be shared with the nodes)"
            mkdir -p "$s"
        fi
    done
    [[ ${#SHARE_PATHS[@]} -eq 0 ]] || log "shared into the nodes' /tmp: ${SHARE_PATHS[*]}"
    local n
    for n in "${NODE_NAMES[@]}"; do setup_node "$n"; done
    for n in "${NODE_NAMES[@]}"; do start_node_slurmd "$n"; done
}

summary() {
    if [[ $MODE == single ]]; then
        log "SLURM is up: partition '$PARTITION' on $(hostname -s): $(sinfo -h -o '%c CPUs, %m MB, %T')"
    else
        log "SLURM is up: partition '$PARTITION' on ${#NODE_NAMES[@]} namespace nodes, controller $(hostname -s) at $NET.1"
        local n
        printf '  %-8s %-14s %-12s %s\n' NODE ADDRESS NETNS STATE
        for n in "${NODE_NAMES[@]}"; do
            printf '  %-8s %-14s %-12s %s\n' "$n" "$(node_ip "$n")" "ltsw-$n" \
                "$(sinfo -h -N -n "$n" -o '%T, %c CPUs, %m MB' | head -n 1)"
        done
        echo "Run a command in a node: $SCRIPT_DIR/node-exec.sh node1 CMD...; its /tmp: $DIR/nodes/node1/tmp"
    fi
    echo "SLURM_CONF=$CONF (the default path: no variable needed); state, logs and PID files in $DIR"
}

install_packages
stop_if_other_layout
write_configs
if [[ $MODE == netns ]]; then
    # Before any daemon or command: the config names 10.213.57.1, which without the bridge
    # would be routed off the machine.
    setup_bridge
    write_hosts
fi
start_munge
start_mariadb
start_slurmdbd
start_slurmctld
if [[ $MODE == netns ]]; then
    start_nodes
    check_controller_reachable
else
    start_slurmd
fi
wait_nodes
cancel_leftover_jobs
[[ $MODE == netns ]] && check_nodes_reach_each_other
summary
