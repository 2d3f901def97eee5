"""The job's memory check before any weight loads: the weights' shares and the largest KV cache on one
device against ``device_memory_gb`` (on the CPU, only with that setting), with the arithmetic of
:mod:`jaxalign.cost` checked against the bytes of real arrays.

The toy run below (the embedded toy student and teacher, 64-token responses) needs 1.04 MB of weights
and 1.36 MB for the student's widest sampler call (32 rows), 2.40 MB in all.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign import config as C
from jaxalign import cost
from jaxalign.calibrate import Shape
from jaxalign.errors import ConfigError
from jaxalign.pipeline.jobs import build_job
from jaxalign.pipeline.models import PRE_PASS, WEIGHT_SHARE, CacheUse, ModelSpec, check_fits
from tests.test_mesh_run import RUN
from tests.test_run import composed

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "jaxalign" / "assets" / "toy"
FITS = 0.003  # GB: 2.7 MB usable
WEIGHTS_ONLY = 0.0015  # GB: 1.35 MB usable, more than the weights, less than weights and cache


# Without MiniLLM's rows, the student's sampler holds the largest cache (with them, the teacher's
# batched scoring of the stored rollouts does: test_minillm_scoring_is_priced_as_its_arrays).
SAMPLER = [*RUN, "algorithms=[gkd,gkd_full,single_sample_mc,drgrpo_mc]"]


def _job(tmp_path, *extra):
    return build_job(C.from_omegaconf(composed(*SAMPLER, *extra)), tmp_path, lambda: False)


def test_a_run_that_fits_passes_and_logs_its_peak(tmp_path, caplog):
    caplog.set_level("INFO")
    _job(tmp_path, f"device_memory_gb={FITS}")
    assert ("main phase (student and external teachers): peak 2.4 MB per device (weights 1.0 MB, largest KV cache "
            "1.4 MB: toy:student's sampler cache, 32 rows x 64 slots + 4 prefixes x 128 slots, 32 completions)") in caplog.text


def test_the_kv_cache_is_refused_before_any_weight_loads(tmp_path, monkeypatch):
    import jaxalign.models.loading as loading
    from jaxalign.run import execute

    monkeypatch.setattr(loading, "load_params", lambda *a, **k: pytest.fail("weights were loaded"))
    with pytest.raises(ConfigError) as refused:
        execute(composed(*SAMPLER, f"device_memory_gb={WEIGHTS_ONLY}"), tmp_path)
    message = str(refused.value)
    assert message.startswith("the main phase (student and external teachers) needs a peak of 2.4 MB per device: "
                              "1.0 MB of weights (toy:student 420.6 kB, toy:teacher 617.9 kB) and 1.4 MB for the "
                              "largest KV cache (toy:student's sampler cache, 32 rows x 64 slots + 4 prefixes x 128 "
                              "slots, 32 completions), more than 90% of the 1.5 MB of device_memory_gb"), message
    for fix in ("student.mesh.model", "student.mesh.data", "budget.batch_rollouts=16", "device_memory_gb"):
        assert fix in message
    assert not (tmp_path / "questions").exists()


def test_the_peak_is_the_bytes_of_the_arrays():
    """The main phase's weights and cache against the bytes of the loaded weights and of caches of the
    widest sampler call's shape (32 rows x 64 new slots, 4 prefixes x 128 slots, as the check says)."""
    from jaxalign.models import init_cache, load_qwen3
    from jaxalign.pipeline.jobs import load_task, model_roles, select_questions
    from jaxalign.pipeline.models import MAIN_PHASE, JobModels

    cfg = C.from_omegaconf(composed(*SAMPLER))
    task = load_task(cfg)
    prompts = [q.user for q in select_questions(task, cfg.dataset)]
    models = JobModels(cfg, model_roles(cfg), cfg.student.path, prompts, task.system)
    weights = 0
    for name in ("student", "teacher"):
        model_cfg, params = load_qwen3(TOY / name, jnp.float32)
        loaded = sum(x.nbytes for x in jax.tree.leaves(params))
        assert cost.weight_bytes_per_device(Shape.of(model_cfg, "float32")) == loaded
        weights += loaded
    assert sum(s.per_device for s in models.phases()[MAIN_PHASE]) == weights
    student_cfg, _ = load_qwen3(TOY / "student", jnp.float32)
    caches = (init_cache(student_cfg, 32, 64, jnp.float32), init_cache(student_cfg, 4, 128, jnp.float32))
    kv = sum(x.nbytes for c in caches for x in (*c.k, *c.v))
    logits = 3 * np.zeros((32, student_cfg.vocab_size), np.float32).nbytes  # logits, noise, perturbed logits
    cache = models.caches(cfg, models.prompt_tokens(prompts, task.system))[MAIN_PHASE]
    assert (cache.model, cache.kind, cache.rows) == ("toy:student", "sampler", 32)
    tokens = np.zeros((32, 64), np.int32).nbytes  # the sampler's output: 32 completions x 64 slots
    assert cache.nbytes == kv + logits + tokens


