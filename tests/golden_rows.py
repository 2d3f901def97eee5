"""Compare a run's result rows with the golden rows recorded before a refactor of the pipeline.

tests/golden/<name>/ holds questions/*.parquet and *.json of a run made by the code before the
streamed, on-device scoring (the rows of the existing algorithms, renormalised convention). A new
run must choose the same pairs and spend the same budget, so every discrete column and the budget
are equal; the float columns agree to float32 round-off of the chunked prefill.
"""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

GOLDEN = Path(__file__).resolve().parent / "golden"


def assert_rows_match_golden(run_dir: Path, name: str, atol: float = 1e-3) -> None:
    golden = GOLDEN / name
    files = sorted(golden.glob("*.parquet"))
    assert files, f"no golden rows in {golden}"
    for want_path in files:
        want = pq.read_table(want_path).to_pydict()
        got = pq.read_table(Path(run_dir) / "questions" / want_path.name).to_pydict()
        keep = np.ones(len(got["qid"]), bool)
        if "convention" in got:  # rows of later conventions are new, not changed
            keep = np.array(got["convention"]) == "renormalized"
        if "algorithm" in got:
            keep &= np.isin(got["algorithm"], sorted(set(want["algorithm"]) or {""}))
        for column, values in want.items():
            mine = np.array(got[column])[keep]
            theirs = np.array(values)
            assert len(mine) == len(theirs), (want_path.name, column, len(mine), len(theirs))
            if theirs.dtype.kind == "f":
                np.testing.assert_allclose(mine, theirs, atol=atol, rtol=0, err_msg=f"{want_path.name}:{column}")
            else:
                np.testing.assert_array_equal(mine, theirs, err_msg=f"{want_path.name}:{column}")
        summary = json.loads((golden / want_path.with_suffix(".json").name).read_text())
        mine = json.loads((Path(run_dir) / "questions" / want_path.with_suffix(".json").name).read_text())
        assert mine["budget"] == summary["budget"] and mine["pass_rate"] == summary["pass_rate"], want_path.name
