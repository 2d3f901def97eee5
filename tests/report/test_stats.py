"""Report statistics against scipy, brute-force references and planted truths over repeated draws."""

import itertools

import numpy as np
import pytest
import scipy.stats as sps

from jaxalign.report import stats, tables
from jaxalign.report.load import Rows
from tests.report.synthetic import synthetic_rows

ALPHA = 0.05


def test_grouped_spearman_equals_scipy_with_ties_and_degenerate_groups():
    rng = np.random.default_rng(0)
    group = rng.integers(0, 60, 3000)
    x = rng.integers(0, 6, 3000).astype(float)  # many ties
    y = x + rng.integers(0, 4, 3000) * rng.choice([-1, 1], 3000)
    x[group == 7] = 2.0  # a constant group
    group = np.r_[group, 60]  # a group of one
    x, y = np.r_[x, 1.0], np.r_[y, 2.0]
    rho = stats.grouped_spearman(x, y, group)
    for g in range(61):
        m = group == g
        expected = sps.spearmanr(x[m], y[m]).statistic if m.sum() > 1 and np.ptp(x[m]) and np.ptp(y[m]) else np.nan
        np.testing.assert_allclose(rho[g], expected, rtol=0, atol=1e-12, err_msg=f"group {g}")
    assert np.isnan(rho[7]) and np.isnan(rho[60])


def test_node_split_and_first_occurrence_match_a_brute_force_reference():
    rng = np.random.default_rng(1)
    n = 500
    qid, node, correct = rng.integers(0, 5, n), rng.integers(0, 12, n), rng.random(n) < 0.5
    teacher = rng.integers(0, 3, n)
    split = stats.node_split(qid, node, correct)
    first = stats.first_occurrence(qid, node, teacher)
    seen = set()
    for i in range(n):
        outcomes = {bool(correct[j]) for j in range(n) if qid[j] == qid[i] and node[j] == node[i]}
        assert split[i] == (stats.SHARED if len(outcomes) == 2 else stats.CORRECT if True in outcomes else stats.INCORRECT)
        key = (qid[i], node[i], teacher[i])
        assert first[i] == (key not in seen)
        seen.add(key)


def _coverage(draw, truth: float, n_draws: int) -> float:
    hits = 0
    for _ in range(n_draws):
        num, den, cluster = draw()
        est = stats.ratio(num, den, cluster)
        hits += est.low <= truth <= est.high
    return hits / n_draws


@pytest.mark.parametrize("weighted", [False, True])
def test_cluster_bootstrap_covers_95_percent_with_question_clustering(weighted):
    """1,500 draws of 30 questions of 5-40 nodes, sign-valued cosines (as at |S_u| = 2) whose mean
    varies by question. Coverage must be 95% +- 3 points; node-level intervals would cover far
    less, because the question effect makes nodes of one question alike."""
    rng = np.random.default_rng(2)
    mu, questions = 0.1, 30

    def draw():
        sizes = rng.integers(5, 41, questions)
        cluster = np.repeat(np.arange(questions), sizes)
        m = mu + rng.uniform(-0.5, 0.5, questions)[cluster]
        x = np.where(rng.random(len(cluster)) < (1 + m) / 2, 1.0, -1.0)  # E[x | question] = m, E[x] = mu
        w = rng.uniform(0.0, 1.0, len(cluster)) if weighted else np.ones(len(cluster))
        return w * x, w, cluster

    coverage = _coverage(draw, mu, 1500)
    assert abs(coverage - 0.95) <= 0.03, coverage


def test_ratio_point_estimates_and_difference_match_numpy():
    rng = np.random.default_rng(3)
    x, w, q = rng.normal(size=200), rng.uniform(size=200), rng.integers(0, 12, 200)
    assert stats.ratio(w * x, w, q).value == pytest.approx((w * x).sum() / w.sum(), abs=1e-12)
    a, b = x[:120], x[120:]
    diff = stats.ratio_difference(a, np.ones(120), q[:120], b, np.ones(80), q[120:])
    assert diff.value == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    assert diff.low < diff.value < diff.high and diff.questions == len(np.unique(q))
    assert np.isnan(stats.ratio(x[:5], np.ones(5), np.zeros(5)).low)  # one question: no interval


