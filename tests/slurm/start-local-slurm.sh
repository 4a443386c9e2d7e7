#!/usr/bin/env bash
# Start (or re-use) a single-node Slurm cluster on this machine, for tests/test_slurm.py and .ci/slurm.sh.
#
#   sudo tests/slurm/start-local-slurm.sh            # install if needed, configure, start, wait until idle
#   tests/slurm/start-local-slurm.sh --status        # print what is running; exit 1 if the cluster is not usable
#   tests/slurm/start-local-slurm.sh --stop          # stop slurmd, slurmctld, slurmdbd (MariaDB and munge stay up)
#
# What it sets up (facts: docs/slurm.md):
#   - Debian 12 packages slurmctld slurmd slurm-client munge slurmdbd mariadb-server, started by hand
#     (the containers have no systemd and policy-rc.d forbids service starts from postinst);
#   - accounting through slurmdbd + MariaDB, so `sacct` works and the Snakemake Slurm plugin can use its
#     default (sacct) status command; without it the plugin hangs (docs/slurm.md). AccountingStoreFlags=job_comment
#     keeps the comment the plugin gives each job (rule_<name>_wildcards_<...>), so sacct maps jobs to rules;
#   - a fake GPU: GresTypes=gpu, node Gres=gpu:1 and gres.conf `File=/dev/null`. Without File= the node goes
#     INVAL ("gres/gpu count reported lower than configured"). Jobs asking `--gpus=1` are scheduled and see
#     CUDA_VISIBLE_DEVICES=0 but there is no GPU behind it: it checks the *request*, not CUDA;
#   - EnforcePartLimits=ALL and a partition MaxCPUsPerNode equal to the node's CPUs, so that a job asking
#     more CPUs than the node has is rejected at submission instead of pending forever (reason PartitionConfig);
#   - DefMemPerCPU=1000: with CR_Core_Memory a job without --mem would otherwise get the whole node's memory and
#     run alone.
#
# Idempotent: daemons already running are kept; a changed slurm.conf/gres.conf restarts slurmctld and slurmd
# (a GRES change needs a restart, `scontrol reconfigure` is not enough). Must run as root. Exits non-zero with a
# message naming the failed step and its log file.
set -euo pipefail

CLUSTER=localcluster
PARTITION=debug
ACCOUNT=default
LOGDIR=/var/log/slurm
SLURM_CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
PKGS="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"

die() {
  echo "start-local-slurm: ERROR: $*" >&2
  exit 1
}
log() { echo "start-local-slurm: $*"; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND once a second
  local n=$1 what=$2
  shift 2
  for _ in $(seq "$n"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  return 1
}

# Waits for a daemon named $1 to exit after SIGTERM (slurmctld saves its state on SIGTERM; restarting it
# too early races with that save), then SIGKILLs it: a slurmd retrying registration with a dead controller
# was seen to ignore SIGTERM.
stop_daemon() {
  local name=$1 pid
  pgrep -x "$name" >/dev/null || return 0
  pid=$(pgrep -x "$name" | tr '\n' ' ')
  # shellcheck disable=SC2086
  kill $pid 2>/dev/null || true
  if ! wait_for 30 "$name exit" bash -c "! pgrep -x $name"; then
    # shellcheck disable=SC2086
    kill -9 $pid 2>/dev/null || true
    wait_for 10 "$name exit" bash -c "! pgrep -x $name" || die "could not stop $name (pids $pid)"
  fi
}

status() {
  local ok=0
  for d in munged mariadbd slurmdbd slurmctld slurmd; do
    if pgrep -x "$d" >/dev/null; then echo "$d: running"; else
      echo "$d: NOT running"
      ok=1
    fi
  done
  sinfo -N -o "%N %T %G %c %m" 2>&1 || ok=1
  return $ok
}

case "${1:-}" in
--status)
  status
  exit $?
  ;;
--stop)
  stop_daemon slurmd
  stop_daemon slurmctld
  stop_daemon slurmdbd
  exit 0
  ;;
"") ;;
*) die "unknown argument '$1' (use no argument, --status or --stop)" ;;
esac

[ "$(id -u)" = 0 ] || die "must run as root (it installs Debian packages and starts system daemons); try: sudo $0"

# --- packages ---------------------------------------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
if ! dpkg -s $PKGS >/dev/null 2>&1; then
  log "installing $PKGS"
  command -v apt-get >/dev/null || die "apt-get not found: this script needs Debian/Ubuntu packages ($PKGS)"
  # shellcheck disable=SC2086
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $PKGS >/dev/null; } ||
    die "apt-get install $PKGS failed (network to the Debian mirror?)"
fi

# --- munge ------------------------------------------------------------------------------------------------
[ -s /etc/munge/munge.key ] || {
  log "creating /etc/munge/munge.key"
  mungekey --create --force >/dev/null 2>&1 || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
}
mkdir -p /run/munge && chown munge:munge /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged || die "munged failed to start (see /var/log/munge/munged.log)"
wait_for 10 "munge" bash -c "munge -n | unmunge" || die "munge does not answer: 'munge -n | unmunge' fails (see /var/log/munge/munged.log)"

