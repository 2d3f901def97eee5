"""Trustworthy run directories: checksummed results, faults repaired or named, one worker per question."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from jaxalign.errors import IncompleteResults
from jaxalign.integrity import QuestionLock, damage, manifest_path
from jaxalign.report import write_report
from tests.pipeline_worker import SMALL, exact_run

ROOT = Path(__file__).resolve().parents[1]
SEED = 2
QID = f"exact-{SEED}"
FAULTS = ("truncate", "garble", "delete")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run directory with one finished ExactPolicy question (results, manifest, checkpoints)."""
    run_dir = tmp_path_factory.mktemp("finished")
    summary = exact_run(SEED, run_dir).run()
    assert summary["status"] == "analysed" and summary["rows"] > 0
    return run_dir


def _results(run_dir: Path) -> dict:
    """What a question's results are: its rows, its tree, and its summary without wall times."""
    folder = run_dir / "questions"
    rows = pq.read_table(folder / f"{QID}.parquet").to_pylist()
    with np.load(folder / f"{QID}.tree.npz") as tree:
        arrays = {k: tree[k].tolist() for k in tree.files}
    summary = json.loads((folder / f"{QID}.json").read_text())
    summary.pop("timings")
    return {"rows": json.dumps(rows, sort_keys=True, default=str), "tree": arrays, "summary": summary}


def _inject(path: Path, fault: str) -> None:
    data = path.read_bytes()
    if fault == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif fault == "garble":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0x5A for b in data[middle: middle + 16]) + data[middle + 16:])
    else:
        path.unlink()


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("suffix", [".parquet", ".json", ".tree.npz", ".children.parquet", ".manifest"])
def test_a_damaged_result_file_is_named_by_the_report_and_restored_by_a_rerun(finished, tmp_path, suffix, fault):
    want = _results(finished)
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    shutil.rmtree(run_dir / "report", ignore_errors=True)
    victim = run_dir / "questions" / f"{QID}{suffix}"
    _inject(victim, fault)

    problem = damage(run_dir / "questions" / QID)
    assert problem is not None and victim.name in problem
    with pytest.raises(IncompleteResults, match=victim.name.replace(".", r"\.")):
        write_report(run_dir)
    forced = write_report(run_dir, force=True)
    assert forced.startswith("> **Built with --force") and victim.name in forced

    summary = exact_run(SEED, run_dir).run()  # recomputed from the checkpoints
    assert damage(run_dir / "questions" / QID) is None
    assert _results(run_dir) == want and summary["rows"] == want["summary"]["rows"]
    write_report(run_dir)  # complete again


def test_a_damaged_set_without_checkpoints_is_recomputed_from_scratch(finished, tmp_path, caplog):
    want = _results(finished)
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    shutil.rmtree(run_dir / "ckpt")
    (run_dir / "questions" / f"{QID}.parquet").unlink()
    with caplog.at_level("WARNING"):
        exact_run(SEED, run_dir).run()
    assert any(f"{QID}.parquet is missing" in r.getMessage() for r in caplog.records)
    assert _results(run_dir) == want


def test_a_finished_question_is_not_recomputed(finished, monkeypatch):
    from jaxalign.pipeline import QuestionRun

    monkeypatch.setattr(QuestionRun, "_compute", lambda self, base: pytest.fail("recomputed a finished question"))
    assert exact_run(SEED, finished).run()["status"] == "analysed"


def _hold_lock(path: Path) -> subprocess.Popen:
    code = ("import sys, time; from pathlib import Path; from jaxalign.integrity import QuestionLock; "
            "assert QuestionLock(Path(sys.argv[1])).acquire(); print('HELD', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "HELD"
    return proc


def test_a_question_locked_by_another_process_is_skipped_and_the_lock_dies_with_it(tmp_path, caplog):
    lock_path = tmp_path / "questions" / f"{QID}.lock"
    holder = _hold_lock(lock_path)
    try:
        with caplog.at_level("WARNING"):
            assert exact_run(SEED, tmp_path).run() is None
        assert any("another process is working on it" in r.getMessage() for r in caplog.records)
        assert not (tmp_path / "questions" / f"{QID}.json").exists()  # nothing was done
        assert not QuestionLock(lock_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel released the flock with the process: no stale lock
    lock = QuestionLock(lock_path)
    assert lock.acquire()
    lock.release()
    assert exact_run(SEED, tmp_path).run()["status"] == "analysed"


def test_a_locked_question_never_opens_its_checkpoints(tmp_path, monkeypatch):
    """orbax lists and stats a directory's steps when it opens it; the process holding the lock may be
    pruning them at that moment (FileNotFoundError: .../ckpt/exact-3/34, seen with two processes)."""
    import jaxalign.pipeline.question as question

    def opened(directory, *args, **kwargs):
        raise AssertionError(f"checkpoints of {directory} opened without the question's lock")

    holder = _hold_lock(tmp_path / "questions" / f"{QID}.lock")
    try:
        monkeypatch.setattr(question, "QuestionCheckpoints", opened)
        assert exact_run(SEED, tmp_path).run() is None
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_a_failed_question_closes_its_checkpoints_before_it_lets_go_of_the_lock(tmp_path, monkeypatch):
    """An error in Phase 2 must not leave an async checkpoint save running after the lock is released."""
    import jaxalign.pipeline.question as question
    from jaxalign.checkpoint import QuestionCheckpoints

    events = []
    close = QuestionCheckpoints.close
    monkeypatch.setattr(QuestionCheckpoints, "close", lambda self: (events.append("closed"), close(self))[1])
    release = QuestionLock.release
    monkeypatch.setattr(QuestionLock, "release", lambda self: (events.append("released"), release(self))[1])
    monkeypatch.setattr(question, "score_paths", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("phase 2 broke")))
    with pytest.raises(RuntimeError, match="phase 2 broke"):
        exact_run(SEED, tmp_path).run()
    assert events[:2] == ["closed", "released"], events


def test_two_processes_on_one_run_directory_never_share_a_question(tmp_path):
    """Both work through the same questions; each question is computed by exactly one of them."""
    worker = ("import sys, json; import jaxalign.pipeline.question as q; from tests.pipeline_worker import exact_run\n"
              "computed, compute = [], q.QuestionRun._compute\n"
              "def counted(self, base):\n    computed.append(self.qid)\n    return compute(self, base)\n"
              "q.QuestionRun._compute = counted\n"
              "for seed in range(4):\n    exact_run(seed, sys.argv[1]).run()\n"
              "print(json.dumps(computed))")
    procs = [subprocess.Popen([sys.executable, "-c", worker, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(2)]
    computed = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert not set(computed[0]) & set(computed[1]), computed
    assert sorted(computed[0] + computed[1]) == [f"exact-{s}" for s in range(4)]
    for seed in range(4):
        assert damage(tmp_path / "questions" / f"exact-{seed}") is None


def test_a_question_without_decision_nodes_says_so(tmp_path):
    from jaxalign.enrich import EnrichConfig

    cfg = dataclasses.replace(SMALL, num_initial=12, enrich=EnrichConfig(top_k=0, top_r=0, n_sig=20, n_min=20))
    summary = exact_run(SEED, tmp_path, cfg).run()
    assert summary["status"] == "no decision nodes" and summary["rows"] == 0 and not summary["skipped"]
    assert manifest_path(tmp_path / "questions" / QID).is_file()
