"""Atomic result files: a reader, a concurrent writer or a kill never sees half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable


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
