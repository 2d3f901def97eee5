"""Atomic result files: a reader, a concurrent writer or a kill never sees half a file."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger(__name__)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Calls ``write(tmp)`` on a temporary file beside ``path``, then renames it onto ``path``.

    The temporary name carries the process id, so two jobs writing the same file (two shards
    merging a finished run) never interleave: the last rename wins, whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1))


def read_cache_entry(path: Path, fields: tuple[str, ...]) -> Optional[dict]:
    """A cache entry's JSON, or None when it is absent or damaged (not JSON, or lacking ``fields``).

    A damaged entry is logged, naming the file, and left to be recomputed: cache keys are
    deterministic, so the recomputed entry equals the lost one.
    """
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict) or any(f not in raw for f in fields):
            raise ValueError(f"missing {[f for f in fields if not isinstance(raw, dict) or f not in raw]}")
    except (ValueError, OSError) as err:
        log.warning("%s is damaged (%s); recomputing it (its key is deterministic, so the result is the same)",
                    path, err)
        return None
    return raw
