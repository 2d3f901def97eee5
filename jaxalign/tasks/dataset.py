"""A task backed by dataset rows: lazy loading, malformed-row counts, content ids, seeded subsamples.

Question ids come from a row's content (``boolq-<sha256 of question and passage>[:12]``), never
from its position, so the same row has the same id in every run, shard, split file and format.
The subsample for a seed ranks rows by ``sha256(seed, qid)``: it depends on neither file order nor
shard, and a row added to the file displaces at most one question of an existing subsample.
"""

from __future__ import annotations

import abc
import collections
import hashlib
import json
import logging
from typing import Any, ClassVar, Mapping, Optional, Sequence

from jaxalign.errors import ConfigError, JaxalignError
from jaxalign.tasks.base import PAPER_SYSTEM, MalformedRow, Question
from jaxalign.tasks.source import HubLayout, make_source, read_rows

log = logging.getLogger(__name__)


def content_id(task: str, fields: Sequence[str]) -> str:
    """``<task>-`` and the first 12 hex digits of the sha256 of ``fields`` (JSON, so boundaries count)."""
    digest = hashlib.sha256(json.dumps(list(fields), ensure_ascii=False).encode("utf-8")).hexdigest()
    return f"{task}-{digest[:12]}"


def text_field(row: Mapping[str, Any], *names: str) -> str:
    """The first of ``names`` present in ``row``; it must be a non-empty string."""
    for name in names:
        if name in row and row[name] is not None:
            value = row[name]
            if not isinstance(value, str) or not value.strip():
                raise MalformedRow(f"'{name}' is not a non-empty string")
            return value
    raise MalformedRow("missing '" + "' or '".join(names) + "'")


class DatasetTask(abc.ABC):
    """Base of the real tasks. Subclasses set ``name`` and ``layouts`` and implement :meth:`parse` and
    :meth:`grade`. Options: ``path`` (a local .jsonl / .parquet file) or ``hub``, ``config``, ``split``."""

    name: ClassVar[str]
    layouts: ClassVar[Mapping[str, HubLayout]]  # known hub ids, the default first
    options: ClassVar[tuple[str, ...]] = ("hub", "config", "split", "path")
    system: ClassVar[Optional[str]] = PAPER_SYSTEM

    def __init__(self, *, hub: Any = None, config: Any = None, split: Any = None, path: Any = None):
        self.source = make_source(self.name, self.layouts, hub=hub, config=config, split=split, path=path)
        self._pool: Optional[list[Question]] = None
        self._skipped: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source})"

    @property
    def skipped(self) -> dict[str, int]:
        """Rows left out while loading, by reason (empty until questions are first asked for)."""
        return dict(self._skipped)

    @abc.abstractmethod
    def parse(self, row: Mapping[str, Any]) -> tuple[Sequence[str], str, Any]:
        """A row's identity fields (hashed into its qid), user message and answer; raises MalformedRow."""

    @abc.abstractmethod
    def grade(self, response: str, answer: Any) -> bool:
        """Whether ``response`` (thinking-mode text) answers correctly; ``answer`` is the row's own field."""

    def pool(self) -> list[Question]:
        """Every usable row as a Question, in source order; loads once."""
        if self._pool is None:
            pool, seen, skipped = [], set(), collections.Counter()
            for row in read_rows(self.name, self.source):
                try:
                    if isinstance(row, MalformedRow):
                        raise row
                    identity, user, answer = self.parse(row)
                    qid = content_id(self.name, identity)
                    if qid in seen:
                        raise MalformedRow("duplicate question")
                except MalformedRow as bad:
                    skipped[bad.reason] += 1
                    continue
                seen.add(qid)
                pool.append(Question(qid, user, answer))
            if skipped:
                log.warning("%s: skipped %d malformed rows of %d in %s: %s", self.name, sum(skipped.values()),
                            sum(skipped.values()) + len(pool), self.source,
                            "; ".join(f"{n} x {reason}" for reason, n in sorted(skipped.items())))
            if not pool:
                raise JaxalignError(f"{self.name}: {self.source} has no usable rows (skipped: {dict(skipped)}); "
                                    f"is it a {self.name} dataset with the hub's field names?")
            self._pool, self._skipped = pool, skipped
        return self._pool

    def questions(self, count: int, seed: int) -> list[Question]:
        """``count`` distinct questions: those whose sha256(seed, qid) ranks lowest, in that rank order."""
        if count < 1:
            raise ConfigError(f"{self.name}: asked for {count} questions; ask for at least 1")
        pool = self.pool()
        if count > len(pool):
            raise JaxalignError(f"{self.name}: asked for {count} questions but {self.source} has {len(pool)} usable "
                                f"rows (skipped: {self.skipped}); lower dataset.num_questions")

        def rank(q: Question) -> bytes:
            return hashlib.sha256(f"{seed}:{q.qid}".encode()).digest()

        return sorted(pool, key=rank)[:count]
