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
#   --dry-run   print each run's forecast (rollouts, tokens, GPU-hours, memory, GPUs per job) and the
#               sweep's total in GPU-days as one JSON line last; launch nothing
#   OVERRIDE    Hydra overrides; comma lists sweep, e.g. student=qwen3-0.6b,qwen3-1.7b seed=0,1
#
# Extra launcher settings pass through as overrides, e.g. hydra.launcher.timeout_min=600
# hydra.launcher.gpus_per_node=2. With --slurm or --local, each job asks for the GPUs its meshes
# need: the largest data x model of student.mesh, teachers.NAME.mesh and context_mesh over the sweep's jobs
# (python: jaxalign.meshes.sweep_devices). A mesh with data=-1 takes the GPUs it is given, so
# it leaves the launcher's gpus_per_node as it is; a gpus_per_node among the OVERRIDEs always wins.
# The interpreter is $PYTHON if set, else the repository's
# .venv/bin/python, else python3 from PATH: the first of them that has jaxalign installed.
# Hydra waits for the jobs; if this shell dies, they go on, and
# `python -m jaxalign.report DIR` merges their shards later.
set -euo pipefail

launcher=() shards=1 dir=multirun/config dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --slurm) launcher=(hydra/launcher=slurm "hydra.launcher.partition=${2:?--slurm needs a partition}"); shift 2 ;;
    --local) launcher=(hydra/launcher=submitit_local); shift ;;
    --shards) shards=${2:?--shards needs a number}; shift 2 ;;
    --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || { echo "sweep.sh: --shards must be a positive integer, got '$shards'" >&2; exit 2; }

has_jaxalign() {
  # -P: not the working directory's jaxalign/ (a source tree is not an install); python < 3.11 fails here too
  "$1" -P -c 'import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, ("jaxalign", "hydra", "jax"))))' \
    >/dev/null 2>&1
}
if [ -n "${PYTHON:-}" ]; then
  has_jaxalign "$PYTHON" || { echo "sweep.sh: PYTHON=$PYTHON cannot import jaxalign, hydra and jax. Point" \
    "PYTHON at the interpreter of the environment where jaxalign is installed, e.g. PYTHON=.venv/bin/python." >&2
    exit 2; }
else
  root=$(cd "$(dirname "$0")/.." && pwd)
  for candidate in "$root/.venv/bin/python" python3; do
    if has_jaxalign "$candidate"; then PYTHON=$candidate; break; fi
  done
  [ -n "${PYTHON:-}" ] || { echo "sweep.sh: found no Python that can import jaxalign, hydra and jax" \
    "(tried $root/.venv/bin/python and python3 from PATH). Install jaxalign (python3 -m venv .venv &&" \
    ".venv/bin/pip install -e .), activate the environment that has it, or set PYTHON=/path/to/its/python." >&2
    exit 2; }
fi

if [ "$dry" = 1 ]; then
  # each run writes its forecast.json; the sweep's total (GPU-days, one JSON line last) adds them up
  "$PYTHON" -m jaxalign.run -m "hydra.sweep.dir=$dir/dry-run" dry_run=true "$@"
  exec "$PYTHON" -m jaxalign.cost "$dir/dry-run"
fi
sharding=()
[ "$shards" -gt 1 ] && sharding=("shard.count=$shards" "shard.index=range($shards)")
if [ ${#launcher[@]} -gt 0 ]; then
  # the GPUs the meshes need, before the OVERRIDEs so that a gpus_per_node given there wins
  gpus=$("$PYTHON" -P -c 'import sys; from jaxalign.meshes import sweep_devices_main as m; sys.exit(m(sys.argv[1:]))' \
    "$@") || exit 2
  [ -n "$gpus" ] && launcher+=("hydra.launcher.gpus_per_node=$gpus")
fi

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
