"""Launching: the SLURM profile and its sbatch script, the partition check before submission,
submitit_local sweeps and preemption. The tests on a real SLURM cluster are in test_slurm.py."""

import json
import os
import signal
from pathlib import Path

import jaxalign.run  # noqa: F401  (registers the run_schema config node)
from tests.launch_helpers import (EXACT_JOB, ROOT, assert_same_results, checkpoints, job_dirs, reference_run,
                                  run_main, wait_until)

_run = run_main


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


def _sbatch_script(tmp_path, monkeypatch, *overrides) -> set:
    """The plugin's own launch(), with submission replaced by writing the sbatch script it would submit."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    scripts = []

    class Recording(submitit.AutoExecutor):
        def map_array(self, fn, *args):
            scripts.append(self._executor._make_submission_file_text("python -m jaxalign.run", "uid"))
            return []

    monkeypatch.setattr(submitit, "AutoExecutor", Recording)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu-long",
                                 f"hydra.sweep.dir={tmp_path}", "hydra.job.name=run", *overrides])
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    launcher.launch([["seed=0"]], initial_job_idx=0)
    return set(scripts[0].splitlines())


def test_sbatch_script_has_the_profile_directives(tmp_path, monkeypatch):
    lines = _sbatch_script(tmp_path, monkeypatch)
    for directive in ("--partition=gpu-long", "--gpus-per-node=1", "--time=240", "--signal=USR2@180", "--requeue",
                      "--cpus-per-task=8", "--mem=64GB", "--open-mode=append"):
        assert f"#SBATCH {directive}" in lines, (directive, sorted(lines))
    older = _sbatch_script(tmp_path, monkeypatch, "hydra.launcher.gpus_per_node=null", "hydra.launcher.gres=gpu:2")
    assert "#SBATCH --gres=gpu:2" in older and not any("--gpus-per-node" in line for line in older)


def _task_pid(sweep: Path):
    """The submitit_local task process: the child of the controller whose pid names the job folder."""
    for job in (sweep / ".submitit").glob("[0-9]*"):
        children = Path(f"/proc/{job.name}/task/{job.name}/children")
        if children.is_file() and children.read_text().split():
            return int(children.read_text().split()[0])
    return None


def test_submitit_local_preemption_requeues_and_resumes_to_identical_results(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_main("-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}", *EXACT_JOB, background=True)
    task = wait_until(lambda: _task_pid(sweep) if job_dirs(sweep) and checkpoints(job_dirs(sweep)[0], "exact-0") >= 3
                      else None, 120, "the job's third checkpoint")
    os.kill(task, signal.SIGUSR2)  # what SLURM sends before a time limit or a preemption
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    (run_dir,) = job_dirs(sweep)
    log = (run_dir / "run-shard0.log").read_text()
    assert "received SIGUSR2" in log and "Requeued job" in log and "resumed from checkpoint" in log, log
    assert_same_results(run_dir, reference_run(tmp_path, *EXACT_JOB))


def test_paper_grid_names_missing_options_before_submitting():
    import subprocess

    result = subprocess.run([str(ROOT / "launch" / "paper_grid.sh"), "--slurm", "gpu"], capture_output=True, text=True,
                            env=dict(os.environ, DATASETS="boolq,gsm8k", TEACHERS="paper9", PYTHON="false"))
    assert result.returncode == 2
    assert "no such option" in result.stderr and "dataset=gsm8k (conf/dataset/gsm8k.yaml)" in result.stderr
    assert "teachers=paper9" in result.stderr and "boolq (" not in result.stderr


def test_paper_grid_dry_run_lists_the_whole_grid(tmp_path):
    """2 students x paper8 x 3 datasets, every option present, priced without a cluster or the data."""
    import subprocess
    import sys

    result = subprocess.run([str(ROOT / "launch" / "paper_grid.sh"), "--dry-run", "--dir", str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env=dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [line.split(" : ", 1)[1] for line in result.stderr.splitlines() + result.stdout.splitlines()
            if "[HYDRA] \t#" in line]
    expected = {f"dry_run=True student={s} teachers=paper8 dataset={d} budget=paper"
                for s in ("qwen3-0.6b", "qwen3-1.7b") for d in ("boolq", "mmlu", "aime2025")}
    assert set(runs) == expected, runs
    assert result.stdout.count('\n "teachers": 8,\n') == 6  # one priced run each (indented JSON)
    total = json.loads(result.stdout.strip().splitlines()[-1])  # the grid's total, one JSON line last
    assert total["gpu_days"] > 0 and total["device"] and total["rollouts_per_question"] > 0
