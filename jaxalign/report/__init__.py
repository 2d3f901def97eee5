"""Reports from result files: per-teacher, per-algorithm alignment tables.

``python -m jaxalign.report RUN_DIR`` rebuilds ``RUN_DIR/report/`` from ``questions/*.parquet``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from jaxalign.files import write_text

COLUMNS = ("teacher", "algorithm", "nodes", "skipped", "mean_cosine", "ci95", "weighted_cosine", "mean_signal",
           "frac_positive", "mean_cos_correct", "mean_cos_incorrect")


def load_rows(run_dir: str | Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for path in sorted((Path(run_dir) / "questions").glob("*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """One line per (teacher, algorithm) over valid nodes; weights are SR ranges (docs/math.md)."""
    out = []
    for teacher, algorithm in sorted({(r["teacher"], r["algorithm"]) for r in rows}):
        sel = [r for r in rows if r["teacher"] == teacher and r["algorithm"] == algorithm]
        ok = [r for r in sel if r["valid"]]
        cos = np.array([r["cosine"] for r in ok])
        w = np.array([r["sr_range"] for r in ok])
        by = {c: np.array([r["cosine"] for r in ok if r["correct"] == c]) for c in (True, False)}
        mean = lambda a: float(a.mean()) if len(a) else float("nan")  # noqa: E731
        out.append({
            "teacher": teacher, "algorithm": algorithm, "nodes": len(ok), "skipped": len(sel) - len(ok),
            "mean_cosine": mean(cos), "ci95": float(1.96 * cos.std(ddof=1) / np.sqrt(len(cos))) if len(cos) > 1 else float("nan"),
            "weighted_cosine": float((w * cos).sum() / w.sum()) if len(cos) and w.sum() > 0 else float("nan"),
            "mean_signal": mean(w * cos), "frac_positive": mean(cos > 0),
            "mean_cos_correct": mean(by[True]), "mean_cos_incorrect": mean(by[False]),
        })
    return out


def markdown(summary: list[dict], questions: list[dict]) -> str:
    done = [q for q in questions if not q.get("skipped")]
    lines = [
        "# jaxalign report", "",
        f"{len(questions)} questions, {len(done)} analysed, {len(questions) - len(done)} skipped "
        "(all initial rollouts with one outcome).", "",
        "| teacher | algorithm | nodes | mean cos ± 95% CI | weighted cos | mean signal | frac > 0 | cos correct | cos incorrect |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(f"| {s['teacher']} | {s['algorithm']} | {s['nodes']} | {s['mean_cosine']:+.3f} ± {s['ci95']:.3f} | "
                     f"{s['weighted_cosine']:+.3f} | {s['mean_signal']:+.4f} | {s['frac_positive']:.2f} | "
                     f"{s['mean_cos_correct']:+.3f} | {s['mean_cos_incorrect']:+.3f} |")
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path) -> str:
    """Writes report/summary.csv and report/report.md; returns the markdown."""
    run_dir = Path(run_dir)
    summary = summarize(load_rows(run_dir))
    questions = [json.loads(p.read_text()) for p in sorted((run_dir / "questions").glob("*.json"))]
    out = run_dir / "report"
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(summary)
    write_text(out / "summary.csv", table.getvalue())
    text = markdown(summary, questions)
    write_text(out / "report.md", text)
    return text
