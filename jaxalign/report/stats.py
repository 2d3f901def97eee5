"""Statistics for reports: pure numpy/scipy functions over flat arrays, no I/O.

The unit of independence is the question. A question's paths share their prefix nodes, its nodes
share one tree of rollouts, and its teachers share both, so intervals and tests resample or pair
questions, never nodes:

* An interval is a 95% **cluster bootstrap by question** (expanded percentile) of a pooled ratio
  ``sum(num) / sum(den)`` (a mean, a weighted mean, a fraction). Every statistic in the reports is
  such a ratio, so one resampling scheme covers them all. The resampled question counts are a
  [draws, Q] multinomial matrix, so a whole bootstrap is two matrix-vector products.
* Correct against incorrect is tested twice: Welch's t over per-path means (the paper's unit), and
  a Wilcoxon signed-rank test over questions paired on their correct and incorrect means (which
  respects the clustering).
"""

from __future__ import annotations

import dataclasses
import warnings
from functools import lru_cache

import numpy as np
from scipy import stats as sps

from jaxalign.tree import wilson_interval

__all__ = ["Estimate", "bootstrap_counts", "ratio", "ratio_difference", "welch", "paired_wilcoxon",
           "grouped_spearman", "first_occurrence", "node_split", "wilson_interval", "group_codes",
           "CORRECT", "INCORRECT", "SHARED", "DRAWS", "SEED"]

DRAWS = 2000  # bootstrap resamples: the Monte-Carlo error of a 2.5% quantile is then ~0.35 points
SEED = 0  # fixed, so that a report rebuilt from the same files is the same file
CORRECT, INCORRECT, SHARED = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A point estimate with a 95% interval (NaN where undefined) and the questions behind it."""

    value: float
    low: float
    high: float
    questions: int


@lru_cache(maxsize=64)
def bootstrap_counts(n_clusters: int, draws: int = DRAWS, seed: int = SEED) -> np.ndarray:
    """How often each of ``n_clusters`` clusters is drawn in each resample. [draws, n_clusters] float64."""
    rng = np.random.default_rng([seed, n_clusters])
    counts = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=draws).astype(np.float64)
    counts.flags.writeable = False
    return counts


def _dense(key: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes 0..G-1 of a 1-D key in sorted order, and G. Small non-negative ints skip the sort."""
    key = np.asarray(key)
    if key.dtype.kind in "iub" and len(key) and key.min() >= 0 and key.max() < max(4 * len(key), 1 << 20):
        key = key.astype(np.int64)
        present = np.bincount(key) > 0
        rank = np.cumsum(present) - 1
        return rank[key], int(present.sum())
    _, inverse = np.unique(key, return_inverse=True)
    inverse = inverse.reshape(-1)
    return inverse, int(inverse.max(initial=-1)) + 1


