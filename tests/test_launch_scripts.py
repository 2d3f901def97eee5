"""Which Python launch/sweep.sh and launch/paper_grid.sh run: $PYTHON, else the repository's .venv,
else python3 from PATH, and a message saying how to point them at jaxalign when none has it.

The scripts are copied into a scratch repository whose interpreters are stand-ins that record
their arguments, and PATH's python3 is a stand-in without jaxalign, as on a fresh machine where the
README's venv exists but is not activated. The last test runs the real script on the real .venv.
"""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PATH = "/usr/bin:/bin"  # bash, sed, dirname; the stand-in python3 comes first


def _interpreter(path: Path, log: Path, has_jaxalign: bool) -> Path:
    """A stand-in Python: appends '<its path> <args>' to log; exit 0 iff it 'has' jaxalign."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{path} $*" >> "{log}"\nexit {0 if has_jaxalign else 1}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def repo(tmp_path):
    """A scratch repository: launch/ copied, conf/ linked, python3 on PATH without jaxalign."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "launch", root / "launch")
    (root / "conf").symlink_to(ROOT / "conf")
    log = tmp_path / "calls.log"
    log.touch()
    bin_dir = tmp_path / "bin"
    path_python3 = _interpreter(bin_dir / "python3", log, has_jaxalign=False)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}:{SYSTEM_PATH}"
    return dict(root=root, log=log, env=env, path_python3=path_python3)


def _sweep(repo, *args, script="sweep.sh", **env):
    return subprocess.run([str(repo["root"] / "launch" / script), *args], cwd=repo["root"],
                          env={**repo["env"], **env}, capture_output=True, text=True, timeout=60)


def _calls(repo) -> list[str]:
    return repo["log"].read_text().splitlines()


def _launched(repo, interpreter: Path) -> list[str]:
    """The commands (not the jaxalign check) that the interpreter was given."""
    return [c.removeprefix(f"{interpreter} ") for c in _calls(repo)
            if c.startswith(f"{interpreter} ") and " -c " not in f" {c} "]


def test_sweep_uses_the_repository_venv_when_python3_lacks_jaxalign(repo):
    venv = _interpreter(repo["root"] / ".venv" / "bin" / "python", repo["log"], has_jaxalign=True)
    result = _sweep(repo, "--dry-run", "--", "seed=3")
    assert result.returncode == 0, result.stderr
    assert _launched(repo, venv) == ["-m jaxalign.run -m hydra.sweep.dir=multirun/config/dry-run dry_run=true seed=3",
                                     "-m jaxalign.cost multirun/config/dry-run"]
    assert _launched(repo, repo["path_python3"]) == []


def test_paper_grid_goes_through_the_same_choice(repo):
    venv = _interpreter(repo["root"] / ".venv" / "bin" / "python", repo["log"], has_jaxalign=True)
    result = _sweep(repo, "--dry-run", script="paper_grid.sh", STUDENTS="toy", TEACHERS="toy", DATASETS="toy_arith")
    assert result.returncode == 0, result.stderr
    assert _launched(repo, venv) == ["-m jaxalign.run -m hydra.sweep.dir=multirun/config/dry-run dry_run=true "
                                     "student=toy teachers=toy dataset=toy_arith budget=paper",
                                     "-m jaxalign.cost multirun/config/dry-run"]


def test_python_variable_wins_over_the_venv(repo, tmp_path):
    _interpreter(repo["root"] / ".venv" / "bin" / "python", repo["log"], has_jaxalign=True)
    chosen = _interpreter(tmp_path / "env" / "bin" / "python", repo["log"], has_jaxalign=True)
    result = _sweep(repo, "--dry-run", "--", "seed=3", PYTHON=str(chosen))
    assert result.returncode == 0, result.stderr
    assert len(_launched(repo, chosen)) == 2  # the sweep, then its total
    assert all(c.startswith(f"{chosen} ") for c in _calls(repo)), _calls(repo)


def test_python3_from_path_is_used_when_it_has_jaxalign_and_there_is_no_venv(repo):
    python3 = _interpreter(repo["path_python3"], repo["log"], has_jaxalign=True)  # e.g. an activated venv
    result = _sweep(repo, "--dry-run", "--", "seed=3")
    assert result.returncode == 0, result.stderr
    assert _launched(repo, python3) == ["-m jaxalign.run -m hydra.sweep.dir=multirun/config/dry-run dry_run=true seed=3",
                                        "-m jaxalign.cost multirun/config/dry-run"]


def test_no_python_with_jaxalign_fails_before_launching_and_says_how_to_fix_it(repo):
    _interpreter(repo["root"] / ".venv" / "bin" / "python", repo["log"], has_jaxalign=False)  # a half-done install
    result = _sweep(repo, "--slurm", "gpu", "--", "seed=3")
    assert result.returncode == 2
    message = result.stderr
    assert "found no Python that can import jaxalign" in message and ".venv/bin/python" in message
    assert "pip install -e ." in message and "PYTHON=" in message
    assert all(" -c " in f" {c} " for c in _calls(repo)), _calls(repo)  # only the checks ran


def test_a_python_variable_without_jaxalign_is_named(repo, tmp_path):
    _interpreter(repo["root"] / ".venv" / "bin" / "python", repo["log"], has_jaxalign=True)
    wrong = _interpreter(tmp_path / "other" / "python", repo["log"], has_jaxalign=False)
    result = _sweep(repo, "--dry-run", PYTHON=str(wrong))
    assert result.returncode == 2
    assert f"PYTHON={wrong} cannot import jaxalign" in result.stderr
    assert "PYTHON=.venv/bin/python" in result.stderr
    assert [c for c in _calls(repo) if not c.startswith(f"{wrong} ")] == []  # no silent fallback to the venv


