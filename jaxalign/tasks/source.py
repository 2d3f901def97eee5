"""Where a task's rows come from: a Hugging Face hub dataset or a local JSONL / Parquet file.

Hub datasets go through the ``datasets`` package, imported only when a hub id is used (it is not a
dependency of jaxalign). Its cache (``HF_DATASETS_CACHE``, ``HF_HOME``) and offline mode
(``HF_HUB_OFFLINE=1`` or ``HF_DATASETS_OFFLINE=1``) apply as usual. Local files need only the
standard library (JSONL) or pyarrow (Parquet), and use the hub's own field names.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from jaxalign.errors import ConfigError, JaxalignError
from jaxalign.tasks.base import MalformedRow

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".parquet")


@dataclasses.dataclass(frozen=True)
class HubLayout:
    """How to load one hub dataset: its configs (each loaded and concatenated, in order) and split."""

    configs: tuple[Optional[str], ...] = (None,)
    split: str = "test"


@dataclasses.dataclass(frozen=True)
class Source:
    """A local ``path``, or a ``hub`` id with the ``configs`` and ``split`` to read."""

    hub: Optional[str] = None
    configs: tuple[Optional[str], ...] = (None,)
    split: str = "test"
    path: Optional[Path] = None

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        configs = "+".join(c for c in self.configs if c)
        return f"{self.hub}" + (f" ({configs})" if configs else "") + f" split {self.split}"


def has_datasets() -> bool:
    """Whether ``import datasets`` can work, without importing it (a None entry in sys.modules blocks it)."""
    if "datasets" in sys.modules:
        return sys.modules["datasets"] is not None
    return importlib.util.find_spec("datasets") is not None


def _missing_datasets(task: str, hub: str) -> ConfigError:
    return ConfigError(
        f"{task}: reading the hub dataset {hub!r} needs the `datasets` package, which is not installed. "
        f"Run `pip install datasets`, or download the split once and pass it as a local file: "
        f"path=/data/{task}.jsonl (or .parquet) with the hub's own field names."
    )


def make_source(task: str, layouts: Mapping[str, HubLayout], *, hub: Any = None, config: Any = None,
                split: Any = None, path: Any = None) -> Source:
    """Validates a task's source options and resolves them; reads nothing.

    ``layouts`` lists the hub ids the task knows, default first: a known hub id without ``config`` or
    ``split`` gets its own; another hub id gets no config and split "test" unless told.
    """
    if path is not None:
        if hub is not None or config is not None or split is not None:
            raise ConfigError(f"{task}: give either path= (a local file) or hub=/config=/split=, not both")
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ConfigError(f"{task}: path must be a file name, got {path!r}")
        file = Path(path).expanduser()
        if file.suffix not in SUFFIXES:
            raise ConfigError(f"{task}: path {str(file)!r} must end in one of {SUFFIXES} (JSONL or Parquet rows "
                              "with the hub's field names)")
        if not file.is_file():
            raise ConfigError(f"{task}: path {str(file)!r} does not exist")
        return Source(path=file)
    if hub is None:
        hub = next(iter(layouts))
    if not isinstance(hub, str) or "/" not in hub:
        raise ConfigError(f"{task}: hub must be a dataset id like 'owner/name', got {hub!r}; known: {list(layouts)}")
    layout = layouts.get(hub, HubLayout())
    if config is None:
        configs = layout.configs
    elif isinstance(config, str):
        configs = (config,)
    elif isinstance(config, Sequence) and config and all(isinstance(c, str) for c in config):
        configs = tuple(config)
    else:
        raise ConfigError(f"{task}: config must be a name or a non-empty list of names, got {config!r}")
    split = layout.split if split is None else split
    if not isinstance(split, str) or not split:
        raise ConfigError(f"{task}: split must be a split name like 'test', got {split!r}")
    if not has_datasets():
        raise _missing_datasets(task, hub)
    return Source(hub=hub, configs=configs, split=split)


def read_rows(task: str, source: Source) -> Iterator[Mapping[str, Any] | MalformedRow]:
    """Every row of ``source`` in file order; a line that is not a JSON object comes as a MalformedRow."""
    if source.path is not None:
        yield from (_read_jsonl if source.path.suffix == ".jsonl" else _read_parquet)(task, source.path)
    else:
        yield from _read_hub(task, source)


def _read_jsonl(task: str, path: Path) -> Iterator[Mapping[str, Any] | MalformedRow]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise JaxalignError(f"{task}: cannot read {path}: {err}") from err
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.debug("%s: %s line %d is not valid JSON", task, path, number)
            yield MalformedRow("line is not valid JSON")
            continue
        yield row if isinstance(row, dict) else MalformedRow("row is not a JSON object")


def _read_parquet(task: str, path: Path) -> Iterator[Mapping[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise JaxalignError(f"{task}: cannot read {path} as Parquet: {err}") from err
    yield from table.to_pylist()


def _read_hub(task: str, source: Source) -> Iterator[Mapping[str, Any]]:
    try:
        import datasets
    except ImportError as err:
        raise _missing_datasets(task, source.hub) from err
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    for config in source.configs:
        try:
            rows = datasets.load_dataset(source.hub, config, split=source.split)
        except Exception as err:  # the library raises many types; the user needs the same advice for all
            hint = ("HF_HUB_OFFLINE is set: only a split already in the local cache can load; run once online "
                    "to cache it, or " if offline else "check the id, config and split, or ")
            raise JaxalignError(
                f"{task}: could not load {source.hub!r}" + (f" config {config!r}" if config else "")
                + f" split {source.split!r}: {type(err).__name__}: {err}. {hint}pass a local file with path=."
            ) from err
        yield from rows
