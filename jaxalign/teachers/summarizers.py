"""Summaries of demonstrations, for the SELF-SUM formats (Figure 15).

A summarizer model (Qwen3-32B in the paper) condenses a demonstration to its key reasoning steps
and final answer. It is asked with :data:`SUMMARY_PROMPT` (docs/teachers.md explains the
choices), in non-thinking mode, at temperature 0.7, with a key folded from the question; its
reply, any thinking dropped, is the summary. Summaries are cached per (question, source,
summarizer) and are recomputed only if the demonstrations they condense change.

:class:`ToyRuleSummarizer` stands in for the model on toy_arith: it keeps the partial sums.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

import jax
import numpy as np

from jaxalign.errors import ConfigError
from jaxalign.files import read_cache_entry, write_json
from jaxalign.tasks.answers import final_text
from jaxalign.tasks.base import Question
from jaxalign.teachers.demos import Demonstrations, safe_name

RULE = "rule"  # the summarizer setting that selects ToyRuleSummarizer
SUMMARY_PROMPT = """\
Below are a question and a response to it. Condense the response to its key reasoning steps and its final answer.

- Keep every step that the final answer depends on, in order, each in one short sentence or equation.
- Drop repetition, false starts, self-checks and filler.
- Do not add steps, facts or checks of your own, and do not correct the response, even if it is wrong.
- End with the response's final answer line, exactly as the response writes it (e.g. "Answer: B").

Write only the condensed response.

Question:
\"\"\"
{question}
\"\"\"

Response:
\"\"\"
{response}
\"\"\""""


def summary_request(question: Question, response: str) -> str:
    """The user message that asks the summarizer model to condense ``response``."""
    return SUMMARY_PROMPT.format(question=question.user, response=response)


class Summarizer(Protocol):
    def summarize(self, question: Question, response: str, key: Optional[jax.Array] = None) -> str:
        """The condensed response ('' if the summarizer produced nothing usable)."""
        ...


class ToyRuleSummarizer:
    """Condenses a toy_arith chain ('47+38=85. 85+16=101.') to its partial sums and answer."""

    def summarize(self, question: Question, response: str, key: Optional[jax.Array] = None) -> str:
        partials = re.findall(r"=(-?\d+)", response)
        if not partials:
            raise ConfigError(f"{question.qid}: no partial sums to summarize in {response!r}")
        return f"Partial sums {', '.join(partials)}. Answer: {partials[-1]}"


class ModelSummarizer:
    """A language model behind the Policy protocol, asked with :data:`SUMMARY_PROMPT`.

    ``encode(user) -> prompt ids`` renders the request with the summarizer's own chat template
    (non-thinking mode); ``decode(ids) -> text`` reads the reply (EOS excluded).
    """

    def __init__(self, policy, encode: Callable[[str], Sequence[int]], decode: Callable[[Sequence[int]], str], *,
                 max_new_tokens: int, temperature: float = 0.7):
        self.policy, self.encode, self.decode = policy, encode, decode
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    def summarize(self, question: Question, response: str, key: Optional[jax.Array] = None) -> str:
        if key is None:
            raise ValueError("ModelSummarizer.summarize needs a key")
        prompt = np.asarray(self.encode(summary_request(question, response)), np.int32)
        out = self.policy.sample(prompt, [np.zeros(0, np.int32)], 1, self.max_new_tokens, self.temperature, key)
        eos = set(self.policy.eos_token_ids)
        text = self.decode([int(t) for t in out.tokens[0, : out.lengths[0]] if int(t) not in eos])
        return (final_text(text) or "").strip()  # a reply cut off inside its thinking has no summary


def _digest(demos: Demonstrations) -> str:
    return hashlib.sha256(json.dumps([demos.correct, demos.wrong]).encode()).hexdigest()[:16]


class SummaryCache:
    """One JSON file per (summarizer, source, question): ``<root>/<summarizer>/<source>/<qid>.json``."""

    def __init__(self, root: str | os.PathLike, summarizer: str, source: str):
        self.dir = Path(root) / safe_name(summarizer) / safe_name(source)

    def path(self, qid: str) -> Path:
        return self.dir / (safe_name(qid) + ".json")

    def load(self, qid: str, of: Demonstrations) -> Optional[Demonstrations]:
        """The cached summaries of exactly these demonstrations, or None."""
        raw = read_cache_entry(self.path(qid), ("of", "correct", "wrong"))
        if raw is None or raw["of"] != _digest(of):
            return None
        return Demonstrations(tuple(raw["correct"]), tuple(raw["wrong"]), of.trials)

    def save(self, qid: str, of: Demonstrations, summaries: Demonstrations) -> None:
        write_json(self.path(qid), {"of": _digest(of), "correct": list(summaries.correct),
                                    "wrong": list(summaries.wrong)})


def summarize_demonstrations(summarizer: Summarizer, question: Question, demos: Demonstrations,
                             key: Optional[jax.Array] = None, *, wrong: bool = True) -> Demonstrations:
    """The first correct (and, with ``wrong``, the first wrong) demonstration, each summarized.

    Keys: ``fold_in(key, 0)`` for the correct one, ``fold_in(key, 1)`` for the wrong one.
    """
    def one(text: str, index: int) -> str:
        return summarizer.summarize(question, text, None if key is None else jax.random.fold_in(key, index))

    correct = tuple(one(t, 0) for t in demos.correct[:1])
    wrongs = tuple(one(t, 1) for t in demos.wrong[:1]) if wrong else ()
    return dataclasses.replace(demos, correct=correct, wrong=wrongs)
