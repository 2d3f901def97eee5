"""Context screening (python -m jaxalign.screen): difficulty bins, Tables 7-9 against a NumPy
reference, the analysed set and its question list, and screening end to end on the toy and on the
stand-ins, with the main run consuming the list."""

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from jaxalign import config as C
from jaxalign.errors import ConfigError
from jaxalign.teachers.screening import (QuestionList, QuestionScreen, analysed, difficulty, read_question_list,
                                         table7, table8, table9)
from tests.test_paper_experiment import question_summaries
from tests.test_run import CONF, composed

FIXTURES = Path(__file__).resolve().parent / "tasks" / "fixtures"


def screen_config(*overrides, return_hydra_config=False):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="screen", overrides=list(overrides), return_hydra_config=return_hydra_config)


def composed_hydra():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="config", return_hydra_config=True)


def test_difficulty_bins_are_the_papers():
    assert [difficulty(p) for p in (1.0, 0.8, 0.7999, 0.25, 0.2499, 1 / 32, 0.0)] == [
        "easy", "easy", "medium", "medium", "hard", "hard", "extremely hard"]


def _synthetic(seed=0, n=40):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = float(rng.choice([0.0, 0.1, 0.3, 0.6, 0.9, 1.0]))
        ctx = {"A": float(rng.random()), "B": None if i % 5 == 0 else float(rng.random())}
        demos = {"self": bool(i % 7), "big": bool(i % 11)}
        out.append(QuestionScreen(f"q{i}", base, ctx, {"B": "no wrong"} if ctx["B"] is None else {}, demos))
    return out


def test_the_analysed_set_is_the_intersection_without_extremely_hard_questions():
    results = _synthetic()
    kept, excluded = analysed(results)
    want = [r.qid for r in results if all(r.demonstrations.values()) and r.baseline > 0]
    assert [r.qid for r in kept] == want and set(excluded) == {r.qid for r in results} - set(want)
    assert excluded["q0"] == "no correct demonstration from self, big"
    zero = next(r for r in results if r.baseline == 0 and all(r.demonstrations.values()))
    assert excluded[zero.qid] == "extremely hard: baseline pass rate 0"


def test_tables_7_8_9_match_a_numpy_reference():
    results = _synthetic()
    kept, _ = analysed(results)
    t7 = table7(results, "self", "student-x", "boolq").rows[0]
    assert (t7["screened"], t7["source0"], t7["source1"]) == (40, sum(bool(i % 7) for i in range(40)),
                                                              sum(bool(i % 11) for i in range(40)))
    assert t7["both"] == sum(bool(i % 7) and bool(i % 11) for i in range(40))
    base = np.array([r.baseline for r in kept])
    b_have = np.array([r.contexts["B"] is not None for r in kept])
    b = np.array([r.contexts["B"] or 0.0 for r in kept])
    rows = {r["variant"]: r for r in table8(kept, ["A", "B"]).rows}
    assert rows["Baseline"]["acc"] == pytest.approx(100 * base.mean()) and rows["Baseline"]["n"] == len(kept)
    assert rows["B"]["acc"] == pytest.approx(100 * b[b_have].mean()) and rows["B"]["n"] == b_have.sum()
    assert rows["B"]["delta"] == pytest.approx(100 * (b[b_have].mean() - base[b_have].mean()))  # paired
    nine = {r["variant"]: r for r in table9(kept, ["A", "B"]).rows}
    bins = np.array([difficulty(x) for x in base])
    for name in ("hard", "medium", "easy"):
        mask = bins == name
        assert nine["Baseline"][f"{name}_n"] == mask.sum()
        if mask.any():
            assert nine["Baseline"][f"{name}_acc"] == pytest.approx(100 * base[mask].mean())
    assert nine["A"]["all_acc"] == pytest.approx(rows["A"]["acc"]) and nine["A"]["delta"] == rows["A"]["delta"]


def test_a_bad_question_list_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; run python -m jaxalign.screen first"):
        read_question_list(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"task": "boolq", "qids": "x"}')
    with pytest.raises(ConfigError, match="bad or missing seed, screened, qids"):
        read_question_list(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text(json.dumps(QuestionList("boolq", 0, 5, ()).to_json()))
    with pytest.raises(ConfigError, match="lists no questions"):
        read_question_list(tmp_path / "empty.json")
    (tmp_path / "mmlu.json").write_text(json.dumps(QuestionList("mmlu", 0, 5, ("mmlu-1",)).to_json()))
    with pytest.raises(ConfigError, match="lists mmlu questions, but dataset.name is toy_arith"):
        C.validate(C.from_omegaconf(composed(f"dataset.questions_file={tmp_path / 'mmlu.json'}")))


def test_the_screening_directory_sits_next_to_the_run_directories():
    from omegaconf import OmegaConf

    cfg = screen_config("dataset=boolq", "teachers=paper_contexts", return_hydra_config=True)
    pattern = OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]
    assert pattern == "outputs/${dataset.name}/${student.name}/screening/${hydra:runtime.choices.teachers}/" \
                      "${budget.name}/seed${seed}"
    assert cfg.hydra.runtime.choices.teachers == "paper_contexts" and cfg.screening.rollouts == 32
    run_pattern = OmegaConf.to_container(composed_hydra().hydra.run, resolve=False)["dir"]
    assert run_pattern.split("/")[:3] == pattern.split("/")[:3]  # outputs/<dataset>/<student>/ in both