def test_check_fits_adds_the_phase_cache_to_the_weights():
    specs = [ModelSpec("a", Path("."), ("student",), 100, False),
             ModelSpec("b", Path("."), ("teacher t",), 400, False, (1, 4), 100)]  # 400 B over model=4
    cache = CacheUse("a", "sampler", "8 rows x 16 slots", 250, rows=8)
    assert WEIGHT_SHARE * 500 >= 100 + 100 + 250 > WEIGHT_SHARE * 499
    check_fits({"p": specs}, 500, "x", caches={"p": cache})
    with pytest.raises(ConfigError, match=r"needs a peak of 450 B per device: 200 B of weights \(a 100 B, b 400 B "
                                          r"\(100 B per device at model=4\)\) and 250 B for the largest KV cache "
                                          r"\(a's sampler cache, 8 rows x 16 slots\), more than 90% of the 499 B of "
                                          r"x\..*budget.batch_rollouts=4"):
        check_fits({"p": specs}, 499, "x", caches={"p": cache}, batch_rollouts=64)
    scoring = CacheUse("b", "scoring", "300 tokens", 250)
    with pytest.raises(ConfigError, match=r"b's scoring cache.*budget.max_response_tokens"):
        check_fits({"p": specs}, 499, "x", caches={"p": scoring})
    check_fits({"p": specs}, None, "cpu", caches={"p": cache})  # unknown memory: not checked
    # the pre-pass's fixes are the writing model's mesh, not the main phase's batch
    demos = dataclasses.replace(cache, data_axis="context_mesh.data")
    with pytest.raises(ConfigError, match=r"larger model axis \(student.mesh.model, context_mesh.model: .*a data axis "
                                          r"that splits the rows \(context_mesh.data\), or a device"):
        check_fits({PRE_PASS: specs}, 499, "x", caches={PRE_PASS: demos}, batch_rollouts=64)
    summary = dataclasses.replace(cache, data_axis=None)  # one row per data shard: no data axis shrinks it
    with pytest.raises(ConfigError) as refused:
        check_fits({PRE_PASS: specs}, 499, "x", caches={PRE_PASS: summary}, batch_rollouts=64)
    assert "data axis" not in str(refused.value) and "batch_rollouts" not in str(refused.value)
    with pytest.raises(ConfigError, match=r"larger model axis \(student.mesh.model, context_mesh.model\)$"):
        check_fits({PRE_PASS: specs}, 150, "x")


def test_per_device_arithmetic_against_numpy():
    """Qwen3-8B's published shape: every weight's share and the caches, summed leaf by leaf in NumPy."""
    s = cost.model_shape("Qwen/Qwen3-8B", "bfloat16").shape
    d, n, k, h, f, v = s.hidden, s.heads, s.kv_heads, s.head_dim, s.intermediate, s.vocab
    for model in (1, 2, 4, 8, 16):
        kv = model if k % model == 0 else 1
        layer = np.array([d * n * h / model, d * k * h / kv, d * k * h / kv, n * h * d / model,
                          d * f / model, d * f / model, f * d / model, d, d, h, h]).sum()
        total = s.layers * layer + 2 * v * d / model + d  # untied: embed and lm_head
        assert cost.weight_bytes_per_device(s, model) == total * 2, model
        rows, new, prefixes, prefix_slots, data = 64, 512, 4, 128, 2
        slot = s.layers * 2 * (k / kv) * h * 2
        expect = (rows / data * new + prefixes * prefix_slots) * slot + 3 * rows / data * v / model * 4
        assert cost.sampler_cache_bytes(s, rows, new, prefixes, prefix_slots, data, model) == expect, model
        queued = expect + 1024 / data * new * 4  # the int32 tokens of 1,024 queued completions
        assert cost.sampler_cache_bytes(s, rows, new, prefixes, prefix_slots, data, model, 1024) == queued, model
    assert cost.weight_bytes_per_device(s) == s.weight_bytes


