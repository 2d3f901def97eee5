"""Hydra configs, validation before any model loads, the dry run, and the main entry point."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from jaxalign import config as C
from jaxalign.errors import ConfigError
from jaxalign.run import dry_run, execute

CONF = str(Path(__file__).resolve().parents[1] / "conf")
GROUPS = {
    "student": ["toy", "exact", "qwen3-0.6b", "qwen3-1.7b"],
    "teachers": ["toy", "exact", "paper8", "paper_contexts"],
    "dataset": ["toy_arith", "exact", "boolq", "mmlu", "aime2025"],
    "budget": ["small", "smoke", "paper"],
}


def composed(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def as_run(dcfg) -> C.RunConf:
    return C.from_omegaconf(dcfg)


@pytest.mark.parametrize("group, option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_composes(group, option):
    cfg = as_run(composed(f"{group}={option}"))
    assert isinstance(cfg, C.RunConf)


def test_default_and_exact_experiment_validate():
    C.validate(as_run(composed()))
    exact = as_run(composed("+experiment=exact"))
    C.validate(exact)
    assert exact.student.kind == "exact" and set(exact.teachers) == {"tilt", "anti-tilt", "noise"}
    assert as_run(composed("+experiment=toy")) == as_run(composed())  # the default, named for sweeps


@pytest.mark.parametrize("override, key", [
    ("budget.n_mim=5", "n_mim"),
    ("budget.n_min=many", "n_min"),
    ("seed=1.5", "seed"),
    ("student=qwen3-70b", "student"),
])
def test_typos_and_wrong_types_are_named_by_hydra(override, key):
    with pytest.raises(Exception) as err:
        as_run(composed(override))
    assert key in str(err.value)


@pytest.mark.parametrize("overrides, key", [
    (["student.kind=torch"], "student.kind"),
    (["student.dtype=float16"], "student.dtype"),
    (["decode_attention=pallas"], "decode_attention"),
    (["dataset.name=gsm8k"], "dataset.name"),
    (["student=exact"], "dataset.name"),
    (["dataset.num_questions=0"], "dataset.num_questions"),
    (["budget.n_sig=500"], "budget.n_sig"),
    (["budget.tau=1.5"], "budget.tau"),
    (["budget.num_initial=0"], "budget.num_initial"),
    (["budget.top_k=-1"], "budget.top_k"),
    (["budget.window_growth=0.5"], "budget.window_growth"),
    (["budget.adaptive_share=0"], "budget.adaptive_share"),
    (["teachers.SELF-1C.context=SELF-9C"], "teachers.SELF-1C.context"),
    (["teachers.SELF-SUM-1C.summarizer=null"], "teachers.SELF-SUM-1C.summarizer"),
    (["teachers.toy-teacher.model=null"], "teachers.toy-teacher.model"),
    (["teachers.toy-teacher.model=toy:nobody"], "toy:nobody"),
    (["demo_temperature=0"], "demo_temperature"),
    (["student.path=not-a-dir-nor-hub-id"], "student.path"),
])
def test_bad_values_are_rejected_before_any_model_loads(overrides, key, monkeypatch):
    import jaxalign.models.loading as loading

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before validation")

    monkeypatch.setattr(loading, "load_params", no_loading)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        execute(composed(*overrides), Path("/nonexistent-run-dir"))


def test_every_planner_knob_of_the_budget_reaches_the_pipeline():
    from jaxalign.run import pipeline_config

    cfg = as_run(composed("budget.adaptive_share=0.5", "budget.n_min=33", "budget.tau=0.05"))
    enrich, budget = pipeline_config(cfg).enrich, cfg.budget
    assert (enrich.adaptive_share, enrich.n_min, enrich.tau) == (0.5, 33, 0.05)
    shared = [f.name for f in __import__("dataclasses").fields(enrich) if hasattr(budget, f.name)]
    assert len(shared) == 11 and all(getattr(enrich, name) == getattr(budget, name) for name in shared)


def test_dry_run_prices_the_budget(capsys, tmp_path):
    """The forecast counts the planner's rollouts and prices them with the device's calibration
    (tests/test_cost.py checks it against a measured run)."""
    cost = execute(composed("dry_run=true", "budget=small", "dataset.num_questions=10"), tmp_path)
    windows = 2  # 64 tokens: 50, then the remaining 14
    assert cost["windows"] == windows
    assert cost["rollouts_per_question"] == 64 + windows * (4 + 4) * 40
    assert cost["rollouts"] == 10 * cost["rollouts_per_question"]
    assert cost["gpu_hours"] == pytest.approx(cost["prepass_gpu_hours"] + cost["phase1_gpu_hours"]
                                              + cost["phase2_gpu_hours"] + cost["compile_gpu_hours"])
    assert cost["prepass_gpu_hours"] > 0  # the student's demonstrations for SELF-1C and SELF-1C1W
    assert cost["device"] == "cpu" and "gpus_per_job" in cost["memory"] and cost["memory"]["models"]
    assert json.loads(capsys.readouterr().out)["rollouts"] == cost["rollouts"]
    assert json.loads((tmp_path / "forecast.json").read_text()) == cost
    assert dry_run(as_run(composed("budget=smoke")))["rollouts"] < cost["rollouts"]


def test_exact_run_end_to_end(tmp_path):
    record = execute(composed("+experiment=exact", "dataset.num_questions=2", "budget.num_initial=200"), tmp_path)
    assert record["totals"]["questions"] == 2
    assert (tmp_path / "run.json").is_file() and (tmp_path / "report" / "report.md").is_file()
    summary = {(r["teacher"], r["algorithm"]): r for r in
               __import__("csv").DictReader(open(tmp_path / "report" / "summary.csv"))}
    assert float(summary[("tilt", "gkd")]["mean_cosine"]) > 0.5
    assert float(summary[("anti-tilt", "gkd")]["mean_cosine"]) < -0.5
    again = execute(composed("+experiment=exact", "dataset.num_questions=2", "budget.num_initial=200"), tmp_path)
    assert again["totals"]["rollouts"] == record["totals"]["rollouts"]  # nothing recomputed, same results


def test_exact_preset_rows_match_the_golden_rows(tmp_path):
    """The streamed, on-device scoring (issue #12) gives the rows the host path gave, to float32 round-off."""
    from tests.golden_rows import assert_rows_match_golden

    execute(composed("+experiment=exact"), tmp_path)
    assert_rows_match_golden(tmp_path, "exact", atol=1e-6)  # float32 round-off of the regrouped kernels


def test_a_key_added_with_plus_that_no_schema_names_fails_naming_it():
    with pytest.raises(ConfigError, match=r"budget\.nmin: unknown key; did you mean budget\.n_min"):
        C.from_omegaconf(composed("+budget.nmin=50"))
    with pytest.raises(ConfigError, match=r"^nmin: unknown key"):
        C.from_omegaconf(composed("+nmin=50"))
    with pytest.raises(ConfigError, match=r"teachers\.SELF-1C\.contxt: unknown key"):
        C.from_omegaconf(composed("+teachers.SELF-1C.contxt=x"))


def test_a_teacher_can_be_added_on_the_command_line_and_is_validated():
    cfg = C.from_omegaconf(composed("+teachers.big={kind:external,model:toy:teacher}",
                                    "+teachers.ctx={kind:self,context:SELF-1C}"))
    assert cfg.teachers["big"] == C.TeacherConf(kind="external", model="toy:teacher")
    assert cfg.teachers["ctx"].context == "SELF-1C" and isinstance(cfg.teachers["ctx"], C.TeacherConf)
    C.validate(cfg)
    with pytest.raises(ConfigError, match=r"teachers\.big\.modl: unknown key; did you mean teachers\.big\.model"):
        C.from_omegaconf(composed("+teachers.big={kind:external,modl:toy:teacher}"))
    with pytest.raises(ConfigError, match=r"teachers\.big"):
        C.from_omegaconf(composed("+teachers.big={kind:self,tilt:abc}"))
    with pytest.raises(ConfigError, match=r"teachers\.bad\.context"):
        C.validate(C.from_omegaconf(composed("+teachers.bad={kind:self,context:SELF-9Z}")))


def test_budget_defaults_live_in_one_place():
    import dataclasses

    from jaxalign.enrich import EnrichConfig, enrich_config
    from jaxalign.pipeline import PipelineConfig

    budget = C.BudgetConf()
    for field in dataclasses.fields(EnrichConfig):
        if field.name != "z":
            assert getattr(EnrichConfig(), field.name) == getattr(budget, field.name), field.name
    for name in ("num_initial", "max_response_tokens", "batch_rollouts"):
        assert getattr(PipelineConfig(), name) == getattr(budget, name), name
    small = as_run(composed()).budget
    assert enrich_config(small) == EnrichConfig(**{f.name: getattr(small, f.name)
                                                  for f in dataclasses.fields(EnrichConfig) if f.name != "z"})

    @dataclasses.dataclass
    class Lacking:
        n_min: int = 1

    with pytest.raises(TypeError, match="lacks the planner knobs"):
        enrich_config(Lacking())


def test_a_temperature_other_than_one_is_rejected():
    from jaxalign.pipeline import PipelineConfig

    with pytest.raises(ConfigError, match="temperature 1"):
        PipelineConfig(temperature=0.7)


def test_algorithms_and_conventions_are_chosen_on_the_command_line():
    from jaxalign.pipeline.jobs import pipeline_config

    cfg = as_run(composed("+experiment=exact", "algorithms=[gkd,tests.custom_algorithm.kl_gated_gkd]",
                          "conventions=[paper]"))
    C.validate(cfg)
    pcfg = pipeline_config(cfg)
    assert pcfg.algorithms == ("gkd", "tests.custom_algorithm.kl_gated_gkd") and pcfg.conventions == ("paper",)
    with pytest.raises(ConfigError, match="algorithms: 'gkdd' is not a built-in"):
        C.validate(as_run(composed("+experiment=exact", "algorithms=[gkdd]")))
    with pytest.raises(ConfigError, match="conventions"):
        C.validate(as_run(composed("+experiment=exact", "conventions=[literal]")))
