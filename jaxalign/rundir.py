"""A run directory: which config it belongs to, its shards, and merging them into run.json.

A run directory is derived from the config, so rerunning a command resumes it. That makes a
silent mix-up possible: the same directory reached by a different config would reuse finished
questions computed under other settings. ``config.json`` pins the directory to the settings that
shape results (everything but the shard, the dry-run switch and the cost model); a job whose
settings differ stops before any work, naming the keys. ``code.json`` records the code that started
the directory (package versions, jaxalign's git commit); a job that resumes it with other code is
warned, naming what changed, since finished questions keep what the older code computed.

Shards (SLURM array task i of n) write ``shards/<i>-of-<n>.json`` next to the per-question files
they share. Whichever shard finds every record present merges them: run.json and the report.
``python -m jaxalign.report DIR`` does the same by hand, for one run or a whole sweep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from jaxalign.errors import ConfigError, IncompleteResults, JaxalignError
from jaxalign.files import write_json
from jaxalign.report import write_report

log = logging.getLogger(__name__)
# settings that do not shape results: where things are cached or found, how the job is split or sized
NOT_RESULT_KEYS = ("shard", "dry_run", "calibration_file", "calibration_device", "compile_cache_dir", "model_root",
                   "context_cache_dir", "device_memory_gb", "context_mesh", "decode_attention")


def result_config(resolved: dict) -> dict:
    """The part of a resolved config that shapes results. Meshes (``student.mesh``, ``teachers.NAME.mesh``,
    ``context_mesh``) are left out: a preempted job may resume on another allocation, and the rows agree across meshes to
    float round-off (tests/test_mesh_run.py). So is ``decode_attention``, whose two paths draw the same tokens
    in float32 and agree to round-off in bfloat16 (tests/engine/test_ragged_attention.py)."""
    out = {k: v for k, v in resolved.items() if k not in NOT_RESULT_KEYS}
    if isinstance(out.get("student"), dict):
        out["student"] = {k: v for k, v in out["student"].items() if k != "mesh"}
    if isinstance(out.get("teachers"), dict):
        out["teachers"] = {name: {k: v for k, v in t.items() if k != "mesh"} if isinstance(t, dict) else t
                           for name, t in out["teachers"].items()}
    return out


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


_NO_DEFAULT = object()


def _default(key: str):
    """The schema's default of a flattened setting ('budget.n_min', 'teachers.NAME.tilt'), or a
    sentinel that equals nothing when the key has none."""
    from jaxalign.config import RunConf, TeacherConf

    parts = key.split(".")
    cls: type = RunConf
    if parts[0] == "teachers" and len(parts) > 2:
        cls, parts = TeacherConf, parts[2:]
    value = cls()
    for part in parts:
        value = getattr(value, part, _NO_DEFAULT) if dataclasses.is_dataclass(value) else _NO_DEFAULT
    return _NO_DEFAULT if dataclasses.is_dataclass(value) else value


def claim(run_dir: Path, resolved: dict) -> None:
    """Pins ``run_dir`` to this config, or raises ConfigError if it holds another config's results."""
    mine = result_config(resolved)
    path = run_dir / "config.json"
    if path.is_file():
        try:
            theirs = json.loads(path.read_text())
        except (ValueError, OSError) as err:
            raise ConfigError(f"{path} is damaged ({err}); it pins the directory to its config. If you know this "
                              "directory's results came from this command, delete config.json (the next run "
                              "rewrites it); otherwise pass hydra.run.dir=NEW_DIR") from err
        a, b = _flatten(theirs), _flatten(mine)
        # a setting added since that directory was pinned, at its default, leaves results unchanged
        keys = sorted(k for k in a.keys() | b.keys()
                      if a.get(k) != b.get(k) and not (k not in a and _default(k) == b[k]))
        if keys:
            shown = ", ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in keys[:6])
            raise ConfigError(f"{run_dir} holds results of another config ({shown}"
                              f"{', ...' if len(keys) > 6 else ''}); pass hydra.run.dir=NEW_DIR (or "
                              "hydra.sweep.dir for -m), or delete the directory to recompute")
        return
    write_json(path, mine)