def test_a_model_axis_makes_a_refused_run_fit(tmp_path):
    """On 2 host devices: refused without a mesh, passed with student.mesh.model=2 (the teacher takes the
    student's mesh), at the same device memory. The toy's vocabulary is padded to split (tests/test_mesh_run.py)."""
    script = (
        "import sys; from pathlib import Path\n"
        "from jaxalign import config as C\n"
        "from jaxalign.errors import ConfigError\n"
        "from jaxalign.pipeline.jobs import build_job\n"
        "from tests.test_mesh_run import padded_run, padded_toy\n"
        "from tests.test_run import composed\n"
        "out = Path(sys.argv[1]); root = padded_toy(out / 'models')\n"
        f"base = [*padded_run(root), 'device_memory_gb={WEIGHTS_ONLY}']\n"
        "try:\n"
        "    build_job(C.from_omegaconf(composed(*base)), out / 'a', lambda: False)\n"
        "except ConfigError as err:\n"
        "    print('REFUSED', err)\n"
        "cfg = C.from_omegaconf(composed(*base, 'student.mesh.model=2'))\n"
        "C.validate(cfg)\n"
        "job = build_job(cfg, out / 'b', lambda: False)\n"
        "print('FITS', job.info()['models'])\n")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "REFUSED the main phase (student and external teachers) needs a peak of" in result.stdout
    assert "FITS" in result.stdout and "'mesh': {'data': 1, 'model': 2}" in result.stdout


def test_the_pre_pass_counts_the_context_models_sampler():
    """A context model writing a round of demonstrations for the job's 2 questions in one call (20 of
    each, queued on the pre-pass's 32 rows of 64 new slots, after 2 prompts in 128 slots each, the
    prefix minimum) against the bytes of caches of that shape, the logits and the completions' token
    buffer (2 x 32 completions)."""
    from jaxalign.models import init_cache, load_qwen3
    from jaxalign.pipeline.jobs import load_task, model_roles, select_questions
    from jaxalign.pipeline.models import PRE_PASS, JobModels

    cfg = C.from_omegaconf(composed(*RUN, "~teachers.toy-teacher",
                                    "+teachers.from-teacher={kind: self, context: SELF-1C, source: 'toy:teacher'}"))
    task = load_task(cfg)
    prompts = [q.user for q in select_questions(task, cfg.dataset)]
    models = JobModels(cfg, model_roles(cfg), cfg.student.path, prompts, task.system)
    assert [s.id for s in models.phases()[PRE_PASS]] == ["toy:student", "toy:teacher"]
    cache = models.caches(cfg, models.prompt_tokens(prompts, task.system))[PRE_PASS]
    teacher_cfg, _ = load_qwen3(TOY / "teacher", jnp.float32)
    caches = (init_cache(teacher_cfg, 32, 64, jnp.float32), init_cache(teacher_cfg, 2, 128, jnp.float32))
    kv = sum(x.nbytes for c in caches for x in (*c.k, *c.v))
    assert len(prompts) == 2 and cache.data_axis == "context_mesh.data"
    assert (cache.model, cache.size) == ("toy:teacher", "32 rows x 64 slots + 2 prefixes x 128 slots")
    assert cache.nbytes == kv + 3 * 32 * teacher_cfg.vocab_size * 4 + 64 * 64 * 4


def test_the_students_own_demonstrations_are_a_pre_pass_peak():
    """Without any context-only model the student still samples its demonstrations before Phase 1:
    the pre-pass is checked with the student alone and the call of its demonstrations."""
    from jaxalign.pipeline.jobs import load_task, model_roles, select_questions
    from jaxalign.pipeline.models import PRE_PASS, JobModels

    cfg = C.from_omegaconf(composed(*RUN, "~teachers.toy-teacher"))  # SELF-1C, by the student
    task = load_task(cfg)
    prompts = [q.user for q in select_questions(task, cfg.dataset)]
    models = JobModels(cfg, model_roles(cfg), cfg.student.path, prompts, task.system)
    assert [s.id for s in models.phases()[PRE_PASS]] == ["toy:student"]
    cache = models.caches(cfg, models.prompt_tokens(prompts, task.system))[PRE_PASS]
    assert (cache.model, cache.size) == ("toy:student", "32 rows x 64 slots + 2 prefixes x 128 slots")
    toy_only = C.from_omegaconf(composed(*RUN, "~teachers.SELF-1C"))  # the external toy teacher alone
    assert PRE_PASS not in JobModels(toy_only, model_roles(toy_only), toy_only.student.path).phases()


