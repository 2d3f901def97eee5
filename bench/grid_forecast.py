"""The paper's grid priced by the dry run's cost model: A100-days per run and in total.

    python bench/grid_forecast.py [--calibration FILE ...] [--device KIND]

The grid: 2 students (Qwen3-0.6B, 1.7B) x paper8 x {BoolQ, MMLU, AIME 2025} at ``budget=paper``,
over Table 7's screened question counts (BoolQ 458 / 463, MMLU 364 / 350 for 0.6B / 1.7B) and the
2-question AIME case study per student (``max_response_tokens=32768``, ``n_sig=40``). Every run is
priced as ``dry_run=true`` prices it (:func:`jaxalign.cost.forecast`), projected onto the A100 data
sheet at the calibration's roofline fraction, for:

* budget: fixed N_min = 100, and adaptive (``budget.adaptive=true``, at the same alignment error);
* decoder (``decode_attention``): ``xla`` (each row reads the window of its call's furthest row) and
  ``ragged`` (each row reads its own slots: the Pallas kernel, not yet measured on a GPU);
* ``floor``: the ragged calls at 100% of the A100 roofline with no fixed costs or compilation,
  a lower bound for an engine that generates the same tokens at bf16 with this batch layout;
* ``pre-pass``: the part of the ragged price spent in the context pre-pass (the student's and
  Qwen3-32B's demonstrations, Qwen3-32B's summaries).

The default calibration is the recorded CPU one in tests/fixtures (its projection is indicative:
a CPU's fraction of its roofline is not a GPU's). ``--device``: the device whose calibration prices
the grid, as the file names it (default: the file's only device). A GPU's file comes from
``bench/gpu_session.sh``. The last line is JSON.
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, report  # noqa: E402

from jaxalign import calibrate as cal  # noqa: E402
from jaxalign import cost  # noqa: E402
from jaxalign.config import DECODE_ATTENTION, question_count  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AIME = ["budget.max_response_tokens=32768", "budget.n_sig=40"]
RUNS = [("qwen3-0.6b", "boolq", 458, []), ("qwen3-0.6b", "mmlu", 364, []), ("qwen3-0.6b", "aime2025", 2, AIME),
        ("qwen3-1.7b", "boolq", 463, []), ("qwen3-1.7b", "mmlu", 350, []), ("qwen3-1.7b", "aime2025", 2, AIME)]


def floor_days(cfg, models) -> float:
    """A100-days of the run's ragged-decoder work at 100% of the A100 roofline (no overheads)."""
    a100 = cal.SPECS["A100"]
    plan = cost.question_plan(cfg, models, cost.trace_lengths(cfg), decode_attention="ragged")
    seconds = sum(w.count * a100.roofline(w.roofline_work(w.model.shape), w.model.shape.dtype) for w in plan.work)
    return question_count(cfg) * seconds / 86400


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--calibration", action="append", default=None,
                    help="a calibration file; repeat it to merge files (e.g. one per device call)")
    ap.add_argument("--device", default=None, help="the calibrated device to price with (default: the file's only one)")
    args = ap.parse_args()
    files = args.calibration or [str(ROOT / "tests" / "fixtures" / "calibration_cpu.json")]
    merged: dict = {}
    for name in files:
        if not Path(name).is_file():
            sys.exit(f"grid_forecast: no calibration file {name}")
        data = json.loads(Path(name).read_text())
        merged.setdefault("version", data.get("version"))
        for kind, entry in data.get("devices", {}).items():
            mine = merged.setdefault("devices", {}).setdefault(kind, {**entry, "shapes": {}})
            mine["shapes"].update(entry.get("shapes", {}))
    devices = list(merged.get("devices", {}))
    device = args.device or (devices[0] if len(devices) == 1 else None)
    if device not in devices:
        sys.exit(f"grid_forecast: name one of the calibrated devices with --device: {devices}")
    if len(files) > 1:  # one file for cal.ensure, which reads (and never writes, for another device) it
        args.calibration = str(Path(tempfile.mkdtemp()) / "merged.json")
        Path(args.calibration).write_text(json.dumps(merged))
    else:
        args.calibration = files[0]
    totals, table = {}, []
    for adaptive in (False, True):
        budget = "adaptive" if adaptive else "fixed"
        for student, dataset, questions, extra in RUNS:
            cfg = cost.compose([f"student={student}", "teachers=paper8", f"dataset={dataset}", "budget=paper",
                                f"dataset.num_questions={questions}", f"budget.adaptive={str(adaptive).lower()}",
                                *extra])
            models = cost.run_models(cfg)
            calibration = cal.ensure(models.needs(), cal.calibration_path(args.calibration), device)
            row = {"budget": budget, "run": f"{student} {dataset}", "questions": questions}
            for mode in DECODE_ATTENTION:
                f = cost.forecast(cfg, calibration, models=models, decode_attention=mode)
                row[mode] = f["projections"]["A100"]["gpu_days"]
                row["rollouts_per_question"] = f["rollouts_per_question"]
                row[f"prepass_{mode}"] = f["projections"]["A100"]["prepass_gpu_hours"] / 24
            row["floor"] = floor_days(cfg, models)
            table.append(row)
            for key in (*DECODE_ATTENTION, "floor", "prepass_ragged"):
                totals[f"{budget}_{key}"] = totals.get(f"{budget}_{key}", 0.0) + row[key]
    print(f"{'budget':9s} {'run':22s} {'rollouts/q':>10s} {'xla':>9s} {'ragged':>9s} {'floor':>9s} "
          f"{'pre-pass':>9s}  (A100-days; pre-pass: of ragged)")
    for r in table:
        print(f"{r['budget']:9s} {r['run']:22s} {r['rollouts_per_question']:10.0f} {r['xla']:9.2f} "
              f"{r['ragged']:9.2f} {r['floor']:9.2f} {r['prepass_ragged']:9.2f}")
    report("grid_forecast", {"a100_days": {k: round(v, 2) for k, v in totals.items()},
                             "calibration": args.calibration, "device": device, "runs": table})


if __name__ == "__main__":
    main()
