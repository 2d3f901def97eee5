"""The report's tables (the paper's Tables 1-6 and what they leave out), as markdown and CSV.

Every table is built from *prepared* rows (:func:`prepare`):

* ``first`` marks one row per (question, node, teacher, algorithm, convention). Rows repeat a
  node once per path through it; pooled statistics count the node once.
* ``split`` is CORRECT, INCORRECT or SHARED (on paths of both outcomes). Correct-vs-incorrect
  statistics leave SHARED nodes out and say how many.
* Teacher-free algorithms (Dr. GRPO) keep one teacher's rows, relabelled ``(reward reference)``.

Statistics and their intervals are described in :mod:`jaxalign.report.stats`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
from typing import Callable, Optional, Sequence

import numpy as np

from jaxalign.report import stats
from jaxalign.report.load import DEFAULT_CONVENTION, Rows
from jaxalign.report.stats import CORRECT, INCORRECT, SHARED, Estimate

TEACHER_FREE = ("drgrpo_mc",)  # algorithms whose gradient does not involve the teacher
REFERENCE = "(reward reference)"
MAIN_ALGORITHM = "gkd"
ALL_TEACHERS = "all teachers"
SU_SPLITS = ("all", "2", "3+")  # |S_u|: at 2 children a renormalised cosine is exactly +-1
ORACLE_THRESHOLDS = (0.0, 0.3, 0.5)
CURVE_THRESHOLDS = tuple(np.round(np.linspace(-1.0, 0.95, 40), 3))
FILTER_FEATURES = ("kl", "js", "l2")
FILTER_KEEP = (0.75, 0.5, 0.25)  # the share of nodes a filter keeps: those with the largest feature values
SPEARMAN_FEATURES = (("norm_depth", "depth (normalized)"), ("kl", "KL(p||q)"), ("js", "JS divergence"),
                     ("l2", "L2 distance"), ("cos_pq", "cosine(p, q)"))
DIFFICULTY = ("easy", "medium", "hard", "extremely hard")
SCREENING_DIR = "screening"


# ----------------------------------------------------------------------------------------- Table
@dataclasses.dataclass(frozen=True)
class Column:
    key: str
    header: str
    fmt: str = ""  # a format spec for numbers; "p" for p-values, "%" for fractions as percent


@dataclasses.dataclass
class Table:
    """A titled table. Cells are str, int, float or Estimate (one markdown cell, three CSV columns)."""

    name: str
    title: str
    columns: list[Column]
    rows: list[dict]
    notes: list[str] = dataclasses.field(default_factory=list)

    def where(self, **equal) -> "Table":
        keep = [r for r in self.rows if all(r.get(k) == v for k, v in equal.items())]
        return dataclasses.replace(self, rows=keep)

    def drop(self, *keys: str) -> "Table":
        return dataclasses.replace(self, columns=[c for c in self.columns if c.key not in keys])

    def markdown(self, heading: str = "###") -> str:
        lines = [f"{heading} {self.title}", ""]
        if self.notes:
            lines += [f"{n}  " for n in self.notes] + [""]
        if not self.rows:
            return "\n".join(lines + ["(no data)", ""])
        lines.append("| " + " | ".join(c.header for c in self.columns) + " |")
        lines.append("|" + "|".join("---" if c.fmt in ("", "s") else "---:" for c in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(row.get(c.key), c.fmt).replace("|", "\\|") for c in self.columns)
                         + " |")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """An Estimate column becomes three: KEY, KEY_low, KEY_high (empty where undefined)."""
        estimate = {c.key for c in self.columns if any(isinstance(r.get(c.key), Estimate) for r in self.rows)}
        header = []
        for c in self.columns:
            header += [c.key, f"{c.key}_low", f"{c.key}_high"] if c.key in estimate else [c.key]
        out = io.StringIO(newline="")
        writer = csv.writer(out)
        writer.writerow(header)
        for row in self.rows:
            cells = []
            for c in self.columns:
                v = row.get(c.key)
                if c.key in estimate:
                    cells += [_raw(v.value), _raw(v.low), _raw(v.high)] if v is not None else ["", "", ""]
                else:
                    cells.append(_raw(v))
            writer.writerow(cells)
        return out.getvalue()


def _raw(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else repr(float(v))
    return str(v)


def _number(v: float, fmt: str) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    if fmt == "p":
        return f"{v:.2g}" if v >= 1e-3 else f"{v:.0e}"
    if fmt == "%":
        return f"{100 * v:.1f}%"
    return format(v, fmt)


def _cell(v, fmt: str) -> str:
    if isinstance(v, Estimate):
        if not np.isfinite(v.low):
            return _number(v.value, fmt)
        return f"{_number(v.value, fmt)} [{_number(v.low, fmt)}, {_number(v.high, fmt)}]"
    if isinstance(v, (float, np.floating)):
        return _number(float(v), fmt)
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    return "–" if v is None else str(v)


# ----------------------------------------------------------------------------------------- rows
def prepare(rows: Rows) -> Rows:
    """Adds ``split`` and ``first`` (see the module docstring); teacher-free algorithms keep one teacher."""
    if len(rows) == 0:
        return rows.with_columns(split=np.zeros(0, np.int8), first=np.zeros(0, bool))
    split = stats.node_split(rows["qid"], rows["node"], rows["correct"])
    teachers = rows.decoded("teacher")
    free = np.isin(rows.decoded("algorithm"), TEACHER_FREE)
    keep = ~free | (rows["teacher"] == rows["teacher"][free].min(initial=0))
    teachers = np.where(free, REFERENCE, teachers)
    labels, codes = np.unique(teachers.astype(str), return_inverse=True)
    out = Rows({**rows.columns, "teacher": codes.reshape(-1).astype(np.int32), "split": split},
               {**rows.labels, "teacher": tuple(labels.tolist())}).where(keep)
    first = stats.first_occurrence(out["qid"], out["node"], out["teacher"], out["algorithm"], out["convention"])
    return out.with_columns(first=first)


def su_mask(rows: Rows, su: str) -> np.ndarray:
    size = rows["s_u_size"]
    return {"all": np.ones(len(rows), bool), "2": size == 2, "3+": size >= 3}[su]


# A metric is (num, den, usable) over rows: its value is sum(num) / sum(den) over usable rows.
def _cos(rows: Rows) -> np.ndarray:
    return np.where(rows["valid"], rows["cosine"], 0.0)


METRICS: dict[str, tuple[str, Callable[[Rows], tuple[np.ndarray, np.ndarray, np.ndarray]]]] = {
    "mean_cosine": ("mean cosine", lambda r: (_cos(r), np.ones(len(r)), r["valid"])),
    "weighted_cosine": ("weighted cosine (SR range)", lambda r: (r["sr_range"] * _cos(r), r["sr_range"], r["valid"])),
    "frac_positive": ("fraction positive", lambda r: ((_cos(r) > 0).astype(float), np.ones(len(r)), r["valid"])),
    "mean_signal": ("mean signal (SR range x cosine)", lambda r: (r["sr_range"] * _cos(r), np.ones(len(r)), r["valid"])),
    "advantage": ("teacher advantage", lambda r: (np.nan_to_num(r["advantage"]), np.ones(len(r)),
                                                 np.isfinite(r["advantage"]))),
}


def metric(rows: Rows, name: str) -> tuple[Estimate, Rows]:
    """The pooled metric over the counted (first) rows with its cluster-bootstrap interval, and the
    rows it may use (every path's copy, for :func:`counts`)."""
    num, den, usable = METRICS[name][1](rows)
    use = usable & rows["first"]
    return stats.ratio(num[use], den[use], rows["qid"][use]), rows.where(usable)


def counts(rows: Rows) -> dict:
    """n: questions, paths (question, path) and nodes (counted rows) behind a selection of rows."""
    if len(rows) == 0:
        return {"n_questions": 0, "n_paths": 0, "n_nodes": 0}
    return {"n_questions": len(np.unique(rows["qid"])), "n_paths": stats.group_codes(rows["qid"], rows["path"])[1],
            "n_nodes": int(rows["first"].sum())}


def _group_ratio(num: np.ndarray, den: np.ndarray, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sum(num)/sum(den) per group of keys; returns (values [G], the first row index of each group [G])."""
    codes, n = stats.group_codes(*keys)
    top, bottom = np.bincount(codes, num, n), np.bincount(codes, den, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = top / bottom
    first = np.unique(codes, return_index=True)[1]
    return value[bottom > 0], first[bottom > 0]


N_COLUMNS = [Column("n_questions", "questions", "d"), Column("n_paths", "paths", "d"), Column("n_nodes", "nodes", "d")]


def _scopes(rows: Rows) -> list[tuple[str, str, str]]:
    """The (teacher, algorithm, convention) triples present, teacher-dependent algorithms first."""
    codes, _ = stats.group_codes(rows["algorithm"], rows["convention"], rows["teacher"])
    first = np.unique(codes, return_index=True)[1]
    out = [(rows.labels["teacher"][rows["teacher"][i]], rows.labels["algorithm"][rows["algorithm"][i]],
            rows.labels["convention"][rows["convention"][i]]) for i in first]
    return sorted(out, key=lambda k: (k[1] in TEACHER_FREE, k[1] != MAIN_ALGORITHM, k[1], k[2], k[0]))


def select(rows: Rows, teacher: Optional[str] = None, algorithm: Optional[str] = None,
           convention: Optional[str] = None, su: str = "all") -> Rows:
    mask = su_mask(rows, su)
    for column, label in (("teacher", teacher), ("algorithm", algorithm), ("convention", convention)):
        if label is not None:
            mask &= rows.is_(column, label)
    return rows.where(mask)


def _algorithms(rows: Rows) -> list[tuple[str, str]]:
    """(algorithm, convention) pairs present, the main algorithm first."""
    pairs = {(a, c) for _, a, c in _scopes(rows)}
    return sorted(pairs, key=lambda k: (k[0] in TEACHER_FREE, k[0] != MAIN_ALGORITHM, k[0], k[1]))


def _teachers(rows: Rows) -> list[str]:
    return [t for t in rows.present("teacher") if t != REFERENCE]


# ----------------------------------------------------------------------------------------- Tables 1, 3
def _cells(rows: Rows):
    """(algorithm, convention, |S_u| split, teacher, its rows) for every non-empty cell, grouped in that order."""
    for algorithm, convention in _algorithms(rows):
        for su in SU_SPLITS:
            for teacher in rows.present("teacher"):
                sel = select(rows, teacher, algorithm, convention, su)
                if len(sel):
                    yield algorithm, convention, su, teacher, sel


def teacher_ranking(rows: Rows) -> Table:
    """Table 1: mean alignment with 95% CIs across questions, per teacher, algorithm, convention and |S_u|."""
    out = []
    # one ranking per (algorithm, convention, |S_u|)
    for _, cells in itertools.groupby(_cells(rows), key=lambda cell: cell[:3]):
        block = []
        for algorithm, convention, su, teacher, sel in cells:
            est, used = metric(sel, "mean_cosine")
            block.append({"algorithm": algorithm, "convention": convention, "s_u": su, "teacher": teacher,
                          "mean_cosine": est, **counts(used)})
        ranked = sorted(block, key=lambda r: -np.nan_to_num(r["mean_cosine"].value, nan=-9))
        out += [{**r, "rank": i + 1} for i, r in enumerate(ranked)]
    return Table("t1_teacher_ranking", "Table 1 · teacher ranking by mean alignment",
                 [Column("algorithm", "algorithm"), Column("convention", "convention"), Column("s_u", "|S_u|"),
                  Column("rank", "rank", "d"), Column("teacher", "teacher"),
                  Column("mean_cosine", "mean cosine [95% CI]", "+.3f"), *N_COLUMNS], out,
                 [f"Rows of `{REFERENCE}` are Dr. GRPO's reward gradient: it does not depend on the teacher."])


def teacher_ranking_alternatives(rows: Rows) -> Table:
    """Table 3: fraction positive, SR-weighted cosine and mean signal per teacher."""
    out = []
    for algorithm, convention, su, teacher, sel in _cells(rows):
        frac, used = metric(sel, "frac_positive")
        out.append({"algorithm": algorithm, "convention": convention, "s_u": su, "teacher": teacher,
                    "frac_positive": frac, "weighted_cosine": metric(sel, "weighted_cosine")[0],
                    "mean_signal": metric(sel, "mean_signal")[0], **counts(used)})
    return Table("t3_teacher_ranking_alternatives", "Table 3 · teacher ranking by fraction positive and "
                 "SR-range-weighted cosine",
                 [Column("algorithm", "algorithm"), Column("convention", "convention"), Column("s_u", "|S_u|"),
                  Column("teacher", "teacher"), Column("frac_positive", "fraction positive", ".3f"),
                  Column("weighted_cosine", "weighted cosine (SR)", "+.3f"),
                  Column("mean_signal", "mean signal", "+.4f"), *N_COLUMNS], out)


# ----------------------------------------------------------------------------------------- Table 2
def _path_signal(rows: Rows, keep: np.ndarray) -> np.ndarray:
    """Per path (question, path, teacher) over its valid rows: does the kept subset's mean signal
    beat the path's full mean signal? [paths] bool; a path that keeps nothing does not."""
    signal = rows["sr_range"] * _cos(rows)
    codes, n = stats.group_codes(rows["qid"], rows["path"], rows["teacher"])
    full = np.bincount(codes, signal, n) / np.maximum(np.bincount(codes, minlength=n), 1)
    kept_n = np.bincount(codes, keep.astype(float), n)
    with np.errstate(invalid="ignore", divide="ignore"):
        kept = np.bincount(codes, signal * keep, n) / kept_n
    return (kept_n > 0) & (kept > full)


def oracle_point(rows: Rows, threshold: Optional[float]) -> dict:
    """Selective distillation at one threshold (None = full GKD) over valid rows of one scope."""
    valid = rows.where(rows["valid"])
    keep = np.ones(len(valid), bool) if threshold is None else valid["cosine"] > threshold
    counted = valid["first"]
    signal = valid["sr_range"] * valid["cosine"]
    use = keep & counted
    est = stats.ratio(signal[use], np.ones(use.sum()), valid["qid"][use])
    beats = _path_signal(valid, keep) if threshold is not None else None
    return {"mean_signal": est, "frac_tokens": use.sum() / max(counted.sum(), 1),
            "frac_paths_beat": None if beats is None else float(beats.mean()) if len(beats) else float("nan"),
            **counts(valid)}


def _teacher_cells(rows: Rows):
    """(algorithm, convention, teacher, its rows) for every teacher-dependent algorithm, the teachers
    pooled first (``ALL_TEACHERS``); the reward reference's rows are left out."""
    for algorithm, convention in _algorithms(rows):
        if algorithm in TEACHER_FREE:
            continue
        for teacher in [ALL_TEACHERS, *_teachers(rows)]:
            sel = select(rows, None if teacher == ALL_TEACHERS else teacher, algorithm, convention)
            yield algorithm, convention, teacher, sel.where(~sel.is_("teacher", REFERENCE))


def selective_oracle(rows: Rows) -> Table:
    """Table 2: mean signal when the teacher's gradient is kept only where its cosine exceeds t."""
    out = []
    for algorithm, convention, teacher, sel in _teacher_cells(rows):
        if not len(sel):
            continue
        for t in (None, *ORACLE_THRESHOLDS):
            out.append({"algorithm": algorithm, "convention": convention, "teacher": teacher,
                        "strategy": f"full {algorithm}" if t is None else f"selective (t = {t:g})",
                        "threshold": t, **oracle_point(sel, t)})
    return Table("t2_selective_oracle", "Table 2 · selective distillation (oracle)",
                 [Column("algorithm", "algorithm"), Column("convention", "convention"), Column("teacher", "teacher"),
                  Column("strategy", "strategy"), Column("mean_signal", "mean signal [95% CI]", "+.4f"),
                  Column("frac_tokens", "% tokens", "%"), Column("frac_paths_beat", "% paths beating full", "%"),
                  *N_COLUMNS], out,
                 ["Mean signal = mean of SR range x cosine over the kept decision nodes. A path beats full "
                  "distillation when its kept nodes' mean signal exceeds the mean over all of its nodes. "
                  "This is an oracle: training does not know the cosine."])


def oracle_curve(rows: Rows, algorithm: str = MAIN_ALGORITHM, convention: str = DEFAULT_CONVENTION) -> dict:
    """Mean signal against the fraction of tokens kept, over CURVE_THRESHOLDS, per teacher.

    Returns {teacher: (frac_tokens [T], mean_signal [T])} for the figure.
    """
    out = {}
    for teacher in _teachers(rows):
        valid = select(rows, teacher, algorithm, convention)
        valid = valid.where(valid["valid"] & valid["first"])
        if not len(valid):
            continue
        signal = valid["sr_range"] * valid["cosine"]
        keep = valid["cosine"][None, :] > np.asarray(CURVE_THRESHOLDS)[:, None]
        kept = keep.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[teacher] = (kept / len(valid), (keep * signal).sum(1) / kept)
    return out


# ----------------------------------------------------------------------------------------- Tables 4, 6
def correct_vs_incorrect(rows: Rows, metric_name: str) -> dict:
    """Correct against incorrect paths for one metric over one scope, shared nodes left out.

    delta = correct - incorrect with a cluster-bootstrap CI; p_welch: Welch's t over per-path means;
    p_wilcoxon: signed-rank over questions holding both outcomes, paired on their means.
    """
    num, den, usable = METRICS[metric_name][1](rows)
    shared = rows["split"] == SHARED
    side = {}
    for name, code in (("correct", CORRECT), ("incorrect", INCORRECT)):
        use = usable & (rows["split"] == code)
        counted = use & rows["first"]
        path_values, _ = _group_ratio(num[use], den[use], rows["qid"][use], rows["path"][use])
        q_codes = rows["qid"][counted]
        side[name] = {"num": num[counted], "den": den[counted], "q": q_codes, "paths": path_values,
                      "value": stats.ratio(num[counted], den[counted], q_codes),
                      "n_paths": stats.group_codes(rows["qid"][use], rows["path"][use])[1] if use.any() else 0,
                      "n_nodes": int(counted.sum())}
    c, i = side["correct"], side["incorrect"]
    delta = stats.ratio_difference(c["num"], c["den"], c["q"], i["num"], i["den"], i["q"])
    qc, qc_first = _group_ratio(c["num"], c["den"], c["q"])
    qi, qi_first = _group_ratio(i["num"], i["den"], i["q"])
    both, ci_idx, ii_idx = np.intersect1d(c["q"][qc_first], i["q"][qi_first], return_indices=True)
    return {"metric": METRICS[metric_name][0], "correct": c["value"].value, "incorrect": i["value"].value,
            "delta": delta, "p_welch": stats.welch(c["paths"], i["paths"]),
            "p_wilcoxon": stats.paired_wilcoxon(qc[ci_idx], qi[ii_idx]), "n_questions_paired": len(both),
            "n_paths_correct": c["n_paths"], "n_paths_incorrect": i["n_paths"], "n_nodes_correct": c["n_nodes"],
            "n_nodes_incorrect": i["n_nodes"], "n_shared": int((shared & usable & rows["first"]).sum())}


CVI_METRICS = ("mean_cosine", "weighted_cosine", "advantage")
CVI_COLUMNS = [Column("metric", "metric"), Column("correct", "correct", "+.3f"),
               Column("incorrect", "incorrect", "+.3f"), Column("delta", "Δ [95% CI]", "+.3f"),
               Column("p_welch", "p (Welch, paths)", "p"), Column("p_wilcoxon", "p (Wilcoxon, questions)", "p"),
               Column("n_questions_paired", "questions (paired)", "d"),
               Column("n_paths_correct", "paths C", "d"), Column("n_paths_incorrect", "paths I", "d"),
               Column("n_nodes_correct", "nodes C", "d"), Column("n_nodes_incorrect", "nodes I", "d"),
               Column("n_shared", "shared nodes excluded", "d")]
CVI_NOTE = ("Δ = correct − incorrect. Nodes on both a correct and an incorrect path (shared) are left out. "
            "Welch's t compares per-path means (paths as units); the Wilcoxon signed-rank test pairs each "
            "question's correct and incorrect means (questions as units, respecting the clustering).")


def correct_vs_incorrect_table(rows: Rows, per_teacher: bool) -> Table:
    """Table 4 (teachers pooled) or Table 6 (per teacher)."""
    out = []
    for algorithm, convention in _algorithms(rows):
        teachers = rows.present("teacher") if per_teacher else (
            [REFERENCE] if algorithm in TEACHER_FREE else [ALL_TEACHERS])
        for teacher in teachers:
            for su in SU_SPLITS:
                sel = select(rows, None if teacher == ALL_TEACHERS else teacher, algorithm, convention, su)
                if not len(sel):
                    continue
                for name in CVI_METRICS:
                    if name == "advantage" and algorithm in TEACHER_FREE:
                        continue
                    out.append({"algorithm": algorithm, "convention": convention, "teacher": teacher, "s_u": su,
                                **correct_vs_incorrect(sel, name)})
    lead = [Column("algorithm", "algorithm"), Column("convention", "convention"), Column("teacher", "teacher"),
            Column("s_u", "|S_u|")]
    if per_teacher:
        return Table("t6_correct_vs_incorrect_by_teacher", "Table 6 · correct vs incorrect paths, per teacher",
                     lead + CVI_COLUMNS, out, [CVI_NOTE])
    return Table("t4_correct_vs_incorrect", "Table 4 · correct vs incorrect paths (teachers pooled)",
                 lead + CVI_COLUMNS, out, [CVI_NOTE])


# ----------------------------------------------------------------------------------------- Table 5
def spearman_table(rows: Rows) -> Table:
    """Table 5: within-path Spearman rho of the cosine with depth and divergences, averaged over paths.

    rho is computed per (question, path, teacher) over the path's valid nodes (scipy's definition,
    average ranks); paths where it is undefined (under 2 nodes, a constant) are left out. The mean
    over paths gets a cluster-bootstrap CI by question.
    """
    out = []
    for algorithm, convention, teacher, sel in _teacher_cells(rows):
        sel = sel.where(sel["valid"])
        for key, label in SPEARMAN_FEATURES:
            if key not in sel:
                continue
            s = sel.where(np.isfinite(sel[key]) & np.isfinite(sel["cosine"]))
            if not len(s):
                continue
            codes, _ = stats.group_codes(s["qid"], s["path"], s["teacher"])
            rho = stats.grouped_spearman(s[key], s["cosine"], codes)
            question = s["qid"][np.unique(codes, return_index=True)[1]]
            defined = np.isfinite(rho)
            est = stats.ratio(rho[defined], np.ones(defined.sum()), question[defined])
            out.append({"algorithm": algorithm, "convention": convention, "teacher": teacher, "feature": label,
                        "rho": est, "n_questions": est.questions, "n_paths": int(defined.sum()),
                        "n_nodes": int(s["first"].sum())})
    return Table("t5_spearman", "Table 5 · within-path Spearman correlation of alignment with node features",
                 [Column("algorithm", "algorithm"), Column("convention", "convention"), Column("teacher", "teacher"),
                  Column("feature", "feature"), Column("rho", "mean ρ over paths [95% CI]", "+.3f"), *N_COLUMNS],
                 out, ["ρ per (question, path, teacher) over the path's valid decision nodes. `paths` counts those "
                       "(question, path, teacher) groups with a defined ρ (at least 2 nodes, neither side constant)."])


# ----------------------------------------------------------------------------------------- questions
def difficulty(pass_rate: Optional[float]) -> str:
    """The paper's screening bins: easy >= 0.8, medium [0.25, 0.8), hard (0, 0.25), extremely hard = 0."""
    if pass_rate is None or not np.isfinite(pass_rate):
        return "unknown"
    if pass_rate >= 0.8:
        return "easy"
    if pass_rate >= 0.25:
        return "medium"
    return "hard" if pass_rate > 0 else "extremely hard"


def question_status(question: dict) -> str:
    """skipped (no paths of both outcomes), no decision nodes, or analysed."""
    if question.get("skipped"):
        return "skipped"
    if not question.get("decision_nodes") or not question.get("rows"):
        return "no decision nodes"
    return "analysed"


def questions_by_difficulty(questions: list[dict]) -> Table:
    out = []
    for name in (*DIFFICULTY, "unknown"):
        qs = [q for q in questions if difficulty(q.get("pass_rate")) == name]
        if not qs and name == "unknown":
            continue
        status = [question_status(q) for q in qs]
        out.append({"bin": name, "questions": len(qs), "analysed": status.count("analysed"),
                    "no_decision_nodes": status.count("no decision nodes"), "skipped": status.count("skipped"),
                    "mean_pass_rate": float(np.mean([q["pass_rate"] for q in qs])) if qs else float("nan")})
    return Table("questions_by_difficulty", "Questions by difficulty (pass rate of the initial rollouts)",
                 [Column("bin", "difficulty"), Column("questions", "questions", "d"), Column("analysed", "analysed", "d"),
                  Column("no_decision_nodes", "no decision nodes", "d"), Column("skipped", "skipped", "d"),
                  Column("mean_pass_rate", "mean pass rate", ".2f")], out,
                 ["Bins: easy ≥ 0.8, medium [0.25, 0.8), hard (0, 0.25), extremely hard = 0."])


def alignment_by_difficulty(rows: Rows, questions: list[dict]) -> Table:
    """Mean alignment of each teacher (main algorithm) per difficulty bin."""
    rate = {q["qid"]: q.get("pass_rate") for q in questions}
    bins = np.asarray([difficulty(rate.get(qid)) for qid in rows.labels["qid"]], dtype=object)
    question_bin = bins[rows["qid"]] if len(rows) else np.zeros(0, object)
    out = []
    for algorithm, convention in _algorithms(rows):
        if algorithm != MAIN_ALGORITHM:
            continue
        for name in (*DIFFICULTY, "unknown"):
            for teacher in rows.present("teacher"):
                sel = select(rows.where(question_bin == name), teacher, algorithm, convention)
                if len(sel):
                    est, used = metric(sel, "mean_cosine")
                    out.append({"algorithm": algorithm, "convention": convention, "bin": name, "teacher": teacher,
                                "mean_cosine": est, **counts(used)})
    return Table("alignment_by_difficulty", f"Mean alignment by difficulty ({MAIN_ALGORITHM})",
                 [Column("algorithm", "algorithm"), Column("convention", "convention"), Column("bin", "difficulty"),
                  Column("teacher", "teacher"), Column("mean_cosine", "mean cosine [95% CI]", "+.3f"), *N_COLUMNS],
                 out)


def skipped_questions(questions: list[dict]) -> Table:
    out: dict[str, list[str]] = {}
    for q in questions:
        status = question_status(q)
        if status == "skipped":
            out.setdefault(f"skipped: {q.get('skip_reason') or 'no reason recorded'}", []).append(q["qid"])
        elif status == "no decision nodes":
            out.setdefault("no decision nodes (no node with >= 2 children of >= N_sig visits and an SR range > 0)",
                           []).append(q["qid"])
    return Table("skipped_questions", "Questions not analysed, and why",
                 [Column("reason", "reason"), Column("questions", "questions", "d"), Column("examples", "qids")],
                 [{"reason": k, "questions": len(v), "examples": ", ".join(v[:8]) + (", ..." if len(v) > 8 else "")}
                  for k, v in sorted(out.items())])


NODE_SKIP_REASONS = ("|S_u| < 2", "SR range 0", "zero gradient")


def skip_reason(rows: Rows) -> np.ndarray:
    """Why a row's cosine is undefined (docs/math.md): '' where it is valid. [N] object."""
    reason = np.full(len(rows), NODE_SKIP_REASONS[2], dtype=object)
    reason[rows["sr_range"] <= 0] = NODE_SKIP_REASONS[1]
    reason[rows["s_u_size"] < 2] = NODE_SKIP_REASONS[0]
    reason[rows["valid"]] = ""
    return reason


def skipped_nodes(rows: Rows) -> Table:
    out = []
    for teacher, algorithm, convention in _scopes(rows):
        sel = select(rows, teacher, algorithm, convention)
        sel = sel.where(sel["first"])
        reason = skip_reason(sel)
        out.append({"teacher": teacher, "algorithm": algorithm, "convention": convention, "nodes": len(sel),
                    "valid": int(sel["valid"].sum()), **{r: int((reason == r).sum()) for r in NODE_SKIP_REASONS}})
    return Table("skipped_nodes", "Decision nodes whose cosine is undefined, by reason",
                 [Column("teacher", "teacher"), Column("algorithm", "algorithm"), Column("convention", "convention"),
                  Column("nodes", "nodes", "d"), Column("valid", "valid", "d"),
                  *[Column(r, r, "d") for r in NODE_SKIP_REASONS]], out,
                 ["An undefined cosine has a zero vector: fewer than 2 children in S_u, equal success rates on S_u, "
                  "or a zero distillation gradient (teacher equal to the student on S_u; no on-policy sample for a "
                  "Monte-Carlo estimator)."])


def budget(questions: list[dict]) -> Table:
    """Rollouts, tokens and device time spent (device-hours: per-question wall time on its device)."""
    def column(get) -> np.ndarray:
        values = [get(q) for q in questions]
        return np.asarray([v for v in values if v is not None], np.float64)

    items = [("rollouts", lambda q: q.get("budget", {}).get("rollouts")),
             ("tokens", lambda q: q.get("budget", {}).get("tokens")),
             ("prefills", lambda q: q.get("budget", {}).get("prefills")),
             ("device-hours, phase 1", lambda q: _hours(q, "phase1_s")),
             ("device-hours, total", lambda q: _hours(q, "total_s"))]
    out = []
    for name, get in items:
        v = column(get)
        if len(v):
            out.append({"quantity": name, "total": float(v.sum()), "per_question": float(v.mean()),
                        "max": float(v.max()), "questions": len(v)})
    return Table("budget", "Budget spent", [Column("quantity", "quantity"), Column("total", "total", ",.6g"),
                                             Column("per_question", "mean per question", ",.6g"),
                                             Column("max", "max", ",.6g"), Column("questions", "questions", "d")], out,
                 ["Device-hours add up each question's wall time on the device that ran it (question json "
                  "`timings`); they vary between reruns of the same results."])


def _hours(question: dict, key: str) -> Optional[float]:
    seconds = question.get("timings", {}).get(key)
    return None if seconds is None else seconds / 3600.0


# ----------------------------------------------------------------------------------------- beyond the paper
def divergence_filters(rows: Rows) -> Table:
    """Keeping only nodes whose KL / JS / L2 is in the top fraction: how well that finds aligned nodes.

    precision = P(cosine > 0 | kept), recall = P(kept | cosine > 0), and the kept nodes' mean signal.
    The threshold is the feature's quantile over the scope's valid nodes (stated in the table).
    """
    out = []
    for algorithm, convention, teacher, sel in _teacher_cells(rows):
        sel = sel.where(sel["valid"] & sel["first"])
        if not len(sel):
            continue
        aligned = sel["cosine"] > 0
        signal = sel["sr_range"] * sel["cosine"]
        base = {"algorithm": algorithm, "convention": convention, "teacher": teacher, **counts(sel)}
        out.append({**base, "filter": "none", "threshold": float("nan"), "frac_tokens": 1.0,
                    "precision": float(aligned.mean()), "recall": 1.0,
                    "mean_signal": stats.ratio(signal, np.ones(len(sel)), sel["qid"])})
        for feature in FILTER_FEATURES:
            for frac in FILTER_KEEP:
                threshold = float(np.quantile(sel[feature], 1.0 - frac))
                keep = sel[feature] >= threshold
                out.append({**base, "filter": f"{feature} ≥ q{1 - frac:.2f}", "threshold": threshold,
                            "frac_tokens": float(keep.mean()),
                            "precision": float(aligned[keep].mean()) if keep.any() else float("nan"),
                            "recall": float((aligned & keep).sum() / aligned.sum()) if aligned.any() else float("nan"),
                            "mean_signal": stats.ratio(signal[keep], np.ones(keep.sum()), sel["qid"][keep])})
    return Table("divergence_filters", "Divergence filters: keep the nodes where the teacher disagrees most",
                 [Column("algorithm", "algorithm"), Column("convention", "convention"), Column("teacher", "teacher"),
                  Column("filter", "filter"), Column("threshold", "threshold", ".4g"),
                  Column("frac_tokens", "% tokens", "%"), Column("precision", "precision (cos > 0)", ".3f"),
                  Column("recall", "recall (cos > 0)", ".3f"), Column("mean_signal", "mean signal kept [95% CI]", "+.4f"),
                  *N_COLUMNS], out,
                 ["`kl ≥ q0.50` keeps the nodes whose KL(p‖q) is at or above its median over the scope's valid nodes. "
                  "Unlike the oracle, such a filter is available at training time."])


def multi_teacher_oracle(rows: Rows) -> Table:
    """The best teacher per token against the best single teacher, on nodes every teacher scores."""
    out = []
    for algorithm, convention in _algorithms(rows):
        if algorithm in TEACHER_FREE:
            continue
        sel = select(rows, None, algorithm, convention)
        sel = sel.where(sel["valid"] & sel["first"] & ~sel.is_("teacher", REFERENCE))
        teachers = _teachers(sel)
        if len(teachers) < 2:
            continue
        node, n = stats.group_codes(sel["qid"], sel["node"])
        column = np.searchsorted(np.asarray([sel.code("teacher", t) for t in teachers]), sel["teacher"])
        signal = np.full((n, len(teachers)), np.nan)
        signal[node, column] = sel["sr_range"] * sel["cosine"]
        question = np.zeros(n, np.int64)
        question[node] = sel["qid"]
        complete = np.isfinite(signal).all(1)
        signal, question = signal[complete], question[complete]
        if not len(signal):
            continue
        ones = np.ones(len(signal))
        singles = [stats.ratio(signal[:, j], ones, question) for j in range(len(teachers))]
        best = int(np.argmax([e.value for e in singles]))
        wins = np.bincount(signal.argmax(1), minlength=len(teachers)) / len(signal)
        base = {"algorithm": algorithm, "convention": convention, "n_questions": len(np.unique(question)),
                "n_nodes": len(signal)}
        out.append({**base, "strategy": "best teacher per token", "teacher": "(oracle)",
                    "mean_signal": stats.ratio(signal.max(1), ones, question),
                    "gain": stats.ratio_difference(signal.max(1), ones, question, signal[:, best], ones, question),
                    "frac_best": 1.0})
        for j, teacher in enumerate(teachers):
            out.append({**base, "strategy": "best single teacher" if j == best else "single teacher",
                        "teacher": teacher, "mean_signal": singles[j], "frac_best": float(wins[j])})
    return Table("multi_teacher_oracle", "Multi-teacher oracle: the best teacher per token vs the best single teacher",
                 [Column("algorithm", "algorithm"), Column("convention", "convention"), Column("strategy", "strategy"),
                  Column("teacher", "teacher"), Column("mean_signal", "mean signal [95% CI]", "+.4f"),
                  Column("gain", "gain over best single [95% CI]", "+.4f"),
                  Column("frac_best", "% tokens where best", "%"), Column("n_questions", "questions", "d"),
                  Column("n_nodes", "nodes", "d")], out,
                 ["Over decision nodes where every teacher's cosine is defined; signal = SR range × cosine."])


def token_weights(rows: Rows) -> dict[str, np.ndarray]:
    """Per-token distillation weights of the main algorithm: weight = max(0, cosine) x SR range.

    One row per (question, path, depth, teacher) at valid decision nodes, default convention.
    Columns: qid (str), path, depth, token (int64), teacher (str), cosine, sr_range, advantage,
    weight (float64). A token absent from the file has no measured alignment.
    """
    sel = select(rows, None, MAIN_ALGORITHM, DEFAULT_CONVENTION)
    sel = sel.where(sel["valid"] & ~sel.is_("teacher", REFERENCE))
    return {"qid": sel.decoded("qid").astype(str), "path": sel["path"].astype(np.int64),
            "depth": sel["depth"].astype(np.int64), "token": sel["token"].astype(np.int64),
            "teacher": sel.decoded("teacher").astype(str), "cosine": sel["cosine"].astype(np.float64),
            "sr_range": sel["sr_range"].astype(np.float64), "advantage": sel["advantage"].astype(np.float64),
            "weight": np.maximum(sel["cosine"], 0.0) * sel["sr_range"]}


# ----------------------------------------------------------------------------------------- screening
def screening_dir(root, config: dict):
    """The screening run behind a run: the folder of its ``dataset.questions_file`` (what
    ``python -m jaxalign.screen`` wrote), else ``root/screening/``; None when there is none."""
    from pathlib import Path

    listed = (config.get("dataset") or {}).get("questions_file")
    for folder in ([Path(listed).expanduser().parent] if listed else []) + [Path(root) / SCREENING_DIR]:
        if (folder / "tables").is_dir():
            return folder
    return None


def screening_tables(root, config: Optional[dict] = None) -> list[Table]:
    """The paper's Tables 7-9 of the screening that chose this run's questions (see :func:`screening_dir`),
    read back from the CSV files the screening wrote."""
    import csv

    folder = screening_dir(root, config or {})
    if folder is None:
        return []
    out = []
    for path in sorted((folder / "tables").glob("t[789]_*.csv")):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            names = reader.fieldnames or []
        out.append(Table(path.stem, f"Screening · {path.stem.split('_', 1)[0].replace('t', 'Table ')} ({path.stem})",
                         [Column(n, n) for n in names], rows, [f"From the screening in {folder}."]))
    return out


def run_tables(rows: Rows, questions: list[dict], root, config: Optional[dict] = None) -> list[Table]:
    """Every table of one run's report, in the order report.md lists them. ``rows`` are prepared."""
    return [teacher_ranking(rows), selective_oracle(rows), teacher_ranking_alternatives(rows),
            correct_vs_incorrect_table(rows, per_teacher=False), spearman_table(rows),
            correct_vs_incorrect_table(rows, per_teacher=True), questions_by_difficulty(questions),
            alignment_by_difficulty(rows, questions), skipped_questions(questions), skipped_nodes(rows),
            budget(questions), divergence_filters(rows), multi_teacher_oracle(rows), *screening_tables(root, config)]


def summary_table(rows: Rows) -> Table:
    """One line per (teacher, algorithm, convention) over all |S_u|: report/summary.csv."""
    out = []
    for teacher, algorithm, convention in _scopes(rows):
        sel = select(rows, teacher, algorithm, convention)
        mean, used = metric(sel, "mean_cosine")
        split = {}
        for name, code in (("correct", CORRECT), ("incorrect", INCORRECT)):
            split[name] = metric(sel.where(sel["split"] == code), "mean_cosine")[0].value
        out.append({"teacher": teacher, "algorithm": algorithm, "convention": convention, **counts(used),
                    "mean_cosine": mean, "weighted_cosine": metric(sel, "weighted_cosine")[0].value,
                    "mean_signal": metric(sel, "mean_signal")[0].value,
                    "frac_positive": metric(sel, "frac_positive")[0].value,
                    "mean_cos_correct": split["correct"], "mean_cos_incorrect": split["incorrect"]})
    return Table("summary", "Summary per teacher and algorithm",
                 [Column("teacher", "teacher"), Column("algorithm", "algorithm"), Column("convention", "convention"),
                  *N_COLUMNS, Column("mean_cosine", "mean cosine [95% CI]", "+.3f"),
                  Column("weighted_cosine", "weighted cosine", "+.3f"), Column("mean_signal", "mean signal", "+.4f"),
                  Column("frac_positive", "fraction positive", ".3f"),
                  Column("mean_cos_correct", "cosine, correct", "+.3f"),
                  Column("mean_cos_incorrect", "cosine, incorrect", "+.3f")], out,
                 ["Correct and incorrect columns leave out shared nodes (on paths of both outcomes)."])


# ----------------------------------------------------------------------------------------- sweeps
def _main_rows(table: Table, **equal) -> list[dict]:
    return table.where(algorithm=MAIN_ALGORITHM, convention=DEFAULT_CONVENTION, **equal).rows


def sweep_tables(runs: Sequence[tuple[str, dict, dict[str, Table]]]) -> list[Table]:
    """Side-by-side tables of a sweep: ``runs`` are (name, config, that run's tables by name).

    The teacher ranking and weighted cosine are pivoted (teachers x runs, main algorithm, default
    convention, all |S_u|); correct-vs-incorrect and the oracle are long tables with a run column.
    """
    runs = sorted(runs, key=lambda r: (r[1].get("student", {}).get("name", ""),
                                       r[1].get("dataset", {}).get("name", ""), r[0]))
    header = {name: f"{c.get('student', {}).get('name', '?')} · {c.get('dataset', {}).get('name', '?')} · {name}"
              for name, c, _ in runs}
    pivots = []
    for key, source, label, fmt in (("mean_cosine", "t1_teacher_ranking", "mean cosine", "+.3f"),
                                    ("weighted_cosine", "t3_teacher_ranking_alternatives", "weighted cosine", "+.3f"),
                                    ("frac_positive", "t3_teacher_ranking_alternatives", "fraction positive", ".3f")):
        cells: dict[str, dict] = {}
        for name, _, tables in runs:
            for r in _main_rows(tables[source], s_u="all"):
                cells.setdefault(r["teacher"], {"teacher": r["teacher"]})[name] = r[key]
        rank = sorted(cells.values(), key=lambda r: (r["teacher"] == REFERENCE, -np.nanmean(
            [v.value for k, v in r.items() if k != "teacher"] or [np.nan])))
        pivots.append(Table(f"sweep_{key}", f"{label} ({MAIN_ALGORITHM}) per teacher, side by side",
                            [Column("teacher", "teacher")] + [Column(n, header[n], fmt) for n, _, _ in runs], rank,
                            ["Columns: student · dataset · run. 95% CIs across questions (cluster bootstrap)."]))
    cvi, oracle = [], []
    for name, config, tables in runs:
        tag = {"run": name, "student": config.get("student", {}).get("name", "?"),
               "dataset": config.get("dataset", {}).get("name", "?")}
        cvi += [{**tag, **r} for r in _main_rows(tables["t4_correct_vs_incorrect"], s_u="all")]
        oracle += [{**tag, **r} for r in _main_rows(tables["t2_selective_oracle"], teacher=ALL_TEACHERS)]
    lead = [Column("student", "student"), Column("dataset", "dataset"), Column("run", "run")]
    pivots.append(Table("sweep_correct_vs_incorrect", f"Correct vs incorrect ({MAIN_ALGORITHM}, teachers pooled)",
                        lead + CVI_COLUMNS, cvi, [CVI_NOTE]))
    pivots.append(Table("sweep_selective_oracle", f"Selective distillation oracle ({MAIN_ALGORITHM}, teachers pooled)",
                        lead + [Column("strategy", "strategy"), Column("mean_signal", "mean signal [95% CI]", "+.4f"),
                                Column("frac_tokens", "% tokens", "%"),
                                Column("frac_paths_beat", "% paths beating full", "%"), *N_COLUMNS], oracle))
    return pivots
