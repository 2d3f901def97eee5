"""The embedded default: shipped checkpoints, their pass rates, the context effect, the default run."""

import json

import jax.numpy as jnp
import pytest

from jaxalign.config import ASSETS
from jaxalign.models import load_qwen3, load_tokenizer
from jaxalign.tasks.toy_arith import ToyArith
from jaxalign.toy.train import pass_rate
from tests.golden_rows import assert_rows_match_golden

TOY = ASSETS / "toy"
SAMPLES = 256
# Stated ranges (README, docs/benchmarks.md), widened by 3 standard errors of a 256-sample rate.
STUDENT_RANGE = (0.40 - 0.09, 0.70 + 0.09)
TEACHER_MIN = 0.85 - 0.07


@pytest.fixture(scope="module")
def models():
    out = {}
    for name in ("student", "teacher"):
        cfg, params = load_qwen3(TOY / name, dtype=jnp.float32)
        out[name] = (cfg, params, load_tokenizer(TOY / name))
    return out


def test_shipped_checkpoints_are_small_and_load_through_the_real_loader(models):
    size = sum(p.stat().st_size for p in TOY.rglob("*") if p.is_file())
    assert size <= 10 * 2**20, f"{size / 2**20:.1f} MiB"
    for name in ("student", "teacher"):
        record = json.loads((TOY / name / "training.json").read_text())
        assert record["command"].startswith("python -m jaxalign.toy.train") and "seed" in record
    (s_cfg, _, s_tok), (t_cfg, _, t_tok) = models["student"], models["teacher"]
    assert t_cfg.num_layers > s_cfg.num_layers and s_tok.get_vocab() == t_tok.get_vocab()
    assert s_tok.chat_template
    assert s_cfg.eos_token_ids == tuple(s_tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))


def test_pass_rates_are_in_the_stated_ranges(models):
    task = ToyArith()
    rates = {}
    for name in ("student", "teacher"):
        cfg, params, tok = models[name]
        rates[name] = pass_rate(params, cfg, tok, task, "plain", SAMPLES, seed=7)
    student, teacher = rates["student"], rates["teacher"]
    assert STUDENT_RANGE[0] <= student <= STUDENT_RANGE[1], student
    assert teacher >= TEACHER_MIN and teacher > student, (teacher, student)


def test_a_correct_demonstration_raises_the_students_pass_rate(models):
    task = ToyArith()
    cfg, params, tok = models["student"]
    plain = pass_rate(params, cfg, tok, task, "plain", SAMPLES, seed=8)
    with_demo = pass_rate(params, cfg, tok, task, "SELF-1C", SAMPLES, seed=8)
    assert with_demo > plain + 0.15, (plain, with_demo)


@pytest.mark.parametrize("attention", ["xla", "ragged"])
def test_default_run_completes_and_writes_results(tmp_path, attention, monkeypatch):
    """decode_attention=ragged (the Pallas kernel, interpreted off a GPU) writes the same rows."""
    from tests.test_run import composed

    from jaxalign.models import ragged_attention as module
    from jaxalign.run import execute

    kernel, traced = module.ragged_attention, []
    monkeypatch.setattr(module, "ragged_attention", lambda *a: traced.append(1) or kernel(*a))
    record = execute(composed(f"decode_attention={attention}"), tmp_path)
    assert bool(traced) == (attention == "ragged")
    assert record["totals"]["questions"] == 4
    questions = [json.loads(p.read_text()) for p in (tmp_path / "questions").glob("*.json")]
    assert len(questions) == 4
    report = (tmp_path / "report" / "report.md").read_text()
    analysed = [q for q in questions if not q["skipped"]]
    if analysed:
        assert "SELF-1C" in report and "toy-teacher" in report
    assert (tmp_path / "demos").is_dir()
    # the streamed, on-device scoring (issue #12) gives the rows the host path gave
    assert_rows_match_golden(tmp_path, "toy_default")
