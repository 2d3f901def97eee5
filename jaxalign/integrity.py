"""Trustworthy result files: a checksum manifest per question, and one worker per question.

A question's result files (``<qid>.parquet``, ``<qid>.tree.npz``, ``<qid>.json``) are recorded with
their SHA-256 in ``<qid>.manifest`` (JSON), written last and atomically. A question is finished only
when its manifest is readable and every file it lists is there with the recorded checksum; any
other state (a file missing, truncated, garbled, or a manifest missing) means "recompute", which
resumes from the question's checkpoints when they are there. Results are deterministic, so the
recomputed files equal the lost ones.

:class:`QuestionLock` is an exclusive ``flock`` on ``<qid>.lock``: the kernel releases it when the
process dies, even by SIGKILL, so no stale lock is ever left; a second process on the same run
directory (or an overlapping shard) that finds a question locked goes on to the next one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from jaxalign.files import write_json

MANIFEST_VERSION = 1


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(base: Path) -> Path:
    """``questions/<qid>`` -> ``questions/<qid>.manifest`` (JSON; not *.json, so globs for summaries skip it)."""
    return base.with_name(base.name + ".manifest")


def _digest_of(files: dict) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def write_manifest(base: Path, files: list[Path]) -> None:
    """Records ``files`` (beside ``base``) with their checksums; call it after they are all written.

    The manifest carries a checksum of its own list, so a damaged manifest is named as such, not
    mistaken for a damaged result file.
    """
    listed = {f.name: sha256(f) for f in sorted(files)}
    write_json(manifest_path(base), {"version": MANIFEST_VERSION, "files": listed, "checksum": _digest_of(listed)})


def damage(base: Path) -> Optional[str]:
    """None when the question's manifest and every file it lists check out; else what is wrong,
    naming the file (e.g. "questions/q1.parquet does not match its checksum")."""
    path = manifest_path(base)
    where = path.parent.name
    if not path.is_file():
        return f"{where}/{path.name} is missing (the question never finished, or the file was lost)"
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if manifest.get("version") != MANIFEST_VERSION or not isinstance(files, dict) or not files:
            raise ValueError("unexpected layout")
    except (ValueError, KeyError, TypeError) as err:
        return f"{where}/{path.name} is unreadable ({err})"
    if manifest.get("checksum") != _digest_of(files):
        return f"{where}/{path.name} does not match its own checksum (damaged)"
    for name, digest in sorted(files.items()):
        file = path.parent / name
        if not file.is_file():
            return f"{where}/{name} is missing"
        if sha256(file) != digest:
            return f"{where}/{name} does not match its checksum (truncated or changed)"
    return None


class QuestionLock:
    """An exclusive, non-blocking flock on ``path``; ``acquire()`` -> False when another process holds it.

    The lock file stays on disk (deleting it while another process waits on it would let two
    processes hold "the" lock); only the flock on the open file means anything.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: Optional[int] = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for a person looking; the flock is the lock
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "QuestionLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
