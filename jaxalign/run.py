"""Main entry point: ``python -m jaxalign.run [group=option ...] [key=value ...]``.

With no overrides it runs the embedded default: the toy student and its four teachers on
toy_arith, Phase 1, Phase 2 and the summary report, on the CPU in minutes. The run directory is
derived from the config, so the same command resumes an interrupted run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Optional

import hydra
import jax
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from jaxalign import config as C
from jaxalign import rundir
from jaxalign.errors import (CheckpointError, ConfigError, IncompleteResults, JaxalignError,
                             TokenizerError)
from jaxalign.files import write_json
from jaxalign.pipeline import Preempted
from jaxalign.pipeline.jobs import build_job, pipeline_config  # noqa: F401  (pipeline_config: public here too)
from jaxalign.preemption import StopRequest

log = logging.getLogger("jaxalign.run")
C.register_schema()


def dry_run(cfg: C.RunConf) -> dict:
    """The forecast before launching (jaxalign.cost): rollouts, tokens, Phase 1/2 device-hours, memory
    per model and GPUs per job, from throughputs measured on the device (measured now where missing)."""
    from jaxalign import cost

    return cost.dry_run(cfg, cfg.calibration_file, cfg.calibration_device)


def versions() -> dict:
    """The versions of the packages that shape results, and jaxalign's git commit (``source_commit``)."""
    out = {}
    for pkg in ("jaxalign", "jax", "flax", "orbax-checkpoint", "transformers", "hydra-core"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    out["jaxalign_commit"] = source_commit()
    return out


def source_commit(root: Optional[Path] = None) -> Optional[str]:
    """The git commit of the checkout jaxalign runs from (``root``: the repository), with '+dirty-H'
    when tracked files under jaxalign/ differ from it (H: a hash of that diff, so two different sets
    of edits differ). None when it is not known: not a git checkout (an installed package), no git,
    or git refuses. Read-only: no git lock is taken, so concurrent jobs cannot leave one behind."""
    root = Path(__file__).resolve().parents[1] if root is None else Path(root)
    if not (root / ".git").exists():
        return None
    git = ["git", "--no-optional-locks", "-C", str(root)]
    try:
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
        diff = subprocess.run([*git, "diff", "HEAD", "--", "jaxalign"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode or diff.returncode:
        return None
    dirty = f"+dirty-{hashlib.sha256(diff.stdout).hexdigest()[:8]}" if diff.stdout else ""
    return head.stdout.strip() + dirty


def use_compile_cache(directory: str | None) -> None:
    """Switches on XLA's persistent compilation cache in ``directory`` (None: leaves it off).

    Most of a short run's wall time is compiling new shape buckets; a second run (another seed, a
    resumed job, the next shard on the same machine) reads them from disk instead.
    """
    if directory:
        path = Path(directory).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def execute(dcfg: DictConfig, run_dir: Path) -> dict:
    cfg = C.from_omegaconf(dcfg)
    C.validate(cfg)
    use_compile_cache(cfg.compile_cache_dir)
    resolved = OmegaConf.to_container(dcfg, resolve=True)
    if cfg.dry_run:
        from jaxalign.cost import FORECAST_FILE

        forecast = dry_run(cfg)
        write_json(run_dir / FORECAST_FILE, forecast)  # a sweep's total: python -m jaxalign.cost SWEEP_DIR
        log.info("dry run: %s", json.dumps(forecast))
        print(json.dumps(forecast, indent=1))
        return forecast
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.claim(run_dir, resolved)
    code = versions()
    rundir.check_code(run_dir, code)
    start = time.time()
    stop = StopRequest()
    summaries = []
    shard = cfg.shard
    info = {}
    try:
        job = build_job(cfg, run_dir, stop)
        questions = job.questions[shard.index::shard.count]
        if shard.count > 1:
            log.info("shard %d of %d: %d of %d questions", shard.index, shard.count, len(questions), len(job.questions))
        job.prepare(questions)
        info = job.info()
        for q in tqdm(questions, desc="questions", unit="q"):
            run = job.make_run(q)
            with tqdm(desc=f"{run.qid} phase 1", unit="rollout", leave=False) as bar:
                run.progress = bar
                summary = run.run()
            if summary is not None:  # None: another process holds the question
                summaries.append(summary)
    except Preempted as stopped:
        log.warning("%s; the same command resumes", stopped)
        stop.forward()
    finally:
        stop.restore()
    totals = {"questions": len(summaries), "skipped": sum(s["skipped"] for s in summaries),
              "rollouts": sum(s["budget"]["rollouts"] for s in summaries),
              "tokens": sum(s["budget"]["tokens"] for s in summaries), "wall_s": round(time.time() - start, 1)}
    result = rundir.result_config(resolved)
    record = {"config": result, "config_hash": rundir.config_hash(result), "versions": code,
              "shard": {"index": shard.index, "count": shard.count},
              "devices": [str(d) for d in jax.devices()], "totals": totals, **info}
    merged = rundir.finish(run_dir, record, shard.index, shard.count)
    log.info("done: %s; results in %s", totals, run_dir)
    if merged is not None:
        print(merged["report"])
    if info.get("standins"):
        log.warning("%s", info["standins"])
        print(f"\nNOTE: {info['standins']}")
    return merged["record"] if merged is not None else record


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(dcfg: DictConfig) -> None:
    try:
        execute(dcfg, Path(HydraConfig.get().runtime.output_dir))
    except (JaxalignError, OSError) as err:
        raise SystemExit(exit_for(err)) from err


def exit_for(err: BaseException) -> int:
    """Logs ``err`` as one line (a traceback too with HYDRA_FULL_ERROR=1 or JAXALIGN_DEBUG=1) and returns
    its documented exit code (README, "Exit codes")."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("JAXALIGN_DEBUG") == "1":
        log.exception("the run stopped")
    for kind, (code, label) in EXIT_CODES.items():
        if isinstance(err, kind):
            if isinstance(err, OSError):
                where = f"{err.filename}: " if err.filename else ""
                log.error("%s: %s%s. Check the free space and the permissions of the run directory (or pass "
                          "hydra.run.dir=ANOTHER_DIR), then rerun the same command: it resumes", label, where,
                          err.strerror or err)
            else:
                log.error("%s: %s", label, err)
            return code
    raise err


# every kind of error a run can stop with, its exit code, and how it is labelled (most specific first)
EXIT_CODES = {
    ConfigError: (2, "configuration error"),
    TokenizerError: (3, "tokenizer error"),
    CheckpointError: (4, "model checkpoint error"),
    IncompleteResults: (5, "incomplete results"),
    JaxalignError: (6, "input error"),
    OSError: (7, "file system error"),
}


if __name__ == "__main__":
    main()
