"""Context screening (Appendix E.9): pass rates per context, difficulty bins, Tables 7-9, and the
list of questions the main run analyses.

For each question of a screening, the student answers G = ``screening.rollouts`` times at
temperature 1 with its plain prompt (the baseline) and with each self teacher's context. The
question's difficulty bin comes from its baseline pass rate: easy >= 0.8, medium [0.25, 0.8),
hard (0, 0.25), extremely hard = 0.

The analysed set is the paper's: questions with at least one correct demonstration from every
source model (the intersection of Table 7), minus the extremely hard ones. Tables 8 and 9 are
computed over it; ``questions.json`` lists it for the main run (``dataset.questions_file=``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import numpy as np

from jaxalign.errors import ConfigError

QUESTION_LIST_VERSION = 1
SCREEN_STAGE = 7  # question_key(seed, qid, 7, context) draws a screening's rollouts
BINS = ("hard", "medium", "easy")  # the analysed bins, in the paper's column order
EXTREMELY_HARD = "extremely hard"


def difficulty(pass_rate: float) -> str:
    """The paper's bins of a baseline pass rate: easy >= 0.8, medium [0.25, 0.8), hard (0, 0.25), extremely hard 0."""
    if pass_rate >= 0.8:
        return "easy"
    if pass_rate >= 0.25:
        return "medium"
    return "hard" if pass_rate > 0 else EXTREMELY_HARD


@dataclasses.dataclass(frozen=True)
class QuestionList:
    """The questions a screening selected: ``qids`` (in order) out of ``task.questions(screened, seed)``."""

    task: str
    seed: int
    screened: int
    qids: tuple[str, ...]
    student: str = ""
    excluded: dict = dataclasses.field(default_factory=dict)  # qid -> why it is not in qids

    def to_json(self) -> dict:
        return {"version": QUESTION_LIST_VERSION, "task": self.task, "seed": self.seed, "screened": self.screened,
                "student": self.student, "qids": list(self.qids), "excluded": self.excluded}


def read_question_list(path: str | Path) -> QuestionList:
    """Reads a screening's questions.json; raises ConfigError naming the file and the problem."""
    file = Path(path).expanduser()
    where = f"dataset.questions_file: {file}"
    if not file.is_file():
        raise ConfigError(f"{where} does not exist; run python -m jaxalign.screen first (it writes "
                          "<screening dir>/questions.json)")
    try:
        raw = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{where} is not a JSON file ({err})") from err
    fields = {"task": str, "seed": int, "screened": int, "qids": list}
    bad = [k for k, t in fields.items() if not isinstance(raw, dict) or not isinstance(raw.get(k), t)]
    if bad:
        raise ConfigError(f"{where} is not a screening question list (bad or missing {', '.join(bad)}); pass the "
                          "questions.json that python -m jaxalign.screen wrote")
    if not raw["qids"]:
        raise ConfigError(f"{where} lists no questions: the screening kept none (see its tables)")
    return QuestionList(raw["task"], raw["seed"], raw["screened"], tuple(map(str, raw["qids"])),
                        str(raw.get("student", "")), dict(raw.get("excluded", {})))


# ----------------------------------------------------------------------------- one question
@dataclasses.dataclass(frozen=True)
class QuestionScreen:
    """One screened question: the baseline pass rate and each context's (None: no context for it)."""

    qid: str
    baseline: float
    contexts: dict[str, Optional[float]]
    excluded: dict[str, str]  # context name -> why it has none for this question
    demonstrations: dict[str, bool]  # source model -> at least one correct demonstration

    @property
    def difficulty(self) -> str:
        return difficulty(self.baseline)

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "difficulty": self.difficulty}

    @classmethod
    def from_json(cls, raw: dict) -> "QuestionScreen":
        return cls(raw["qid"], float(raw["baseline"]), dict(raw["contexts"]), dict(raw["excluded"]),
                   dict(raw["demonstrations"]))


def pass_rate(policy, prompt, rollouts: int, max_new_tokens: int, key, grade_tokens) -> float:
    """The fraction of ``rollouts`` temperature-1 samples of ``prompt`` that ``grade_tokens`` accepts."""
    out = policy.sample(np.asarray(prompt, np.int32), [np.zeros(0, np.int32)], rollouts, max_new_tokens, 1.0, key)
    return float(np.mean([grade_tokens(row[:n]) for row, n in zip(out.tokens, out.lengths)]))


# ----------------------------------------------------------------------------- selection and tables
def analysed(results: list[QuestionScreen]) -> tuple[list[QuestionScreen], dict[str, str]]:
    """The paper's analysed set: a correct demonstration from every source, and baseline > 0.
    Returns it (in screening order) and the reason each other question is left out."""
    keep, excluded = [], {}
    for r in results:
        missing = [s for s, ok in r.demonstrations.items() if not ok]
        if missing:
            excluded[r.qid] = f"no correct demonstration from {', '.join(missing)}"
        elif r.difficulty == EXTREMELY_HARD:
            excluded[r.qid] = "extremely hard: baseline pass rate 0"
        else:
            keep.append(r)
    return keep, excluded


