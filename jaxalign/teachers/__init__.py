"""Teachers: what each one is, what its context needs, and the user message it sees.

A teacher is configured by a :class:`jaxalign.config.TeacherConf` (``conf/teachers/*.yaml``):

  kind: self      the student's weights with a context. ``context`` names a format of
                  :data:`FORMATS` (Figures 13-15); ``source`` is the model whose demonstrations it
                  shows (default: the student; Qwen/Qwen3-32B for SELF-1C (32B)); ``summarizer``
                  condenses them for the SELF-SUM formats (a model, or ``rule`` on toy_arith).
  kind: external  another model with the student's own prompt (``model``).
  kind: exact     a tilted or noisy ExactPolicy (tests and the exact preset).

The paper's eight (Table 1) are ``conf/teachers/paper8.yaml``; ``screen7`` adds SELF-3C.

Modules: formats.py (prompt text), demos.py (sampling and caching demonstrations),
summarizers.py (the summary prompt and caching), prepass.py (sampling and summarizing for all of a
job's questions, one model at a time), screening.py (pass rates per context, Tables 7-9).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Union

from jaxalign.errors import ConfigError
from jaxalign.tasks.base import Question
from jaxalign.teachers.demos import (DemoNeed, DemonstrationCache, Demonstrations, sample_demonstrations,
                                     sample_demonstrations_of)
from jaxalign.teachers.formats import FORMATS, ContextFormat, check_same_generation_prompt
from jaxalign.teachers.summarizers import (RULE, SUMMARY_PROMPT, ModelSummarizer, Summarizer, SummaryCache,
                                           ToyRuleSummarizer, summarize_demonstrations, summarize_demonstrations_of,
                                           summary_request)

TEACHER_KINDS = ("self", "external", "exact")


@dataclasses.dataclass(frozen=True)
class Excluded:
    """Why a teacher has no context for a question (it is left out for that question only)."""

    reason: str


def context_format(name: Optional[str]) -> ContextFormat:
    if name not in FORMATS:
        raise ConfigError(f"unknown context format {name!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[name]


def demo_source(conf, student: str) -> str:
    """The model whose demonstrations a self teacher shows: ``conf.source``, else the student."""
    return conf.source or student


@dataclasses.dataclass(frozen=True)
class ContextNeeds:
    """What a teacher set needs per question: demonstrations per source model, and summaries per
    (source, summarizer) pair (True where a wrong demonstration must be summarized too)."""

    demos: Mapping[str, DemoNeed]
    summaries: Mapping[tuple[str, str], bool]

    @property
    def models(self) -> list[str]:
        """Every model that samples or summarizes, in first-use order."""
        out = list(self.demos)
        out += [s for _, s in self.summaries if s != RULE and s not in out]
        return out


def context_needs(teachers: Mapping[str, object], student: str) -> ContextNeeds:
    """The union of what every ``kind: self`` teacher in ``teachers`` needs."""
    demos: dict[str, DemoNeed] = {}
    summaries: dict[tuple[str, str], bool] = {}
    for conf in teachers.values():
        if conf.kind != "self":
            continue
        fmt = context_format(conf.context)
        source = demo_source(conf, student)
        demos[source] = demos.get(source, DemoNeed(0, 0)) | DemoNeed(fmt.correct, fmt.wrong)
        if fmt.summarized:
            pair = (source, conf.summarizer)
            summaries[pair] = summaries.get(pair, False) or fmt.wrong > 0
    return ContextNeeds(demos, summaries)


def teacher_message(name: str, conf, question: Question, demos: Demonstrations,
                    summaries: Optional[Demonstrations] = None,
                    rule: Optional[Summarizer] = None) -> Union[str, Excluded]:
    """The user message of self teacher ``name`` for ``question``, or why it has none.

    ``demos`` come from the teacher's source; ``summaries`` are those demonstrations condensed by
    its summarizer (model summarizers; a ``rule`` summarizer is applied here instead).
    """
    fmt = context_format(conf.context)
    source = conf.source or "the student"
    if len(demos.correct) < fmt.correct:
        have = "no" if not demos.correct else f"only {len(demos.correct)} of {fmt.correct}"
        return Excluded(f"{name}: {have} correct demonstration{'s' if fmt.correct > 1 else ''} from {source} "
                        f"in {demos.trials} trials")
    if len(demos.wrong) < fmt.wrong:
        return Excluded(f"{name}: no wrong demonstration from {source} in {demos.trials} trials")
    shown = demos
    if fmt.summarized:
        if conf.summarizer == RULE:
            shown = summarize_demonstrations(rule or ToyRuleSummarizer(), question, demos, wrong=fmt.wrong > 0)
        elif summaries is None:
            raise ValueError(f"{name}: summaries by {conf.summarizer} were not prepared for {question.qid}")
        else:
            shown = summaries
        if len(shown.correct) < fmt.correct or len(shown.wrong) < fmt.wrong or not all(shown.correct + shown.wrong):
            return Excluded(f"{name}: the summarizer {conf.summarizer} returned an empty summary")
    return fmt.render(question.user, shown.correct, shown.wrong)


def build_context(fmt: str, question: Question, demos: Demonstrations,
                  summarizer: Optional[Summarizer] = None) -> Optional[str]:
    """The user message in format ``fmt`` for ``demos`` (summarized by ``summarizer`` for the SUM
    formats), or None if the demonstrations it needs are missing."""
    spec = context_format(fmt)
    if spec.summarized and summarizer is None:
        raise ConfigError(f"{fmt} needs a summarizer")
    conf = _Conf(context=fmt, summarizer=RULE)
    out = teacher_message(fmt, conf, question, demos, rule=summarizer)
    return None if isinstance(out, Excluded) else out


@dataclasses.dataclass(frozen=True)
class _Conf:
    context: str
    summarizer: Optional[str] = None
    source: Optional[str] = None
    kind: str = "self"


__all__ = ["ContextFormat", "ContextNeeds", "DemoNeed", "DemonstrationCache", "Demonstrations", "Excluded", "FORMATS",
           "ModelSummarizer", "RULE", "SUMMARY_PROMPT", "Summarizer", "SummaryCache", "TEACHER_KINDS",
           "ToyRuleSummarizer", "build_context", "check_same_generation_prompt", "context_format", "context_needs",
           "demo_source", "sample_demonstrations", "sample_demonstrations_of", "summarize_demonstrations",
           "summarize_demonstrations_of", "summary_request", "teacher_message"]
