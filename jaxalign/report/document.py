"""report.md: what was analysed, how the statistics work, the headline tables, links to the rest.

The text depends only on result files, never on wall-clock time or the directory's path, so a
report rebuilt from the same results (or from merged shards) is byte-identical.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxalign.report.load import DEFAULT_CONVENTION, Rows, Run
from jaxalign.report.stats import DRAWS, SHARED
from jaxalign.report.tables import (ALL_TEACHERS, MAIN_ALGORITHM, REFERENCE, TEACHER_FREE, Table,
                                    question_status, skip_reason)

STATISTICS = f"""## How the statistics are computed

- **Unit: the question.** Paths of one question share prefix nodes and rollouts, so every 95% CI is a
  cluster bootstrap by question ({DRAWS} resamples of whole questions, fixed seed; expanded percentile
  interval, which keeps 95% coverage down to about 10 questions) of the pooled statistic.
- **A node counts once.** Rows repeat a node once per path through it; pooled statistics count each
  (question, node, teacher, algorithm, convention) once per split.
- **Correct vs incorrect** leaves out *shared* nodes (on both a correct and an incorrect path) and
  states how many. Two tests are given: Welch's t over per-path means (the paper's unit) and a
  Wilcoxon signed-rank test over questions, paired on each question's correct and incorrect means.
  Welch treats paths as independent, though a question's paths share prefix nodes and difficulty;
  the paired test does not, but it needs at least 6 questions to reach p < 0.05.
- **|S_u| = 2 vs ≥ 3.** At a two-child node a renormalised cosine is exactly ±1 (a sign test), so
  tables split by |S_u|.
