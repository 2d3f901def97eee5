"""Helpers for the launch tests: start sweeps as subprocesses, find job processes, compare results."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from jaxalign.run import execute
from tests.test_pipeline import rows_of
from tests.test_run import composed

ROOT = Path(__file__).resolve().parents[1]
EXACT_JOB = ("+experiment=exact", "dataset.num_questions=2", "budget.num_initial=200")


def run_main(*args, timeout=600, background=False):
    """python -m jaxalign.run ARGS in the repository root, on the CPU."""
    cmd = [sys.executable, "-m", "jaxalign.run", *args]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if background:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def wait_until(condition, timeout: float, what: str, poll: float = 0.2):
    end = time.time() + timeout
    while time.time() < end:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def checkpoints(run_dir: Path, qid: str) -> int:
    """How many complete checkpoints the question has (orbax step directories)."""
    ckpt = run_dir / "ckpt" / qid
    return sum(p.name.isdigit() for p in ckpt.iterdir()) if ckpt.is_dir() else 0


def job_dirs(sweep: Path) -> list[Path]:
    """The run directories of a sweep (those with a .hydra folder)."""
    return sorted(p.parent for p in sweep.glob("*/.hydra"))


def assert_same_results(run_dir: Path, reference: Path) -> None:
    """Identical Parquet rows and tree arrays for every question of the reference."""
    def qids_in(folder: Path) -> list[str]:
        return sorted(p.stem for p in folder.glob("*.parquet") if not p.name.endswith(".children.parquet"))

    qids = qids_in(reference / "questions")
    assert qids and qids == qids_in(run_dir / "questions")
    for qid in qids:
        assert rows_of(run_dir, qid) == rows_of(reference, qid), qid
        a = np.load(reference / "questions" / f"{qid}.tree.npz")
        b = np.load(run_dir / "questions" / f"{qid}.tree.npz")
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files), qid


def reference_run(tmp_path: Path, *overrides: str) -> Path:
    """The same job, uninterrupted and in-process."""
    out = tmp_path / "reference"
    execute(composed(*overrides), out)
    return out
