"""The paper's experiment wiring on stand-in checkpoints: student=qwen3-0.6b teachers=paper8 on BoolQ,
MMLU and AIME 2025 (fixture rows), end to end; the model plan, the memory check, model_root, the
boundary check with a deliberate template mismatch, and the dataset registry at config time.

The stand-ins (python -m jaxalign.toy.standins) are random models under the real hub names that
answer in the paper's format, so questions get both outcomes; their numbers mean nothing.
"""

import json
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jaxalign import config as C
from jaxalign.errors import ConfigError, TokenizerError
from jaxalign.run import execute
from jaxalign.toy.standins import MODELS, write_standins
from tests.test_run import composed

FIXTURES = Path(__file__).resolve().parent / "tasks" / "fixtures"
PAPER8 = {"SELF-1C", "SELF-1C-32B", "SELF-SUM-1C", "SELF-1C1W", "SELF-SUM-1C1W", "Qwen3-4B", "Qwen3-8B", "Qwen3-14B"}


def question_summaries(run_dir: Path) -> list[dict]:
    """Every questions/<qid>.json of a run (not the checksum manifests beside them)."""
    return [json.loads(p.read_text()) for p in sorted((Path(run_dir) / "questions").glob("*.json"))
            if not p.name.endswith(".manifest.json")]


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_standins(root)
    return root


def paper_run(standins: Path, dataset: str, *extra: str):
    return composed("student=qwen3-0.6b", "teachers=paper8", f"dataset={dataset}", "budget=smoke",
                    f"model_root={standins}", f"dataset.path={FIXTURES / f'{dataset}.jsonl'}",
                    "dataset.num_questions=2", *extra)