def test_help_needs_no_python(repo):
    result = _sweep(repo, "--help")
    assert result.returncode == 0 and "--shards N" in result.stdout and "set -euo" not in result.stdout
    assert _calls(repo) == []


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(), reason="no .venv in this checkout")
def test_real_sweep_dry_run_finds_the_real_venv_without_activation(tmp_path):
    """The README's cluster dry run, from a shell where the venv is not active and python3 lacks hydra."""
    bin_dir = tmp_path / "bin"
    _interpreter(bin_dir / "python3", tmp_path / "python3.log", has_jaxalign=False)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}:{SYSTEM_PATH}", JAX_PLATFORMS="cpu")
    result = subprocess.run([str(ROOT / "launch" / "sweep.sh"), "--dir", str(tmp_path / "sweep"), "--dry-run", "--",
                             "+experiment=exact", "seed=0,1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('\n "rollouts_per_question": ') == 2, result.stdout[-3000:]  # one json per run


# ---------------------------------------------------------------- the GPUs a sweep's meshes need


def _gpu_counting(path: Path, log: Path, prints: str = "", status: int = 0) -> Path:
    """A stand-in Python with jaxalign whose GPU-count helper (the sweep_devices_main call) prints
    ``prints`` and exits ``status``; other commands are logged as _interpreter logs them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{path} $*" >> "{log}"\n'
                    f'case "$*" in *sweep_devices_main*) printf "{prints}"; exit {status};; esac\nexit 0\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_slurm_jobs_ask_for_the_gpus_the_meshes_need(repo):
    venv = _gpu_counting(repo["root"] / ".venv" / "bin" / "python", repo["log"], prints="4\\n")
    result = _sweep(repo, "--slurm", "gpu", "--", "student.mesh={data: 2, model: 2}", "seed=0,1")
    assert result.returncode == 0, result.stderr
    helper = [c for c in _calls(repo) if "sweep_devices_main" in c]
    assert helper and helper[0].endswith("student.mesh={data: 2, model: 2} seed=0,1")  # the OVERRIDEs, as given
    assert _launched(repo, venv) == ["-m jaxalign.run -m hydra.sweep.dir=multirun/config hydra/launcher=slurm "
                                     "hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=4 "
                                     "student.mesh={data: 2, model: 2} seed=0,1"]


def test_no_mesh_leaves_the_launchers_gpu_count_and_a_bad_mesh_submits_nothing(repo):
    venv = _gpu_counting(repo["root"] / ".venv" / "bin" / "python", repo["log"])  # prints nothing: no mesh
    assert _sweep(repo, "--local", "--", "seed=0").returncode == 0
    assert _launched(repo, venv) == ["-m jaxalign.run -m hydra.sweep.dir=multirun/config "
                                     "hydra/launcher=submitit_local seed=0"]
    repo["log"].write_text("")
    _gpu_counting(repo["root"] / ".venv" / "bin" / "python", repo["log"], status=2)
    result = _sweep(repo, "--slurm", "gpu", "--", "student.mesh.model=0")
    assert result.returncode == 2 and _launched(repo, venv) == []
    assert _sweep(repo, "--dry-run", "--", "seed=0").returncode == 0  # a dry run asks nothing
    assert not [c for c in _calls(repo) if "sweep_devices_main" in c and "seed=0" in c]


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(), reason="no .venv in this checkout")
def test_the_real_gpu_count_of_a_sweep(repo, tmp_path):
    """sweep.sh's helper on the real interpreter: the composed configs of every job; the largest
    data x model of a fixed mesh; nothing for data=-1; a bad mesh named before anything is submitted."""
    real = ROOT / ".venv" / "bin" / "python"
    wrapper = repo["root"] / ".venv" / "bin" / "python"
    wrapper.parent.mkdir(parents=True)
    # checks and the helper run on the real Python; the launch is only logged
    wrapper.write_text(f'#!/bin/sh\ncase "$1" in -P|-c) exec "{real}" "$@";; esac\n'
                       f'echo "{wrapper} $*" >> "{repo["log"]}"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    env = {**repo["env"], "JAX_PLATFORMS": "cpu"}

    def launch(*overrides):
        repo["log"].write_text("")
        result = subprocess.run([str(repo["root"] / "launch" / "sweep.sh"), "--slurm", "gpu", "--", *overrides],
                                cwd=repo["root"], env=env, capture_output=True, text=True, timeout=120)
        return result, _launched(repo, wrapper)

    result, launched = launch("student.mesh.data=2,4", "+teachers.toy-teacher.mesh={data: 1, model: 1}",
                              "hydra.launcher.timeout_min=5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=4 student.mesh.data=2,4" in launched[0]
    result, launched = launch("student.mesh={data: -1, model: 1}", "hydra.launcher.gpus_per_node=8")
    assert result.returncode == 0 and launched[0].count("gpus_per_node") == 1, (result.stderr, launched)
    result, launched = launch("student.mesh.data=2", "+teachers.toy-teacher.mesh={data: 1, model: 4}")
    assert result.returncode == 2 and launched == []
    assert "the meshes span different numbers of devices" in result.stderr
