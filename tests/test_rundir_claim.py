"""A run directory pinned by an older version resumes when the settings added since sit at their defaults."""

import dataclasses
import json

import pytest
from omegaconf import OmegaConf

from jaxalign import rundir
from jaxalign.config import RunConf, TeacherConf
from jaxalign.errors import ConfigError


def _resolved(**changes) -> dict:
    cfg = dataclasses.replace(RunConf(teachers={"T": TeacherConf(kind="external", model="toy:teacher")}), **changes)
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def _pinned_without(tmp_path, *keys: str) -> dict:
    """config.json as a version without ``keys`` (dotted) wrote it."""
    old = rundir.result_config(_resolved())
    for key in keys:
        *parents, leaf = key.split(".")
        node = old
        for part in parents:
            node = node[part]
        del node[leaf]
    (tmp_path / "config.json").write_text(json.dumps(old))
    return old


def test_settings_added_since_at_their_defaults_resume(tmp_path):
    old = _pinned_without(tmp_path, "topk_gkd_k", "budget.adaptive_step", "teachers.T.tilt")
    rundir.claim(tmp_path, _resolved())
    assert json.loads((tmp_path / "config.json").read_text()) == old  # the pin is left as it was


def test_a_new_setting_away_from_its_default_is_refused(tmp_path):
    _pinned_without(tmp_path, "topk_gkd_k")
    with pytest.raises(ConfigError, match="topk_gkd_k: None there, 5 now"):
        rundir.claim(tmp_path, _resolved(topk_gkd_k=5))


def test_a_changed_setting_is_still_refused(tmp_path):
    _pinned_without(tmp_path, "topk_gkd_k")
    with pytest.raises(ConfigError, match="seed: 0 there, 1 now"):
        rundir.claim(tmp_path, _resolved(seed=1))


def test_a_run_resumes_on_another_mesh(tmp_path):
    """Meshes do not pin a directory: a preempted job may come back on another allocation."""
    from jaxalign.config import MeshConf, ModelConf

    rundir.claim(tmp_path, _resolved())
    rundir.claim(tmp_path, _resolved(student=ModelConf(mesh=MeshConf(data=4, model=2))))


CODE = {"jaxalign": "0.1.0", "jax": "0.10.2", "jaxalign_commit": "a" * 40}


def test_code_that_resumes_a_directory_started_by_other_code_is_named(tmp_path, caplog):
    rundir.check_code(tmp_path, CODE)
    assert json.loads((tmp_path / "code.json").read_text()) == CODE  # the code that started it
    with caplog.at_level("WARNING", logger="jaxalign.rundir"):
        rundir.check_code(tmp_path, dict(CODE))
    assert not caplog.records
    with caplog.at_level("WARNING", logger="jaxalign.rundir"):
        rundir.check_code(tmp_path, {**CODE, "jax": "0.11.0", "jaxalign_commit": "b" * 40 + "+dirty"})
    assert (f"jax 0.10.2 there, 0.11.0 now, jaxalign_commit {'a' * 40} there, {'b' * 40}+dirty now"
            in caplog.text) and "Finished questions keep what that code computed" in caplog.text
    assert json.loads((tmp_path / "code.json").read_text()) == CODE  # still the code that started it
    caplog.clear()
    with caplog.at_level("WARNING", logger="jaxalign.rundir"):
        rundir.check_code(tmp_path, {**CODE, "jaxalign_commit": None})  # a node without git: not known, not compared
    assert not caplog.records


def test_a_directory_with_results_but_no_code_record_is_unknown_code(tmp_path, caplog):
    (tmp_path / "questions").mkdir()
    (tmp_path / "questions" / "q.json").write_text("{}")
    rundir.check_code(tmp_path, CODE)  # it predates code.json: the code that wrote q.json is not known
    assert json.loads((tmp_path / "code.json").read_text()) == {key: None for key in CODE}
    with caplog.at_level("WARNING", logger="jaxalign.rundir"):
        rundir.check_code(tmp_path, {**CODE, "jax": "0.11.0"})
    assert not caplog.records


def test_a_damaged_code_record_is_rewritten(tmp_path, caplog):
    (tmp_path / "code.json").write_text("{not json")
    with caplog.at_level("WARNING", logger="jaxalign.rundir"):
        rundir.check_code(tmp_path, CODE)
    assert "is damaged" in caplog.text and json.loads((tmp_path / "code.json").read_text()) == CODE


def test_the_source_commit_is_this_checkouts():
    import subprocess
    from pathlib import Path

    from jaxalign.run import source_commit, versions

    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if not (root / ".git").exists() or head.returncode:  # not a checkout git can read: the commit is not known
        assert source_commit() is None and versions()["jaxalign_commit"] is None
        return
    assert source_commit().split("+")[0] == head.stdout.strip() and versions()["jaxalign_commit"] == source_commit()


def test_the_source_commit_names_uncommitted_edits_by_their_diff(tmp_path):
    import subprocess

    from jaxalign.run import source_commit

    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    (tmp_path / "jaxalign").mkdir()
    (tmp_path / "jaxalign" / "m.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("a\n")
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "c"]):
        subprocess.run([*git, *cmd], check=True, capture_output=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert source_commit(tmp_path) == head
    (tmp_path / "notes.txt").write_text("b\n")  # outside jaxalign/: the code is the commit's
    assert source_commit(tmp_path) == head
    (tmp_path / "jaxalign" / "m.py").write_text("x = 2\n")
    one = source_commit(tmp_path)
    (tmp_path / "jaxalign" / "m.py").write_text("x = 3\n")
    two = source_commit(tmp_path)
    assert one.startswith(head + "+dirty-") and two.startswith(head + "+dirty-") and one != two
    assert not (tmp_path / ".git" / "index.lock").exists()
    assert source_commit(tmp_path / "jaxalign") is None  # not the root of a checkout


def test_a_run_resumed_by_other_code_says_so(tmp_path, monkeypatch, caplog):
    import jaxalign.run as run
    from tests.test_run import composed

    overrides = ("+experiment=exact", "dataset.num_questions=1")
    first = run.execute(composed(*overrides), tmp_path)
    assert first["versions"] == run.versions() == json.loads((tmp_path / "code.json").read_text())
    monkeypatch.setattr(run, "versions", lambda: {**first["versions"], "jax": "99.0"})
    with caplog.at_level("WARNING", logger="jaxalign.rundir"):
        again = run.execute(composed(*overrides), tmp_path)
    assert f"jax {first['versions']['jax']} there, 99.0 now" in caplog.text
    assert again["versions"]["jax"] == "99.0"  # run.json says which code wrote it last


def test_a_wheel_names_the_commit_it_was_built_from(tmp_path):
    """An installed wheel has no git checkout to read: its version (setuptools-scm, pyproject.toml)
    carries the commit it was built from, so code.json tells two builds apart."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("setuptools_scm")
    root = Path(rundir.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True, capture_output=True)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if subprocess.run(["git", "-C", str(clone), "describe", "--exact-match", "--tags"], capture_output=True).returncode == 0:
        pytest.skip("HEAD is a release tag: its version is the tag's")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "wheels"), str(clone)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    version = next((tmp_path / "wheels").glob("jaxalign-*.whl")).name.split("-")[1]
    assert "+g" in version and head.startswith(version.split("+g")[1].split(".")[0]), version
