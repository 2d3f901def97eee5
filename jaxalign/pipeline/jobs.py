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
        algorithms=tuple(cfg.algorithms), conventions=tuple(cfg.conventions), topk_gkd_k=cfg.topk_gkd_k,
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


@dataclasses.dataclass
class _Setup:
    """What a flax job and a screening share: the task, the models, the student's prompts, the contexts."""

    task: Task
    models: object  # JobModels
    contexts: object  # teachers.prepass.Contexts
    system: Optional[str]
    grade: Callable[[Question, str], bool]

    @property
    def student_id(self) -> str:
        return self.contexts.student

    @property
    def tokenizer(self):
        return self.models.tokenizers[self.student_id]

    def encode(self, user: str) -> np.ndarray:
        """The student's prompt ids for a user message: its chat template, thinking mode."""
        from jaxalign.models import encode_chat

        return np.array(encode_chat(self.tokenizer, user, system=self.system), np.int32)

    def decode(self, tokens: Sequence[int]) -> str:
        eos = set(self.models.eos(self.student_id))
        return self.tokenizer.decode([int(t) for t in tokens if int(t) not in eos and int(t) >= 0])

    def prepare(self, questions: Sequence[Question], stop) -> None:
        from jaxalign.teachers.prepass import Stopped

        try:
            self.contexts.prepare(questions, _Pool(self.models, self.system), stop)
        except Stopped as stopped:
            raise Preempted(str(stopped)) from stopped

    def info(self) -> dict:
        out = {"dataset": {"task": self.task.name, "source": str(getattr(self.task, "source", "generated")),
                           "rows_skipped": dict(self.task.skipped), "system": self.system},
               "models": self.models.record()}
        if self.models.standins:
            out["standins"] = self.models.standin_note()
        return out


def _setup(cfg: C.RunConf, task: Task, cache_root: Path, teachers: dict, externals: bool,
           questions: Sequence[Question] = ()) -> _Setup:
    """Sizes and checks the models (no weights load yet; the KV caches at the longest prompt of
    ``questions``), places each on its mesh when it loads, and sets up the contexts of ``teachers``."""
    from jaxalign.pipeline.models import JobModels
    from jaxalign.teachers.prepass import Contexts

    system = cfg.dataset.system if cfg.dataset.system is not None else task.system
    models = JobModels(cfg, model_roles(cfg, externals), cfg.student.path, [q.user for q in questions], system)
    grade = task_grade(task)
    contexts = Contexts(teachers, cfg.student.path, grade, cache_root, context_settings(cfg),
                        lambda qid, *path: question_key(cfg.seed, qid, *path))
    return _Setup(task, models, contexts, system, grade)


def flax_job(cfg: C.RunConf, run_dir: Path, stop) -> Job:
    task = load_task(cfg)
    questions = select_questions(task, cfg.dataset)  # a bad questions_file fails before any model is sized
    setup = _setup(cfg, task, context_cache_root(cfg, run_dir), cfg.teachers, externals=True, questions=questions)
    pcfg = pipeline_config(cfg)

    def prepare(shard: list) -> None:
        setup.prepare(shard, stop)
        for t in cfg.teachers.values():
            if t.kind == "external":
                setup.models.policy(t.model)

    def make_run(q: Question) -> QuestionRun:
        student = setup.models.policy(setup.student_id)
        prompt = setup.encode(q.user)
        teachers, excluded = [], {}
        messages = setup.contexts.messages(q)
        for name, t in cfg.teachers.items():
            if t.kind == "external":
                teachers.append(Teacher(name, setup.models.policy(t.model), prompt))
                continue
            message = messages[name]
            if isinstance(message, Excluded):
                log.warning("%s: %s; teacher left out of this question", q.qid, message.reason)
                excluded[name] = message.reason
                continue
            teacher_prompt = setup.encode(message)
            check_same_generation_prompt(prompt, teacher_prompt, setup.tokenizer, name)
            teachers.append(Teacher(name, student, teacher_prompt))
        return QuestionRun(q.qid, student, prompt, teachers, lambda toks: setup.grade(q, setup.decode(toks)), pcfg,
                           run_dir, stop=stop, notes={"teachers_excluded": excluded})

    return Job(questions, make_run, prepare, setup.info)


