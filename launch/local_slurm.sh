#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine (Debian 12, slurm-wlm 22.05), to try jaxalign's
# cluster path on a workstation and for CI. Must run as root; needs no systemd and no cgroups.
#
#   launch/local_slurm.sh up       install the packages (idempotent), then start
#   launch/local_slurm.sh install  apt-get the packages
#   launch/local_slurm.sh start    write the configs, start the daemons, wait until the node is idle
#   launch/local_slurm.sh stop     stop every daemon this script started, by PID, in reverse order
#   launch/local_slurm.sh status
#   launch/local_slurm.sh reset    stop, then wipe the SLURM state and the accounting database
#
# Two partitions: 'debug' (default, preemptible: a job there is signalled, then requeued, when a
# job in 'high' needs its CPUs) and 'high'. Accounting (mariadb + slurmdbd) is on by default so that
# sacct, and with it submitit's job states, work.
#
# Knobs (environment): WITH_ACCOUNTING=1|0, LOCAL_SLURM_DIR (PID list and logs; default
# ${TMPDIR:-/tmp}/jaxalign-slurm), NODE_CPUS (default nproc), NODE_MEM_MB (default MemTotal - 2 GiB).
#
# What to know when testing against it: requeued jobs are held for about 120 s (BeginTime);
# release them with `scontrol update JobId=ID StartTime=now`. Once srun is on PATH, submitit's
# AutoExecutor picks SLURM: say cluster="local" where local execution is meant.
set -euo pipefail

WITH_ACCOUNTING=${WITH_ACCOUNTING:-1}
RUN_DIR=${LOCAL_SLURM_DIR:-${TMPDIR:-/tmp}/jaxalign-slurm}
PIDS="$RUN_DIR/pids"
NODE=$(hostname -s)
CPUS=${NODE_CPUS:-$(nproc)}
MEM_MB=${NODE_MEM_MB:-$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) - 2048 ))}
DB_PASS=slurmpw

log() { echo "[local_slurm] $*" >&2; }

need_root() { [ "$(id -u)" = 0 ] || { log "must run as root (it writes /etc/slurm and starts daemons)"; exit 1; }; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local end=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$end" ]; then log "timed out waiting for $what; logs in /var/log/slurm and $RUN_DIR"; return 1; fi
    sleep 0.2
  done
}

installed() {  # every package fully installed (dpkg -s also accepts removed ones with config left)
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
  done
}

record_pid() { echo "$1 $2" >> "$PIDS"; log "$1 started, pid $2"; }

do_install() {
  need_root
  local pkgs="slurmctld slurmd slurm-client munge"
  [ "$WITH_ACCOUNTING" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
  # shellcheck disable=SC2086
  if installed $pkgs; then log "packages present"; return 0; fi
  # In containers policy-rc.d keeps postinst from starting the services; that is what we want.
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs >&2; }
}

write_config() {
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  chown slurm:slurm /var/spool/slurmctld /var/log/slurm
  local acct="AccountingStorageType=accounting_storage/none"
  [ "$WITH_ACCOUNTING" = 1 ] && acct=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost'
  cat > /etc/slurm/slurm.conf <<EOF
ClusterName=jaxalign
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
JobAcctGatherType=jobacct_gather/none
${acct}
JobCompType=jobcomp/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
JobRequeue=1
# Preemption as on a shared cluster: a job in 'high' preempts jobs in 'debug'. The victim gets its
# --signal (submitit: USR2) at once, SIGTERM/KILL after GraceTime, and is requeued.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=60
PartitionName=high Nodes=${NODE} MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
  if [ "$WITH_ACCOUNTING" = 1 ]; then
    cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
DebugLevel=info
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=${DB_PASS}
StorageLoc=slurm_acct_db
EOF
    chown slurm:slurm /etc/slurm/slurmdbd.conf
    chmod 600 /etc/slurm/slurmdbd.conf
  fi
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  wait_for 10 munged sh -c 'munge -n | unmunge'
  record_pid munged "$(cat /run/munge/munged.pid)"
}

start_accounting() {
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
  /usr/sbin/mariadbd --user=mysql --skip-networking --pid-file=/run/mysqld/mysqld.pid >"$RUN_DIR/mariadb.log" 2>&1 &
  record_pid mariadbd $!
  wait_for 30 mariadb mariadb -e 'select 1'
  if [ -f "$RUN_DIR/reset_db" ]; then mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db"; rm -f "$RUN_DIR/reset_db"; fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DB_PASS}';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  /usr/sbin/slurmdbd
  wait_for 30 slurmdbd sacctmgr -n list cluster
  record_pid slurmdbd "$(cat /run/slurmdbd.pid)"
  sacctmgr -n -P list cluster format=cluster | grep -qx jaxalign || sacctmgr -i add cluster jaxalign >/dev/null
}

do_start() {
  need_root
  mkdir -p "$RUN_DIR"
  if [ -s "$PIDS" ]; then log "already started (PIDs in $PIDS); run stop first"; exit 1; fi
  local t0; t0=$(date +%s)
  write_config
  start_munge
  [ "$WITH_ACCOUNTING" = 1 ] && start_accounting
  /usr/sbin/slurmctld
  wait_for 30 slurmctld scontrol ping
  record_pid slurmctld "$(cat /run/slurmctld.pid)"
  /usr/sbin/slurmd
  wait_for 30 "slurmd registration" sh -c "sinfo -h -n ${NODE} -o %T | grep -qx idle"
  record_pid slurmd "$(cat /run/slurmd.pid)"
  log "cluster up in $(( $(date +%s) - t0 )) s: node ${NODE}, ${CPUS} CPUs, partitions debug (default, preemptible) and high"
}

do_stop() {
  [ -s "$PIDS" ] || { log "nothing recorded in $PIDS"; return 0; }
  tac "$PIDS" | while read -r name pid; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then log "$name ($pid) ignored TERM; sending KILL"; kill -KILL "$pid"; fi
      log "stopped $name (pid $pid)"
    else
      log "$name (pid $pid) already gone"
    fi
  done
  rm -f "$PIDS"
}

do_reset() {
  do_stop
  rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
  mkdir -p "$RUN_DIR" && touch "$RUN_DIR/reset_db"  # the accounting database is dropped at the next start
  log "state wiped; job ids restart at 1"
}

case "${1:-}" in
  install) do_install ;;
  start) do_start ;;
  up) do_install; do_start ;;
  stop) do_stop ;;
  reset) do_reset ;;
  status) [ -s "$PIDS" ] && cat "$PIDS"; scontrol ping || true; sinfo || true ;;
  *) echo "usage: $0 {up|install|start|stop|status|reset}" >&2; exit 2 ;;
esac