def _gap_rejections(gap: float, draws: int, seed: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    welch = wilcoxon = ci = 0
    for _ in range(draws):
        rows = tables.prepare(synthetic_rows(rng, questions=30, gap=gap))
        result = tables.correct_vs_incorrect(rows, "mean_cosine")
        welch += result["p_welch"] < ALPHA
        wilcoxon += result["p_wilcoxon"] < ALPHA
        ci += not (result["delta"].low <= 0 <= result["delta"].high)
    return welch / draws, wilcoxon / draws, ci / draws


def test_null_gap_is_not_detected_beyond_alpha():
    """200 draws with no correct/incorrect difference but strong question effects: each test
    rejects at most alpha + 0.04 of the time (3 binomial standard errors above alpha)."""
    rates = _gap_rejections(0.0, 200, seed=4)
    assert max(rates) <= ALPHA + 0.04, rates


def test_planted_gap_is_detected():
    """A planted gap of 0.15 in mean cosine over 100 draws. The paired Wilcoxon test and the
    bootstrap CI of the difference find it at least 90% of the time. Welch's t over paths leaves
    the question effect in its variance (each question holds both outcomes), so it is conservative
    and has less power (about 75% here)."""
    welch, wilcoxon, ci = _gap_rejections(0.15, 100, seed=5)
    assert wilcoxon >= 0.9 and ci >= 0.9 and welch >= 0.6, (welch, wilcoxon, ci)
    rows = tables.prepare(synthetic_rows(np.random.default_rng(6), questions=200, gap=0.15, noise_sd=0.2))
    result = tables.correct_vs_incorrect(rows, "mean_cosine")
    assert result["delta"].low < 0.15 < result["delta"].high


def test_a_shared_node_is_counted_once():
    rows = tables.prepare(synthetic_rows(np.random.default_rng(7), questions=5, nodes_per_path=3))
    root = rows["node"] == 0
    assert root.sum() == 5 * 4  # written once per path
    assert (rows["split"][root] == stats.SHARED).all() and (rows["split"][~root] != stats.SHARED).all()
    est, used = tables.metric(rows, "mean_cosine")
    distinct = {(q, n): c for q, n, c in zip(rows["qid"], rows["node"], rows["cosine"])}
    assert tables.counts(used)["n_nodes"] == len(distinct) == 5 * (4 * 3 + 1)
    assert est.value == pytest.approx(np.mean(list(distinct.values())), abs=1e-12)
    result = tables.correct_vs_incorrect(rows, "mean_cosine")
    assert result["n_shared"] == 5 and result["n_nodes_correct"] == result["n_nodes_incorrect"] == 5 * 2 * 3
    correct = [c for (q, n), c in distinct.items() if 1 <= n <= 6]  # paths 0 and 1 own nodes 1..6
    assert result["correct"] == pytest.approx(np.mean(correct), abs=1e-12)


def test_oracle_filters_and_multi_teacher_match_brute_force():
    rng = np.random.default_rng(8)
    rows = tables.prepare(synthetic_rows(rng, questions=6, nodes_per_path=4, teachers=("A", "B"), noise_sd=0.7))
    a = rows.where(rows.is_("teacher", "A"))
    point = tables.oracle_point(a, 0.0)
    nodes = {(q, n): (c, w) for q, n, c, w in zip(a["qid"], a["node"], a["cosine"], a["sr_range"])}
    kept = [c * w for c, w in nodes.values() if c > 0]
    assert point["mean_signal"].value == pytest.approx(np.mean(kept), abs=1e-12)
    assert point["frac_tokens"] == pytest.approx(len(kept) / len(nodes))
    beats = []
    for q, p in itertools.product(np.unique(a["qid"]), range(4)):
        on = (a["qid"] == q) & (a["path"] == p)
        signal, keep = a["cosine"][on] * a["sr_range"][on], a["cosine"][on] > 0
        beats.append(keep.any() and signal[keep].mean() > signal.mean())
    assert point["frac_paths_beat"] == pytest.approx(np.mean(beats))

    filters = tables.divergence_filters(rows).where(teacher="A").rows
    median = next(r for r in filters if r["filter"] == "kl ≥ q0.50")
    kl = {(q, n): k for q, n, k in zip(a["qid"], a["node"], a["kl"])}
    keep = {key for key, v in kl.items() if v >= np.quantile(list(kl.values()), 0.5)}
    aligned = {key for key, (c, _) in nodes.items() if c > 0}
    assert median["precision"] == pytest.approx(len(keep & aligned) / len(keep))
    assert median["recall"] == pytest.approx(len(keep & aligned) / len(aligned))

    oracle = tables.multi_teacher_oracle(rows).rows
    b = rows.where(rows.is_("teacher", "B"))
    other = {(q, n): c * w for q, n, c, w in zip(b["qid"], b["node"], b["cosine"], b["sr_range"])}
    best = [max(c * w, other[key]) for key, (c, w) in nodes.items()]
    assert oracle[0]["mean_signal"].value == pytest.approx(np.mean(best), abs=1e-12)


def test_table_writes_estimates_as_three_csv_columns():
    table = tables.Table("t", "title", [tables.Column("name", "name"), tables.Column("x", "x", "+.2f")],
                         [{"name": "a|b", "x": stats.Estimate(0.5, 0.25, 0.75, 3)},
                          {"name": "c", "x": stats.Estimate(float("nan"), float("nan"), float("nan"), 0)}])
    assert table.csv().splitlines() == ["name,x,x_low,x_high", "a|b,0.5,0.25,0.75", "c,,,"]
    assert "| a\\|b | +0.50 [+0.25, +0.75] |" in table.markdown()


def test_rows_encode_strings_in_sorted_order():
    rows = Rows.from_columns({"teacher": np.array(["b", "a", "b"]), "x": np.arange(3)})
    assert rows.labels["teacher"] == ("a", "b") and rows["teacher"].tolist() == [1, 0, 1]
    assert rows.is_("teacher", "b").tolist() == [True, False, True] and not rows.is_("teacher", "zz").any()


def test_group_codes_match_numpy_unique_over_rows():
    rng = np.random.default_rng(9)
    a, b = rng.integers(0, 7, 400), rng.random(400) < 0.5
    c = np.array(["x", "y", "z"])[rng.integers(0, 3, 400)]
    big = rng.integers(0, 2**40, 400)  # too sparse for the counting path
    codes, n = stats.group_codes(a, b, c, big % 5 + (big > 2**39) * 10**12)
    key = np.stack([a, b, np.searchsorted(["x", "y", "z"], c), big % 5 + (big > 2**39) * 10**12], 1)
    expected = np.unique(key, axis=0, return_inverse=True)[1].reshape(-1)
    np.testing.assert_array_equal(codes, expected)
    assert n == expected.max() + 1
