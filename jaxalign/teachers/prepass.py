"""The context pre-pass: every demonstration and summary a job's self teachers need, for all of its
questions, one model at a time; then each teacher's user message per question, from the caches.

Order: the student samples its own demonstrations first (it stays loaded: Phase 1 needs it), then
each other source model samples its demonstrations, then each summarizer model condenses the
demonstrations of the sources it serves. A model is loaded when it first has work that is not
already cached and released when its last work is done, so a 32B context model is never resident
with the external teachers, and a resumed job loads nothing whose outputs are on disk.
Questions are sampled and summarized ``questions_per_call`` at a time: each round is one
``sample`` over the group's prompts, each question under its own key (so with the same results as
one at a time), on at most ``max_rows`` decode rows where the completions queue. A 32B model then
reads its weights once per decode step for many questions, not for one question's 20 rows. A stop
request (preemption) is honoured between rounds of demonstrations and between summary calls:
everything done so far is cached, unfinished demonstration searches with their progress.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Callable, Mapping, Optional, Protocol, Sequence, Union

import jax

from jaxalign.tasks.base import Question
from jaxalign.teachers import (RULE, ContextNeeds, DemonstrationCache, Demonstrations, Excluded, ModelSummarizer,
                               SummaryCache, ToyRuleSummarizer, context_needs, demo_source, sample_demonstrations_of,
                               summarize_demonstrations_of, teacher_message)

log = logging.getLogger(__name__)

DEMO_STAGE = 99  # question_key(seed, qid, 99) draws the student's demonstrations
SUMMARY_STAGE = 98


class Stopped(Exception):
    """A stop was requested during the pre-pass; what was done is cached."""


@dataclasses.dataclass(frozen=True)
class Generator:
    """A loaded model as the pre-pass uses it: ``encode(user, thinking) -> prompt ids``, ``decode(ids) -> text``."""

    policy: object
    encode: Callable[[str, bool], Sequence[int]]
    decode: Callable[[Sequence[int]], str]


class ModelPool(Protocol):
    def generator(self, model_id: str) -> Generator:
        ...

    def release(self, model_id: str) -> None:
        ...


@dataclasses.dataclass(frozen=True)
class ContextSettings:
    temperature: float = 0.7  # demonstrations (Appendix E.9)
    max_trials: int = 60
    max_new_tokens: int = 512  # a demonstration's length limit: the budget's response limit
    summary_max_tokens: int = 1024
    batch: int = 20  # demonstrations per question and round
    questions_per_call: int = 64  # questions sampled (or summarized) together
    # decode rows of a pre-pass call: a group's completions queue on them (continuous batching). Each row
    # holds max_new_tokens slots of the context model's KV cache; the memory check prices the call.
    max_rows: int = 32
    # KV slots of the prompts that one summary call holds (each carries a whole demonstration):
    # requests beyond it go to the next call
    max_prefix_slots: int = 32768


def _groups(items: Sequence, size: int) -> list[Sequence]:
    return [items[i:i + size] for i in range(0, len(items), max(1, size))]


def model_hash(model_id: str) -> int:
    """A stable 31-bit integer for a model id (a fold_in argument)."""
    return int.from_bytes(hashlib.sha256(model_id.encode()).digest()[:4], "little") >> 1


class Contexts:
    """Demonstrations and summaries for ``teachers`` (a name -> TeacherConf mapping) of one job.

    ``key(qid, *path)`` is the job's PRNG key function (:func:`jaxalign.pipeline.question_key` of its
    seed); ``grade(question, text) -> bool`` checks a demonstration against the ground truth.
    """

    def __init__(self, teachers: Mapping[str, object], student: str, grade: Callable[[Question, str], bool],
                 cache_root: str | Path, settings: ContextSettings, key: Callable[..., jax.Array]):
        self.teachers = {n: t for n, t in teachers.items() if t.kind == "self"}
        self.student, self.grade, self.settings, self.key = student, grade, settings, key
        self.needs: ContextNeeds = context_needs(self.teachers, student)
        self.root = Path(cache_root)
        self.demo_caches = {s: DemonstrationCache(self.root / "demos", s) for s in self.needs.demos}
        self.summary_caches = {pair: SummaryCache(self.root / "summaries", pair[1], pair[0])
                               for pair in self.needs.summaries if pair[1] != RULE}

    # ------------------------------------------------------------------ keys
    def demo_key(self, qid: str, source: str) -> jax.Array:
        if source == self.student:
            return self.key(qid, DEMO_STAGE)
        return self.key(qid, DEMO_STAGE, model_hash(source))

    def summary_key(self, qid: str, source: str, summarizer: str) -> jax.Array:
        return self.key(qid, SUMMARY_STAGE, model_hash(source), model_hash(summarizer))

    # ------------------------------------------------------------------ pre-pass
    def _demos_todo(self, source: str, questions: Sequence[Question]) -> list[Question]:
        need, cache = self.needs.demos[source], self.demo_caches[source]
        return [q for q in questions if cache.answers(q.qid, need, self.settings.max_trials) is None]

    def _summaries_todo(self, pair: tuple[str, str], questions: Sequence[Question]) -> list[Question]:
        return [q for q in questions if self._summaries(pair, q) is None and self._demos(pair[0], q).correct]

    def steps(self) -> list[tuple[str, str]]:
        """(kind, model) in the order the pre-pass runs them: 'demos' by each source (the student
        first), then 'summaries' by each summarizer model. A model with both roles has them adjacent."""
        summarizers = {s for _, s in self.needs.summaries if s != RULE}
        sources = sorted(self.needs.demos, key=lambda s: (s != self.student, s in summarizers, s))
        both = [s for s in sources if s in summarizers]
        rest = sorted(summarizers - set(both))
        return [("demos", s) for s in sources] + [("summaries", s) for s in reversed(both)] + \
            [("summaries", s) for s in rest]

    def prepare(self, questions: Sequence[Question], pool: ModelPool, stop: Callable[[], bool] = lambda: False) -> None:
        """Samples and summarizes whatever the caches lack for ``questions``; raises Stopped on a stop request.

        A model is released after its step unless the next step uses it too, so two context models
        are never resident together."""
        steps = self.steps()
        for i, (kind, model) in enumerate(steps):
            if kind == "demos":
                self._sample(model, questions, pool, stop)
            else:
                self._summarize(model, questions, pool, stop)
            following = steps[i + 1][1] if i + 1 < len(steps) else None
            if model != self.student and following != model:
                pool.release(model)

    def _sample(self, source: str, questions: Sequence[Question], pool: ModelPool, stop) -> None:
        todo = self._demos_todo(source, questions)
        if not todo:
            return
        gen, s, need = pool.generator(source), self.settings, self.needs.demos[source]
        log.info("demonstrations by %s for %d questions", source, len(todo))
        for group in _groups(todo, s.questions_per_call):
            items = [(q, lambda text, q=q: self.grade(q, text), self.demo_key(q.qid, source)) for q in group]
            found = sample_demonstrations_of(gen.policy, lambda u: gen.encode(u, True), gen.decode, items,
                                             need_correct=need.correct, need_wrong=need.wrong,
                                             temperature=s.temperature, max_trials=s.max_trials, batch=s.batch,
                                             max_new_tokens=s.max_new_tokens, cache=self.demo_caches[source],
                                             max_rows=s.max_rows, stop=stop)
            if stop() or any(demos is None for demos in found):
                raise Stopped(f"stopped during the demonstrations of {source}")

    def _summarize(self, model: str, questions: Sequence[Question], pool: ModelPool, stop) -> None:
        for pair in [p for p in self.needs.summaries if p[1] == model]:
            todo = self._summaries_todo(pair, questions)
            if not todo:
                continue
            gen = pool.generator(model)
            summarizer = ModelSummarizer(gen.policy, lambda u: gen.encode(u, False), gen.decode,
                                         max_new_tokens=self.settings.summary_max_tokens,
                                         max_rows=self.settings.max_rows,
                                         max_prefix_slots=self.settings.max_prefix_slots)
            log.info("summaries by %s of %s's demonstrations for %d questions", model, pair[0], len(todo))
            for group in _groups(todo, self.settings.questions_per_call):
                items = [(q, self._demos(pair[0], q), self.summary_key(q.qid, *pair)) for q in group]

                def save(i, summaries, items=items, pair=pair):  # as each question's summaries are written
                    self.summary_caches[pair].save(items[i][0].qid, items[i][1], summaries)

                found = summarize_demonstrations_of(summarizer, items, wrong=self.needs.summaries[pair], done=save,
                                                    stop=stop)
                if stop() or any(summaries is None for summaries in found):
                    raise Stopped(f"stopped during the summaries of {model}")

    # ------------------------------------------------------------------ per question
    def _demos(self, source: str, question: Question) -> Demonstrations:
        found = self.demo_caches[source].answers(question.qid, self.needs.demos[source], self.settings.max_trials)
        if found is None:
            raise RuntimeError(f"{question.qid}: demonstrations by {source} were not prepared; call prepare() first")
        return found

    def _summaries(self, pair: tuple[str, str], question: Question) -> Optional[Demonstrations]:
        demos = self._demos(pair[0], question)
        found = self.summary_caches[pair].load(question.qid, demos)
        if found is not None and self.needs.summaries[pair] and demos.wrong and not found.wrong:
            return None  # summarized for a teacher that needed no wrong one; another needs it now
        return found

    def available(self, question: Question) -> dict[str, bool]:
        """Per source model: whether it gave at least one correct demonstration (Table 7)."""
        return {s: bool(self._demos(s, question).correct) for s in self.needs.demos}

    def messages(self, question: Question) -> dict[str, Union[str, Excluded]]:
        """Each self teacher's user message for ``question``, or why it has none."""
        out = {}
        for name, conf in self.teachers.items():
            source = demo_source(conf, self.student)
            demos = self._demos(source, question)
            summaries = None
            if conf.summarizer not in (None, RULE) and demos.correct:
                summaries = self._summaries((source, conf.summarizer), question)
            out[name] = teacher_message(name, conf, question, demos, summaries, ToyRuleSummarizer())
        return out
