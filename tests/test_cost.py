"""The device calibration and the dry run's cost model (jaxalign.calibrate, jaxalign.cost).

Formulas are checked against independent counts: parameters against the checkpoint's safetensors
header and the loader's name table, KV bytes against the engine's cache, FLOPs against the param
tree, sampler shapes against the engine's own calls, fits against synthetic timings. The last
test runs a real smoke run on the CPU and checks the forecast against its measured time.
"""

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign import calibrate as cal
from jaxalign import cost
from jaxalign.calibrate import Calibration, Device, KernelModel, Shape
from jaxalign.config import ASSETS, MeshConf
from jaxalign.enrich import depth_windows
from jaxalign.errors import ConfigError, JaxalignError

TOY = ASSETS / "toy" / "student"
TEST_DEVICE = Device("test-device", "cpu", {"float32": 1e11, "bfloat16": 1e11}, 1e10, None, "measured")
# every Qwen3 checkpoint a paper run names; their published shapes (no files needed)
QWEN3 = sorted(cost.PUBLISHED)


def toy_shape(dtype="float32") -> Shape:
    from jaxalign.models.config import load_config

    return Shape.of(load_config(TOY), dtype)


def synthetic(shapes, efficiency=0.5, overhead=1e-3, device=TEST_DEVICE, call_s=1e-2, compile_s=2.0) -> Calibration:
    """A calibration with the same kernel model for every shape and kind (no measurement)."""
    kernel = KernelModel(overhead, 0.0, efficiency, compile_s, 0.0, call_s, efficiency).to_json()
    records = {s.key: {"kernels": {k: dict(kernel) for k in cal.KINDS}} for s in shapes}
    return Calibration(device, records, Path("synthetic.json"))


def published(model_id, dtype="bfloat16") -> Shape:
    return cost.model_shape(model_id, dtype).shape


# ----------------------------------------------------------------------------- shapes and work
def test_parameter_count_is_the_checkpoints():
    from safetensors import safe_open

    with safe_open(str(TOY / "model.safetensors"), framework="numpy") as f:
        stored = sum(math.prod(f.get_slice(n).get_shape()) for n in f.keys())
    shape = toy_shape()
    assert shape.params == stored
    assert shape.weight_bytes == 4 * stored


@pytest.mark.parametrize("model_id", QWEN3)
def test_published_shapes_count_what_the_loader_loads(model_id):
    from jaxalign.models.loading import weight_table

    use = cost.model_shape(model_id, "bfloat16")
    assert use.source.startswith("published") and not use.standin
    assert use.shape.params == sum(math.prod(e.shape) for e in weight_table(use.shape.config()).values())
    assert use.shape.weight_bytes == 2 * use.shape.params


def test_qwen3_0_6b_is_0_6b():
    # the model card: 0.6B parameters, 0.44B of them outside the embedding
    shape = published("Qwen/Qwen3-0.6B")
    assert shape.params == pytest.approx(0.596e9, rel=1e-3)
    assert shape.layers * shape.layer_params == pytest.approx(0.44e9, rel=0.01)


def test_kv_bytes_per_slot_are_the_engines_cache():
    from jaxalign.models.qwen3 import init_cache

    shape = toy_shape()
    cache = init_cache(shape.config(), 3, 40, jnp.float32)
    assert shape.kv_bytes_per_slot * 3 * 40 == sum(x.nbytes for x in cache.k + cache.v)


def test_decode_flops_and_bytes_count_the_param_tree():
    from jaxalign.models.init import init_params

    shape = published("Qwen/Qwen3-1.7B")
    tree = jax.eval_shape(lambda: init_params(shape.config(), jax.random.key(0), jnp.bfloat16))
    matmul = sum(math.prod(x.shape) for x in jax.tree.leaves(tree.layers) if len(x.shape) >= 2)
    everything = sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
    rows, slots, prefixes, prefix_slots = 8, 300, 2, 48
    flops, data = cal.decode_step_work(shape, rows, slots, prefixes, prefix_slots)
    attention = 4 * rows * (slots + prefix_slots) * shape.heads * shape.head_dim * shape.layers
    assert flops == 2 * rows * (matmul + shape.vocab * shape.hidden) + attention
    per_slot = shape.layers * 2 * shape.kv_heads * shape.head_dim * 2
    kv = (rows * slots + prefixes * prefix_slots) * per_slot  # a shared prefix is read once, not per row
    assert data == everything * 2 + kv + 2 * rows * shape.vocab * 4  # tied: embed is the head, read once


