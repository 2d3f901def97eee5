"""End to end: reports built from real ExactPolicy runs, a sweep, newer row schemas and bad files."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxalign import aggregate
from jaxalign.errors import JaxalignError
from jaxalign.report import write_report
from jaxalign.report.html import token_decoder
from jaxalign.report.load import Run

TABLES = ("t1_teacher_ranking", "t2_selective_oracle", "t3_teacher_ranking_alternatives", "t4_correct_vs_incorrect",
          "t5_spearman", "t6_correct_vs_incorrect_by_teacher", "questions_by_difficulty", "alignment_by_difficulty",
          "skipped_questions", "skipped_nodes", "budget", "divergence_filters", "multi_teacher_oracle")
FIGURES = ("teacher_ranking", "correct_vs_incorrect", "path_oscillation", "alignment_histogram", "oracle_curve")


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_from_an_exact_run(exact_run):
    text = write_report(exact_run)
    out = exact_run / "report"
    assert (out / "report.md").read_text() == text
    for name in TABLES:
        assert (out / "tables" / f"{name}.md").is_file() and (out / "tables" / f"{name}.csv").is_file(), name
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000 and (out / "figures" / f"{name}.svg").is_file()
    questions = [json.loads(p.read_text()) for p in sorted((exact_run / "questions").glob("*.json"))]
    analysed = [q for q in questions if not q["skipped"] and q["decision_nodes"]]
    assert f"| analysed (≥ 1 decision node) | {len(analysed)} |" in text
    assert f"{sum(q['budget']['rollouts'] for q in questions):,} rollouts" in text
    assert "timings" not in text and str(exact_run) not in text  # the same results give the same file

    ranking = {(r["teacher"], r["s_u"]): r for r in _csv(out / "tables" / "t1_teacher_ranking.csv")
               if r["algorithm"] == "gkd"}
    tilt, anti = ranking[("tilt", "all")], ranking[("anti-tilt", "all")]
    assert float(tilt["mean_cosine_low"]) > 0.5 and float(anti["mean_cosine_high"]) < -0.5
    assert tilt["rank"] == "1" and int(tilt["n_questions"]) == len(analysed)
    assert {r["teacher"] for r in _csv(out / "tables" / "t1_teacher_ranking.csv")
            if r["algorithm"] == "drgrpo_mc"} == {"(reward reference)"}  # once, not per teacher
    assert int(ranking[("tilt", "2")]["n_nodes"]) + int(ranking[("tilt", "3+")]["n_nodes"]) == int(tilt["n_nodes"])

    rows = pq.read_table(next((exact_run / "questions").glob("*.parquet"))).to_pylist()
    gkd = [r for r in rows if r["algorithm"] == "gkd" and r["teacher"] == "tilt"]
    nodes = {r["node"] for r in gkd}
    shared = {n for n in nodes if len({r["correct"] for r in gkd if r["node"] == n}) == 2}
    cvi = next(r for r in _csv(out / "tables" / "t6_correct_vs_incorrect_by_teacher.csv")
               if r["teacher"] == "tilt" and r["algorithm"] == "gkd" and r["s_u"] == "all")
    assert int(cvi["n_shared"]) >= len(shared)  # summed over questions; this one alone has len(shared)

    weights = pq.read_table(out / "token_weights.parquet").to_pydict()
    assert set(weights) == {"qid", "path", "depth", "token", "teacher", "cosine", "sr_range", "advantage", "weight"}
    cos, sr = np.array(weights["cosine"]), np.array(weights["sr_range"])
    np.testing.assert_allclose(weights["weight"], np.maximum(cos, 0) * sr)

    pages = sorted((out / "html").glob("*__*.html"))
    assert len(pages) == len([q for q in questions if not q["skipped"]]) * 3


def test_report_is_rebuilt_identically(exact_run, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(exact_run, copy)
    shutil.rmtree(copy / "report")
    assert write_report(copy) == write_report(exact_run)
    for name in ("t1_teacher_ranking.csv", "t4_correct_vs_incorrect.csv"):
        assert (copy / "report" / "tables" / name).read_text() == (exact_run / "report" / "tables" / name).read_text()
    assert (copy / "report" / "figures" / "teacher_ranking.svg").read_bytes() == \
        (exact_run / "report" / "figures" / "teacher_ranking.svg").read_bytes()


def test_sweep_report_puts_runs_side_by_side(exact_sweep, capsys):
    assert aggregate.main([str(exact_sweep)]) == 0
    text = (exact_sweep / "report" / "report.md").read_text()
    assert "[seed=0](../seed=0/report/report.md)" in text and "[seed=1](../seed=1/report/report.md)" in text
    pivot = _csv(exact_sweep / "report" / "tables" / "sweep_mean_cosine.csv")
    tilt = next(r for r in pivot if r["teacher"] == "tilt")
    assert float(tilt["seed=0"]) > 0.5 and float(tilt["seed=1"]) > 0.5 and float(tilt["seed=1_low"]) < float(tilt["seed=1"])
    runs = {r["run"] for r in _csv(exact_sweep / "report" / "tables" / "sweep_correct_vs_incorrect.csv")}
    assert runs == {"seed=0", "seed=1"}
    assert (exact_sweep / "report" / "figures" / "sweep_teacher_ranking.png").is_file()
    assert "sweep report of 2 runs" in capsys.readouterr().out


def reseal(run_dir):
    """Writes each question's manifest for the files it has now, as the pipeline does when it finishes."""
    from jaxalign.integrity import write_manifest

    folder = Path(run_dir) / "questions"
    for summary in folder.glob("*.json"):
        stem = summary.name[: -len(".json")]
        files = [f for f in folder.iterdir() if f.name.startswith(stem + ".") and not f.name.endswith((".manifest", ".lock"))
                 and f.name[len(stem) + 1:] in ("json", "parquet", "tree.npz", "children.parquet")]
        write_manifest(folder / stem, files)


