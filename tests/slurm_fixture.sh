#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for the SLURM tests (tests/test_slurm.py).
#
#   tests/slurm_fixture.sh start    install (apt-get, as root) and start munge, slurmctld and slurmd; wait for the node to be idle
#   tests/slurm_fixture.sh status   exit 0 when `sinfo` shows this node idle or busy (mixed/allocated), else 1
#   tests/slurm_fixture.sh stop     cancel every job and stop the three daemons this script started
#
# It is idempotent: `start` on a machine where SLURM already answers does nothing (and leaves that SLURM alone),
# `start` twice starts nothing twice, `stop` without a start does nothing. Everything listens on 127.0.0.1 only.
# The node has this machine's CPU count and memory, no GPUs, one partition `debug` (the default).
# On failure `start` exits non-zero with the reason on stderr and in $STATE/reason; the SLURM tests then skip with it.
set -uo pipefail

STATE=${NOISEKD_SLURM_STATE:-/tmp/noisekd-slurm}      # config, logs, spool, pid files: all of it here
CONF=$STATE/slurm.conf
mkdir -p "$STATE"
log() { echo "slurm_fixture: $*" >&2; }
fail() { log "$*"; echo "$*" > "$STATE/reason"; exit 1; }

idle() {  # the node answers and takes jobs
    local s; s=$(timeout 10 sinfo -h -N -o '%t' 2>/dev/null | head -1)   # sinfo retries for a minute when no slurmctld answers
    [[ $s == idle* || $s == mix* || $s == alloc* ]]
}

alive() { [[ -f $STATE/$1.pid ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }   # a daemon this script started runs

start() {
    rm -f "$STATE/reason"
    if command -v sinfo >/dev/null && [[ ! -f $STATE/started ]] && [[ -f ${SLURM_CONF:-/etc/slurm/slurm.conf} ]] && idle; then
        log "a SLURM cluster already answers on this machine: using it, starting nothing"; exit 0
    fi
    [[ $(id -u) == 0 ]] || fail "starting SLURM needs root (to install it and to run slurmd)"
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        command -v apt-get >/dev/null || fail "SLURM is not installed and there is no apt-get to install it"
        log "installing slurm-wlm and munge with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -q && apt-get install -y -q --no-install-recommends slurm-wlm munge; } >"$STATE/apt.log" 2>&1 ||
            fail "apt-get install slurm-wlm munge failed (see $STATE/apt.log: $(tail -1 "$STATE/apt.log"))"
    fi
    local host cpus mem
    host=$(hostname -s); cpus=$(nproc --all)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))   # MiB, leaving a tenth to the system
    mkdir -p "$STATE"/{spool,state,log} /run/munge /var/log/munge /var/lib/munge /etc/munge

    # munge: the key and its folders belong to the munge user, munged runs as that user
    id munge >/dev/null 2>&1 || fail "the munge user is missing (is the munge package installed?)"
    [[ -s /etc/munge/munge.key ]] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none && chmod 400 /etc/munge/munge.key; }
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge; chmod 700 /etc/munge; chmod 755 /run/munge
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        su -s /bin/sh munge -c 'munged' || fail "munged did not start (see /var/log/munge/munged.log)"
        touch "$STATE/munge-started"
        for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
        munge -n | unmunge >/dev/null 2>&1 || fail "munge does not answer (see /var/log/munge/munged.log)"
    fi

    cat >"$CONF" <<EOF
# Written by tests/slurm_fixture.sh: one node (this machine, $cpus CPUs, $mem MiB), one partition, no GPUs.
ClusterName=noisekd-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
KillWait=5
MinJobAge=5
SlurmdTimeout=30
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    export SLURM_CONF=$CONF
    if ! { alive slurmctld && alive slurmd && idle; }; then
        # a daemon of an earlier start of this script may still be around: stop it first
        for d in slurmctld slurmd; do alive $d && kill "$(cat "$STATE/$d.pid")"; done; sleep 1
        slurmctld -f "$CONF" -i >"$STATE/log/slurmctld.out" 2>&1 || fail "slurmctld did not start (see $STATE/log/slurmctld.log: $(tail -1 "$STATE/log/slurmctld.log" 2>/dev/null))"
        slurmd -f "$CONF" >"$STATE/log/slurmd.out" 2>&1 || fail "slurmd did not start (see $STATE/log/slurmd.log: $(tail -1 "$STATE/log/slurmd.log" 2>/dev/null))"
        touch "$STATE/started"
        for _ in $(seq 60); do idle && break; sleep 0.5; done
        idle || { scontrol update nodename="$host" state=resume >/dev/null 2>&1; sleep 2; }
        idle || fail "the node is not idle after 30 s: sinfo says '$(sinfo -h -N -o '%t %E' 2>&1 | head -1)' (see $STATE/log/)"
    fi
    echo "$CONF" > "$STATE/conf"
    log "SLURM is up (SLURM_CONF=$CONF): $(sinfo -h -N -o '%N %t %c CPUs %m MiB' | head -1)"
}

stop() {
    if [[ -f $STATE/started ]]; then
        export SLURM_CONF=$CONF
        timeout 20 scancel --full --quiet --user=root 2>/dev/null
        for d in slurmd slurmctld; do
            alive $d || continue
            pid=$(cat "$STATE/$d.pid"); kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        done
        rm -f "$STATE/started" "$STATE/conf"; log "stopped slurmd and slurmctld"
    fi
    if [[ -f $STATE/munge-started ]]; then
        [[ -f /run/munge/munged.pid ]] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null
        rm -f "$STATE/munge-started"; log "stopped munged"
    fi
    [[ -f $STATE/started || -f $STATE/munge-started ]] || return 0
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) [[ -f $STATE/conf ]] && export SLURM_CONF=$(cat "$STATE/conf"); idle && echo "${SLURM_CONF:-/etc/slurm/slurm.conf}" ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
