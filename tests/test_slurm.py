"""On a real SLURM cluster (launch/local_slurm.sh; .ci/run starts one): sweeps, preemption, requeue.

Skipped where no cluster answers, unless JAXALIGN_REQUIRE_SLURM=1 (as in CI), where that fails.
Jobs run on partition 'debug' of the local cluster, one CPU each, without GPUs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.launch_helpers import (EXACT_JOB, ROOT, assert_same_results, checkpoints, job_dirs, reference_run, run_main,
                                  wait_until)


def _cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    return subprocess.run(["scontrol", "ping"], capture_output=True, text=True).returncode == 0


if not _cluster_up():
    if os.environ.get("JAXALIGN_REQUIRE_SLURM") == "1":
        raise RuntimeError("JAXALIGN_REQUIRE_SLURM=1 but no SLURM cluster answers `scontrol ping`; start one with "
                           "launch/local_slurm.sh up (as root)")
    pytest.skip("no SLURM cluster (start one with launch/local_slurm.sh up, as root)", allow_module_level=True)

SLURM = ("hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=null",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2")


def _squeue(job_id: str) -> str:
    """'STATE REASON' of a job, or '' once it left the queue."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True)
    return out.stdout.strip()


def _history(job_id: str) -> list[str]:
    """Every state the job went through, requeues included (sacct -D)."""
    return subprocess.run(["sacct", "-n", "-X", "-P", "-D", "-o", "State", "-j", job_id],
                          capture_output=True, text=True).stdout.split() or ["?"]


def _job_ids(sweep) -> list[str]:
    """SLURM job ids of a sweep's jobs: ARRAY_TASK for several jobs (the array's own folder holds
    the sbatch script), a plain id for one."""
    names = [p.name for p in (sweep / ".submitit").glob("[0-9]*")]
    tasks = [n for n in names if "_" in n]
    return sorted(tasks or names)


