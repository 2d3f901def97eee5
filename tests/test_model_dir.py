"""A directory named as a model must hold config.json and safetensors weights. An empty or wrong
directory is named as such, at config validation, before a tokenizer error could mask it and before
the run directory is claimed."""

import shutil
from pathlib import Path

import pytest

from jaxalign.config import ASSETS
from jaxalign.errors import CheckpointError, ConfigError
from jaxalign.models import load_qwen3
from jaxalign.models.loading import check_model_dir, resolve_model_dir
from jaxalign.run import execute
from tests.test_run import composed

TOY_STUDENT = ASSETS / "toy" / "student"


def test_empty_directory_says_what_is_missing(tmp_path):
    for load in (resolve_model_dir, load_qwen3):
        with pytest.raises(CheckpointError) as err:
            load(tmp_path)
        text = str(err.value)
        assert f"{tmp_path} is not a Hugging Face model directory" in text
        assert "no config.json and no model.safetensors or model.safetensors.index.json; it is empty" in text
        assert "could not load a tokenizer" not in text


def test_directory_with_tokenizer_files_only_lists_what_it_holds(tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOY_STUDENT / name, tmp_path / name)
    with pytest.raises(CheckpointError, match=r"no config.json and no model.safetensors .*; "
                                              r"it holds \['tokenizer.json', 'tokenizer_config.json'\]"):
        resolve_model_dir(tmp_path)


def test_config_without_weights_names_only_the_weights(tmp_path):
    shutil.copy(TOY_STUDENT / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match=r": no model.safetensors or model.safetensors.index.json; "
                                              r"it holds \['config.json'\]"):
        resolve_model_dir(tmp_path)


def test_pickle_weights_are_still_named_as_pickles(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError, match="never unpickles"):
        resolve_model_dir(tmp_path)


def test_complete_directories_pass_single_and_sharded(tmp_path):
    assert check_model_dir(TOY_STUDENT) == TOY_STUDENT
    shutil.copy(TOY_STUDENT / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    assert resolve_model_dir(tmp_path) == tmp_path


@pytest.mark.parametrize("key", ["student.path", "teachers.toy-teacher.model"])
def test_run_rejects_an_empty_model_directory_before_claiming_the_run_directory(tmp_path, key):
    empty = tmp_path / "empty"
    empty.mkdir()
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        execute(composed(f"{key}={empty}"), run_dir)
    assert str(err.value).startswith(f"{key}: {empty} is not a Hugging Face model directory"), err.value
    assert not run_dir.exists()


def test_run_accepts_a_complete_local_directory(tmp_path):
    """The check does not reject a real checkpoint named by path (the dry run stops before any work)."""
    cost = execute(composed(f"student.path={TOY_STUDENT}", "dry_run=true"), Path(tmp_path / "unused"))
    assert cost["questions"] >= 1