- **Dr. GRPO** (`drgrpo_mc`) does not depend on the teacher; it appears once, as `{REFERENCE}`.
- Weighted cosine = Σ w·cos / Σ w and mean signal = mean(w·cos), with w = the node's SR range.
"""


def _count(rows: Rows) -> tuple[int, int]:
    """(paths, distinct nodes) behind rows."""
    if not len(rows):
        return 0, 0
    paths = len(np.unique(rows["qid"].astype(np.int64) * (1 << 20) + rows["path"]))
    nodes = len(np.unique(rows["qid"].astype(np.int64) * (1 << 40) + rows["node"]))
    return paths, nodes


def overview(run: Run, rows: Rows) -> list[str]:
    questions = run.questions
    status = [question_status(q) for q in questions]
    paths_total = correct_total = 0
    for q, s in zip(questions, status):
        if s != "skipped":
            tree = run.tree(q["qid"])
            if tree is not None:
                paths_total += len(tree["path_correct"])
                correct_total += int(tree["path_correct"].sum())
    paths, nodes = _count(rows)
    shared_paths, shared = _count(rows.where(rows["split"] == SHARED)) if len(rows) else (0, 0)
    counted = rows.where(rows["first"] & ~rows.is_("teacher", REFERENCE))
    reasons = skip_reason(counted)
    invalid = {r: int((reasons == r).sum()) for r in sorted(set(reasons.tolist()) - {""})}
    budget = [q.get("budget", {}) for q in questions]
    lines = [
        "## What was analysed", "",
        "| questions | count |", "|---|---:|",
        f"| analysed (≥ 1 decision node) | {status.count('analysed')} |",
        f"| no decision nodes | {status.count('no decision nodes')} |",
        f"| skipped (initial rollouts all of one outcome) | {status.count('skipped')} |",
        f"| total | {len(questions)} |", "",
        f"- **Paths:** {paths_total} representative paths in the questions not skipped ({correct_total} correct, "
        f"{paths_total - correct_total} incorrect); {paths} of them pass at least one decision node.",
        f"- **Decision nodes:** {nodes} distinct (question, node) pairs. {shared} of them lie on both a correct and "
        "an incorrect path (*shared*) and are left out of every correct-vs-incorrect statistic.",
        f"- **Undefined cosines:** {sum(invalid.values())} of {len(counted)} (node, teacher, algorithm) scores"
        + (" (" + ", ".join(f"{k}: {v}" for k, v in invalid.items()) + ")" if invalid else "")
        + "; see [skipped nodes](tables/skipped_nodes.md).",
        f"- **Budget:** {sum(b.get('rollouts', 0) for b in budget):,} rollouts, {sum(b.get('tokens', 0) for b in budget):,} "
        "tokens. Device time is in [the budget table](tables/budget.md); it differs between reruns, so it is "
        "kept out of this file.",
    ]
    if "skipped" in status or "no decision nodes" in status:
        lines.append("- Why questions were not analysed: [skipped questions](tables/skipped_questions.md).")
    return lines


def _headline(table: Table, **equal) -> Table:
    main = table.where(algorithm=MAIN_ALGORITHM, convention=DEFAULT_CONVENTION, **equal)
    reference = [r for r in table.rows if r.get("algorithm") in TEACHER_FREE and
                 r.get("convention") == DEFAULT_CONVENTION and all(r.get(k) == v for k, v in equal.items())]
    return Table(main.name, main.title, main.columns, main.rows + reference, main.notes).drop("algorithm", "convention")


def run_markdown(run: Run, rows: Rows, tables: dict[str, Table], figures: Sequence[str], pages: int,
                 weights: int) -> str:
    conventions = rows.present("convention") if len(rows) else []
    lines = [f"# jaxalign report: {run.title}", "",
             f"Teachers: {', '.join(run.config.get('teachers', {})) or '?'}. Algorithms: "
             f"{', '.join(rows.present('algorithm')) if len(rows) else 'none'}. Conventions: "
             f"{', '.join(conventions) or 'none'}. Tables below show `{MAIN_ALGORITHM}` under the "
             f"`{DEFAULT_CONVENTION}` convention; [all tables](#all-tables) cover every algorithm and convention.", ""]
    lines += overview(run, rows) + ["", STATISTICS]
    sections = [
        ("Teacher ranking (Table 1)", _headline(tables["t1_teacher_ranking"])),
        ("Correct vs incorrect paths (Table 4)", _headline(tables["t4_correct_vs_incorrect"], s_u="all")),
        ("Per teacher (Table 6, mean cosine)", _headline(tables["t6_correct_vs_incorrect_by_teacher"], s_u="all",
                                                          metric="mean cosine")),
        ("Selective distillation oracle (Table 2)", _headline(tables["t2_selective_oracle"])),
        ("Ranking by other metrics (Table 3)", _headline(tables["t3_teacher_ranking_alternatives"], s_u="all")),
        ("Within-path Spearman (Table 5)", _headline(tables["t5_spearman"], teacher=ALL_TEACHERS)),
        ("Difficulty", tables["questions_by_difficulty"]),
    ]
    for heading, table in sections:
        lines += [f"## {heading}", "", table.markdown(heading="####").split("\n", 2)[2]]
    if figures:
        lines += ["## Figures", ""] + [f"![{name.replace('_', ' ')}](figures/{name}.png)" for name in figures] + [""]
    lines += ["## All tables", ""]
    lines += [f"- [{t.title}](tables/{t.name}.md) ([csv](tables/{t.name}.csv))" for t in tables.values()]
    lines += ["", "## Per-token view and weights", "",
              f"- [{pages} pages, one per (question, teacher)](html/index.html): each path's tokens coloured by "
              "alignment; hover a token for its S_u children." if pages else "- No per-token pages (no trees).",
              f"- `token_weights.parquet`: {weights} rows (qid, path, depth, token, teacher, cosine, sr_range, "
              f"advantage, weight), weight = max(0, cosine) × SR range of `{MAIN_ALGORITHM}`.", ""]
    return "\n".join(lines)


def sweep_markdown(runs: Sequence[tuple[str, str]], tables: Sequence[Table], figure: str | None) -> str:
    """``runs``: (name, title) of each run; tables from :func:`jaxalign.report.tables.sweep_tables`."""
    lines = ["# jaxalign sweep report", "", f"{len(runs)} runs; each has its own report:", ""]
    lines += [f"- [{name}](../{name}/report/report.md): {title}" for name, title in runs]
    lines += ["", "Runs are never pooled: each column or row below is one run.", "", STATISTICS]
    for table in tables:
        lines += [table.markdown(heading="##"), f"([csv](tables/{table.name}.csv))", ""]
    if figure:
        lines += [f"![teacher ranking per run](figures/{figure}.png)", ""]
    return "\n".join(lines)
