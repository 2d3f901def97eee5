"""Launching: the SLURM profile, the partition check before submission, a submitit_local sweep."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jaxalign.run  # noqa: E402,F401  (registers the run_schema config node)

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "jaxalign.run", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_slurm_profile_composes_with_the_preemption_settings():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.signal_delay_s == 180 and launcher.max_num_timeout >= 10
    assert launcher.additional_parameters.requeue is True and launcher.gpus_per_node == 1


def test_slurm_without_partition_fails_before_submission(tmp_path):
    result = _run("-m", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}", "seed=0,1", timeout=120)
    assert result.returncode != 0
    assert "hydra.launcher.partition" in result.stderr + result.stdout
    assert not (tmp_path / ".submitit").exists()


def test_bad_job_config_fails_before_a_sweep_launches(tmp_path):
    result = _run("-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path}", "budget.tau=2", "seed=0,1",
                  timeout=120)
    assert result.returncode != 0 and "budget.tau" in result.stderr + result.stdout
    assert not (tmp_path / ".submitit").exists()


def test_two_by_two_multirun_with_submitit_local(tmp_path):
    result = _run("-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path}", "+experiment=exact",
                  "dataset.num_questions=1", "budget.num_initial=200", "seed=0,1", "budget.n_min=30,60")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(tmp_path.glob("*/run.json"))
    assert len(runs) == 4, sorted(p.name for p in tmp_path.iterdir())
    seen = {(json.loads(p.read_text())["config"]["seed"], json.loads(p.read_text())["config"]["budget"]["n_min"])
            for p in runs}
    assert seen == {(0, 30), (0, 60), (1, 30), (1, 60)}
