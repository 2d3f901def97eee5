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
from typing import Callable, Iterator, Optional, Protocol, Sequence

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
                 max_new_tokens: int, temperature: float = 0.7, max_rows: Optional[int] = None,
                 max_prefix_slots: Optional[int] = None):
        self.policy, self.encode, self.decode = policy, encode, decode
        self.max_new_tokens, self.temperature, self.max_rows = max_new_tokens, temperature, max_rows
        self.max_prefix_slots = max_prefix_slots

    def summarize(self, question: Question, response: str, key: Optional[jax.Array] = None) -> str:
        return self.summarize_many([(question, response, key)])[0]

    def summarize_many(self, requests: Sequence[tuple[Question, str, Optional[jax.Array]]]) -> list[str]:
        """One summary per (question, response, key), batched (:func:`jaxalign.policy.sample_prompts`)
        in groups whose prompts hold at most ``max_prefix_slots`` KV slots (:func:`prompt_groups`):
        each the one :meth:`summarize` gives."""
        return [text for _, texts in self.summarize_calls(requests) for text in texts]

    def summarize_calls(self, requests: Sequence[tuple[Question, str, Optional[jax.Array]]]
                        ) -> Iterator[tuple[list[int], list[str]]]:
        """:meth:`summarize_many` one engine call at a time: yields (the requests' indices, their
        summaries) after each call, in order, so a caller can save them and honour a stop between calls."""
        from jaxalign.policy import sample_prompts

        if any(key is None for _, _, key in requests):
            raise ValueError("ModelSummarizer.summarize needs a key")
        prompts = [np.asarray(self.encode(summary_request(q, response)), np.int32) for q, response, _ in requests]
        eos = set(self.policy.eos_token_ids)
        for group in prompt_groups([len(p) for p in prompts], self.max_prefix_slots):
            out = sample_prompts(self.policy, [prompts[i] for i in group], 1, self.max_new_tokens, self.temperature,
                                 [requests[i][2] for i in group], self.max_rows)
            texts = [self.decode([int(t) for t in row[:length] if int(t) not in eos])
                     for row, length in zip(out.tokens, out.lengths)]
            # a reply cut off inside its thinking: no summary
            yield group, [(final_text(text) or "").strip() for text in texts]


def prompt_groups(lengths: Sequence[int], max_slots: Optional[int]) -> list[list[int]]:
    """Consecutive runs of prompt indices whose call holds at most ``max_slots`` prompt KV slots: the
    engine pads every prompt of a call to the longest one's slots (:func:`jaxalign.engine.sampling.prefix_slots`),
    and FlaxPolicy.sample_prompts pads their number (:func:`jaxalign.engine.sampling.padded_prompts`).
    A prompt longer than ``max_slots`` goes alone; ``None``: one group."""
    from jaxalign.engine.sampling import padded_prompts, prefix_slots

    if max_slots is None:
        return [list(range(len(lengths)))] if lengths else []
    groups: list[list[int]] = []
    for i, length in enumerate(lengths):
        trial = groups[-1] + [i] if groups else None
        if trial and padded_prompts(len(trial)) * prefix_slots(max(lengths[j] for j in trial)) <= max_slots:
            groups[-1] = trial
        else:
            groups.append([i])
    return groups


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
    return summarize_demonstrations_of(summarizer, [(question, demos, key)], wrong=wrong)[0]


def summarize_demonstrations_of(summarizer: Summarizer,
                                items: Sequence[tuple[Question, Demonstrations, Optional[jax.Array]]], *,
                                wrong: bool = True,
                                done: Optional[Callable[[int, Demonstrations], None]] = None,
                                stop: Callable[[], bool] = lambda: False) -> list[Optional[Demonstrations]]:
    """:func:`summarize_demonstrations` of several (question, demonstrations, key) items, batched where
    the summarizer can batch (``summarize_calls``: a model, one engine call at a time), else one by one.

    ``done(i, summaries)`` is called as soon as item i's summaries are all written (to save them);
    ``stop()`` is asked before each call, and when it is true the items not yet done come back None.
    """
    requests, owners = [], []
    for i, (question, demos, key) in enumerate(items):
        chosen = [(text, 0, "correct") for text in demos.correct[:1]]
        chosen += [(text, 1, "wrong") for text in demos.wrong[:1]] if wrong else []
        for text, index, side in chosen:
            requests.append((question, text, None if key is None else jax.random.fold_in(key, index)))
            owners.append((i, side))
    calls = getattr(summarizer, "summarize_calls", None)
    if calls is not None:
        batches = calls(requests) if requests else iter(())
    else:  # a rule: one request at a time
        batches = (([j], [summarizer.summarize(*requests[j])]) for j in range(len(requests)))
    written: list[dict[str, list[str]]] = [{"correct": [], "wrong": []} for _ in items]
    left = [0] * len(items)  # requests still to summarize, per item
    for i, _ in owners:
        left[i] += 1
    out: list[Optional[Demonstrations]] = [None] * len(items)

    def finish(i: int) -> None:
        out[i] = dataclasses.replace(items[i][1], correct=tuple(written[i]["correct"]),
                                     wrong=tuple(written[i]["wrong"]))
        if done is not None:
            done(i, out[i])

    for i in (i for i in range(len(items)) if not left[i]):  # nothing of it to summarize
        finish(i)
    while not stop():
        batch = next(batches, None)
        if batch is None:
            break
        for j, text in zip(*batch):
            i, side = owners[j]
            written[i][side].append(text)
            left[i] -= 1
            if not left[i]:
                finish(i)
    return out