def test_minillm_scoring_is_priced_as_its_arrays():
    """With minillm_mc, each model scores the stored rollouts in batches (engine.scoring.token_logprobs):
    the toy teacher's batch (16 rollouts of up to 64 tokens after a 64-slot prompt) is the largest
    cache (with 16 sampler rows), priced as the bytes of its caches and of four float32 [rows x positions,
    V] arrays."""
    from jaxalign.engine.scoring import scored_rows_layout
    from jaxalign.models import init_cache, load_qwen3
    from jaxalign.pipeline.jobs import load_task, model_roles, select_questions
    from jaxalign.pipeline.models import MAIN_PHASE, JobModels

    cfg = C.from_omegaconf(composed(*RUN, "budget.batch_rollouts=16"))
    task = load_task(cfg)
    prompts = [q.user for q in select_questions(task, cfg.dataset)]
    models = JobModels(cfg, model_roles(cfg), cfg.student.path, prompts, task.system)
    cache = models.caches(cfg, models.prompt_tokens(prompts, task.system))[MAIN_PHASE]
    rows, chunk, slots = scored_rows_layout(cfg.budget.num_initial - 4, 64)
    assert (cache.model, cache.kind, cache.size) == ("toy:teacher", "MiniLLM scoring",
                                                     f"{rows} rows x {slots} slots + a 64-slot prompt")
    teacher_cfg, _ = load_qwen3(TOY / "teacher", jnp.float32)
    caches = (init_cache(teacher_cfg, rows, slots, jnp.float32), init_cache(teacher_cfg, 1, 64, jnp.float32))
    kv = sum(x.nbytes for c in caches for x in (*c.k, *c.v))
    assert cache.nbytes == kv + 4 * np.zeros((rows * chunk, teacher_cfg.vocab_size), np.float32).nbytes


@pytest.mark.parametrize("overrides, model, setting", [
    (["~teachers.toy-teacher", "+teachers.from-teacher={kind: self, context: SELF-1C, source: 'toy:teacher'}"],
     "toy:teacher", "context_mesh.data"),  # a context-only model: its own mesh
    (["+teachers.from-teacher={kind: self, context: SELF-1C, source: 'toy:teacher'}",
      "+teachers.toy-teacher.mesh={data: 1, model: 1}"], "toy:teacher", "teachers.toy-teacher.mesh.data"),
])  # the second: a screening (no external teachers loaded), where the teacher's model writes demonstrations
def test_the_pre_pass_names_the_writers_own_data_axis(overrides, model, setting):
    """The fix a pre-pass memory error names is the mesh setting of the model that writes."""
    from jaxalign.pipeline.jobs import load_task, model_roles, select_questions
    from jaxalign.pipeline.models import PRE_PASS, JobModels

    cfg = C.from_omegaconf(composed(*RUN, *overrides))
    task = load_task(cfg)
    prompts = [q.user for q in select_questions(task, cfg.dataset)]
    models = JobModels(cfg, model_roles(cfg, externals=False), cfg.student.path, prompts, task.system)
    cache = models.caches(cfg, models.prompt_tokens(prompts, task.system)).get(PRE_PASS)
    assert cache is not None and (cache.model, cache.data_axis) == (model, setting)


def test_the_students_rollouts_take_the_caches_the_check_counts(monkeypatch):
    """The student's rollouts from every depth of the toy's 64-token responses take one cache of 64
    new slots (one compiled shape): the size the memory check counts for its widest call."""
    from jaxalign.engine import sampling
    from jaxalign.pipeline.jobs import load_task, model_roles, select_questions
    from jaxalign.pipeline.models import MAIN_PHASE, JobModels

    cfg = C.from_omegaconf(composed(*SAMPLER))
    task = load_task(cfg)
    prompts = [q.user for q in select_questions(task, cfg.dataset)]
    models = JobModels(cfg, model_roles(cfg), cfg.student.path, prompts, task.system)
    cap = cfg.budget.max_response_tokens
    student, teacher = models.policy("toy:student"), models.policy("toy:teacher")
    assert (student.max_new_bound, teacher.max_new_bound) == (cap, 0)
    seen = []

    def record(params, cfg, ptok, pstart, ids, valid, keys, temperature, limit, *, max_new, **kw):
        seen.append(max_new)
        return np.full((ids.size, max_new), -1, np.int32), np.zeros(ids.size, np.int32)

    monkeypatch.setattr(sampling, "_sample_forked", record)
    for depth in (0, 1, cap // 2, cap - 1):  # what QuestionRun._rollouts asks for at each depth
        student.sample(np.ones(5, np.int32), [np.ones(depth, np.int32)], 2, cap - depth, 1.0, jax.random.key(0))
    check = models.caches(cfg, models.prompt_tokens(prompts, task.system))[MAIN_PHASE]
    assert set(seen) == {64} and check.size.startswith("32 rows x 64 slots")
