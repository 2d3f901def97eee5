"""Atomic per-question checkpoints with orbax: arrays (tree, rollouts, plan) plus JSON metadata.

A checkpoint is written after every rollout batch. orbax writes each step into a temporary
directory and renames it when complete, so a SIGKILL mid-save leaves the previous step intact
(``latest_step`` skips the temporary one). A step that is complete but unreadable (truncated or
corrupted files) is skipped with a warning and the previous one is restored.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class QuestionCheckpoints:
    """Checkpoints of one question's Phase-1 state under ``directory``."""

    def __init__(self, directory: str | Path, max_to_keep: int = 3):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=True),
        )

    def save(self, step: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Starts an async save of ``arrays`` (a flat dict of numpy arrays) and ``meta`` (JSON).

        Both are snapshotted here: the save runs in the background while the caller keeps mutating
        its state, and a checkpoint whose metadata ran ahead of its arrays would double-count work.
        """
        arrays = {k: np.array(v, copy=True) for k, v in arrays.items()}
        meta = json.loads(json.dumps(meta))
        # orbax refuses zero-size arrays: record their shape and dtype in the metadata instead
        empty = {k: [list(v.shape), v.dtype.str] for k, v in arrays.items() if v.size == 0}
        arrays = {k: v for k, v in arrays.items() if v.size}
        self.manager.save(step, args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                                        meta=ocp.args.JsonSave({**meta, "_empty": empty})))

    def restore_latest(self) -> Optional[tuple[int, dict[str, np.ndarray], dict[str, Any]]]:
        """(step, arrays, meta) of the newest readable checkpoint, or None if there is none."""
        self.manager.reload()
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    arrays=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
                arrays = {k: np.asarray(v) for k, v in restored["arrays"].items()}
                meta = dict(restored["meta"])
                for k, (shape, dtype) in meta.pop("_empty", {}).items():
                    arrays[k] = np.zeros(shape, np.dtype(dtype))
                return step, arrays, meta
            except Exception as err:  # noqa: BLE001 - any unreadable step falls back to an older one
                log.warning("checkpoint step %d in %s is unreadable (%s: %s); falling back to an older one",
                            step, self.directory, type(err).__name__, err)
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
