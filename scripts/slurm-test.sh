#!/usr/bin/env bash
# Starts a one-node Slurm cluster (Debian slurm-wlm + munge, root, state in a
# scratch folder), submits deploy/slurm-array.sbatch as a 4-task job array
# through TestSlurmArray, and stops the daemons again.
#   bash scripts/slurm-test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 ||
    { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q slurm-wlm munge >/dev/null; }
fi
work=$(mktemp -d /tmp/ninbatch-slurm.XXXXXX)
chmod 755 "$work"
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 )) # MB, for --mem
stop() {
  for p in "$work"/slurmd.pid "$work"/slurmctld.pid; do
    [ -f "$p" ] && $SUDO kill "$(cat "$p")" 2>/dev/null || true
  done
  [ -f "$work/munged.pid" ] && $SUDO kill "$(cat "$work/munged.pid")" 2>/dev/null || true
  sleep 1
  $SUDO rm -rf "$work"
}
trap stop EXIT
# munge: a fresh key, its own socket and pid file
$SUDO mkdir -p "$work/munge"
$SUDO dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
$SUDO chown -R munge:munge "$work/munge" 2>/dev/null || true
$SUDO chmod 700 "$work/munge"; $SUDO chmod 400 "$work/munge/munge.key"
sock="$work/munge/munge.socket"
$SUDO munged --force --key-file="$work/munge/munge.key" --socket="$sock" \
  --pid-file="$work/munged.pid" --log-file="$work/munged.log" --seed-file="$work/munge/seed"
mkdir -p "$work/state" "$work/spool"
cat > "$work/slurm.conf" <<CONF
ClusterName=ninbatch-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$work/slurm.conf"
$SUDO env SLURM_CONF="$SLURM_CONF" slurmctld
$SUDO env SLURM_CONF="$SLURM_CONF" slurmd
for _ in $(seq 1 30); do
  sinfo -h -o '%T' 2>/dev/null | grep -q -E 'idle|mixed' && break
  sleep 1
done
sinfo -h -o '%T' | grep -q -E 'idle|mixed' || { echo "slurm-test: the node did not come up" >&2; tail -20 "$work"/slurm*.log >&2; exit 1; }
NINBATCH_SLURM=1 go test -count 1 -run TestSlurmArray -v ./cmd/ninbatch
