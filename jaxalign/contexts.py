"""Teacher contexts: the paper's self-distillation prompt formats, demonstrations and summaries.

A self-distillation teacher is the student model with an enriched user message. Formats follow the
paper: Figure 13 (SELF-1C), Figure 14 (SELF-1C1W), Figure 15 (SELF-SUM-1C). The demonstration block
is appended to the question's user message, before the chat template is applied. Every teacher
prompt must end exactly where the student's prompt ends (same generation prompt, same thinking-mode
opening), or the response tokens would not line up: :func:`check_same_generation_prompt` enforces it.

Demonstrations are sampled from a source model at temperature 0.7, graded against the ground truth,
retried up to 60 trials, and cached on disk per question (:class:`DemonstrationCache`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

import jax
import numpy as np

from jaxalign.errors import ConfigError, TokenizerError
from jaxalign.tasks.base import Question

log = logging.getLogger(__name__)

_CLOSE = "Now answer with a response of your own, including the thinking process:"
FORMATS = ("SELF-1C", "SELF-1C1W", "SELF-SUM-1C")


def _quoted(text: str) -> str:
    return f'"""\n{text}\n"""'


def self_1c(user: str, correct: str) -> str:
    """Figure 13: one correct demonstration."""
    return f"{user}\n\nDemonstration\nThis is a correct response to the question:\n{_quoted(correct)}\n\n{_CLOSE}"


def self_1c1w(user: str, correct: str, wrong: str) -> str:
    """Figure 14: one correct and one wrong demonstration, with the warning header."""
    return (
        f"{user}\n\nDemonstrations\n\nBelow are example responses to the question. Some are CORRECT and some "
        "are WRONG -- the wrong responses contain mistakes and should NOT be imitated.\n\n"
        f"Correct:\n\n{_quoted(correct)}\n\nWRONG (do NOT imitate):\n\n{_quoted(wrong)}\n\n{_CLOSE}"
    )


def self_sum_1c(user: str, summary: str) -> str:
    """Figure 15: one correct demonstration, condensed by a summarizer."""
    return (f"{user}\n\nSummarized Demonstration\n\nThis is a correct response to the question:\n\n"
            f"{_quoted(summary)}\n\n{_CLOSE}")


class Summarizer(Protocol):
    def summarize(self, question: Question, response: str) -> str:
        ...


class ToyRuleSummarizer:
    """Condenses a toy_arith chain ('47+38=85. 85+16=101.') to its partial sums and answer."""

    def summarize(self, question: Question, response: str) -> str:
        partials = re.findall(r"=(-?\d+)", response)
        if not partials:
            raise ConfigError(f"{question.qid}: no partial sums to summarize in {response!r}")
        return f"Partial sums {', '.join(partials)}. Answer: {partials[-1]}"


@dataclasses.dataclass(frozen=True)
class Demonstrations:
    """Graded samples for one question: correct and wrong responses (text), and trials spent."""

    correct: tuple[str, ...]
    wrong: tuple[str, ...]
    trials: int


def build_context(fmt: str, question: Question, demos: Demonstrations,
                  summarizer: Optional[Summarizer] = None) -> Optional[str]:
    """The teacher's user message in format ``fmt``, or None if the demonstrations it needs are missing."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown context format {fmt!r}; choose from {FORMATS}")
    if not demos.correct or (fmt == "SELF-1C1W" and not demos.wrong):
        return None
    if fmt == "SELF-1C":
        return self_1c(question.user, demos.correct[0])
    if fmt == "SELF-1C1W":
        return self_1c1w(question.user, demos.correct[0], demos.wrong[0])
    if summarizer is None:
        raise ConfigError("SELF-SUM-1C needs a summarizer")
    return self_sum_1c(question.user, summarizer.summarize(question, demos.correct[0]))


def check_same_generation_prompt(student_ids: Sequence[int], teacher_ids: Sequence[int], tokenizer,
                                 teacher_name: str = "teacher") -> None:
    """Raises unless the teacher prompt ends in exactly the student's generation prompt.

    The generation prompt is everything after the last ``<|im_start|>`` (``assistant\\n`` and, with
    thinking disabled, the empty think block).
    """
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")

    def tail(ids):
        ids = list(ids)
        if start not in ids:
            raise TokenizerError(f"{teacher_name}: prompt has no <|im_start|>; was the chat template applied?")
        return ids[len(ids) - 1 - ids[::-1].index(start):]

    if tail(student_ids) != tail(teacher_ids):
        raise TokenizerError(
            f"{teacher_name}'s prompt ends in {tokenizer.decode(tail(teacher_ids))!r} but the student's in "
            f"{tokenizer.decode(tail(student_ids))!r}; response tokens would not line up. Render both with the "
            "same chat template and the same enable_thinking."
        )


class DemonstrationCache:
    """One JSON file per (source model, question): sampled demonstrations are never recomputed."""

    def __init__(self, root: str | os.PathLike, source: str):
        self.dir = Path(root) / re.sub(r"[^\w.-]", "_", source)

    def path(self, qid: str) -> Path:
        return self.dir / (re.sub(r"[^\w.-]", "_", qid) + ".json")

    def load(self, qid: str) -> Optional[Demonstrations]:
        path = self.path(qid)
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        return Demonstrations(tuple(raw["correct"]), tuple(raw["wrong"]), int(raw["trials"]))

    def save(self, qid: str, demos: Demonstrations) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path(qid).with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(demos), indent=1))
        os.replace(tmp, self.path(qid))  # atomic: a crash never leaves half a file


def sample_demonstrations(
    policy,
    encode: Callable[[str], list[int]],
    decode: Callable[[Sequence[int]], str],
    grade: Callable[[str], bool],
    question: Question,
    key: jax.Array,
    *,
    need_correct: int = 1,
    need_wrong: int = 1,
    temperature: float = 0.7,
    max_trials: int = 60,
    batch: int = 20,
    max_new_tokens: int = 512,
    cache: Optional[DemonstrationCache] = None,
) -> Demonstrations:
    """Samples responses to the plain question until it has enough correct and wrong ones.

    At most ``max_trials`` samples, drawn ``batch`` at a time, with keys folded from ``key``.
    ``encode`` renders the user message to prompt ids; ``decode`` turns response ids (EOS
    excluded) into text; ``grade`` checks a response against the ground truth.
    """
    if cache is not None and (found := cache.load(question.qid)) is not None:
        if len(found.correct) >= need_correct and len(found.wrong) >= need_wrong:
            return found
    prompt = np.asarray(encode(question.user), np.int32)
    correct: list[str] = []
    wrong: list[str] = []
    trials = 0
    while trials < max_trials and (len(correct) < need_correct or len(wrong) < need_wrong):
        n = min(batch, max_trials - trials)
        out = policy.sample(prompt, [np.zeros(0, np.int32)], n, max_new_tokens, temperature,
                            jax.random.fold_in(key, trials))
        for row, length in zip(out.tokens, out.lengths):
            tokens = [int(t) for t in row[:length] if int(t) not in policy.eos_token_ids]
            text = decode(tokens)
            (correct if grade(text) else wrong).append(text)
        trials += n
    demos = Demonstrations(tuple(correct[:max(need_correct, 1)]), tuple(wrong[:max(need_wrong, 1)]), trials)
    if len(correct) < need_correct:
        log.warning("%s: no correct demonstration in %d trials", question.qid, trials)
    if cache is not None:
        cache.save(question.qid, demos)
    return demos
