"""Phase 1/2 pipeline: exact truth end to end, kill and resume, corrupt checkpoints, real model path."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest

from jaxalign.engine.policy import FlaxPolicy
from jaxalign.enrich import EnrichConfig, depth_windows, plan_window, Candidates
from jaxalign.models.config import Qwen3Config
from jaxalign.models.init import init_params
from jaxalign.pipeline import PipelineConfig, Preempted, QuestionRun, Teacher
from tests.pipeline_worker import SMALL, exact_errors, exact_run

ROOT = Path(__file__).resolve().parents[1]
# Mean |cosine(estimated P_succ) - cosine(exact P_succ)| must stay below this. With N_min = 60 the
# standard error of one child's P̂ is at most sqrt(0.25/60) = 0.065; the cosine at a decision node
# moves by about that much per unit of relative error in (s_j - s̄). Measured: 0.02-0.06 per
# teacher over 4 questions, so 0.12 leaves a 2x margin while a bias of the size of a counting-rule
# slip (docs/math.md: 0.15 for count_ancestors) would fail.
MAE_BOUND = 0.12


def rows_of(run_dir, qid):
    """The question's rows, NaN replaced by a marker so that equal files compare equal."""
    rows = pq.read_table(Path(run_dir) / "questions" / f"{qid}.parquet").to_pylist()
    return [{k: "NaN" if isinstance(v, float) and v != v else v for k, v in row.items()} for row in rows]


def test_depth_windows_are_exponential():
    assert depth_windows(400) == [(0, 50), (50, 150), (150, 350), (350, 400)]
    assert depth_windows(7, first=2) == [(0, 2), (2, 6), (6, 7)]


def test_pipeline_alignment_matches_exact_truth(tmp_path):
    errors, means = {"tilt": [], "anti": [], "noise": []}, {"tilt": [], "anti": [], "noise": []}
    for seed in range(4):
        run = exact_run(seed, tmp_path)
        if run.run()["skipped"]:
            continue
        rows = rows_of(tmp_path, run.qid)
        for name, errs in exact_errors(run, rows).items():
            errors[name].extend(errs)
        for row in rows:
            if row["algorithm"] == "gkd" and row["valid"]:
                means[row["teacher"]].append(row["cosine"])
    for name, errs in errors.items():
        assert len(errs) >= 20 and np.mean(errs) < MAE_BOUND, (name, len(errs), np.mean(errs))
    mean = {k: np.mean(v) for k, v in means.items()}
    assert mean["tilt"] > mean["noise"] > mean["anti"], mean  # the known ranking


def test_adaptive_enrichment_runs_resumably_and_spends_less(tmp_path):
    import dataclasses

    adaptive = dataclasses.replace(SMALL, enrich=dataclasses.replace(SMALL.enrich, adaptive=True, n_min=200,
                                                                    adaptive_step=20, adaptive_max=200))
    fixed = dataclasses.replace(SMALL, enrich=dataclasses.replace(SMALL.enrich, n_min=200))
    a = exact_run(0, tmp_path / "adaptive", adaptive).run()
    f = exact_run(0, tmp_path / "fixed", fixed).run()
    assert a["budget"]["rollouts"] < f["budget"]["rollouts"]
    calls = {"n": 0}

    def stop_after_five():
        calls["n"] += 1
        return calls["n"] == 5

    with pytest.raises(Preempted):
        exact_run(0, tmp_path / "resumed", adaptive, stop=stop_after_five).run()
    resumed = exact_run(0, tmp_path / "resumed", adaptive).run()
    assert resumed["budget"] == a["budget"]
    assert rows_of(tmp_path / "resumed", "exact-0") == rows_of(tmp_path / "adaptive", "exact-0")


def test_rows_have_the_documented_columns(tmp_path):
    run = exact_run(1, tmp_path)
    summary = run.run()
    rows = rows_of(tmp_path, run.qid)
    assert rows and set(rows[0]) >= {"qid", "path", "correct", "depth", "norm_depth", "token", "teacher", "algorithm",
                                     "s_u_size", "sr_range", "cosine", "advantage", "kl", "js", "l2", "cos_pq", "visits"}
    assert {r["algorithm"] for r in rows} == {"gkd", "gkd_full", "single_sample_mc", "drgrpo_mc"}
    assert all(np.isfinite(r["cosine"]) == r["valid"] for r in rows)
    assert summary["budget"]["rollouts"] >= SMALL.num_initial and summary["budget"]["per_window"]
    saved = json.loads((tmp_path / "questions" / f"{run.qid}.json").read_text())
    assert saved == summary and 0 < saved["pass_rate"] < 1
    again = exact_run(1, tmp_path).run()  # a finished question is not recomputed
    assert again == summary


