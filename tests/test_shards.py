"""Question sharding, merging the shards, and the run directory's pin to its config."""

import json

import pytest

from jaxalign import aggregate, rundir
from jaxalign.errors import ConfigError, JaxalignError
from jaxalign.run import execute
from tests.test_pipeline import rows_of
from tests.test_run import composed

EXACT = ("+experiment=exact", "dataset.num_questions=3", "budget.num_initial=200")


def _rows(run_dir):
    return {p.stem: rows_of(run_dir, p.stem) for p in sorted((run_dir / "questions").glob("*.parquet"))}


def test_shards_together_equal_one_unsharded_run(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    single = execute(composed(*EXACT), whole)
    first = execute(composed(*EXACT, "shard.count=2", "shard.index=1"), parts)
    assert first["shard"] == {"index": 1, "count": 2} and not (parts / "run.json").exists()
    assert first["totals"]["questions"] == 1  # questions 1 (of 0, 1, 2)
    merged = execute(composed(*EXACT, "shard.count=2", "shard.index=0"), parts)  # the last shard merges
    assert _rows(parts) == _rows(whole)
    assert merged["totals"] == {**single["totals"], "wall_s": merged["totals"]["wall_s"]}
    assert json.loads((parts / "run.json").read_text())["config_hash"] == single["config_hash"]
    assert (parts / "report" / "report.md").read_text() == (whole / "report" / "report.md").read_text()
    (whole / "report" / "report.md").unlink()
    assert aggregate.main([str(tmp_path)]) == 0  # a sweep directory: merges one run, rebuilds the other
    assert (whole / "report" / "report.md").read_text() == (parts / "report" / "report.md").read_text()


def test_aggregate_names_missing_shards_and_merges_when_complete(tmp_path, capsys):
    run_dir = tmp_path / "sweep" / "job"
    execute(composed(*EXACT, "shard.count=3", "shard.index=2"), run_dir)
    assert aggregate.main([str(tmp_path / "sweep")]) == 1
    assert "shards [0, 1] of 3" in capsys.readouterr().err
    with pytest.raises(JaxalignError, match=r"shards \[0, 1\] of 3"):
        aggregate.merge(run_dir)
    for index in (0, 1):  # written without merging, as if their jobs died right after finishing
        record = json.loads((run_dir / "shards" / "2-of-3.json").read_text())
        record["shard"]["index"] = index
        (run_dir / "shards" / f"{index}-of-3.json").write_text(json.dumps(record))
    assert aggregate.main([str(tmp_path / "sweep")]) == 0
    assert json.loads((run_dir / "run.json").read_text())["totals"]["questions"] == 3


def test_a_run_directory_refuses_another_configs_results(tmp_path):
    execute(composed(*EXACT[:2], "budget.num_initial=200", "dataset.num_questions=1"), tmp_path)
    with pytest.raises(ConfigError, match=r"budget.n_min: 60 there, 30 now") as err:
        execute(composed(*EXACT[:2], "budget.num_initial=200", "dataset.num_questions=1", "budget.n_min=30"), tmp_path)
    assert "hydra.run.dir" in str(err.value)
    # the shard and the cost model do not change results: the same directory is fine
    execute(composed(*EXACT[:2], "budget.num_initial=200", "dataset.num_questions=1", "compile_cache_dir=null",
                     "calibration_device=cpu"), tmp_path)


@pytest.mark.parametrize("overrides, key", [
    (["shard.count=0"], "shard.count"),
    (["shard.index=2", "shard.count=2"], "shard.index"),
    (["shard.index=-1"], "shard.index"),
    (["shard.count=9"], "shard.count"),
])
def test_bad_shard_settings_are_named(overrides, key, tmp_path):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        execute(composed(*EXACT, *overrides), tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_merge_keeps_what_describes_the_job(tmp_path, monkeypatch):
    """run.json of a sharded run keeps the shards' shared description (dataset, models, stand-ins),
    not only config, hash and versions; per-shard keys go under "shards"."""
    monkeypatch.setattr(rundir, "write_report", lambda run_dir, force=False: "report")
    shared = {"config": {"seed": 0}, "config_hash": "h", "versions": {"jax": "x"},
              "dataset": {"task": "boolq", "rows_skipped": {}}, "models": [{"id": "toy:student"}],
              "standins": "stand-ins: random weights"}
    for index in (0, 1):
        totals = {"questions": 1 + index, "skipped": 0, "rollouts": 10, "tokens": 100, "wall_s": 5.0 + index}
        rundir.write_json(rundir.shard_record_path(tmp_path, index, 2),
                          {**shared, "shard": {"index": index, "count": 2}, "devices": ["cpu"], "totals": totals})
    record = rundir.merge(tmp_path)["record"]
    assert {k: record[k] for k in shared} == shared
    assert set(record) == set(shared) | {"shards", "totals"}
    assert record["totals"] == {"questions": 3, "skipped": 0, "rollouts": 20, "tokens": 200, "wall_s": 6.0}
    assert all("versions" not in shard for shard in record["shards"])
    # a shard resubmitted after a pull ran other code: run.json shows each shard's, not the first's
    other = {**shared, "versions": {"jax": "y"}, "shard": {"index": 1, "count": 2}, "devices": ["cpu"],
             "totals": {"questions": 2, "skipped": 0, "rollouts": 10, "tokens": 100, "wall_s": 6.0}}
    rundir.write_json(rundir.shard_record_path(tmp_path, 1, 2), other)
    mixed = rundir.merge(tmp_path)["record"]
    assert "versions" not in mixed and [s["versions"] for s in mixed["shards"]] == [{"jax": "x"}, {"jax": "y"}]
