"""How far each convention's estimated cosine is from its exact value, on ExactPolicy.

    python bench/convention_error.py [--quick]

The pipeline runs on ExactPolicy questions (tilted, anti-tilted and noise teachers, N_min = 60,
as tests/pipeline_worker.py). For every valid GKD row, the exact cosine uses the exact child
P_succ (and, for the paper convention, the node's exact P_succ and the full-vocabulary KL) on the
same S_u. Reports the mean and 90th percentile of |estimate - exact| and the share of sign
disagreements per convention, split by |S_u| = 2 and >= 3. Last line: JSON.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _common import parser, report  # noqa: E402

from tests.pipeline_worker import exact_errors, exact_run  # noqa: E402

CONVENTIONS = ("renormalized", "paper")


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    seeds = range(4) if args.quick else range(12)
    found = {c: {"two": [], "more": []} for c in CONVENTIONS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            run = exact_run(seed, tmp)
            if run.run()["skipped"]:
                continue
            rows = pq.read_table(Path(tmp) / "questions" / f"{run.qid}.parquet").to_pylist()
            for convention in CONVENTIONS:
                for size in ("two", "more"):
                    keep = [r for r in rows if (r["s_u_size"] == 2) == (size == "two")]
                    found[convention][size].extend(e for errs in exact_errors(run, keep, convention=convention).values()
                                                   for e in errs)
    figures = {}
    for convention, sizes in found.items():
        for size, errs in sizes.items():
            errs = np.array(errs)
            figures[f"{convention}_{size}"] = {"rows": int(len(errs)), "mae": round(float(errs.mean()), 4),
                                               "p90": round(float(np.quantile(errs, 0.9)), 4),
                                               "sign_flips": round(float((errs > 1.0).mean()), 4)}
            print(convention, size, figures[f"{convention}_{size}"], flush=True)
    report("convention_error", {"quick": args.quick, "questions": len(seeds), **figures})


if __name__ == "__main__":
    main()