def test_question_with_one_outcome_is_skipped(tmp_path):
    from jaxalign.exact import ExactPolicy

    policy = ExactPolicy(seed=0)
    run = QuestionRun("always", policy, np.zeros(1), [], lambda toks: True, SMALL, tmp_path)
    summary = run.run()
    assert summary["skipped"] and "correct" in summary["skip_reason"] and summary["rows"] == 0


def _tree(run_dir, qid):
    return dict(np.load(Path(run_dir) / "questions" / f"{qid}.tree.npz"))


def _checkpoints(run_dir, qid):
    d = Path(run_dir) / "ckpt" / qid
    return [p for p in d.iterdir() if p.name.isdigit()] if d.is_dir() else []


def test_sigkill_and_resume_gives_identical_results(tmp_path):
    reference = tmp_path / "reference"
    exact_run(2, reference).run()
    killed = tmp_path / "killed"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    kills = 0
    for kill_after in (2, 9, 20, 10_000):
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "pipeline_worker.py"), "2", str(killed)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:
            steps = [int(p.name) for p in _checkpoints(killed, "exact-2")]
            if steps and max(steps) >= kill_after:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.05)
        out, err = proc.communicate(timeout=300)
        if "WORKER-DONE" in out:
            break
    assert kills >= 2, "the worker finished before it could be killed"
    assert (killed / "questions" / "exact-2.json").is_file(), err[-3000:]
    assert rows_of(killed, "exact-2") == rows_of(reference, "exact-2")
    a, b = _tree(reference, "exact-2"), _tree(killed, "exact-2")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    summary_a = json.loads((reference / "questions" / "exact-2.json").read_text())
    summary_b = json.loads((killed / "questions" / "exact-2.json").read_text())
    assert summary_a["budget"] == summary_b["budget"]


def test_corrupt_latest_checkpoint_falls_back_with_a_warning(tmp_path, caplog):
    reference = tmp_path / "reference"
    exact_run(3, reference).run()
    calls = {"n": 0}

    def stop_after_six():
        calls["n"] += 1
        return calls["n"] >= 6

    with pytest.raises(Preempted):
        exact_run(3, tmp_path / "run", stop=stop_after_six).run()
    steps = sorted(_checkpoints(tmp_path / "run", "exact-3"), key=lambda p: int(p.name))
    for f in steps[-1].rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])  # truncate every file
    with caplog.at_level("WARNING"):
        exact_run(3, tmp_path / "run").run()
    assert any("unreadable" in r.message for r in caplog.records)
    assert rows_of(tmp_path / "run", "exact-3") == rows_of(reference, "exact-3")


def test_real_model_path_smoke(tmp_path):
    """FlaxPolicy on a tiny random Qwen3: the numbers are meaningless, the path must run."""
    cfg = Qwen3Config(vocab_size=48, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                      head_dim=8, rope_theta=1e4, rms_norm_eps=1e-6, tie_word_embeddings=True,
                      max_position_embeddings=128)
    student = FlaxPolicy(init_params(cfg, jax.random.key(0), scale=0.4), cfg, eos_token_ids=(40, 41, 42, 43))
    teacher = FlaxPolicy(init_params(cfg, jax.random.key(1), scale=0.4), cfg, eos_token_ids=(40, 41, 42, 43))
    prompt = np.arange(1, 9, dtype=np.int32)
    pcfg = PipelineConfig(num_initial=64, max_response_tokens=12, batch_rollouts=64,
                          enrich=EnrichConfig(top_k=3, top_r=3, n_min=24, n_sig=8))
    run = QuestionRun("tiny-qwen3", student, prompt, [Teacher("other", teacher, prompt[:-2])],
                      lambda toks: int(np.sum(toks)) % 2 == 0, pcfg, tmp_path)
    summary = run.run()
    assert not summary["skipped"] and summary["budget"]["rollouts"] > 64
    rows = rows_of(tmp_path, "tiny-qwen3")
    assert summary["rows"] == len(rows)