def check_code(run_dir: Path, versions: dict) -> None:
    """Records ``versions`` (:func:`jaxalign.run.versions`) as the code that started ``run_dir``
    (code.json), or logs a warning naming what differs from the code that did. A version that is
    not known (None: e.g. no git on this node) is not compared. A directory that already holds
    results but no code.json (older than it, or its code.json damaged) is recorded as unknown code."""
    path = run_dir / "code.json"
    try:
        theirs = json.loads(path.read_text()) if path.is_file() else None
    except (ValueError, OSError) as err:
        log.warning("%s is damaged (%s); the code that started the directory is now unknown", path, err)
        theirs = None
    if theirs is None:
        started = versions
        if any((run_dir / "questions").glob("*")):
            started = {key: None for key in versions}
            log.info("%s holds results from code that was not recorded; code.json says so", run_dir)
        write_json(path, started)
        return
    changed = sorted(k for k in theirs.keys() | versions.keys()
                     if None not in (theirs.get(k), versions.get(k)) and theirs.get(k) != versions.get(k))
    if changed:
        log.warning("%s was started with other code (%s). Finished questions keep what that code computed; the "
                    "rest are computed with this code. Pass hydra.run.dir=NEW_DIR to compute all of them with this "
                    "code", run_dir, ", ".join(f"{k} {theirs.get(k)} there, {versions.get(k)} now" for k in changed))


def shard_record_path(run_dir: Path, index: int, count: int) -> Path:
    return run_dir / "shards" / f"{index}-of-{count}.json"


PER_SHARD_KEYS = ("shard", "devices", "totals")  # of a shard record; merge() lists them under "shards"


def merge(run_dir: str | Path, force: bool = False) -> dict:
    """Merges the shard records of ``run_dir`` into run.json and rebuilds the report.

    Raises JaxalignError naming the missing shards when the set is incomplete (rerun those jobs:
    they resume, and finished questions are not recomputed).
    """
    run_dir = Path(run_dir)
    records = [json.loads(p.read_text()) for p in sorted((run_dir / "shards").glob("*-of-*.json"))]
    if not records:
        raise JaxalignError(f"{run_dir}: no shard records in shards/; is this a run directory of a sharded run?")
    counts = {r["shard"]["count"] for r in records}
    if len(counts) != 1:
        raise JaxalignError(f"{run_dir}: shard records with different shard.count {sorted(counts)}; delete the "
                            "stale ones in shards/ (the per-question results stay valid)")
    count = counts.pop()
    have = {r["shard"]["index"] for r in records}
    missing = sorted(set(range(count)) - have)
    if missing:
        raise JaxalignError(f"{run_dir}: shards {missing} of {count} have not finished; rerun them with "
                            f"shard.count={count} shard.index=I (they resume)")
    totals = {key: sum(r["totals"][key] for r in records) for key in ("questions", "skipped", "rollouts", "tokens")}
    totals["wall_s"] = round(max(r["totals"]["wall_s"] for r in records), 1)
    # what describes the job (config, versions, dataset, models, stand-ins) is every shard's; the rest is per shard
    first = records[0]
    by_index = sorted(records, key=lambda r: r["shard"]["index"])
    mixed = len({json.dumps(r.get("versions"), sort_keys=True) for r in records}) > 1
    if mixed:
        log.warning("%s: the shards ran different code (see each shard's versions in run.json)", run_dir)
    record = {**{k: v for k, v in first.items() if k not in PER_SHARD_KEYS + (("versions",) if mixed else ())},
              "shards": [{"index": r["shard"]["index"], "devices": r["devices"], "totals": r["totals"],
                          **({"versions": r.get("versions")} if mixed else {})} for r in by_index],
              "totals": totals}
    write_json(run_dir / "run.json", record)
    report = write_report(run_dir, force=force)
    log.info("merged %d shards of %s: %s", count, run_dir, totals)
    return {"record": record, "report": report}


def finish(run_dir: Path, record: dict, index: int, count: int) -> dict | None:
    """Writes this job's record; the job that completes the set merges. Returns merge() or None.

    Every job writes first and looks second, so at least one job sees the full set; two that do
    both merge, into the same files, atomically.
    """
    if count == 1:
        write_json(run_dir / "run.json", record)  # first: a report that fails must not lose the record
        try:
            report = write_report(run_dir)
        except IncompleteResults as err:  # e.g. another process still holds some questions
            log.warning("report not built yet: %s", err)
            report = f"report not built yet: {err}"
        return {"record": record, "report": report}
    write_json(shard_record_path(run_dir, index, count), record)
    done = [shard_record_path(run_dir, i, count).is_file() for i in range(count)]
    if not all(done):
        log.info("shard %d of %d done; %d still running. The last one merges (or: python -m jaxalign.report %s)",
                 index, count, done.count(False), run_dir)
        return None
    return merge(run_dir)