def group_codes(*keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense codes 0..G-1 for the distinct tuples of ``keys`` (1-D arrays of one length), in sorted order.

    Returns ([N] int64 codes, G).
    """
    code, size = np.zeros(len(keys[0]), np.int64), 1
    for key in keys:
        inverse, n = _dense(key)
        code, size = code * n + inverse, size * n
    if len(code) == 0:
        return code, 0
    code, n = _dense(code) if size > 1 else (code, 1)
    return code.astype(np.int64), n


def _cluster_sums(values: np.ndarray, clusters: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(clusters, weights=values, minlength=n)


def _interval(boot: np.ndarray, n_clusters: int) -> tuple[float, float]:
    """95% expanded percentile interval of bootstrap replicates from ``n_clusters`` clusters.

    A plain percentile interval is too narrow with few clusters (about 93% coverage at 30
    questions): the bootstrap variance lacks the factor n/(n-1), and a normal quantile stands in
    for a t one. The expanded interval (Hesterberg 2015) takes the percentiles at the tail mass
    whose normal quantile is sqrt(n/(n-1)) t_{n-1, 0.975}: it keeps the percentile interval's
    asymmetry and covers 95% from about 10 questions on (tests/report/test_stats.py).
    """
    boot = boot[np.isfinite(boot)]
    if len(boot) == 0 or n_clusters < 2:
        return float("nan"), float("nan")
    tail = sps.norm.sf(np.sqrt(n_clusters / (n_clusters - 1)) * sps.t.ppf(0.975, n_clusters - 1))
    low, high = np.percentile(boot, [100 * tail, 100 * (1 - tail)])
    return float(low), float(high)


def ratio(num: np.ndarray, den: np.ndarray, cluster: np.ndarray, *, draws: int = DRAWS, seed: int = SEED) -> Estimate:
    """sum(num) / sum(den) over items, with a cluster-bootstrap 95% interval.

    num, den, cluster: [N] (float, float, any int or string label). A plain mean is num = x,
    den = 1; an SR-weighted mean is num = w x, den = w; a fraction is num = (x > 0), den = 1. The
    interval is NaN with fewer than 2 clusters.
    """
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    if len(num) == 0 or den.sum() == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), len(np.unique(cluster)))
    codes, n = group_codes(np.asarray(cluster))
    value = float(num.sum() / den.sum())
    if n < 2:
        return Estimate(value, float("nan"), float("nan"), n)
    counts = bootstrap_counts(n, draws, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (counts @ _cluster_sums(num, codes, n)) / (counts @ _cluster_sums(den, codes, n))
    return Estimate(value, *_interval(boot, n), n)


def ratio_difference(num_a: np.ndarray, den_a: np.ndarray, cluster_a: np.ndarray, num_b: np.ndarray,
                     den_b: np.ndarray, cluster_b: np.ndarray, *, draws: int = DRAWS, seed: int = SEED) -> Estimate:
    """ratio(a) - ratio(b), with both sides resampled by the same draw of clusters (questions hold both)."""
    num_a, den_a, num_b, den_b = (np.asarray(x, np.float64) for x in (num_a, den_a, num_b, den_b))
    if den_a.sum() == 0 or den_b.sum() == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    codes, n = group_codes(np.concatenate([np.asarray(cluster_a), np.asarray(cluster_b)]))
    ca, cb = codes[: len(num_a)], codes[len(num_a):]
    value = float(num_a.sum() / den_a.sum() - num_b.sum() / den_b.sum())
    if n < 2:
        return Estimate(value, float("nan"), float("nan"), n)
    counts = bootstrap_counts(n, draws, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = ((counts @ _cluster_sums(num_a, ca, n)) / (counts @ _cluster_sums(den_a, ca, n))
                - (counts @ _cluster_sums(num_b, cb, n)) / (counts @ _cluster_sums(den_b, cb, n)))
    return Estimate(value, *_interval(boot, n), n)


def welch(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test between samples a [Na] and b [Nb]; NaN if either has < 2."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2 or (a.var() == 0 and b.var() == 0):
        return float("nan")
    with warnings.catch_warnings():  # near-constant samples (cosines of exactly +-1) warn of precision loss
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(sps.ttest_ind(a, b, equal_var=False).pvalue)


def paired_wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test of a - b ([Q] paired values); NaN if < 2 nonzero."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if np.count_nonzero(diff) < 2:
        return float("nan")
    return float(sps.wilcoxon(diff, zero_method="wilcox").pvalue)


def _average_ranks(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` within each group, ties sharing their average rank. [N] float64."""
    order = np.lexsort((values, group))
    v, g = values[order], group[order]
    n = len(v)
    new_group = np.r_[True, g[1:] != g[:-1]]
    new_run = new_group | np.r_[True, v[1:] != v[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    ordinal = np.arange(n) - group_start + 1.0
    run = np.cumsum(new_run) - 1
    average = np.bincount(run, weights=ordinal) / np.bincount(run)
    ranks = np.empty(n)
    ranks[order] = average[run]
    return ranks


def grouped_spearman(x: np.ndarray, y: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Spearman's rho of x and y within each group, as scipy.stats.spearmanr computes it (average ranks).

    x, y: [N] float; group: [N] int codes 0..G-1. Returns [G] float64, NaN for a group with fewer
    than 2 items or a constant x or y. Rows where x or y is not finite must be dropped first.
    """
    x, y, group = np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(group, np.int64)
    groups = int(group.max()) + 1 if len(group) else 0
    rx, ry = _average_ranks(x, group), _average_ranks(y, group)
    size = np.bincount(group, minlength=groups).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = rx - (np.bincount(group, rx, groups) / size)[group]
        dy = ry - (np.bincount(group, ry, groups) / size)[group]
        sxy, sxx, syy = (np.bincount(group, a * b, groups) for a, b in ((dx, dy), (dx, dx), (dy, dy)))
        rho = sxy / np.sqrt(sxx * syy)
    return np.where((size >= 2) & (sxx > 0) & (syy > 0), np.clip(rho, -1.0, 1.0), np.nan)


def first_occurrence(*keys: np.ndarray) -> np.ndarray:
    """[N] bool: True at the first row of each distinct key tuple (a row per node, not per path)."""
    codes, n = group_codes(*keys)
    first = np.zeros(len(codes), bool)
    first[np.unique(codes, return_index=True)[1]] = True
    return first


def node_split(question: np.ndarray, node: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """CORRECT, INCORRECT or SHARED per row: the outcomes of every path that passes the row's node.

    A node lies on several paths when they share a prefix; rows repeat it once per path. A node on
    both a correct and an incorrect path is SHARED. [N] int8.
    """
    codes, n = group_codes(question, node)
    any_correct = np.bincount(codes, weights=np.asarray(correct, np.float64), minlength=n) > 0
    any_wrong = np.bincount(codes, weights=1.0 - np.asarray(correct, np.float64), minlength=n) > 0
    out = np.where(any_correct, CORRECT, INCORRECT).astype(np.int8)
    out[any_correct & any_wrong] = SHARED
    return out[codes]