def _source_label(source: str, student: str) -> str:
    return "self" if source == student else source


def table7(results: list[QuestionScreen], student: str, student_name: str, task: str):
    """Questions with a correct demonstration per source, and in all of them (Table 7)."""
    from jaxalign.report.tables import Column, Table

    sources = list(results[0].demonstrations) if results else []
    row = {"model": student_name, "benchmark": task, "screened": len(results),
           "both": sum(all(r.demonstrations.values()) for r in results)}
    columns = [Column("model", "model"), Column("benchmark", "benchmark"), Column("screened", "screened", "d")]
    for i, source in enumerate(sources):
        row[f"source{i}"] = sum(r.demonstrations[source] for r in results)
        columns.append(Column(f"source{i}", _source_label(source, student), "d"))
    columns.append(Column("both", "all sources" if len(sources) != 2 else "both", "d"))
    return Table("t7_demonstrations", "Table 7 · questions with at least one correct demonstration", columns, [row],
                 ["Each source model sampled up to demo_trials responses per question at demo_temperature; "
                  "the last column is the intersection the analysis keeps."])


def _accuracy(rows: list[QuestionScreen], name: Optional[str]) -> tuple[float, float, int]:
    """(mean pass rate %, its change over the baseline on the same questions in points, n)."""
    pairs = [(r.contexts.get(name) if name else r.baseline, r.baseline) for r in rows]
    pairs = [(v, b) for v, b in pairs if v is not None]
    if not pairs:
        return float("nan"), float("nan"), 0
    values, bases = np.array(pairs).T
    return 100 * values.mean(), 100 * (values.mean() - bases.mean()), len(pairs)


def table8(kept: list[QuestionScreen], contexts: list[str]):
    """Pass rate per context over the analysed set, and its change over the baseline (Table 8)."""
    from jaxalign.report.tables import Column, Table

    rows = []
    for name in [None, *contexts]:
        acc, delta, n = _accuracy(kept, name)
        rows.append({"variant": name or "Baseline", "acc": acc, "delta": None if name is None else delta, "n": n})
    columns = [Column("variant", "context variant"), Column("acc", "acc (%)", ".1f"), Column("delta", "Δ", "+.1f"),
               Column("n", "n", "d")]
    return Table("t8_screening", "Table 8 · screening: pass rate per context", columns, rows,
                 ["Acc is the mean pass rate (G rollouts at temperature 1) over the analysed questions that have "
                  "the context; Δ is its change over the baseline on those same questions, in points."])


def table9(kept: list[QuestionScreen], contexts: list[str]):
    """Table 8 split by the baseline's difficulty bin (Table 9)."""
    from jaxalign.report.tables import Column, Table

    columns = [Column("variant", "variant")]
    for b in (*BINS, "all"):
        columns += [Column(f"{b}_acc", f"{b} acc", ".1f"), Column(f"{b}_n", f"{b} n", "d")]
    columns.append(Column("delta", "Δ", "+.1f"))
    rows = []
    for name in [None, *contexts]:
        row = {"variant": name or "Baseline"}
        for b in (*BINS, "all"):
            chosen = kept if b == "all" else [r for r in kept if r.difficulty == b]
            row[f"{b}_acc"], _, row[f"{b}_n"] = _accuracy(chosen, name)
        row["delta"] = None if name is None else _accuracy(kept, name)[1]
        rows.append(row)
    return Table("t9_difficulty", "Table 9 · pass rate by difficulty (baseline bins)", columns, rows,
                 ["Bins by baseline pass rate: easy >= 0.8, medium [0.25, 0.8), hard (0, 0.25); extremely hard "
                  "questions (0) are not analysed. Each cell: pass rate (%) and questions (n)."])


def write_outputs(out_dir: Path, results: list[QuestionScreen], contexts: list[str], *, task: str, seed: int,
                  student: str, student_name: str, notes: list[str]) -> dict:
    """questions.json (the analysed set, for dataset.questions_file=), tables/ and screening.md."""
    from jaxalign.files import write_json, write_text

    kept, excluded = analysed(results)
    listed = QuestionList(task, seed, len(results), tuple(r.qid for r in kept), student_name, excluded)
    write_json(out_dir / "questions.json", listed.to_json())
    tables = [table7(results, student, student_name, task), table8(kept, contexts), table9(kept, contexts)]
    for t in tables:
        write_text(out_dir / "tables" / f"{t.name}.md", t.markdown(heading="#"))
        write_text(out_dir / "tables" / f"{t.name}.csv", t.csv())
    lines = [f"# Screening: {student_name} on {task}", "", *[f"- {n}" for n in notes],
             f"- {len(results)} questions screened, {len(kept)} analysed; the others and why: questions.json "
             "(`excluded`).", f"- Run the analysed questions: `dataset.questions_file={out_dir / 'questions.json'}`.",
             ""]
    text = "\n".join(lines) + "\n" + "\n".join(t.markdown() for t in tables)
    write_text(out_dir / "screening.md", text)
    return {"screened": len(results), "analysed": len(kept), "excluded": excluded, "markdown": text}
