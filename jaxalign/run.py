"""Main entry point: ``python -m jaxalign.run [group=option ...] [key=value ...]``.

With no overrides it runs the embedded default: the toy student and its four teachers on
toy_arith, Phase 1, Phase 2 and the summary report, on the CPU in minutes. The run directory is
derived from the config, so the same command resumes an interrupted run.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import time
from pathlib import Path
from typing import Callable

import hydra
import jax
import jax.numpy as jnp
import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from jaxalign import config as C
from jaxalign import rundir
from jaxalign.contexts import (DemonstrationCache, ToyRuleSummarizer, build_context, check_same_generation_prompt,
                               sample_demonstrations)
from jaxalign.enrich import depth_windows, enrich_config
from jaxalign.errors import ConfigError
from jaxalign.exact import ExactPolicy
from jaxalign.pipeline import PipelineConfig, Preempted, QuestionRun, Teacher, question_key
from jaxalign.preemption import StopRequest

log = logging.getLogger("jaxalign.run")
ConfigStore.instance().store(name="run_schema", node=C.RunConf)


def pipeline_config(cfg: C.RunConf) -> PipelineConfig:
    b = cfg.budget
    return PipelineConfig(
        num_initial=b.num_initial, max_response_tokens=b.max_response_tokens, batch_rollouts=b.batch_rollouts,
        include_path_rollout=cfg.include_path_rollout, count_ancestors=cfg.count_ancestors, seed=cfg.seed,
        enrich=enrich_config(b),
    )


def dry_run(cfg: C.RunConf) -> dict:
    """Rollouts, tokens and GPU-hours before launching: questions x (G + windows x pairs x N_min)."""
    b = cfg.budget
    windows = len(depth_windows(b.max_response_tokens, b.first_window, b.window_growth))
    per_question = b.num_initial + windows * (b.top_k + b.top_r) * b.n_min
    rollouts = cfg.dataset.num_questions * per_question
    tokens = rollouts * b.max_response_tokens / 2  # a targeted rollout starts mid-response on average
    hours = tokens / cfg.throughput_tokens_per_s / 3600
    return {"questions": cfg.dataset.num_questions, "windows": windows, "rollouts_per_question": per_question,
            "rollouts": rollouts, "tokens": tokens, "gpu_hours": hours,
            "teachers": len(cfg.teachers), "throughput_tokens_per_s": cfg.throughput_tokens_per_s}


@dataclasses.dataclass
class Job:
    """Everything needed to build one QuestionRun per question."""

    questions: list
    make_run: Callable


def exact_job(cfg: C.RunConf, run_dir: Path, stop) -> Job:
    pcfg = pipeline_config(cfg)
    seeds = [cfg.dataset.seed + cfg.student.exact_seed_offset + i for i in range(cfg.dataset.num_questions)]

    def make_run(seed):
        policy = ExactPolicy(seed=seed)
        # the tabular model bounds its own responses; the budget's token limit does not apply
        question_cfg = dataclasses.replace(pcfg, max_response_tokens=policy.max_len)
        teachers = [Teacher(name, policy.tilted_teacher(t.tilt) if t.tilt else policy.noise_teacher(t.noise), None)
                    for name, t in cfg.teachers.items()]
        return QuestionRun(f"exact-{seed}", policy, np.zeros(1, np.int64), teachers, policy.is_success, question_cfg,
                           run_dir, stop=stop)

    return Job(seeds, make_run)


def flax_job(cfg: C.RunConf, run_dir: Path, stop) -> Job:
    from jaxalign.engine.policy import FlaxPolicy
    from jaxalign.models import encode_chat, load_qwen3, load_tokenizer
    from jaxalign.models.loading import resolve_model_dir
    from jaxalign.models.tokenizer import check_same_tokenizer
    from jaxalign.tasks.toy_arith import ToyArith

    dtype = jnp.bfloat16 if cfg.student.dtype == "bfloat16" else jnp.float32
    student_dir = resolve_model_dir(C.resolve_model_path(cfg.student.path))
    tokenizer = load_tokenizer(student_dir)
    eos = tuple(tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))  # as Qwen3
    externals = {}
    for name, t in cfg.teachers.items():  # tokenizers first: a mismatch fails before any weights load
        if t.kind == "external":
            tdir = resolve_model_dir(C.resolve_model_path(t.model))
            check_same_tokenizer(tokenizer, load_tokenizer(tdir), cfg.student.name, name)
            externals[name] = tdir
    model_cfg, params = load_qwen3(student_dir, dtype)
    student = FlaxPolicy(params, model_cfg, eos)
    external_policies = {name: FlaxPolicy(*reversed(load_qwen3(d, dtype)), eos) for name, d in externals.items()}
    task = ToyArith(terms=cfg.dataset.terms, digits=cfg.dataset.digits)
    questions = task.questions(cfg.dataset.num_questions, cfg.dataset.seed)
    cache = DemonstrationCache(run_dir / "demos", cfg.student.name)
    pcfg = pipeline_config(cfg)
    system = cfg.dataset.system

    def encode(user):
        return encode_chat(tokenizer, user, system=system)

    def decode(tokens):
        return tokenizer.decode([int(t) for t in tokens if int(t) not in eos and int(t) >= 0])

    def make_run(q):
        prompt = np.array(encode(q.user), np.int32)
        teachers = []
        contexts = {n: t for n, t in cfg.teachers.items() if t.kind == "self"}
        if contexts:
            demos = sample_demonstrations(
                student, encode, decode, lambda text: task.grade(q, text), q, question_key(cfg.seed, q.qid, 99),
                need_correct=1, need_wrong=int(any(t.context == "SELF-1C1W" for t in contexts.values())),
                temperature=cfg.demo_temperature, max_trials=cfg.demo_trials,
                max_new_tokens=cfg.budget.max_response_tokens, cache=cache)
        for name, t in cfg.teachers.items():
            if t.kind == "external":
                teachers.append(Teacher(name, external_policies[name], prompt))
                continue
            user = build_context(t.context, q, demos, ToyRuleSummarizer() if t.summarizer == "rule" else None)
            if user is None:
                log.warning("%s: no demonstration for %s in %d trials; teacher left out", q.qid, name, demos.trials)
                continue
            teacher_prompt = np.array(encode(user), np.int32)
            check_same_generation_prompt(prompt, teacher_prompt, tokenizer, name)
            teachers.append(Teacher(name, student, teacher_prompt))
        return QuestionRun(q.qid, student, prompt, teachers, lambda toks: task.grade(q, decode(toks)), pcfg, run_dir,
                           stop=stop)

    return Job(questions, make_run)


def versions() -> dict:
    out = {}
    for pkg in ("jaxalign", "jax", "flax", "orbax-checkpoint", "transformers", "hydra-core"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def execute(dcfg: DictConfig, run_dir: Path) -> dict:
    cfg = C.from_omegaconf(dcfg)
    C.validate(cfg)
    resolved = OmegaConf.to_container(dcfg, resolve=True)
    if cfg.dry_run:
        cost = dry_run(cfg)
        log.info("dry run: %s", json.dumps(cost))
        print(json.dumps(cost, indent=1))
        return cost
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.claim(run_dir, resolved)
    start = time.time()
    stop = StopRequest()
    summaries = []
    shard = cfg.shard
    try:
        job = exact_job(cfg, run_dir, stop) if cfg.student.kind == "exact" else flax_job(cfg, run_dir, stop)
        questions = job.questions[shard.index::shard.count]
        if shard.count > 1:
            log.info("shard %d of %d: %d of %d questions", shard.index, shard.count, len(questions), len(job.questions))
        for q in tqdm(questions, desc="questions", unit="q"):
            run = job.make_run(q)
            with tqdm(desc=f"{run.qid} phase 1", unit="rollout", leave=False) as bar:
                run.progress = bar
                summaries.append(run.run())
    except Preempted as stopped:
        log.warning("%s; the same command resumes", stopped)
        stop.forward()
    finally:
        stop.restore()
    totals = {"questions": len(summaries), "skipped": sum(s["skipped"] for s in summaries),
              "rollouts": sum(s["budget"]["rollouts"] for s in summaries),
              "tokens": sum(s["budget"]["tokens"] for s in summaries), "wall_s": round(time.time() - start, 1)}
    result = rundir.result_config(resolved)
    record = {"config": result, "config_hash": rundir.config_hash(result), "versions": versions(),
              "shard": {"index": shard.index, "count": shard.count},
              "devices": [str(d) for d in jax.devices()], "totals": totals}
    merged = rundir.finish(run_dir, record, shard.index, shard.count)
    log.info("done: %s; results in %s", totals, run_dir)
    if merged is not None:
        print(merged["report"])
        return merged["record"]
    return record


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(dcfg: DictConfig) -> None:
    try:
        execute(dcfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as err:
        log.error("configuration error: %s", err)
        raise SystemExit(2) from err


if __name__ == "__main__":
    main()