def test_toy_screening_end_to_end_and_the_run_takes_its_questions(tmp_path):
    from jaxalign.run import execute as run
    from jaxalign.screen import execute

    out = tmp_path / "screening"
    result = execute(screen_config("dataset.num_questions=3", "screening.rollouts=16", "budget.max_response_tokens=48"),
                     out)
    listed = read_question_list(out / "questions.json")
    assert result["screened"] == 3 and listed.screened == 3 and listed.task == "toy_arith"
    screened = [json.loads(p.read_text()) for p in sorted((out / "questions").glob("*.json"))]
    assert len(screened) == 3 and {q["difficulty"] for q in screened} <= {"easy", "medium", "hard", "extremely hard"}
    assert all(set(q["contexts"]) == {"SELF-1C", "SELF-1C1W", "SELF-SUM-1C"} for q in screened)  # not toy-teacher
    assert set(listed.qids) | set(listed.excluded) == {q["qid"] for q in screened}
    for name in ("t7_demonstrations", "t8_screening", "t9_difficulty"):
        assert (out / "tables" / f"{name}.md").is_file() and (out / "tables" / f"{name}.csv").is_file()
    assert "Table 8" in (out / "screening.md").read_text()
    for q in screened:  # rates are fractions of 16 rollouts
        for rate in [q["baseline"], *[r for r in q["contexts"].values() if r is not None]]:
            assert (rate * 16) == int(rate * 16)
    again = execute(screen_config("dataset.num_questions=3", "screening.rollouts=16", "budget.max_response_tokens=48"),
                    out)
    assert again["markdown"] == result["markdown"]  # resumed from the per-question files

    assert listed.qids, "the toy screening should keep a question (seeded: it kept 3 of 3 when written)"
    record = run(composed("budget=smoke", f"dataset.questions_file={out / 'questions.json'}",
                          "dataset.num_questions=1", f"context_cache_dir={out}"), tmp_path / "run")
    ran = [q["qid"] for q in question_summaries(tmp_path / "run")]
    assert record["totals"]["questions"] == 1 and ran == [listed.qids[0]]
    # the run's report carries the screening's Tables 7-9
    from jaxalign.report import write_report

    report = write_report(tmp_path / "run", figures=False, pages=False)
    assert "Screening · Table 7" in report and "Screening · Table 9" in report
    assert (tmp_path / "run" / "report" / "tables" / "t8_screening.csv").is_file()


def test_standin_screening_has_the_papers_columns(tmp_path):
    from jaxalign.screen import execute
    from jaxalign.toy.standins import write_standins

    models = tmp_path / "models"
    write_standins(models, models=["Qwen/Qwen3-0.6B", "Qwen/Qwen3-32B"])
    out = tmp_path / "screening"
    result = execute(screen_config("student=qwen3-0.6b", "teachers=paper_contexts", "dataset=boolq", "budget=smoke",
                                   f"model_root={models}", f"dataset.path={FIXTURES / 'boolq.jsonl'}",
                                   "dataset.num_questions=3", "screening.rollouts=8"), out)
    assert "mean nothing" in result["markdown"]
    t7 = (out / "tables" / "t7_demonstrations.md").read_text()
    assert "| model | benchmark | screened | self | Qwen/Qwen3-32B | both |" in t7
    t8 = (out / "tables" / "t8_screening.csv").read_text().splitlines()
    assert t8[0] == "variant,acc,delta,n"
    assert [line.split(",")[0] for line in t8[1:]] == ["Baseline", "SELF-1C", "SELF-1C-32B", "SELF-SUM-1C",
                                                       "SELF-1C1W", "SELF-SUM-1C1W", "SELF-3C"]
    listed = read_question_list(out / "questions.json")
    assert listed.task == "boolq" and len(listed.qids) + len(listed.excluded) == 3
    assert listed.qids, listed.excluded  # seeded: the stand-ins kept some when this was written
    from jaxalign.run import execute as run

    cost = run(composed("student=qwen3-0.6b", "teachers=paper8", "dataset=boolq", f"model_root={models}",
                        f"dataset.path={FIXTURES / 'boolq.jsonl'}", f"dataset.questions_file={out / 'questions.json'}",
                        "dataset.num_questions=500", "dry_run=true", "~teachers.Qwen3-4B", "~teachers.Qwen3-8B",
                        "~teachers.Qwen3-14B"), tmp_path / "unused")
    assert cost["questions"] == len(listed.qids)  # num_questions caps the list; the list is shorter
