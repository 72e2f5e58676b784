#!/usr/bin/env bash
# A real single-node SLURM on this machine, for tests: Debian's slurmctld + slurmd + munge,
# one node on 127.0.0.1 with 2 fake GPUs (dummy device nodes), no accounting daemon.
#   workflow/scripts/local_slurm.sh install   # apt packages (root)
#   workflow/scripts/local_slurm.sh start     # write configs, start daemons, wait for an idle node
#   workflow/scripts/local_slurm.sh stop      # stop the daemons this script started (by PID)
set -euo pipefail

STATE=${LOCAL_SLURM_STATE:-/tmp/local-slurm}
HOST=$(hostname -s)
CONF_DIR=/etc/slurm
MARK="# written by local_slurm.sh (removed by its stop)"

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
     && command -v munged >/dev/null; then
    return 0
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  mkdir -p "$CONF_DIR" "$STATE"/{ctld,slurmd,log}
  for index in 0 1; do  # fake GPUs: device nodes with the NVIDIA major number
    [ -e "/dev/nvidia$index" ] || mknod "/dev/nvidia$index" c 195 "$index"
  done
  cat > "$CONF_DIR/slurm.conf" <<CONF
$MARK
ClusterName=localtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MinJobAge=600
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:fake:2 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
  cat > "$CONF_DIR/gres.conf" <<CONF
$MARK
NodeName=$HOST Name=gpu Type=fake File=/dev/nvidia[0-1]
CONF
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
  fi
}

start() {
  install
  if [ -s "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
    echo "local SLURM already running (pid $(cat "$STATE/slurmctld.pid"))"
    return 0
  fi
  write_config
  mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
  if ! munge -n >/dev/null 2>&1; then
    munged --force --pid-file="$STATE/munged.pid" 2>/dev/null || sudo -u munge munged
  fi
  slurmctld -i
  slurmd
  for _ in $(seq 1 60); do
    if sinfo -h -N -o %t 2>/dev/null | grep -q '^idle'; then
      echo "local SLURM up: $(sinfo -h -N -o '%N %t %G')"
      return 0
    fi
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  echo "local SLURM did not become idle; logs in $STATE/log" >&2
  sinfo -N -l >&2 || true
  return 1
}

stop() {
  for daemon in slurmd slurmctld munged; do
    pidfile="$STATE/$daemon.pid"
    if [ -s "$pidfile" ]; then
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
  # Without a controller, a left-over slurm.conf makes every `scontrol show config` wait for
  # its 10 s timeout, and Snakemake's SLURM executor plugin runs that at every start, local
  # runs included (measured: `snakemake --version` 11.1 s with it, 2.1 s without). Only the
  # files this script wrote are removed.
  for conf in slurm.conf gres.conf; do
    if [ -f "$CONF_DIR/$conf" ] && head -n 1 "$CONF_DIR/$conf" | grep -qxF "$MARK"; then
      rm -f "$CONF_DIR/$conf"
    fi
  done
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
