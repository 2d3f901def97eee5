"""Demonstrations: responses sampled from a context-source model, graded, and cached on disk.

The source model answers the plain question (the student's own prompt, rendered with the source's
tokenizer) at temperature 0.7, ``batch`` samples at a time, until it has the correct and wrong
responses the teachers need or 60 trials are spent (Appendix E.9). Each response is graded
against the ground truth. One JSON file per (source model, question) holds them, so a resumed or
repeated job never samples them again. A stop request between rounds leaves an unfinished search's
progress in ``<qid>.partial.json``: a resumed job with the same settings samples only its remaining
rounds, with the same keys.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.files import read_cache_entry, write_json
from jaxalign.tasks.base import Question

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Demonstrations:
    """Graded samples for one question: correct and wrong responses (text), and trials spent."""

    correct: tuple[str, ...]
    wrong: tuple[str, ...]
    trials: int


@dataclasses.dataclass(frozen=True)
class DemoNeed:
    """How many correct and wrong demonstrations a source must try to find for one question."""

    correct: int = 1
    wrong: int = 0

    def __or__(self, other: "DemoNeed") -> "DemoNeed":
        return DemoNeed(max(self.correct, other.correct), max(self.wrong, other.wrong))

    def met_by(self, demos: Demonstrations) -> bool:
        return len(demos.correct) >= self.correct and len(demos.wrong) >= self.wrong


def safe_name(text: str) -> str:
    """A model id or question id as one file-name component ('Qwen/Qwen3-32B' -> 'Qwen_Qwen3-32B')."""
    return re.sub(r"[^\w.-]", "_", text)


def _parsed(raw: dict) -> Demonstrations:
    """A cache entry's JSON (:meth:`DemonstrationCache.save` or ``save_progress``) as Demonstrations."""
    return Demonstrations(tuple(raw["correct"]), tuple(raw["wrong"]), int(raw["trials"]))


class DemonstrationCache:
    """One JSON file per (source model, question): ``<root>/<source>/<qid>.json``."""

    def __init__(self, root: str | os.PathLike, source: str):
        self.dir = Path(root) / safe_name(source)

    def path(self, qid: str) -> Path:
        return self.dir / (safe_name(qid) + ".json")

    def _raw(self, qid: str) -> Optional[dict]:
        return read_cache_entry(self.path(qid), ("correct", "wrong", "trials"))

    def load(self, qid: str) -> Optional[Demonstrations]:
        raw = self._raw(qid)
        return None if raw is None else _parsed(raw)

    def progress_path(self, qid: str) -> Path:
        return self.dir / (safe_name(qid) + ".partial.json")

    def save(self, qid: str, demos: Demonstrations, need: DemoNeed = DemoNeed()) -> None:
        # atomic: a crash never leaves half a file
        write_json(self.path(qid), {**dataclasses.asdict(demos), "need": [need.correct, need.wrong]})
        self.progress_path(qid).unlink(missing_ok=True)

    def save_progress(self, qid: str, so_far: Demonstrations, search: dict) -> None:
        """Records an unfinished search beside any finished entry: every response graded so far, the
        trials spent, and ``search``, the settings it ran with (need, batch, temperature, ...)."""
        write_json(self.progress_path(qid), {**dataclasses.asdict(so_far), "search": search})

    def progress(self, qid: str, search: dict) -> Optional[Demonstrations]:
        """The unfinished search of :meth:`save_progress` if it ran with exactly ``search``; else None."""
        raw = read_cache_entry(self.progress_path(qid), ("correct", "wrong", "trials", "search"))
        return None if raw is None or raw["search"] != search else _parsed(raw)

    def answers(self, qid: str, need: DemoNeed, max_trials: int) -> Optional[Demonstrations]:
        """The cached demonstrations if they answer ``need``: enough of each, or every trial spent
        while looking for at least as many (sampling again with the same key would find the same)."""
        raw = self._raw(qid)
        if raw is None:
            return None
        found = _parsed(raw)
        looked_for = DemoNeed(*raw.get("need", (0, 0)))
        exhausted = found.trials >= max_trials and (looked_for | need) == looked_for
        return found if need.met_by(found) or exhausted else None


def sample_demonstrations(policy, encode: Callable[[str], list[int]], decode: Callable[[Sequence[int]], str],
                          grade: Callable[[str], bool], question: Question, key: jax.Array,
                          **options) -> Demonstrations:
    """Samples responses to the plain question until it has enough correct and wrong ones.

    At most ``max_trials`` samples, drawn ``batch`` at a time, with keys folded from ``key``.
    ``encode`` renders the user message to prompt ids; ``decode`` turns response ids (EOS
    excluded) into text; ``grade`` checks a response against the ground truth. A cached file
    that answers the need (:meth:`DemonstrationCache.answers`) is returned as is. ``options``:
    the keyword arguments of :func:`sample_demonstrations_of` (need_correct, need_wrong,
    temperature, max_trials, batch, max_new_tokens, cache, max_rows).
    """
    return sample_demonstrations_of(policy, encode, decode, [(question, grade, key)], **options)[0]


