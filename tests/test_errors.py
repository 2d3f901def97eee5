"""Errors end a run with one clear message and a documented exit code, before any expensive work."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxalign.errors import CheckpointError, ConfigError, IncompleteResults, JaxalignError, TokenizerError
from jaxalign.run import EXIT_CODES, execute, exit_for
from tests.test_run import composed

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "jaxalign.run", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=600)


def test_a_token_limit_the_model_cannot_hold_fails_before_the_directory_is_pinned(tmp_path):
    with pytest.raises(ConfigError, match=r"^budget\.max_response_tokens: 100000 tokens cannot fit .*max_position"):
        execute(composed("budget.max_response_tokens=100000"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_damaged_config_json_is_named_with_the_fix(tmp_path):
    (tmp_path / "config.json").write_text('{"student": {"na')
    with pytest.raises(ConfigError, match=r"config\.json is damaged .*delete config\.json"):
        execute(composed("+experiment=exact"), tmp_path)


@pytest.mark.parametrize("error, code", [
    (ConfigError("budget.n_min: must be >= 1"), 2), (TokenizerError("teachers.x: another vocabulary"), 3),
    (CheckpointError("model.safetensors: truncated"), 4), (IncompleteResults("questions/q.parquet is missing"), 5),
    (JaxalignError("dataset row 3: no answer"), 6), (OSError(28, "No space left on device", "/runs/q.parquet"), 7)])
def test_every_kind_of_error_has_its_exit_code(error, code, caplog):
    with caplog.at_level("ERROR"):
        assert exit_for(error) == code
    message = caplog.records[-1].getMessage()
    assert message.startswith(EXIT_CODES[type(error)][1]) and str(error.args[-1]) in message
    if isinstance(error, OSError):
        assert "/runs/q.parquet" in message and "rerun the same command" in message


def test_an_os_error_on_the_run_directory_exits_with_its_code_and_no_traceback(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "questions").write_text("a file where the results folder should be")
    args = ("+experiment=exact", f"hydra.run.dir={run_dir}", "dataset.num_questions=1", "budget.num_initial=40")
    result = _cli(*args)
    assert result.returncode == 7, result.stderr[-2000:]
    output = result.stdout + result.stderr  # Hydra's log handler writes to stdout
    assert "file system error" in output and "questions" in output and "Traceback" not in output
    debug = _cli(*args, env={"JAXALIGN_DEBUG": "1"})
    assert debug.returncode == 7 and "Traceback" in debug.stdout + debug.stderr


def test_a_damaged_demonstration_cache_entry_is_resampled_with_a_warning(tmp_path, caplog):
    from jaxalign.teachers.demos import DemoNeed, DemonstrationCache, Demonstrations

    cache = DemonstrationCache(tmp_path, "student")
    cache.save("q1", Demonstrations(("a",), (), 3), DemoNeed(1, 0))
    assert cache.answers("q1", DemoNeed(1, 0), 60) == Demonstrations(("a",), (), 3)
    cache.path("q1").write_text('{"correct": ["a"')  # truncated
    with caplog.at_level("WARNING"):
        assert cache.answers("q1", DemoNeed(1, 0), 60) is None  # so it is sampled again, with the same key
    assert any("q1.json is damaged" in r.getMessage() for r in caplog.records)


def test_a_checkpoint_fallback_logs_one_warning_and_no_traceback(tmp_path):
    """An interrupted run whose newest checkpoint is truncated resumes from the one before, quietly."""
    run_dir = tmp_path / "run"
    stopped = subprocess.Popen([sys.executable, "-m", "jaxalign.run", "+experiment=exact", f"hydra.run.dir={run_dir}",
                                "dataset.num_questions=1"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run_dir / "ckpt" / "exact-0"
    import time

    deadline = time.time() + 300
    while time.time() < deadline and len([p for p in ckpt.glob("*") if p.name.isdigit()]) < 2:
        time.sleep(0.2)
    stopped.kill()
    stopped.wait()
    steps = sorted((p for p in ckpt.glob("*") if p.name.isdigit()), key=lambda p: int(p.name))
    if (run_dir / "questions" / "exact-0.manifest").exists() or len(steps) < 2:
        pytest.skip("the run finished before it could be interrupted")
    for f in steps[-1].rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])
    result = _cli("+experiment=exact", f"hydra.run.dir={run_dir}", "dataset.num_questions=1")
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert output.count("is unreadable") == 1 and "Traceback" not in output and "Event loop is closed" not in output
    assert json.loads((run_dir / "questions" / "exact-0.json").read_text())["status"] in ("analysed", "skipped",
                                                                                            "no decision nodes")
