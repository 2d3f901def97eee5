"""Jobs: a run's questions and, per question, its :class:`QuestionRun`, built from the registries.

``build_job(cfg, run_dir, stop)`` picks the builder for ``student.kind``:

  exact  each question is an ExactPolicy with its own seed; teachers are tilted or noisy copies.
  flax   a task of :mod:`jaxalign.tasks` and Qwen3 models (:mod:`jaxalign.pipeline.models`):
         the pre-pass (:meth:`Job.prepare`) samples and summarizes the self teachers'
         demonstrations for the job's questions with the context models, frees those, and loads
         the student and the external teachers; then one QuestionRun per question.

A self teacher without a usable context for a question (no correct demonstration in 60 trials, no
wrong one for 1C1W, an empty summary) is left out of that question only, and the reason is
recorded in ``questions/<qid>.json`` under ``teachers_excluded``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from jaxalign import config as C
from jaxalign.enrich import enrich_config
from jaxalign.errors import JaxalignError
from jaxalign.exact import ExactPolicy
from jaxalign.files import write_json
from jaxalign.pipeline.question import PipelineConfig, Preempted, QuestionRun, Teacher, question_key
from jaxalign.tasks import Question, Task, get_task
from jaxalign.teachers import Excluded, check_same_generation_prompt
from jaxalign.teachers.demos import safe_name

log = logging.getLogger(__name__)


def pipeline_config(cfg: C.RunConf) -> PipelineConfig:
    b = cfg.budget
    return PipelineConfig(
        num_initial=b.num_initial, max_response_tokens=b.max_response_tokens, batch_rollouts=b.batch_rollouts,
        include_path_rollout=cfg.include_path_rollout, count_ancestors=cfg.count_ancestors, seed=cfg.seed,
        enrich=enrich_config(b),
    )


@dataclasses.dataclass
class Job:
    """A run's questions; ``prepare(shard_questions)`` before the first ``make_run(question)``;
    ``info()`` adds to run.json (dataset rows skipped, models, stand-ins)."""

    questions: list
    make_run: Callable[[Any], QuestionRun]
    prepare: Callable[[list], None] = lambda questions: None
    info: Callable[[], dict] = dict


class NotedQuestionRun(QuestionRun):
    """A QuestionRun whose questions/<qid>.json also holds ``notes`` (e.g. teachers_excluded)."""

    def __init__(self, *args, notes: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.notes = notes or {}

    def run(self) -> dict:
        summary = super().run()
        if any(summary.get(k) != v for k, v in self.notes.items()):
            summary = {**summary, **self.notes}
            write_json(self.result_paths()[1], summary)
        return summary


# ----------------------------------------------------------------------------- exact
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


# ----------------------------------------------------------------------------- tasks
def load_task(cfg: C.RunConf) -> Task:
    return get_task(cfg.dataset.name, **C.task_options(cfg.dataset))


def select_questions(task: Task, dataset: C.DatasetConf) -> list[Question]:
    """``num_questions`` questions for ``dataset.seed``; with a questions_file, the listed ones (in its
    order, at most num_questions), drawn from the subsample the screening drew them from."""
    if dataset.questions_file is None:
        return list(task.questions(dataset.num_questions, dataset.seed))
    from jaxalign.teachers.screening import read_question_list

    listed = read_question_list(dataset.questions_file)
    pool = {q.qid: q for q in task.questions(listed.screened, listed.seed)}
    missing = [qid for qid in listed.qids if qid not in pool]
    if missing:
        raise JaxalignError(f"dataset.questions_file: {dataset.questions_file} lists {len(missing)} questions that "
                            f"{task} does not give for seed {listed.seed} (e.g. {missing[0]}); screen this dataset "
                            "source again, or pass the dataset options the screening used")
    chosen = [pool[qid] for qid in listed.qids[: dataset.num_questions]]
    log.info("%d screened questions of %s (%d listed)", len(chosen), dataset.questions_file, len(listed.qids))
    return chosen


def task_grade(task: Task) -> Callable[[Question, str], bool]:
    return lambda question, text: task.grade(text, question.answer)


# ----------------------------------------------------------------------------- flax
class _Pool:
    """The pre-pass's view of JobModels: each model with its own tokenizer and chat template."""

    def __init__(self, models, system: Optional[str]):
        self.models, self.system = models, system

    def generator(self, model_id: str):
        from jaxalign.models import encode_chat
        from jaxalign.teachers.prepass import Generator

        tokenizer, eos = self.models.tokenizers[model_id], set(self.models.eos(model_id))
        return Generator(
            self.models.policy(model_id),
            lambda user, thinking: encode_chat(tokenizer, user, enable_thinking=thinking, system=self.system),
            lambda ids: tokenizer.decode([int(t) for t in ids if int(t) not in eos and int(t) >= 0]))

    def release(self, model_id: str) -> None:
        self.models.release(model_id)