# --- configuration ----------------------------------------------------------------------------------------
mkdir -p /var/spool/slurmctld /var/spool/slurmd "$LOGDIR" /run/slurm /etc/slurm
chown slurm:slurm /var/spool/slurmctld "$LOGDIR" /run/slurm
MEM=$(($(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) * 85 / 100))
CPUS=$(nproc)

new_conf=$(mktemp)
new_gres=$(mktemp)
trap 'rm -f "$new_conf" "$new_gres"' EXIT
cat >"$new_conf" <<CONF
# Written by dwgf tests/slurm/start-local-slurm.sh; a single node named localhost.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
EnforcePartLimits=ALL
ReturnToService=2
MinJobAge=300
GresTypes=gpu
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE MaxCPUsPerNode=$CPUS State=UP
CONF
cat >"$new_gres" <<CONF
# Fake GPU: File=/dev/null makes slurmd report 1 gpu; there is no device behind it.
NodeName=localhost Name=gpu File=/dev/null
CONF

changed=0
for pair in "$new_conf:$SLURM_CONF" "$new_gres:$GRES_CONF"; do
  src=${pair%%:*} dst=${pair##*:}
  if ! cmp -s "$src" "$dst"; then
    install -m 644 "$src" "$dst"
    changed=1
  fi
done

# --- accounting: MariaDB + slurmdbd ------------------------------------------------------------------------
mariadb_started=0
if ! pgrep -x mariadbd >/dev/null; then
  log "starting MariaDB"
  service mariadb start >/dev/null || die "MariaDB failed to start (see /var/log/mysql/ or 'service mariadb start')"
  mariadb_started=1
fi
wait_for 30 "mariadb" mariadb -e "SELECT 1" || die "MariaDB does not answer 'mariadb -e \"SELECT 1\"'"
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpass';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" || die "could not create the slurm_acct_db database"
cat >"$new_conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
LogFile=$LOGDIR/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpass
StorageLoc=slurm_acct_db
CONF
if ! cmp -s "$new_conf" "$DBD_CONF"; then
  install -m 600 -o slurm -g slurm "$new_conf" "$DBD_CONF"
  stop_daemon slurmdbd
elif [ "$mariadb_started" = 1 ] && pgrep -x slurmdbd >/dev/null; then
  # A slurmdbd that outlived its database keeps a dead connection and drops job records (seen: a job's
  # AllocTRES missing in sacct), so it is restarted against the fresh MariaDB.
  log "restarting slurmdbd (MariaDB was down)"
  stop_daemon slurmdbd
fi
pgrep -x slurmdbd >/dev/null || slurmdbd || die "slurmdbd failed to start (see $LOGDIR/slurmdbd.log)"
wait_for 60 "slurmdbd" sacctmgr -n show cluster || die "sacctmgr cannot reach slurmdbd (see $LOGDIR/slurmdbd.log)"
# %40: sacctmgr truncates names to 10 characters by default ("localclus+"), which breaks the exists-checks.
sacctmgr -n show cluster format=cluster%40 | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null ||
  die "sacctmgr add cluster $CLUSTER failed"
sacctmgr -n show account format=account%40 | grep -qw "$ACCOUNT" ||
  sacctmgr -i add account "$ACCOUNT" Description=default Organization=local >/dev/null ||
  die "sacctmgr add account $ACCOUNT failed"
sacctmgr -n show assoc where user="$(id -un)" account="$ACCOUNT" format=user%40 | grep -qw "$(id -un)" ||
  sacctmgr -i add user "$(id -un)" Account="$ACCOUNT" >/dev/null || die "sacctmgr add user $(id -un) failed"

# --- slurmctld, slurmd --------------------------------------------------------------------------------------
if [ "$changed" = 1 ]; then
  log "slurm.conf/gres.conf changed: (re)starting slurmctld and slurmd"
  stop_daemon slurmd
  stop_daemon slurmctld
fi
pgrep -x slurmctld >/dev/null || slurmctld || die "slurmctld failed to start (see $LOGDIR/slurmctld.log)"
wait_for 30 "slurmctld" scontrol ping || die "slurmctld does not answer 'scontrol ping' (see $LOGDIR/slurmctld.log)"
# -N: the node name is independent of the container's hostname.
pgrep -x slurmd >/dev/null || slurmd -N localhost || die "slurmd failed to start (see $LOGDIR/slurmd.log)"
# A node left DOWN/DRAIN by an earlier unclean stop comes back only with an explicit RESUME.
state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
case "$state" in
down* | drain* | inval*) scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
esac
if ! wait_for 60 "idle node" bash -c "sinfo -h -n localhost -o %T | grep -Eq '^(idle|mixed|allocated)'"; then
  sinfo -N -o "%N %T %E" >&2 || true
  die "node localhost did not become idle (see $LOGDIR/slurmd.log and $LOGDIR/slurmctld.log)"
fi
gres=$(sinfo -h -n localhost -o %G)
case "$gres" in
*gpu:1*) ;;
*) die "node localhost reports GRES '$gres', expected gpu:1 (see $GRES_CONF and $LOGDIR/slurmd.log)" ;;
esac
log "ready: cluster $CLUSTER, partition $PARTITION, account $ACCOUNT, node localhost ($CPUS CPUs, ${MEM} MB, $gres)"