# ----------------------------------------------------------------------------- screening
def screen(cfg: C.RunConf, out_dir: Path, stop) -> dict:
    """Context screening (:mod:`jaxalign.teachers.screening`) of the student's self teachers on
    ``num_questions`` questions: one file per question in ``out_dir/questions/`` (a rerun resumes),
    then questions.json, the tables and screening.md. Raises Preempted on a stop request."""
    from jaxalign.files import write_json
    from jaxalign.teachers import screening as S
    from jaxalign.teachers.prepass import model_hash

    if cfg.student.kind != "flax":
        raise JaxalignError("screening needs a flax student (student=exact has no contexts)")
    contexts_conf = {n: t for n, t in cfg.teachers.items() if t.kind == "self"}
    if not contexts_conf:
        raise JaxalignError("teachers: no self-distillation teacher to screen; pick a set with contexts, e.g. "
                            "teachers=paper_contexts")
    skipped = sorted(set(cfg.teachers) - set(contexts_conf))
    if skipped:
        log.info("screening the self-distillation contexts only; not screened: %s", ", ".join(skipped))
    task = load_task(cfg)
    questions = list(task.questions(cfg.dataset.num_questions, cfg.dataset.seed))
    setup = _setup(cfg, task, context_cache_root(cfg, out_dir), contexts_conf, externals=False, questions=questions)
    setup.prepare(questions, stop)
    student = setup.models.policy(setup.student_id)

    results = []
    for q in questions:
        path = out_dir / "questions" / f"{safe_name(q.qid)}.json"
        if path.is_file():
            results.append(S.QuestionScreen.from_json(json.loads(path.read_text())))
            continue

        def rate(user: str, stage: int, q=q) -> float:
            return S.pass_rate(student, setup.encode(user), cfg.screening.rollouts, cfg.budget.max_response_tokens,
                               question_key(cfg.seed, q.qid, S.SCREEN_STAGE, stage),
                               lambda tokens: setup.grade(q, setup.decode(tokens)))

        rates, excluded = {}, {}
        for name, message in setup.contexts.messages(q).items():
            if isinstance(message, Excluded):
                rates[name], excluded[name] = None, message.reason
            else:
                check_same_generation_prompt(setup.encode(q.user), setup.encode(message), setup.tokenizer, name)
                rates[name] = rate(message, model_hash(name))
        result = S.QuestionScreen(q.qid, rate(q.user, 0), rates, excluded, setup.contexts.available(q))
        write_json(path, result.to_json())
        results.append(result)
        if stop():
            raise Preempted(f"screening stopped after {len(results)} of {len(questions)} questions")
    notes = [f"student {cfg.student.name} ({setup.student_id}), G = {cfg.screening.rollouts} rollouts per question "
             f"and context at temperature 1, up to {cfg.budget.max_response_tokens} tokens each"]
    if setup.models.standins:
        notes.append("**" + setup.models.standin_note() + "**")
    return S.write_outputs(out_dir, results, list(contexts_conf), task=setup.task.name, seed=cfg.dataset.seed,
                           student=setup.student_id, student_name=cfg.student.name, notes=notes)


JOBS: dict[str, Callable[[C.RunConf, Path, Callable[[], bool]], Job]] = {"exact": exact_job, "flax": flax_job}


def build_job(cfg: C.RunConf, run_dir: Path, stop) -> Job:
    """The job of ``cfg`` (a validated RunConf) for ``run_dir``; ``stop()`` asks for a clean stop."""
    return JOBS[cfg.student.kind](cfg, run_dir, stop)
