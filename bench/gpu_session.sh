#!/usr/bin/env bash
# Every figure the open issues want from a GPU, in one prepared run that fits one device call.
#
#   bash bench/gpu_session.sh [--quick] [--budget SECONDS] [--steps A,B,...] [OUT_DIR]
#
# Steps, most wanted first; each runs under its own time limit and is skipped when less than that
# is left of the budget (default 540 s: one 600-s device call). Each writes OUT_DIR/STEP.log, whose
# last line is the benchmark's JSON; calibration.json gathers the calibrations.
#   gpu_decode         bench/gpu_decode.py: decode at batch 256, 0.6B and 1.7B (#13: >= 40% of HBM)   120 s
#   gpu_ragged_decode  bench/gpu_ragged_decode.py: the Pallas kernel against the window path (#13)   150 s
#   calibrate_student  python -m jaxalign.calibrate --student Qwen/Qwen3-0.6B (#13: the dry run's)     180 s
#   phase2_scale       bench/phase2_scale.py at the real 0.6B shape (#12)                              150 s
#   calibrate_grid     Qwen3-1.7B as a student, the paper8 teachers (4B, 8B, 14B) as scored models      240 s
#   calibrate_context  Qwen3-32B, the context model: 65 GB of weights, so only on a card of >= 100 GB
#                      (an H200), in a call of its own: --steps calibrate_context                       360 s
# The first four fit one call; the grid's other models need a second (--steps calibrate_grid) and
# the 32B a third on an H200. $OUT comes back empty from each call, so each call has its own file.
# Nothing here needs Hydra, omegaconf or submitit (a bare device has jax, flax and transformers).
# OUT_DIR defaults to $OUT (the device tool's folder that comes back), else ./gpu-session-out.
# Back here, price the grid with the device's calibrations (one --calibration per call's file):
#   python bench/grid_forecast.py --calibration A/calibration.json --calibration B/calibration.json
# --quick runs the same steps at tiny shapes on any machine, the toy models standing in for Qwen3:
# it checks this script (about 2 minutes on 2 CPU cores).
set -u
cd "$(dirname "$0")/.."
quick=""
budget=540
steps="gpu_decode,gpu_ragged_decode,calibrate_student,phase2_scale,calibrate_grid,calibrate_context"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick="--quick"; shift ;;
    --budget) budget="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    -*) echo "gpu_session.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
known=",gpu_decode,gpu_ragged_decode,calibrate_student,phase2_scale,calibrate_grid,calibrate_context,"
for name in ${steps//,/ }; do
  case "$known" in *",$name,"*) ;; *) echo "gpu_session.sh: unknown step $name (steps: ${known:1:-1})" >&2; exit 2 ;; esac
done
if [ $# -gt 1 ]; then
  echo "gpu_session.sh: options go before OUT_DIR (got: $*)" >&2
  exit 2
fi
out="${1:-${OUT:-gpu-session-out}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
calibration="$out/calibration.json"
start=$SECONDS

step() {  # NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2 left=$((budget - (SECONDS - start)))
  shift 2
  case ",$steps," in *",$name,"*) ;; *) return ;; esac
  if [ "$left" -lt "$limit" ]; then
    echo "== $name: skipped (${left}s left of the budget, it needs ${limit}s)"
    return
  fi
  echo "== $name (at most ${limit}s)"
  local began=$SECONDS rc=0
  timeout "$limit" "$@" > "$out/$name.log" 2>&1 || rc=$?
  echo "   exit $rc after $((SECONDS - began))s: $(tail -n 1 "$out/$name.log" | cut -c1-300)"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  timeout 120 "$py" -c "import jax; print('jax', jax.__version__, jax.devices())"; } > "$out/device.txt" 2>&1
cat "$out/device.txt"
memory_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1)

if [ -n "$quick" ]; then
  toy=jaxalign/assets/toy
  step gpu_decode 120 "$py" bench/gpu_decode.py --quick
  step gpu_ragged_decode 150 "$py" bench/gpu_ragged_decode.py --quick
  step calibrate_student 120 "$py" -m jaxalign.calibrate --file "$calibration" --dtype float32 --student "$toy/student"
  step phase2_scale 240 "$py" bench/phase2_scale.py --quick
  step calibrate_grid 120 "$py" -m jaxalign.calibrate --file "$calibration" --dtype float32 \
    --student "$toy/teacher"
  step calibrate_context 120 "$py" -m jaxalign.calibrate --file "$calibration" --dtype float32 \
    --student "$toy/student" --context "$toy/teacher"
else
  step gpu_decode 120 "$py" bench/gpu_decode.py
  step gpu_ragged_decode 150 "$py" bench/gpu_ragged_decode.py --rows 128 --limit 2048 --eos-every 256
  step calibrate_student 180 "$py" -m jaxalign.calibrate --file "$calibration" --student Qwen/Qwen3-0.6B
  step phase2_scale 150 "$py" bench/phase2_scale.py
  step calibrate_grid 240 "$py" -m jaxalign.calibrate --file "$calibration" --student Qwen/Qwen3-1.7B \
    --teacher Qwen/Qwen3-4B --teacher Qwen/Qwen3-8B --teacher Qwen/Qwen3-14B
  if [ "${memory_mib:-0}" -ge 100000 ]; then
    step calibrate_context 360 "$py" -m jaxalign.calibrate --file "$calibration" --student Qwen/Qwen3-0.6B \
      --context Qwen/Qwen3-32B
  else
    case ",$steps," in *",calibrate_context,"*)
      echo "== calibrate_context: skipped (Qwen3-32B needs a card of >= 100 GB; this one has ${memory_mib:-no} MiB)" ;;
    esac
  fi
fi
echo "== done in $((SECONDS - start))s; results in $out"
