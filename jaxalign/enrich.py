"""Targeted-rollout planner (paper Section 2.5, Appendix D): which (node, token) pairs to enrich.

Depth is cut into exponential windows (widths 50, 100, 200, ...). In each window the planner takes
the top-k candidate pairs by |GKD gradient| and the top-r by |P_te - P_θ|, over the union of
teachers, among tokens with P_θ > τ or P_te > τ and fewer than N_min visits. Each chosen pair is
topped up to N_min visits with completions of prefix(node) + token; completions of one prefix
share one prefill (the engine's forking).

Adaptive option (beyond the paper; it generalises VinePPO's confidence-interval stopping). After
the first round of ``adaptive_step`` rollouts per pair, further rounds go only to nodes where the
sign of some teacher's alignment is not settled by the Wilson intervals of the children's P̂_succ,
up to ``adaptive_max`` visits per pair. The GKD·ideal dot product is linear in s, so its extremes
over the interval box are exact. Within an open node only the children that carry a real share
of the interval's width get the next round (:func:`children_to_enrich`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jaxalign.config import BudgetConf
from jaxalign.tree import RolloutTree, wilson_interval


_BUDGET = BudgetConf()  # the one place budget defaults live


@dataclasses.dataclass(frozen=True)
class EnrichConfig:
    """The planner's knobs; each is the :class:`jaxalign.config.BudgetConf` field of the same name
    (:func:`enrich_config`), except ``z``, the interval's normal quantile (95%)."""

    first_window: int = _BUDGET.first_window
    window_growth: float = _BUDGET.window_growth
    top_k: int = _BUDGET.top_k
    top_r: int = _BUDGET.top_r
    tau: float = _BUDGET.tau
    n_min: int = _BUDGET.n_min
    n_sig: int = _BUDGET.n_sig
    adaptive: bool = _BUDGET.adaptive
    adaptive_step: int = _BUDGET.adaptive_step
    adaptive_max: int = _BUDGET.adaptive_max
    adaptive_share: float = _BUDGET.adaptive_share  # a child of an open node gets a round if its share >= this / |S_u|
    z: float = 1.959964


def enrich_config(budget: BudgetConf) -> EnrichConfig:
    """Every planner knob taken from the budget by name; a knob the budget lacks is an error, not a
    silent default."""
    names = [f.name for f in dataclasses.fields(EnrichConfig) if f.name != "z"]
    missing = [n for n in names if not hasattr(budget, n)]
    if missing:
        raise TypeError(f"BudgetConf lacks the planner knobs {missing}; add them to jaxalign.config.BudgetConf")
    return EnrichConfig(**{n: getattr(budget, n) for n in names})


def depth_windows(max_depth: int, first: int = 50, growth: float = 2.0) -> list[tuple[int, int]]:
    """[(lo, hi)) windows covering depths 0..max_depth-1, widths first, first*growth, ..."""
    windows, lo, width = [], 0, float(first)
    while lo < max_depth:
        hi = lo + max(1, int(round(width)))
        windows.append((lo, min(hi, max_depth)))
        lo, width = hi, width * growth
    return windows


@dataclasses.dataclass
class Candidates:
    """Next-token candidates at skeleton nodes, with student and teacher probabilities.

    node, token: [C] int64; p: [C] float64 student probability; q: [T, C] teacher probabilities;
    kl: [T, C] the node's full-vocabulary KL(p‖q_t), repeated per candidate (for the GKD score).
    """

    node: np.ndarray
    token: np.ndarray
    p: np.ndarray
    q: np.ndarray
    kl: np.ndarray

    @classmethod
    def from_distributions(cls, nodes: Sequence[int], p_full: np.ndarray, q_full: np.ndarray, tau: float):
        """nodes [N]; p_full [N, V]; q_full [T, N, V]. Keeps tokens with p > τ or any q > τ."""
        p_full, q_full = np.asarray(p_full, np.float64), np.asarray(q_full, np.float64)
        keep = (p_full > tau) | (q_full > tau).any(0)
        rows, cols = np.nonzero(keep)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(p_full > 0, p_full * (np.log(p_full) - np.log(q_full)), 0.0).sum(-1)  # [T, N]
        return cls(node=np.asarray(nodes)[rows], token=cols.astype(np.int64), p=p_full[rows, cols],
                   q=q_full[:, rows, cols], kl=kl[:, rows])