def test_batched_prefill_reads_the_weights_once_per_step_and_every_rows_cache():
    """prefill_work with rows: ceil(tokens / chunk) steps, each reading the weights once and each of
    the rows' caches; FLOPs are those of every token. rows = 1 is the scored path's prefill."""
    s = published("Qwen/Qwen3-0.6B")
    rows, response, slots, chunk = 16, 200, 256, 16
    flops, data = cal.prefill_work(s, rows * response, slots, rows * chunk, rows)
    steps = -(-response // chunk)
    assert data == steps * (s.layers * s.layer_params * s.itemsize + rows * slots * s.kv_bytes_per_slot)
    queries = steps * rows * chunk
    assert flops == 2.0 * queries * s.layers * s.layer_matmul_params + 4.0 * queries * slots * s.heads * s.head_dim * s.layers
    assert cal.prefill_work(s, 512, 512, 256) == cal.prefill_work(s, 512, 512, 256, 1)


def test_prefill_layout_is_path_hiddens():
    from jaxalign.engine.scoring import path_hidden
    from jaxalign.models import load_qwen3

    cfg, params = load_qwen3(TOY, jnp.float32)
    for length, chunk in [(20, 256), (100, 256), (300, 64), (700, 128)]:
        hidden, _ = path_hidden(params, cfg, np.ones(5, np.int32), np.ones(length - 5, np.int32), chunk)
        assert cal.prefill_layout(length, chunk)[1] == hidden.shape[0]


def test_sampler_calls_are_the_engines(monkeypatch):
    """The shapes the cost model predicts are the shapes the sampler compiles."""
    from jaxalign.engine import sampling
    from jaxalign.models import load_qwen3

    cfg, params = load_qwen3(TOY, jnp.float32)
    seen = []

    def record(params, cfg, ptok, pstart, ids, valid, key, temperature, limit, *, max_new, slots, **kw):
        seen.append((ptok.shape[0], ids.shape[1], slots, ptok.shape[1], max_new))
        rows = ids.shape[0] * ids.shape[1]
        return np.ones((rows, max_new), np.int32), np.ones(rows, np.int32)

    monkeypatch.setattr(sampling, "_sample_forked", record)
    for counts, prefix, limit, max_rows, bound in [([8, 8, 8], 37, 50, 256, 0), ([100] * 5, 120, 900, 256, 0),
                                                   ([300], 20, 64, 128, 0), ([25] * 9 + [3], 61, 33, 64, 0),
                                                   ([8, 8], 300, 40, 256, 1000)]:
        seen.clear()
        prefixes = [np.ones(prefix, np.int32)] * len(counts)
        sampling.sample(params, cfg, prefixes, counts, max_new_tokens=limit, key=jax.random.key(0), eos_ids=(0,),
                        max_rows=max_rows, max_len=4096, max_new_bound=bound)
        predicted = cost.sampler_calls(counts, prefix, limit, limit, max_rows, max_new_bound=bound)
        assert [(c.prefixes, c.per_prefix, c.rows_per_prefix, c.prefix_slots, c.new_slots) for c in predicted] == seen


# ----------------------------------------------------------------------------- fits
def test_fit_recovers_a_kernel_model_from_exact_timings():
    overhead, per_layer, inverse = 2e-3, 5e-4, 1 / 0.4
    probes = [{"layers": layers, "roofline_s": roof, "seconds": overhead + layers * per_layer + inverse * roof}
              for layers, roof in [(1, 0.01), (2, 0.02), (2, 0.08)]]
    assert cal.fit_kernel(probes) == pytest.approx((overhead, per_layer, 0.4), rel=1e-6)
    one_depth = [dict(p, layers=28, seconds=overhead + inverse * p["roofline_s"]) for p in probes]
    assert cal.fit_kernel(one_depth) == pytest.approx((overhead, 0.0, 0.4), rel=1e-6)
    compiles = [{"layers": 1, "compile_s": 3.0}, {"layers": 2, "compile_s": 3.5}]
    assert cal.fit_compile(compiles) == pytest.approx((2.5, 0.5))
    assert KernelModel(0.0, 0.0, 1.0, 2.5, 0.5).compile_seconds(28) == pytest.approx(16.5)


def test_fit_never_claims_more_than_the_roofline():
    probes = [{"layers": 1, "roofline_s": r, "seconds": r / 2} for r in (0.01, 0.02)]
    assert cal.fit_kernel(probes)[2] == 1.0


@pytest.mark.parametrize("work, ratio", [((1e6, 1e12), 3.35 / 2.0), ((1e15, 1e6), 989 / 312)])
def test_projection_scales_by_the_roofline_of_each_device(work, ratio):
    """Memory-bound work scales with bandwidth, compute-bound with FLOP/s (bfloat16)."""
    a100, h100 = cal.SPECS["A100"], cal.SPECS["H100"]
    assert a100.roofline(work, "bfloat16") / h100.roofline(work, "bfloat16") == pytest.approx(ratio)
    shape = published("Qwen/Qwen3-0.6B")
    calibration = synthetic([shape], efficiency=0.3, overhead=0.0, device=h100)
    item = cost.Work("phase1", "decode", cost.ModelUse("m", shape, "test"), 10, (256, 4096, 2, 512))
    assert item.seconds(calibration, a100) / item.seconds(calibration) == pytest.approx(
        a100.roofline(item.roofline_work(shape), "bfloat16") / h100.roofline(item.roofline_work(shape), "bfloat16"))


# ----------------------------------------------------------------------------- the question plan
def paper_cfg(*overrides):
    return cost.compose(["student=qwen3-0.6b", "teachers=paper8", "dataset=boolq", "budget=paper", *overrides])


def test_paper_budget_counts_and_tokens_by_hand():
    cfg = paper_cfg()
    b, m = cfg.budget, cost.TRACES["boolq"][1]
    lengths = cost.trace_lengths(cfg)
    plan = cost.question_plan(cfg, cost.run_models(cfg), lengths)
    windows = depth_windows(m, b.first_window, b.window_growth)
    assert plan.windows == len(windows)
    pairs = b.top_k + b.top_r
    assert plan.initial_rollouts + plan.targeted_rollouts == b.num_initial + len(windows) * pairs * b.n_min
    tokens = b.num_initial * m + sum(pairs * b.n_min * (m - (lo + min(hi, m)) // 2 - 1) for lo, hi in windows)
    assert plan.tokens == tokens
    completions = sum(c.prefixes * c.per_prefix for c in plan.calls)  # padded: every rollout is in some call
    assert completions >= plan.initial_rollouts + plan.targeted_rollouts
    assert sum(c.valid for c in plan.calls) == plan.initial_rollouts + plan.targeted_rollouts
    adaptive = cost.question_plan(paper_cfg("budget.adaptive=true"), cost.run_models(cfg), lengths)
    assert adaptive.targeted_rollouts == pytest.approx(cost.ADAPTIVE_RATIO * plan.targeted_rollouts)


def test_phase_two_prices_every_teacher_and_minillm():
    """Every model scores the 4 paths (one prefill each) and, for MiniLLM, the counted rollouts in
    batched calls: one prompt prefill and one batched prefill of the rows per call."""
    from jaxalign.engine.scoring import scored_rows_layout

    cfg = paper_cfg()
    models = cost.run_models(cfg)
    lengths = cost.trace_lengths(cfg)
    plan = cost.question_plan(cfg, models, lengths)
    prefills, rows_tokens = {}, {}
    for w in plan.work:
        if w.kind == "prefill" and w.phase == "phase2":
            prefills[w.model.id] = prefills.get(w.model.id, 0) + w.count
            if len(w.size) == 4:  # the batched rows
                rows_tokens[w.model.id] = rows_tokens.get(w.model.id, 0) + w.count * w.size[0]
    counted = cfg.budget.num_initial - cost.PATHS
    assert plan.minillm_rollouts == counted
    rows = scored_rows_layout(counted, lengths.longest)[0]
    calls = -(-counted // rows)
    self_teachers = sum(t.model.id == models.student.id for t in models.teachers)
    assert prefills[models.student.id] == (1 + self_teachers) * (cost.PATHS + 2 * calls)
    assert rows_tokens[models.student.id] == (1 + self_teachers) * calls * rows * lengths.response
    for external in ("Qwen/Qwen3-4B", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B"):
        assert prefills[external] == cost.PATHS + 2 * calls
    assert cost.question_plan(paper_cfg("algorithms=[gkd]"), models, lengths).minillm_rollouts == 0


def test_memory_and_gpus_per_job():
    cfg = paper_cfg()
    models = cost.run_models(cfg)
    calibration = synthetic(models.needs())
    f = cost.forecast(cfg, calibration, models=models)
    weights = sum(published(m).weight_bytes for m in
                  ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-4B", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B"))
    mem = f["memory"]
    assert sum(r["weights_gb"] for r in mem["models"]) == pytest.approx(weights / 1e9)
    student = published("Qwen/Qwen3-0.6B")
    c = mem["decode_cache"]  # the forked layout: each row's own slots, each prefix's once
    decode = (c["rows"] * c["new_slots"] + c["prefixes"] * c["prefix_slots"]) * student.kv_bytes_per_slot
    logits = 3 * c["rows"] * student.vocab * 4
    tokens = c["completions"] * c["new_slots"] * 4  # the queued completions' int32 tokens
    assert mem["models"][0]["kv_cache_gb"] == pytest.approx((decode + logits + tokens) / 1e9)
    assert c["rows"] == 256 and c["new_slots"] == 4096  # max_rows, and max_response_tokens bucketed
    assert mem["gpus_per_job"] is None  # the test device has no known memory
    a100 = f["projections"]["A100"]["gpus_per_job"]
    assert a100 == math.ceil(mem["peak_gb"] * 1e9 / (cost.WEIGHT_SHARE * 80e9)) and a100 >= 2
    assert f["rollouts"] == f["questions"] * f["rollouts_per_question"]
    assert f["gpu_hours"] == pytest.approx(f["prepass_gpu_hours"] + f["phase1_gpu_hours"] + f["phase2_gpu_hours"]
                                           + f["compile_gpu_hours"])


def test_the_prepass_peak_counts_in_the_gpus_per_job():
    """Qwen3-32B writing SELF-1C-32B's demonstrations beside the 0.6B student: its 66 GB of weights and a
    call's cache (32 rows x 1024 slots) need 2 A100-80GB, where the main phase needs 1."""
    cfg = paper_cfg("budget.max_response_tokens=1024", *[f"~teachers.{n}" for n in (
        "SELF-SUM-1C", "SELF-SUM-1C1W", "Qwen3-4B", "Qwen3-8B", "Qwen3-14B")])
    models = cost.run_models(cfg)
    lengths = cost.trace_lengths(cfg)
    plan = cost.question_plan(cfg, models, lengths)
    mem = cost.memory(plan, models, lengths, 80e9)
    big, student = published("Qwen/Qwen3-32B"), published("Qwen/Qwen3-0.6B")
    cache = max(cost.call_bytes(big if m == "Qwen/Qwen3-32B" else student, c) for m, c in plan.context_calls)
    assert mem["prepass"]["peak_gb"] == pytest.approx((big.weight_bytes + student.weight_bytes + cache) / 1e9)
    assert mem["prepass"]["context_model"] == "Qwen/Qwen3-32B"
    assert mem["peak_gb"] * 1e9 < cost.WEIGHT_SHARE * 80e9 < mem["prepass"]["peak_gb"] * 1e9
    assert mem["gpus_per_job"] == 2
    assert "prepass" not in cost.memory(plan, dataclasses.replace(models, context=()), lengths, 80e9)
    # the student writing its own demonstrations is a pre-pass too: its weights and its call's cache
    own = paper_cfg("dataset=mmlu", "budget=smoke", *[f"~teachers.{n}" for n in (
        "SELF-1C-32B", "SELF-SUM-1C", "SELF-SUM-1C1W", "Qwen3-4B", "Qwen3-8B", "Qwen3-14B")])
    own_models = cost.run_models(own)
    own_plan = cost.question_plan(own, own_models, cost.trace_lengths(own))
    prepass = cost.memory(own_plan, own_models, cost.trace_lengths(own), 80e9)["prepass"]
    student_cache = max(cost.call_bytes(student, c) for _, c in own_plan.context_calls)
    assert prepass["context_model"] is None
    assert prepass["peak_gb"] == pytest.approx((student.weight_bytes + student_cache) / 1e9)


def test_the_context_prepass_is_priced_per_model():
    """paper8: the student writes SELF-1C's and SELF-1C1W's demonstrations; Qwen3-32B writes SELF-1C-32B's
    and summarizes the student's, a correct one and (for SELF-SUM-1C1W) a wrong one. Every trial of
    demo_trials is priced (ceil(60 / 20) rounds of the pre-pass's batch of 20), each summary at
    summary_max_tokens, with the writing model's own calibration. 64 questions share each round's
    calls, queued on 32 decode rows, as the pre-pass groups them; a question pays a 64th."""
    cfg = paper_cfg("dataset.num_questions=500")
    models = cost.run_models(cfg)
    uses = {c.model.id: c for c in models.context}
    assert set(uses) == {"Qwen/Qwen3-0.6B", "Qwen/Qwen3-32B"} and uses["Qwen/Qwen3-0.6B"].model is models.student
    assert [(u.demo_rounds, u.demo_batch, u.summaries, u.group, u.rows, u.summaries_per_call, u.mesh)
            for u in uses.values()] == [(3, 20, 0, 64, 32, 32, (1, 1)), (3, 20, 2, 64, 32, 32, (1, 1))]
    # AIME: a summary prompt carries a 15K-token demonstration, 16,384 slots: 2 of them fill a call's 32,768
    aime = cost.run_models(paper_cfg("dataset=aime2025", "budget.max_response_tokens=32768",
                                        "context_mesh={data: 2, model: 1}"))
    assert [(u.summaries_per_call, u.mesh) for u in aime.context] == [(2, (1, 1)), (2, (2, 1))]
    big = uses["Qwen/Qwen3-32B"].model
    assert models.needs()[big.shape] == {"decode", "prefill"} and big not in models.distinct()

    lengths = cost.trace_lengths(cfg)
    plan = cost.question_plan(cfg, models, lengths)
    rows = 32  # the pre-pass's decode rows (ContextSettings.max_rows); a group's completions queue on them
    demo = cost.sampler_calls([20] * 64, lengths.prompt, cfg.budget.max_response_tokens, lengths.longest, rows,
                              lengths.response)
    summary_prompt = lengths.prompt + lengths.response + cost.SUMMARY_PROMPT_TOKENS
    summary = cost.sampler_calls([1] * 128, summary_prompt, 1024, 1024, rows, 1024)
    # a round: 4 calls of 16 questions on 2 rows each; summaries: 4 calls of 32 prompts, a row each
    assert [(c.prefixes, c.rows) for c in demo] == [(16, 32)] * 4 and cfg.summary_max_tokens == 1024
    assert [(c.prefixes, c.rows, c.steps) for c in summary] == [(32, 32, 1024)] * 4
    assert list(plan.context_calls) == ([("Qwen/Qwen3-0.6B", c) for c in demo * 3]
                                        + [("Qwen/Qwen3-32B", c) for c in demo * 3]
                                        + [("Qwen/Qwen3-32B", c) for c in summary])
    prepass = [w for w in plan.work if w.phase == "prepass"]
    assert {w.model.id for w in prepass} == set(uses)
    decode = [w for w in prepass if w.kind == "decode" and w.model is big]
    assert sum(w.count for w in decode) == pytest.approx((3 * sum(c.steps for c in demo) + 4 * 1024) / 64)

    calibration = synthetic(models.needs())
    f = cost.forecast(cfg, calibration, models=models)
    seconds = sum(w.seconds(calibration) for w in prepass)
    assert f["per_question_s"]["prepass"] == pytest.approx(seconds)
    assert f["prepass_gpu_hours"] == pytest.approx(f["questions"] * seconds / 3600) and seconds > 0
    assert f["prepass"]["models"] == {
        "Qwen/Qwen3-0.6B": {"demonstrations": 60, "summaries": 0, "questions_per_call": 64},
        "Qwen/Qwen3-32B": {"demonstrations": 60, "summaries": 2, "questions_per_call": 64}}
    def shapes(calls):
        return {(c.prefixes, c.per_prefix, c.rows_per_prefix, c.prefix_slots, c.new_slots) for c in calls}

    assert f["compiled_shapes"]["decode Qwen/Qwen3-32B"] == len(shapes(demo + summary))
    # the student's pre-pass and main-phase calls share the executables of the shapes they share
    assert f["compiled_shapes"]["decode Qwen/Qwen3-0.6B"] == len(shapes(plan.calls) | shapes(demo))
    assert "pre-pass" not in f["not_priced"]
    # a shard's questions are grouped; fewer trials, fewer rounds; external teachers only, no pre-pass
    assert {u.group for u in cost.run_models(paper_cfg("dataset.num_questions=500", "shard.count=50")).context} == {10}
    assert [u.demo_rounds for u in cost.run_models(paper_cfg("demo_trials=25")).context] == [2, 2]
    externals = paper_cfg(*[f"~teachers.{n}" for n in ("SELF-1C", "SELF-1C-32B", "SELF-SUM-1C", "SELF-1C1W",
                                                       "SELF-SUM-1C1W")])
    assert cost.run_models(externals).context == ()


def test_a_model_without_any_config_is_named_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"someone/unknown-7B: no config.json .*huggingface-cli download"):
        cost.model_shape("someone/unknown-7B", "bfloat16")
    assert cost.model_shape("toy:student", "float32").shape == toy_shape()


def test_exact_runs_are_counted_not_priced():
    f = cost.dry_run(cost.compose(["+experiment=exact"]))
    assert f["gpu_hours"] == 0.0 and f["rollouts"] == f["questions"] * f["rollouts_per_question"] > 0


# ----------------------------------------------------------------------------- the calibration file
def test_missing_shapes_are_measured_once_and_cached(tmp_path, caplog):
    calls = []

    def fake_measure(shape, kinds, device):
        calls.append((shape.key, tuple(sorted(kinds))))
        kernel = KernelModel(0.0, 0.0, 0.5, 1.0, 0.0).to_json()
        return {"kernels": {k: kernel for k in kinds}, "probe_dtype": "float32"}

    path = tmp_path / "cal.json"
    shape = toy_shape()
    first = cal.ensure({shape: {"prefill"}}, path, measure=fake_measure)
    assert first.measured_now == (shape.key,) and "measuring it now" in caplog.text
    again = cal.ensure({shape: {"prefill"}}, path, measure=fake_measure)
    assert again.measured_now == () and len(calls) == 1
    more = cal.ensure({shape: {"prefill", "decode"}}, path, measure=fake_measure)  # tops up, keeps what it had
    assert calls[-1] == (shape.key, ("decode", "prefill")) and more.kernel(shape, "decode").efficiency == 0.5
    with pytest.raises(ConfigError, match=r"on 'NVIDIA H100 80GB HBM3'; run `python -m jaxalign.calibrate`"):
        cal.ensure({published("Qwen/Qwen3-8B"): {"prefill"}}, path, device="NVIDIA H100 80GB HBM3",
                   measure=fake_measure)
    path.write_text("{not json")
    with pytest.raises(JaxalignError, match=r"cal.json: not valid JSON .* delete it"):
        cal.ensure({shape: {"prefill"}}, path, measure=fake_measure)


def test_calibrate_command_reports_a_cached_calibration(tmp_path, capsys):
    shapes = [toy_shape(), dataclasses.replace(toy_shape(), layers=3)]
    record = synthetic(shapes)
    del record.shapes[shapes[1].key]["kernels"]["decode"]  # a teacher is scored, never samples
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"version": cal.VERSION, "devices": {cal.device_kind(): {
        "device": TEST_DEVICE.to_json(), "shapes": record.shapes}}}))
    out = cal.main(["--file", str(path), "budget=smoke"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == json.loads(json.dumps(out)) and last["measured_now"] == []
    assert [m["model"] for m in last["models"]] == ["toy:student", "toy:teacher"]
    assert set(last["models"][1]) == {"model", "shape", "prefill", "project"}  # nothing measured: it was not needed


def test_calibrate_command_takes_models_by_id_without_hydra(tmp_path):
    """A bare GPU machine has no Hydra: --student, --teacher and --context name the models. Each shape
    gets the kernels of its role (a context model samples, a teacher is only scored)."""
    student, teacher = toy_shape(), dataclasses.replace(toy_shape(), layers=3)
    path = tmp_path / "cal.json"
    shapes = synthetic([student, teacher]).shapes
    del shapes[teacher.key]["kernels"]["decode"]  # a teacher is only scored: --context must ask for it
    path.write_text(json.dumps({"version": cal.VERSION, "devices": {cal.device_kind(): {
        "device": TEST_DEVICE.to_json(), "shapes": shapes}}}))
    code = ("import json, sys; from jaxalign.calibrate import main; "
            f"out = main(['--file', {str(path)!r}, '--student', {str(TOY)!r}, '--teacher', {str(TOY.parent / 'teacher')!r}, "
            f"'--context', {str(TOY.parent / 'teacher')!r}, '--dtype', 'float32']); "
            "print('IMPORTED', sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'omegaconf', 'submitit'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "IMPORTED []"
    last = json.loads(lines[-2])
    assert last["measured_now"] == [teacher.key] and [m["shape"] for m in last["models"]] == [student.key, teacher.key]
    assert set(last["models"][1]) == {"model", "shape", "decode", "prefill", "project"}
    bad = subprocess.run([sys.executable, "-m", "jaxalign.calibrate", "--file", str(path), "--teacher", str(TOY),
                          "budget=smoke"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "either by overrides or by --student" in bad.stderr


def test_the_calibration_file_follows_the_setting_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cal.ENV, str(tmp_path / "env.json"))
    assert cal.calibration_path(str(tmp_path / "set.json")) == tmp_path / "set.json"
    assert cal.calibration_path() == tmp_path / "env.json"
    monkeypatch.delenv(cal.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cal.calibration_path() == tmp_path / "jaxalign" / "calibration.json"


# ----------------------------------------------------------------------------- a sweep's total
def test_the_sweep_total_is_the_last_line(tmp_path, capsys):
    for name, days, a100, q, per in [("a", 1.5, 0.5, 10, 1000.0), ("b", 2.5, 1.0, 30, 3000.0)]:
        run = tmp_path / "dry-run" / f"student={name}"
        run.mkdir(parents=True)
        (run / cost.FORECAST_FILE).write_text(json.dumps(
            {"device": "cpu", "gpu_days": days, "questions": q, "rollouts_per_question": per, "rollouts": q * per,
             "projections": {"A100": {"gpu_days": a100}, "H100": {"gpu_days": a100 / 2}}}))
    cost.main([str(tmp_path)])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["gpu_days"] == 4.0 and last["device"] == "cpu" and last["a100_days"] == 1.5
    assert last["rollouts_per_question"] == (10 * 1000 + 30 * 3000) / 40
    assert last["rollouts_per_question_range"] == [1000.0, 3000.0]
    other = tmp_path / "dry-run" / "student=c"
    other.mkdir()
    (other / cost.FORECAST_FILE).write_text(json.dumps({"device": "NVIDIA H100", "gpu_days": 1, "questions": 1,
                                                         "rollouts_per_question": 1, "rollouts": 1}))
    with pytest.raises(JaxalignError, match="different devices"):
        cost.main([str(tmp_path)])
    with pytest.raises(JaxalignError, match="no forecast.json"):
        cost.main([str(tmp_path / "nothing")])


# ----------------------------------------------------------------------------- measured against forecast
SMOKE = ["budget=smoke", "budget.max_response_tokens=64", "dataset.num_questions=2", "~teachers.SELF-1C",
         "~teachers.SELF-1C1W", "~teachers.SELF-SUM-1C"]


def test_forecast_is_within_2x_of_a_measured_smoke_run(tmp_path):
    """The toy student and teacher on the CPU at budget=smoke (64-token responses, so that the toy's
    ~50-token answers are not cut): the calibration measured now, the run measured cold."""
    from jaxalign.pipeline.jobs import build_job

    cfg = cost.compose(SMOKE)
    job = build_job(cfg, tmp_path / "run", lambda: False)
    job.prepare(job.questions)
    jax.clear_caches()  # a fresh job compiles every kernel once: so does the forecast
    summaries = [job.make_run(q).run() for q in job.questions]
    assert not any(s["skipped"] for s in summaries)
    measured = sum(s["timings"]["total_s"] for s in summaries)

    f = cost.dry_run(cfg, str(tmp_path / "calibration.json"))
    assert f["device"] == cal.device_kind() and set(f["calibrated_now"]) == {
        toy_shape().key, dataclasses.replace(toy_shape(), layers=3).key}
    assert 0.5 <= f["gpu_hours"] * 3600 / measured <= 2.0, (f["gpu_hours"] * 3600, measured)
    rollouts = [s["budget"]["rollouts"] for s in summaries]
    assert max(rollouts) <= f["rollouts_per_question"]  # the plan counts every pair at N_min: an upper bound
    again = cost.dry_run(cfg, str(tmp_path / "calibration.json"))
    assert again["calibrated_now"] == [] and again["gpu_hours"] == f["gpu_hours"]


def test_decode_steps_follow_the_queue_and_ragged_attention_costs_less():
    """A queued call runs (rounds - 1) mean lengths plus one longest; one row per completion runs the
    longest; ragged attention reads less than the xla window, which is the furthest row's."""
    one_row_each = cost.sampler_calls([100] * 2, 64, 4096, 600, max_rows=256, mean=200)
    assert [(c.rows, c.steps) for c in one_row_each] == [(256, 600)]
    queued = cost.sampler_calls([100] * 5, 64, 4096, 600, max_rows=64, mean=200)  # 5 prefixes x 12 rows, 9 rounds
    assert [(c.rows, c.rows_per_prefix, c.steps) for c in queued] == [(60, 12, 8 * 200 + 600)]
    # windows 256, 512, 1024, 2048, 4096: the first 600 steps read 256, 512, then 1024; later steps 1024
    first = 256 * 256 + 256 * 512 + 88 * 1024
    assert queued[0].read_slots == pytest.approx((first + 1600 * 1024) / 2200)
    assert cost.mean_window(128, 40, 600) == 128  # a single-window cache is read whole
    on_mesh = cost.sampler_calls([4] * 20, 64, 4096, 600, max_rows=256, mean=200, min_rows=8)  # data = 8
    assert [(c.prefixes, c.per_prefix, c.rows_per_prefix) for c in on_mesh] == [(20, 8, 8)]  # as the engine

    cfg = paper_cfg("budget.top_k=20", "budget.top_r=20")
    models = cost.run_models(cfg)
    lengths = cost.trace_lengths(cfg)
    calibration = synthetic(models.needs())
    def decode_seconds(cfg, **kwargs):
        return sum(w.seconds(calibration) for w in cost.question_plan(cfg, models, lengths, **kwargs).work
                   if w.kind == "decode")

    seconds = {mode: decode_seconds(cfg, decode_attention=mode) for mode in ("xla", "ragged")}
    assert seconds["ragged"] < seconds["xla"] == decode_seconds(cfg)
    assert decode_seconds(paper_cfg("budget.top_k=20", "budget.top_r=20", "decode_attention=ragged")) == seconds["ragged"]
    # the kernel runs per device where the student mesh's model axis divides the kv heads (8), else the window
    for model, priced in ((4, "ragged"), (16, "xla")):
        on_mesh = paper_cfg("budget.top_k=20", "budget.top_r=20", "decode_attention=ragged", f"student.mesh.model={model}")
        assert cost.forecast(on_mesh, calibration, models=models)["decode_attention"] == priced
    with pytest.raises(ConfigError, match="decode_attention='static'"):
        cost.question_plan(cfg, models, lengths, decode_attention="static")


def test_the_forecast_reads_the_meshes():
    """paper8 on 4 GPUs: the student's rows over data=4, each external teacher and the context model
    (Qwen3-32B) split model=4. The per-device peaks then fit one A100, and the job needs the meshes' 4
    GPUs (one device: 3 A100s). Without context_mesh the 32B model shares the student's mesh, whole on
    each device, and its pre-pass does not fit."""
    meshes = ["student.mesh={data: 4, model: 1}", "context_mesh={data: 1, model: 4}"] + [
        f"+teachers.Qwen3-{size}.mesh={{data: 1, model: 4}}" for size in ("4B", "8B", "14B")]
    cfg, alone = paper_cfg(*meshes), paper_cfg()
    models = cost.run_models(cfg)
    calibration = synthetic(models.needs())
    f, one = cost.forecast(cfg, calibration, models=models), cost.forecast(alone, calibration, models=models)
    assert f["memory"]["mesh_devices"] == 4 and f["memory"]["peak_gb"] < one["memory"]["peak_gb"] / 3
    assert f["projections"]["A100"]["gpus_per_job"] == 4
    assert one["projections"]["A100"]["gpus_per_job"] == 3 and "mesh_devices" not in one["memory"]
    rows = {r["id"]: r for r in f["memory"]["models"]}
    assert rows["Qwen/Qwen3-14B"]["mesh"] == {"data": 1, "model": 4}
    assert rows["Qwen/Qwen3-14B"]["weights_per_device_gb"] < rows["Qwen/Qwen3-14B"]["weights_gb"] / 3
    squeezed = cost.forecast(paper_cfg(*meshes, "device_memory_gb=10"), calibration, models=models)
    assert squeezed["memory"]["fits"] is False and squeezed["memory"]["gpus_per_job"] is None
    whole = paper_cfg(*meshes[:1], *meshes[2:])
    shared = cost.forecast(whole, calibration, models=cost.run_models(whole))["projections"]["A100"]
    assert shared["gpus_per_job"] is None


def test_the_job_asks_for_the_context_models_mesh():
    """Qwen3-32B writes paper8's demonstrations and summaries in the pre-pass; on
    context_mesh={data: 1, model: 4} the job needs 4 GPUs even where the main phase needs fewer."""
    from jaxalign import meshes

    cfg = paper_cfg("context_mesh={data: 1, model: 4}")
    assert meshes.context_meshes(cfg) == {"Qwen/Qwen3-32B": ("context_mesh", MeshConf(1, 4))}
    assert meshes.mesh_devices(cfg) == 4  # what launch/sweep.sh asks SLURM for
    models = cost.run_models(cfg)
    calibration = synthetic(models.needs())
    f = cost.forecast(cfg, calibration, models=models)
    alone = cost.forecast(paper_cfg(), calibration, models=models)
    assert alone["projections"]["H100"]["gpus_per_job"] == 3  # the main phase alone: 3 H100s (one device each)
    assert f["projections"]["H100"]["gpus_per_job"] == 4
    assert f["projections"]["A100"]["gpus_per_job"] == max(4, alone["projections"]["A100"]["gpus_per_job"])
    assert f["memory"]["peak_gb"] == alone["memory"]["peak_gb"]  # the main phase is unchanged
    # the job holds 4 devices throughout and uses one after the pre-pass: the idle three are billed
    assert f["gpu_hours"] == pytest.approx(4 * alone["gpu_hours"]) and "idle_held_devices" in f
    assert f["projections"]["A100"]["gpu_hours"] == pytest.approx(4 * alone["projections"]["A100"]["gpu_hours"])
    wide = cost.forecast(paper_cfg("student.mesh={data: 4, model: 1}", "context_mesh={data: 1, model: 4}"),
                         calibration, models=models)
    assert "idle_held_devices" not in wide  # the main phase's mesh already spans the 4
    assert meshes.context_meshes(paper_cfg()) == {"Qwen/Qwen3-32B": ("student.mesh", MeshConf(1, 1))}
