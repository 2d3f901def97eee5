#!/usr/bin/env bash
# The paper's grid: students Qwen3-0.6B and 1.7B x the paper's eight teachers (teachers=paper8) x
# BoolQ, MMLU, AIME 2025, at the paper's budget, each run sharded over questions.
#
#   launch/paper_grid.sh --slurm PARTITION [--shards N] [--dry-run] [OVERRIDE...]
#
# STUDENTS, TEACHERS and DATASETS (comma lists of conf/ options) narrow or change the grid.
# An option that is not under conf/ is named before anything is submitted. Start with --dry-run
# to see rollouts, tokens and GPU-hours per run. OVERRIDEs reach every run, e.g.
# dataset.num_questions=500, model_root=DIR (local checkpoints), or a screened question list
# (README, "The paper's experiment"). The interpreter is chosen by sweep.sh: $PYTHON if set, else
# the repository's .venv, else python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
conf="$here/../conf"
STUDENTS=${STUDENTS:-qwen3-0.6b,qwen3-1.7b}
TEACHERS=${TEACHERS:-paper8}
DATASETS=${DATASETS:-boolq,mmlu,aime2025}

missing=()
for pair in "student:$STUDENTS" "teachers:$TEACHERS" "dataset:$DATASETS"; do
  group=${pair%%:*}
  IFS=, read -ra options <<< "${pair#*:}"
  for option in "${options[@]}"; do
    [ -f "$conf/$group/$option.yaml" ] || missing+=("$group=$option (conf/$group/$option.yaml)")
  done
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "paper_grid.sh: no such option: ${missing[*]}." >&2
  echo "  Pick options that exist under conf/ (ls conf/student conf/teachers conf/dataset)." >&2
  exit 2
fi

args=() extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --slurm|--shards|--dir) args+=("$1" "$2"); shift 2 ;;
    --local|--dry-run) args+=("$1"); shift ;;
    *) extra+=("$1"); shift ;;
  esac
done
exec "$here/sweep.sh" ${args[@]+"${args[@]}"} -- "student=$STUDENTS" "teachers=$TEACHERS" "dataset=$DATASETS" \
  budget=paper ${extra[@]+"${extra[@]}"}
