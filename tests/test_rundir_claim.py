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