def test_standins_carry_the_real_names_and_a_marker(standins):
    for name in MODELS:
        directory = standins / name
        assert (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()
        marker = json.loads((directory / "standin.json").read_text())
        assert marker["standin"] is True and marker["hub_id"] == name
    assert C.resolve_model_path("Qwen/Qwen3-4B", str(standins)) == str(standins / "Qwen/Qwen3-4B")
    assert C.resolve_model_path("Qwen/Qwen3-4B") == "Qwen/Qwen3-4B"  # no root: a hub id stays a hub id
    assert C.resolve_model_path(str(standins / "Qwen/Qwen3-4B"), "/elsewhere") == str(standins / "Qwen/Qwen3-4B")


@pytest.mark.parametrize("dataset", ["boolq", "mmlu", "aime2025"])
def test_paper8_on_standins_end_to_end(standins, dataset, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    record = execute(paper_run(standins, dataset), tmp_path)
    assert record["totals"]["questions"] == 2
    assert "numbers of this run mean nothing" in record["standins"]
    assert "mean nothing" in caplog.text  # said in the log too
    models = {m["id"]: m for m in record["models"]}
    assert set(models) == {f"Qwen/Qwen3-{s}" for s in ("0.6B", "4B", "8B", "14B", "32B")}
    assert models["Qwen/Qwen3-32B"]["roles"] == ["demonstrations", "summaries"]
    assert models["Qwen/Qwen3-0.6B"]["roles"] == ["student"] and all(m["standin"] for m in models.values())
    assert models["Qwen/Qwen3-0.6B"]["bytes"] > 0
    assert record["dataset"] == {"task": dataset, "source": str(FIXTURES / f"{dataset}.jsonl"), "rows_skipped": {},
                                 "system": "You are a helpful assistant."}
    # context models are logged with their bytes before loading, and the 32B is freed before Phase 1
    log = caplog.text
    assert log.index("model Qwen/Qwen3-32B (demonstrations, summaries)") < log.index("loading Qwen/Qwen3-0.6B")
    assert log.index("released Qwen/Qwen3-32B") < log.index("loading Qwen/Qwen3-4B")

    questions = question_summaries(tmp_path)
    assert len(questions) == 2
    for q in questions:
        qid, excluded = q["qid"], q["teachers_excluded"]
        assert set(excluded) <= PAPER8 - {"Qwen3-4B", "Qwen3-8B", "Qwen3-14B"}
        assert all(reason.startswith(f"{name}: ") for name, reason in excluded.items())
        for source in ("Qwen_Qwen3-0.6B", "Qwen_Qwen3-32B"):  # demonstrations cached per (question, source)
            assert (tmp_path / "demos" / source / f"{qid}.json").is_file()
        if q["skipped"]:
            continue
        teachers = set(pq.read_table(tmp_path / "questions" / f"{qid}.parquet").column("teacher").to_pylist())
        if q["rows"]:
            assert teachers - {"(reward reference)"} >= PAPER8 - set(excluded), (qid, teachers, excluded)
            assert not teachers & set(excluded)
    if dataset == "boolq":  # fixture rows answer True/False: both outcomes, so some question is analysed
        assert any(not q["skipped"] and q["rows"] for q in questions)
        summaries = list((tmp_path / "summaries" / "Qwen_Qwen3-32B" / "Qwen_Qwen3-0.6B").glob("*.json"))
        assert summaries and all(json.loads(p.read_text())["correct"] for p in summaries)


def test_a_rerun_recomputes_nothing_and_loads_no_context_model(standins, tmp_path, caplog):
    first = execute(paper_run(standins, "mmlu"), tmp_path)
    caplog.clear()
    caplog.set_level(logging.INFO)
    again = execute(paper_run(standins, "mmlu"), tmp_path)
    assert again["totals"]["rollouts"] == first["totals"]["rollouts"]
    assert "loading Qwen/Qwen3-32B" not in caplog.text and "demonstrations by" not in caplog.text


def test_weights_that_cannot_fit_are_refused_before_loading(standins, tmp_path, monkeypatch):
    import jaxalign.models.loading as loading

    monkeypatch.setattr(loading, "load_params", lambda *a, **k: pytest.fail("weights were loaded"))
    main = (r"the main phase \(student and external teachers\) needs 252\.7 kB of weights \(Qwen/Qwen3-0\.6B "
            r"63\.2 kB, .*Qwen/Qwen3-14B 63\.2 kB\), more than 90% of the 100\.0 kB of device_memory_gb")
    with pytest.raises(ConfigError, match=main):
        execute(paper_run(standins, "boolq", "device_memory_gb=0.0001"), tmp_path)
    with pytest.raises(ConfigError, match=r"pre-pass \(student and context model\) needs .*Qwen/Qwen3-32B"):
        execute(paper_run(standins, "boolq", "device_memory_gb=0.0001", "~teachers.Qwen3-4B", "~teachers.Qwen3-8B",
                          "~teachers.Qwen3-14B"), tmp_path / "b")


def test_phases_and_fit_against_a_numpy_sum():
    from jaxalign.pipeline.models import WEIGHT_SHARE, ModelSpec, check_fits

    specs = [ModelSpec(f"m{i}", Path("."), ("student",), n, False) for i, n in enumerate((10, 20, 30))]
    check_fits({"p": specs}, int(sum((10, 20, 30)) / WEIGHT_SHARE) + 1, "x")
    with pytest.raises(ConfigError, match=r"needs 60 B of weights \(m0 10 B, m1 20 B, m2 30 B\), more than 90% of "
                                          r"the 65 B of x"):
        check_fits({"p": specs}, int(sum((10, 20, 30)) / WEIGHT_SHARE) - 1, "x")
    check_fits({"p": specs}, None, "cpu")  # unknown memory: not checked


def test_weight_bytes_come_from_the_config_and_match_the_file(standins):
    import numpy as np
    from safetensors.numpy import load_file

    from jaxalign.pipeline.models import weight_bytes

    directory = standins / "Qwen/Qwen3-0.6B"
    tensors = load_file(str(directory / "model.safetensors"))  # stand-ins are written in float32
    assert weight_bytes(directory, np.float32) == sum(t.nbytes for t in tensors.values())
    assert weight_bytes(directory, "bfloat16") * 2 == weight_bytes(directory, np.float32)


def test_model_root_without_the_model_names_the_directory(standins, tmp_path):
    partial = tmp_path / "root"
    (partial / "Qwen").mkdir(parents=True)
    shutil.copytree(standins / "Qwen/Qwen3-0.6B", partial / "Qwen/Qwen3-0.6B")
    with pytest.raises(ConfigError, match=r"teachers\.SELF-1C-32B\.source: 'Qwen/Qwen3-32B' maps to .*Qwen3-32B under "
                                          r"model_root=.*, which does not exist; write stand-ins"):
        C.validate(C.from_omegaconf(paper_run(partial, "boolq")))
    with pytest.raises(ConfigError, match=r"model_root: .* is not a directory"):
        C.validate(C.from_omegaconf(paper_run(tmp_path / "nowhere", "boolq")))


def test_a_template_that_moves_the_generation_prompt_fails_the_boundary_check(standins, tmp_path):
    """A chat template that renders a context-bearing message with another generation prompt (here: it
    opens <think> itself) would shift every response token; the job stops, naming the teacher."""
    student = tmp_path / "Qwen/Qwen3-0.6B"
    shutil.copytree(standins / "Qwen/Qwen3-0.6B", student)
    template = (student / "chat_template.jinja").read_text()
    assert "'<|im_start|>assistant\\n'" in template
    (student / "chat_template.jinja").write_text(template.replace(
        "'<|im_start|>assistant\\n'",
        "'<|im_start|>assistant\\n' + ('<think>\\n' if 'Demonstration' in messages[-1].content else '')"))
    overrides = ["~teachers.SELF-1C-32B", "~teachers.SELF-SUM-1C", "~teachers.SELF-SUM-1C1W", "~teachers.Qwen3-4B",
                 "~teachers.Qwen3-8B", "~teachers.Qwen3-14B", "~teachers.SELF-1C1W", "dataset.num_questions=1"]
    with pytest.raises(TokenizerError, match=r"SELF-1C's prompt ends in .*<think>.* but the student's in .*"
                                             r"would not line up"):
        execute(paper_run(tmp_path, "boolq", *overrides), tmp_path / "run")


def test_dataset_names_come_from_the_task_registry():
    from jaxalign import tasks

    with pytest.raises(ConfigError, match=r"dataset\.name: 'gsm8k' is not a task; valid: toy_arith, boolq, mmlu, "
                                          r"aime2025, exact"):
        C.validate(C.from_omegaconf(composed("dataset.name=gsm8k")))
    with pytest.raises(ConfigError, match=r"dataset: boolq has no option 'terms'"):
        C.validate(C.from_omegaconf(composed("dataset=boolq", f"dataset.path={FIXTURES / 'boolq.jsonl'}",
                                             "dataset.terms=3")))
    with pytest.raises(ConfigError, match=r"dataset: boolq: path .* does not exist"):
        C.validate(C.from_omegaconf(composed("dataset=boolq", "dataset.path=/no/such.jsonl")))
    for name in tasks.task_names():
        if name != "toy_arith":
            C.from_omegaconf(composed(f"dataset={name}"))  # every task has its conf/dataset/<name>.yaml


def test_the_toy_summarizer_is_refused_on_a_real_dataset():
    with pytest.raises(ConfigError, match=r"teachers\.SELF-SUM-1C\.summarizer: the 'rule' summarizer reads toy_arith"):
        C.validate(C.from_omegaconf(composed("dataset=boolq", f"dataset.path={FIXTURES / 'boolq.jsonl'}")))


def test_context_settings_on_another_kind_are_refused():
    with pytest.raises(ConfigError, match=r"teachers\.toy-teacher\.source: only kind: self teachers take"):
        C.validate(C.from_omegaconf(composed("+teachers.toy-teacher.source=toy:teacher")))


@pytest.mark.slow
def test_standins_with_the_qwen_vocabulary_run_end_to_end(tmp_path):
    """V = 151,936 (jaxalign.toy.qwen_tokenizer): the real vocabulary's scoring and BPE prompts, ~1 min.
    The toy-vocabulary tests above cover the same wiring in the default run."""
    try:
        from jaxalign.toy.qwen_tokenizer import qwen_ranks_file

        qwen_ranks_file()
    except TokenizerError as err:  # the test-only package with Qwen's ranks (dashscope) is missing
        pytest.skip(f"no Qwen vocabulary here: {err}")
    models = tmp_path / "models"
    write_standins(models, vocab="qwen", models=["Qwen/Qwen3-0.6B", "Qwen/Qwen3-4B"])
    only = ("~teachers.SELF-1C-32B", "~teachers.SELF-SUM-1C", "~teachers.SELF-SUM-1C1W", "~teachers.Qwen3-8B",
            "~teachers.Qwen3-14B")  # the student, SELF-1C, SELF-1C1W and Qwen3-4B: no 32B at V = 151,936
    record = execute(paper_run(models, "boolq", *only), tmp_path / "run")
    assert record["totals"]["questions"] == 2
    rows = sum(q["rows"] for q in question_summaries(tmp_path / "run"))
    assert rows > 0
