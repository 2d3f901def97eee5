"""Reports from result files: the paper's tables with honest statistics, figures, per-token pages.

``python -m jaxalign.report RUN_OR_SWEEP_DIR`` merges shards and rebuilds every report below the
directory (:mod:`jaxalign.aggregate`). One run's report, in ``RUN/report/``:

  report.md                 what was analysed or skipped and why, the statistics, headline tables
  summary.csv               one line per (teacher, algorithm, convention)
  tables/<name>.md, .csv    Tables 1-6, difficulty, skipped questions and nodes, budget, divergence
                            filters, the multi-teacher oracle (and a screening hook for Tables 7-9)
  figures/<name>.png, .svg  teacher ranking, correct vs incorrect, alignment along a path, the
                            alignment histogram, the oracle curve
  html/<qid>__<teacher>.html, html/index.html   the per-token view
  token_weights.parquet     per-token distillation weights, max(0, cosine) x SR range

A sweep directory also gets ``SWEEP/report/`` with its runs side by side. Modules: load (files to
columns), stats (numpy/scipy statistics), tables, plots, html, document (report.md).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional

from jaxalign.errors import IncompleteResults
from jaxalign.files import atomic_write, write_text
from jaxalign.report.load import Rows, Run, load_runs
from jaxalign.report.tables import Table

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunReport:
    run: Run
    rows: Rows  # prepared (jaxalign.report.tables.prepare)
    tables: dict[str, Table]


def analyse(run: Run) -> RunReport:
    """Prepared rows and every table of one run (no files written)."""
    from jaxalign.report import tables

    rows = tables.prepare(run.rows)
    built = tables.run_tables(rows, run.questions, run.root, run.config)
    return RunReport(run, rows, {t.name: t for t in [tables.summary_table(rows), *built]})


def _write_tables(out: Path, tables: list[Table]) -> None:
    for table in tables:
        write_text(out / "tables" / f"{table.name}.md", table.markdown(heading="#"))
        write_text(out / "tables" / f"{table.name}.csv", table.csv())


def _write_parquet(path: Path, columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    atomic_write(path, lambda p: pq.write_table(pa.table(columns), p))


def check_complete(run: Run) -> None:
    """Raises IncompleteResults naming every question whose files are missing, damaged or unfinished."""
    if run.damaged:
        listed = "; ".join(run.damaged.values())
        raise IncompleteResults(
            f"{run.root}: {len(run.damaged)} question(s) are not complete: {listed}. Rerun the run's command: "
            "it recomputes them (from their checkpoints where they are) and rebuilds the report; or pass "
            "--force to build from the intact questions only")


def write_report(run_dir: str | Path, *, figures: bool = True, pages: bool = True, force: bool = False) -> str:
    """Rebuilds ``run_dir/report/`` from the run's result files; returns report.md's text.

    Refuses (IncompleteResults) when a question's files are missing or do not match their manifest,
    unless ``force``, which builds from the intact questions and says so at the top of report.md.
    """
    from jaxalign.report import document, html, plots, tables

    run = Run(Path(run_dir), ".")
    if not force:
        check_complete(run)
    built = analyse(run)
    out = run.root / "report"
    summary = built.tables["summary"]
    write_text(out / "summary.csv", summary.csv())
    _write_tables(out, [t for name, t in built.tables.items() if name != "summary"])
    weights = tables.token_weights(built.rows)
    _write_parquet(out / "token_weights.parquet", weights)
    drawn = plots.write_figures(built.rows, built.tables, out / "figures", run.title) if figures else []
    entries = html.write_pages(run, built.rows, out / "html") if pages else []
    text = document.run_markdown(run, built.rows, {k: v for k, v in built.tables.items() if k != "summary"},
                                 drawn, len(entries), len(weights["qid"]))
    if run.damaged:
        lines = "\n".join(f"> - {problem}" for problem in run.damaged.values())
        text = (f"> **Built with --force from incomplete results**: {len(run.damaged)} question(s) left out:\n"
                f"{lines}\n\n{text}")
    write_text(out / "report.md", text)
    return text


def write_sweep_report(root: str | Path, runs: Optional[list[Run]] = None, force: bool = False) -> str:
    """Writes ``root/report/``: the runs under ``root`` side by side. Returns its report.md text."""
    from jaxalign.report import document, plots, tables

    root = Path(root)
    runs = runs if runs is not None else load_runs(root)
    for run in runs if not force else []:
        check_complete(run)
    built = [analyse(run) for run in runs]
    side = tables.sweep_tables([(b.run.name, b.run.config, b.tables) for b in built])
    out = root / "report"
    _write_tables(out, side)
    figure = plots.sweep_ranking([(b.run.name, b.tables["t1_teacher_ranking"]) for b in built], out / "figures")
    text = document.sweep_markdown([(b.run.name, b.run.title) for b in built], side, figure)
    write_text(out / "report.md", text)
    return text


__all__ = ["RunReport", "analyse", "load_runs", "write_report", "write_sweep_report"]