def _newer_schema_copy(run_dir, tmp_path):
    """A copy of a run as the next pipeline version writes it: a `convention` column with paper rows,
    minillm_mc and a user-registered algorithm, children files, a question skipped and one without
    decision nodes (an empty parquet with null-typed columns, as the pipeline writes it)."""
    copy = tmp_path / "newer"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "report")
    rng = np.random.default_rng(0)
    for path in sorted((copy / "questions").glob("*.parquet")):
        if path.name.endswith(".children.parquet"):
            continue  # the pipeline writes them now; they are rewritten below
        table = pq.read_table(path)
        if "convention" not in table.column_names:
            table = table.append_column("convention", pa.array(["renormalized"] * table.num_rows))
        else:
            table = table.filter(pa.compute.equal(table["convention"], "renormalized"))
        gkd = table.filter(pa.compute.equal(table["algorithm"], "gkd"))
        extra = [gkd.set_column(gkd.schema.get_field_index("algorithm"), "algorithm",
                                pa.array([name] * gkd.num_rows)) for name in ("minillm_mc", "my-estimator")]
        paper = gkd.set_column(gkd.schema.get_field_index("convention"), "convention",
                               pa.array(["paper"] * gkd.num_rows))
        pq.write_table(pa.concat_tables([table, *extra, paper]), path)
        tree = np.load(path.with_suffix(".tree.npz"))
        children = []
        for row in gkd.to_pylist():
            at = tree["edge_node"] == row["node"]
            visits = tree["onp_visits"][at] + tree["forced_visits"][at]
            successes = tree["onp_successes"][at] + tree["forced_successes"][at]
            p, q = rng.dirichlet(np.ones(at.sum())), rng.dirichlet(np.ones(at.sum()))
            for k, token in enumerate(tree["edge_token"][at]):
                children.append({"qid": row["qid"], "path": row["path"], "node": row["node"], "depth": row["depth"],
                                 "teacher": row["teacher"], "token": int(token), "p": float(p[k]), "q": float(q[k]),
                                 "s": float(successes[k] / max(visits[k], 1)), "visits": int(visits[k]),
                                 "successes": int(successes[k]), "in_s": bool(visits[k] >= 20)})
        pq.write_table(pa.Table.from_pylist(children), path.with_name(path.name.replace(".parquet", ".children.parquet")))
    base = json.loads(next((copy / "questions").glob("*.json")).read_text())
    skipped = {**base, "qid": "exact-98", "skipped": True, "skip_reason": "all 200 initial rollouts are correct",
               "pass_rate": 1.0, "rows": 0, "decision_nodes": 0}
    empty = {**base, "qid": "exact-99", "rows": 0, "decision_nodes": 0, "pass_rate": 0.02}
    (copy / "questions" / "exact-98.json").write_text(json.dumps(skipped))
    (copy / "questions" / "exact-99.json").write_text(json.dumps(empty))
    columns = [f.name for f in pq.read_schema(next((copy / "questions").glob("exact-0.parquet")))]
    pq.write_table(pa.table({c: [] for c in columns if c != "convention"}), copy / "questions" / "exact-99.parquet")
    reseal(copy)
    return copy


