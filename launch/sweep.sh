#!/usr/bin/env bash
# A sweep of jaxalign runs, sharded over questions, with the shards merged at the end.
#
#   launch/sweep.sh [--slurm PARTITION | --local] [--shards N] [--dir DIR] [--dry-run] [--] OVERRIDE...
#
#   --slurm P   submit to SLURM partition P (conf/hydra/launcher/slurm.yaml: requeue on preemption)
#   --local     run the jobs as local processes through submitit (same code path, no cluster)
#               (neither: one job after another in this process)
#   --shards N  split every run's questions over N jobs (SLURM array task i takes shard i of N)
#   --dir DIR   the sweep directory (default multirun/config); rerunning the same command resumes
#   --dry-run   print each run's rollouts, tokens and GPU-hours, launch nothing
#   OVERRIDE    Hydra overrides; comma lists sweep, e.g. student=qwen3-0.6b,qwen3-1.7b seed=0,1
#
# Extra launcher settings pass through as overrides, e.g. hydra.launcher.timeout_min=600
# hydra.launcher.gpus_per_node=2. PYTHON (default: python3) is the interpreter with jaxalign.
# Hydra waits for the jobs; if this shell dies, they go on, and
# `python -m jaxalign.report DIR` merges their shards later.
set -euo pipefail

PYTHON=${PYTHON:-python3}
launcher=() shards=1 dir=multirun/config dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --slurm) launcher=(hydra/launcher=slurm "hydra.launcher.partition=${2:?--slurm needs a partition}"); shift 2 ;;
    --local) launcher=(hydra/launcher=submitit_local); shift ;;
    --shards) shards=${2:?--shards needs a number}; shift 2 ;;
    --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || { echo "sweep.sh: --shards must be a positive integer, got '$shards'" >&2; exit 2; }

if [ "$dry" = 1 ]; then
  exec "$PYTHON" -m jaxalign.run -m "hydra.sweep.dir=$dir/dry-run" dry_run=true "$@"
fi
sharding=()
[ "$shards" -gt 1 ] && sharding=("shard.count=$shards" "shard.index=range($shards)")

status=0
"$PYTHON" -m jaxalign.run -m "hydra.sweep.dir=$dir" ${launcher[@]+"${launcher[@]}"} ${sharding[@]+"${sharding[@]}"} "$@" \
  || status=$?
if [ "$status" != 0 ]; then
  echo "sweep.sh: the launcher exited with $status. Jobs already submitted go on (squeue); rerun this" \
       "command to resume what failed, or merge later with: $PYTHON -m jaxalign.report $dir" >&2
  exit "$status"
fi
if [ "$shards" -gt 1 ]; then
  "$PYTHON" -m jaxalign.report "$dir"
fi