def sample_demonstrations_of(
    policy,
    encode: Callable[[str], list[int]],
    decode: Callable[[Sequence[int]], str],
    items: Sequence[tuple[Question, Callable[[str], bool], jax.Array]],
    *,
    need_correct: int = 1,
    need_wrong: int = 1,
    temperature: float = 0.7,
    max_trials: int = 60,
    batch: int = 20,
    max_new_tokens: int = 512,
    cache: Optional[DemonstrationCache] = None,
    max_rows: Optional[int] = None,
    stop: Callable[[], bool] = lambda: False,
) -> list[Optional[Demonstrations]]:
    """:func:`sample_demonstrations` for several (question, grade, key) items at once.

    Each round samples ``batch`` responses for every question that still lacks some, in one
    :func:`jaxalign.policy.sample_prompts`, each question under ``fold_in(its key, its trials)``. So
    every question gets exactly the demonstrations it would get alone, and a 32B source reads its
    weights once per decode step for many questions' rows instead of one question's. A question's file is
    written in the round that completes it. ``max_rows``: decode rows per call (the policy's own
    limit by default); the rest of a round's completions queue on them.

    ``stop()`` is asked before each round. When it is true, the questions still searching keep their
    progress in ``cache`` (:meth:`DemonstrationCache.save_progress`) and come back as None; a later
    call with the same settings goes on from their next round, and the results equal an
    uninterrupted call's (a call with other settings starts the search again).
    """
    from jaxalign.policy import sample_prompts

    need = DemoNeed(need_correct, need_wrong)
    found: list[Optional[Demonstrations]] = [None] * len(items)
    if cache is not None:
        found = [cache.answers(q.qid, need, max_trials) for q, _, _ in items]
    todo = [i for i, f in enumerate(found) if f is None]
    prompts = {i: np.asarray(encode(items[i][0].user), np.int32) for i in todo}
    keys = jnp.stack([key for _, _, key in items]) if todo else None  # [len(items)]: one fold_in per round
    search = {"need": [need_correct, need_wrong], "batch": batch, "max_trials": max_trials,
              "temperature": temperature, "max_new_tokens": max_new_tokens}
    so_far = {i: (cache.progress(items[i][0].qid, search) if cache is not None else None) for i in todo}
    correct = {i: list(so_far[i].correct) if so_far[i] else [] for i in todo}
    wrong = {i: list(so_far[i].wrong) if so_far[i] else [] for i in todo}
    trials = {i: so_far[i].trials if so_far[i] else 0 for i in todo}
    while True:
        for i in list(todo):
            if trials[i] < max_trials and (len(correct[i]) < need_correct or len(wrong[i]) < need_wrong):
                continue
            question = items[i][0]
            found[i] = Demonstrations(tuple(correct[i][:max(need_correct, 1)]), tuple(wrong[i][:max(need_wrong, 1)]),
                                      trials[i])
            if len(correct[i]) < need_correct:
                log.warning("%s: %d of %d correct demonstrations in %d trials", question.qid, len(correct[i]),
                            need_correct, trials[i])
            if cache is not None:
                cache.save(question.qid, found[i], need)
            todo.remove(i)
        if not todo:
            return found
        if stop():
            for i in [i for i in todo if trials[i]] if cache is not None else ():
                cache.save_progress(items[i][0].qid, Demonstrations(tuple(correct[i]), tuple(wrong[i]), trials[i]),
                                    search)
            return found
        # one call per round size: a resumed question may be rounds ahead of the others
        sizes = {i: min(batch, max_trials - trials[i]) for i in todo}
        for n in sorted(set(sizes.values()), reverse=True):
            group = [i for i in todo if sizes[i] == n]
            round_keys = jax.vmap(jax.random.fold_in)(keys[np.asarray(group)],
                                                     np.asarray([trials[i] for i in group], np.uint32))
            out = sample_prompts(policy, [prompts[i] for i in group], n, max_new_tokens, temperature, round_keys,
                                 max_rows)
            for row, length, which in zip(out.tokens, out.lengths, out.prefix_index):
                i = group[which]
                text = decode([int(t) for t in row[:length] if int(t) not in policy.eos_token_ids])
                (correct[i] if items[i][1](text) else wrong[i]).append(text)
            for i in group:
                trials[i] += n