def test_report_reads_the_newer_row_schema(exact_run, tmp_path):
    copy = _newer_schema_copy(exact_run, tmp_path)
    text = write_report(copy)
    assert "| no decision nodes | 1 |" in text and "| skipped (initial rollouts all of one outcome) | 1 |" in text
    reasons = {r["reason"] for r in _csv(copy / "report" / "tables" / "skipped_questions.csv")}
    assert "skipped: all 200 initial rollouts are correct" in reasons and any("no decision nodes" in r for r in reasons)
    ranking = _csv(copy / "report" / "tables" / "t1_teacher_ranking.csv")
    assert {(r["algorithm"], r["convention"]) for r in ranking} >= {
        ("gkd", "paper"), ("minillm_mc", "renormalized"), ("my-estimator", "renormalized")}
    bins = {r["bin"]: r for r in _csv(copy / "report" / "tables" / "questions_by_difficulty.csv")}
    assert bins["easy"]["skipped"] == "1" and bins["hard"]["no_decision_nodes"] == "1"
    page = (copy / "report" / "html" / "exact-0__tilt.html").read_text()
    assert 'data-has-pq="1"' in page and '"p":' in page and "gkd (paper)" in page
    assert not (copy / "report" / "html" / "exact-98__tilt.html").exists()  # skipped: no tree, no page


def test_a_result_file_with_missing_columns_is_named(exact_run, tmp_path):
    copy = tmp_path / "broken"
    shutil.copytree(exact_run / "questions", copy / "questions")
    bad = copy / "questions" / "exact-1.parquet"
    pq.write_table(pq.read_table(bad).drop(["sr_range"]), bad)
    reseal(copy)  # as if a pipeline had written it so: the report's own check is what is tested
    with pytest.raises(JaxalignError, match=r"exact-1\.parquet: missing columns \['sr_range'\]"):
        Run(copy, ".").rows


def test_tokens_fall_back_to_ids_when_the_tokenizer_is_missing():
    decode, note = token_decoder({"student": {"kind": "flax", "name": "gone", "path": "/nonexistent/model"}})
    assert decode([5, 7]) == ["⟨5⟩", "⟨7⟩"] and "could not be loaded" in note
    decode, note = token_decoder({"student": {"kind": "exact", "path": "exact"}})
    assert decode([3]) == ["⟨3⟩"]
    decode, note = token_decoder({"student": {"kind": "flax", "name": "toy", "path": "toy:student"}})
    from jaxalign.models import load_tokenizer
    from jaxalign.config import resolve_model_path

    ids = load_tokenizer(resolve_model_path("toy:student")).encode("12+3")
    assert "".join(decode(ids)) == "12+3" and "toy" in note


def test_a_run_whose_questions_were_all_skipped(tmp_path):
    """No rows at all (the pipeline's empty parquet has null-typed columns): a report that says so."""
    run = tmp_path / "run"
    (run / "questions").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"student": {"name": "exact", "kind": "exact"},
                                                 "dataset": {"name": "exact"}, "teachers": {"tilt": {}}, "seed": 0}))
    columns = ["qid", "path", "correct", "depth", "norm_depth", "token", "node", "teacher", "algorithm", "s_u_size",
               "sr_range", "cosine", "valid", "advantage", "kl", "js", "l2", "cos_pq", "visits"]
    pq.write_table(pa.table({c: [] for c in columns}), run / "questions" / "exact-0.parquet")
    (run / "questions" / "exact-0.json").write_text(json.dumps({
        "qid": "exact-0", "skipped": True, "skip_reason": "all 200 initial rollouts are correct", "pass_rate": 1.0,
        "budget": {"rollouts": 200, "tokens": 800}, "rows": 0, "decision_nodes": 0, "timings": {"total_s": 2.0}}))
    reseal(run)
    text = write_report(run)
    assert "| skipped (initial rollouts all of one outcome) | 1 |" in text and "200 rollouts, 800 tokens" in text
    assert "(no data)" in (run / "report" / "tables" / "t1_teacher_ranking.md").read_text()
    assert not list((run / "report" / "html").glob("*__*.html"))
    assert pq.read_table(run / "report" / "token_weights.parquet").num_rows == 0