def test_two_by_two_multirun_on_slurm(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_main("-m", *SLURM, f"hydra.sweep.dir={sweep}", "+experiment=exact", "dataset.num_questions=1",
                      "budget.num_initial=200", "seed=0,1", "budget.n_min=30,60", timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    runs = [json.loads((d / "run.json").read_text()) for d in job_dirs(sweep)]
    assert {(r["config"]["seed"], r["config"]["budget"]["n_min"]) for r in runs} == {(0, 30), (0, 60), (1, 30), (1, 60)}
    ids = _job_ids(sweep)
    assert len(ids) == 4 and len({i.split("_")[0] for i in ids}) == 1  # one job array of 4 tasks
    script = next((sweep / ".submitit").glob("*/*_submission.sh")).read_text()
    for directive in ("--partition=debug", "--signal=USR2@180", "--requeue", "--time=240", "--array=0-3%4"):
        assert f"#SBATCH {directive}" in script, script

    def states():  # the results are on disk a moment before SLURM marks the tasks finished
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", ids[0].split("_")[0]],
                             capture_output=True, text=True).stdout.split()
        return out if len(out) == 4 and not {"RUNNING", "COMPLETING", "PENDING"} & set(out) else None

    assert set(wait_until(states, 60, "the array's final states")) == {"COMPLETED"}


def test_usr2_on_slurm_requeues_and_resumes_to_identical_results(tmp_path):
    """scancel --signal=USR2 is what a preempting scheduler (or the time limit) delivers first."""
    sweep = tmp_path / "sweep"
    proc = run_main("-m", *SLURM, f"hydra.sweep.dir={sweep}", *EXACT_JOB, background=True)
    try:
        wait_until(lambda: job_dirs(sweep) and checkpoints(job_dirs(sweep)[0], "exact-0") >= 3 and _job_ids(sweep),
                   180, "the SLURM job's third checkpoint")
        (job_id,) = _job_ids(sweep)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        # A requeued job is held ~120 s (BeginTime) before it may start again. Release it once it
        # is pending and its old step has had time to end (srun waits up to 7 s for it): a job
        # started while the old step is still being torn down fails at once.
        wait_until(lambda: _squeue(job_id) == "PENDING BeginTime", 120, "the requeued job to be held")
        time.sleep(10)
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    (run_dir,) = job_dirs(sweep)
    log = (run_dir / "run-shard0.log").read_text()
    assert "received SIGUSR2" in log and "Requeued job" in log and "resumed from checkpoint" in log, log
    history = wait_until(lambda: _history(job_id) if _history(job_id)[-1] not in ("RUNNING", "COMPLETING") else None,
                         60, "the job's final state")
    assert history == ["REQUEUED", "COMPLETED"], history
    assert_same_results(run_dir, reference_run(tmp_path, *EXACT_JOB))


def test_sharded_sweep_script_runs_an_array_and_merges(tmp_path):
    """launch/sweep.sh: array task i takes shard i of 3; the merge equals an unsharded run."""
    sweep = tmp_path / "sweep"
    job = ("+experiment=exact", "dataset.num_questions=3", "budget.num_initial=200")
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    result = subprocess.run([str(ROOT / "launch" / "sweep.sh"), "--slurm", "debug", "--shards", "3", "--dir", str(sweep),
                             "--", *SLURM[2:], *job], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (run_dir,) = job_dirs(sweep)
    assert sorted(p.name for p in (run_dir / "shards").iterdir()) == ["0-of-3.json", "1-of-3.json", "2-of-3.json"]
    assert len({i.split("_")[0] for i in _job_ids(sweep)}) == 1 and len(_job_ids(sweep)) == 3
    assert "merged" in result.stdout and json.loads((run_dir / "run.json").read_text())["totals"]["questions"] == 3
    assert_same_results(run_dir, reference_run(tmp_path, *job))


def test_preemption_by_the_high_partition_requeues_and_resumes_to_identical_results(tmp_path):
    """What a shared cluster does: a job in 'high' needs the CPUs of a running 'debug' job. SLURM signals
    the victim (USR2, as the profile asks), jaxalign checkpoints and exits, the job is requeued, and
    the resumed job's results equal an uninterrupted run's."""
    cpus = int(subprocess.run(["sinfo", "-h", "-o", "%c", "-p", "debug"], capture_output=True, text=True)
               .stdout.split()[0].rstrip("+"))
    sweep = tmp_path / "sweep"
    victim = [*SLURM[:-2], f"hydra.launcher.cpus_per_task={cpus}", SLURM[-1]]  # the whole node
    proc = run_main("-m", *victim, f"hydra.sweep.dir={sweep}", *EXACT_JOB, background=True)
    urgent = None
    try:
        wait_until(lambda: job_dirs(sweep) and checkpoints(job_dirs(sweep)[0], "exact-0") >= 3 and _job_ids(sweep),
                   180, "the debug job's third checkpoint")
        (job_id,) = _job_ids(sweep)
        urgent = subprocess.run(["sbatch", "--parsable", "-p", "high", f"--cpus-per-task={cpus}", "--mem=100M",
                                 f"--output={tmp_path}/high-%j.out",
                                 "--wrap", "sleep 2"], capture_output=True, text=True, check=True).stdout.strip()
        wait_until(lambda: "REQUEUED" in _history(job_id) or "PREEMPTED" in _history(job_id)
                   or _squeue(job_id).startswith("PENDING"), 180, "the debug job to be preempted")
        wait_until(lambda: _squeue(urgent) == "", 120, "the high job to finish")
        wait_until(lambda: _squeue(job_id).startswith("PENDING"), 120, "the preempted job to be pending again")
        time.sleep(10)  # as in the USR2 test: let the old step be torn down before the job starts again
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=False)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        if urgent:
            subprocess.run(["scancel", urgent], capture_output=True)
    assert proc.returncode == 0, out[-4000:]
    (run_dir,) = job_dirs(sweep)
    log = (run_dir / "run-shard0.log").read_text()
    assert "resumed from checkpoint" in log, log
    assert_same_results(run_dir, reference_run(tmp_path, *EXACT_JOB))