def model_roles(cfg: C.RunConf, externals: bool = True) -> dict[str, tuple[str, ...]]:
    """Every model of the job and its roles, the student first (``externals=False``: not the external teachers)."""
    from jaxalign.teachers import RULE, context_needs

    roles: dict[str, list[str]] = {cfg.student.path: ["student"]}
    for name, t in cfg.teachers.items():
        if t.kind == "external" and externals:
            roles.setdefault(t.model, []).append(f"teacher {name}")
    needs = context_needs(cfg.teachers, cfg.student.path)
    for source in needs.demos:
        if source != cfg.student.path:
            roles.setdefault(source, []).append("demonstrations")
    for _, summarizer in needs.summaries:
        if summarizer not in (RULE, cfg.student.path) and "summaries" not in roles.get(summarizer, []):
            roles.setdefault(summarizer, []).append("summaries")
    return {m: tuple(r) for m, r in roles.items()}


def context_settings(cfg: C.RunConf):
    from jaxalign.teachers.prepass import ContextSettings

    return ContextSettings(temperature=cfg.demo_temperature, max_trials=cfg.demo_trials,
                           max_new_tokens=cfg.budget.max_response_tokens, summary_max_tokens=cfg.summary_max_tokens)


def context_cache_root(cfg: C.RunConf, run_dir: Path) -> Path:
    return Path(cfg.context_cache_dir).expanduser() if cfg.context_cache_dir else Path(run_dir)


def flax_job(cfg: C.RunConf, run_dir: Path, stop) -> Job:
    from jaxalign.models import encode_chat
    from jaxalign.pipeline.models import JobModels
    from jaxalign.teachers.prepass import Contexts, Stopped

    task = load_task(cfg)
    questions = select_questions(task, cfg.dataset)
    models = JobModels(cfg, model_roles(cfg), cfg.student.path)
    student_id = cfg.student.path
    tokenizer, eos = models.tokenizers[student_id], set(models.eos(student_id))
    system = cfg.dataset.system if cfg.dataset.system is not None else task.system
    grade = task_grade(task)
    contexts = Contexts(cfg.teachers, student_id, grade, context_cache_root(cfg, run_dir), context_settings(cfg),
                        lambda qid, *path: question_key(cfg.seed, qid, *path))
    pcfg = pipeline_config(cfg)

    def encode(user: str) -> np.ndarray:
        return np.array(encode_chat(tokenizer, user, system=system), np.int32)

    def decode(tokens: Sequence[int]) -> str:
        return tokenizer.decode([int(t) for t in tokens if int(t) not in eos and int(t) >= 0])

    def prepare(shard: list) -> None:
        try:
            contexts.prepare(shard, _Pool(models, system), stop)
        except Stopped as stopped:
            raise Preempted(str(stopped)) from stopped
        for name, t in cfg.teachers.items():
            if t.kind == "external":
                models.policy(t.model)

    def make_run(q: Question) -> QuestionRun:
        student = models.policy(student_id)
        prompt = encode(q.user)
        teachers, excluded = [], {}
        messages = contexts.messages(q)
        for name, t in cfg.teachers.items():
            if t.kind == "external":
                teachers.append(Teacher(name, models.policy(t.model), prompt))
                continue
            message = messages[name]
            if isinstance(message, Excluded):
                log.warning("%s: %s; teacher left out of this question", q.qid, message.reason)
                excluded[name] = message.reason
                continue
            teacher_prompt = encode(message)
            check_same_generation_prompt(prompt, teacher_prompt, tokenizer, name)
            teachers.append(Teacher(name, student, teacher_prompt))
        return NotedQuestionRun(q.qid, student, prompt, teachers, lambda toks: grade(q, decode(toks)), pcfg, run_dir,
                                stop=stop, notes={"teachers_excluded": excluded})

    def info() -> dict:
        out = {"dataset": {"task": task.name, "source": str(getattr(task, "source", "generated")),
                           "rows_skipped": dict(task.skipped), "system": system},
               "models": models.record()}
        if models.standins:
            out["standins"] = models.standin_note()
        return out

    return Job(questions, make_run, prepare, info)