def plan_window(tree: RolloutTree, cands: Candidates, window: tuple[int, int], cfg: EnrichConfig) -> list[tuple[int, int, int]]:
    """The (node, token, rollouts needed) pairs to enrich in one depth window, sorted by node."""
    depth = tree.node_depth[cands.node]
    visits = tree.visits(cands.node, cands.token)
    eligible = np.flatnonzero((depth >= window[0]) & (depth < window[1]) & (visits < cfg.n_min))
    if len(eligible) == 0:
        return []
    p, q, kl = cands.p[eligible], cands.q[:, eligible], cands.kl[:, eligible]
    with np.errstate(divide="ignore"):
        gkd = np.abs(p * (np.log(p) - np.log(q) - kl)).max(0)
    gap = np.abs(q - p).max(0)
    chosen = set(eligible[np.argsort(-gkd, kind="stable")[: cfg.top_k]].tolist())
    chosen |= set(eligible[np.argsort(-gap, kind="stable")[: cfg.top_r]].tolist())
    return sorted((int(cands.node[i]), int(cands.token[i]), int(cfg.n_min - visits[i])) for i in chosen)


def alignment_dot_coefficients(p_children: np.ndarray, q_children: np.ndarray) -> np.ndarray:
    """c [K] with dot(g_ideal(s), g_gkd) = Σ_j c_j s_j for every s (GKD renormalized over the K children).

    g_ideal_j = p̃_j (s_j - p̃·s) and Σ_j p̃_j (s_j - p̃·s) g_j = Σ_j s_j p̃_j (g_j - p̃·g).
    p_children, q_children: [K] probabilities (any scale; renormalized here).
    """
    pt = p_children / p_children.sum()
    qt = q_children / q_children.sum()
    ell = np.log(pt) - np.log(qt)
    g = -pt * (ell - pt @ ell)
    return pt * (g - pt @ g)


def sign_intervals(p_children: np.ndarray, q_children: np.ndarray, successes: np.ndarray, visits: np.ndarray,
                   z: float = 1.959964) -> tuple[np.ndarray, np.ndarray]:
    """Exact range of dot(g_ideal(s), g_gkd) over the Wilson box of s, per teacher, and each child's share.

    p_children [K], q_children [T, K]: the S_u children's probabilities; successes, visits [K].
    The dot product is Σ_j c_j s_j (:func:`alignment_dot_coefficients`), so its min and max over
    the box are exact. Returns bounds [T, 2] float64 (low, high) and width [T, K] float64, child
    j's part |c_j| (high_j - low_j) of the interval's width.
    """
    low, high = wilson_interval(successes, visits, z)
    q_children = np.atleast_2d(q_children)
    bounds, width = np.zeros((len(q_children), 2)), np.zeros((len(q_children), len(p_children)))
    for t, q in enumerate(q_children):
        c = alignment_dot_coefficients(p_children, q)
        bounds[t] = np.where(c > 0, c * low, c * high).sum(), np.where(c > 0, c * high, c * low).sum()
        width[t] = np.abs(c) * (high - low)
    return bounds, width


def children_to_enrich(p_children: np.ndarray, q_children: np.ndarray, successes: np.ndarray,
                       visits: np.ndarray, cfg: EnrichConfig) -> np.ndarray:
    """The adaptive rule at one node: which S_u children get another round. [K] bool; none = settled.

    p_children [K], q_children [T, K], successes, visits [K] as in :func:`sign_intervals`.
    A teacher is open while the sign of its alignment is not fixed. A child gets a round when, for
    some open teacher, its share of the sign interval's width is at least adaptive_share / K:
    budget goes to the children whose P̂_succ keeps the sign open, not to those known well enough.
    """
    k = len(p_children)
    bounds, width = sign_intervals(p_children, q_children, successes, visits, cfg.z)
    sign_open = (bounds[:, 0] <= 0) & (bounds[:, 1] >= 0)
    share = width[sign_open] / np.maximum(width[sign_open].sum(1, keepdims=True), 1e-300)
    return (share >= cfg.adaptive_share / k).any(0)