# ----------------------------------------------------------------------------- screening
def screen(cfg: C.RunConf, out_dir: Path, stop) -> dict:
    """Context screening (:mod:`jaxalign.teachers.screening`) of the student's self teachers on
    ``num_questions`` questions: one file per question in ``out_dir/questions/`` (a rerun resumes),
    then questions.json, the tables and screening.md. Raises Preempted on a stop request."""
    from jaxalign.files import write_json
    from jaxalign.models import encode_chat
    from jaxalign.pipeline.models import JobModels
    from jaxalign.teachers import screening as S
    from jaxalign.teachers.prepass import Contexts, Stopped, model_hash

    if cfg.student.kind != "flax":
        raise JaxalignError("screening needs a flax student (student=exact has no contexts)")
    task = load_task(cfg)
    questions = list(task.questions(cfg.dataset.num_questions, cfg.dataset.seed))
    contexts_conf = {n: t for n, t in cfg.teachers.items() if t.kind == "self"}
    skipped = sorted(set(cfg.teachers) - set(contexts_conf))
    if skipped:
        log.info("screening the self-distillation contexts only; not screened: %s", ", ".join(skipped))
    if not contexts_conf:
        raise JaxalignError("teachers: no self-distillation teacher to screen; pick a set with contexts, e.g. "
                            "teachers=paper_contexts")
    models = JobModels(cfg, model_roles(cfg, externals=False), cfg.student.path)
    student_id = cfg.student.path
    tokenizer, eos = models.tokenizers[student_id], set(models.eos(student_id))
    system = cfg.dataset.system if cfg.dataset.system is not None else task.system
    grade = task_grade(task)
    contexts = Contexts(contexts_conf, student_id, grade, context_cache_root(cfg, out_dir), context_settings(cfg),
                        lambda qid, *path: question_key(cfg.seed, qid, *path))
    try:
        contexts.prepare(questions, _Pool(models, system), stop)
    except Stopped as stopped:
        raise Preempted(str(stopped)) from stopped
    student = models.policy(student_id)

    def encode(user: str) -> np.ndarray:
        return np.array(encode_chat(tokenizer, user, system=system), np.int32)

    results = []
    for q in questions:
        path = out_dir / "questions" / f"{safe_name(q.qid)}.json"
        if path.is_file():
            results.append(S.QuestionScreen.from_json(json.loads(path.read_text())))
            continue

        def grade_tokens(tokens, q=q) -> bool:
            return grade(q, tokenizer.decode([int(t) for t in tokens if int(t) not in eos and int(t) >= 0]))

        def rate(user: str, stage: int) -> float:
            return S.pass_rate(student, encode(user), cfg.screening.rollouts, cfg.budget.max_response_tokens,
                               question_key(cfg.seed, q.qid, S.SCREEN_STAGE, stage), grade_tokens)

        rates, excluded = {}, {}
        for name, message in contexts.messages(q).items():
            if isinstance(message, Excluded):
                rates[name], excluded[name] = None, message.reason
            else:
                check_same_generation_prompt(encode(q.user), encode(message), tokenizer, name)
                rates[name] = rate(message, model_hash(name))
        result = S.QuestionScreen(q.qid, rate(q.user, 0), rates, excluded, contexts.available(q))
        write_json(path, result.to_json())
        results.append(result)
        if stop():
            raise Preempted(f"screening stopped after {len(results)} of {len(questions)} questions")
    notes = [f"student {cfg.student.name} ({student_id}), G = {cfg.screening.rollouts} rollouts per question and "
             f"context at temperature 1, up to {cfg.budget.max_response_tokens} tokens each"]
    if models.standins:
        notes.append("**" + models.standin_note() + "**")
    return S.write_outputs(out_dir, results, list(contexts_conf), task=task.name, seed=cfg.dataset.seed,
                           student=student_id, student_name=cfg.student.name, notes=notes)


JOBS: dict[str, Callable[[C.RunConf, Path, Callable[[], bool]], Job]] = {"exact": exact_job, "flax": flax_job}


def build_job(cfg: C.RunConf, run_dir: Path, stop) -> Job:
    """The job of ``cfg`` (a validated RunConf) for ``run_dir``; ``stop()`` asks for a clean stop."""
    return JOBS[cfg.student.kind](cfg, run_dir, stop)
