"""The planner's selection rule and the adaptive sign test, against plain NumPy."""

import numpy as np
import pytest

from jaxalign.enrich import (Candidates, EnrichConfig, alignment_dot_coefficients, children_to_enrich, plan_window,
                             sign_intervals)
from jaxalign.tree import RolloutTree, wilson_interval

EOS = 9


def sign_settled(p, q, successes, visits) -> bool:
    """Every teacher's dot-product interval excludes 0."""
    bounds, _ = sign_intervals(p, q, successes, visits)
    return bool(((bounds[:, 0] > 0) | (bounds[:, 1] < 0)).all())


def test_dot_coefficients_reproduce_the_dot_product_for_any_s():
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = int(rng.integers(2, 7))
        p, q = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))
        c = alignment_dot_coefficients(p * 0.3, q * 0.7)  # scale must not matter
        for s in rng.uniform(size=(5, k)):
            ideal = p * (s - p @ s)
            ell = np.log(p) - np.log(q)
            gkd = -p * (ell - p @ ell)
            np.testing.assert_allclose(c @ s, ideal @ gkd, rtol=1e-9, atol=1e-15)


def test_a_settled_sign_holds_everywhere_in_the_interval_box():
    rng = np.random.default_rng(1)
    tree = RolloutTree.from_paths([np.array([0, EOS]), np.array([1, EOS])], [True, False])
    wins = {0: 70, 1: 20, 2: 45}
    for tok, n_win in wins.items():
        tree.add_rollouts(np.full((100, 1), -1), np.zeros(100, int), np.arange(100) < n_win, start=(0, tok))
    tokens = np.array([0, 1, 2])
    counts = tree.edge_counts()
    edges = [tree.edge(0, t) for t in tokens]
    low, high = wilson_interval(counts["successes"][edges], counts["visits"][edges])
    settled_seen = open_seen = 0
    for _ in range(200):
        p, q = rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3))
        c = alignment_dot_coefficients(p, q)
        signs = {np.sign(c @ s) for s in rng.uniform(low, high, size=(300, 3))}
        if sign_settled(p, q[None], counts["successes"][edges], counts["visits"][edges]):
            settled_seen += 1
            assert len(signs) == 1
        else:
            open_seen += 1
    assert settled_seen > 10 and open_seen > 10  # both verdicts occur, so the test has teeth


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_only_children_that_keep_the_sign_open_get_another_round(share):
    rng = np.random.default_rng(2)
    cfg = EnrichConfig(adaptive_share=share)
    chosen_some = settled_some = 0
    for _ in range(300):
        k, t = int(rng.integers(2, 6)), int(rng.integers(1, 4))
        p, q = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k), size=t)
        visits = rng.integers(20, 400, size=k)
        successes = rng.binomial(visits, rng.uniform(size=k))
        low, high = wilson_interval(successes, visits)
        want = np.zeros(k, bool)
        for qt in q:  # plain reference: a teacher is open iff both signs occur at the box's corners
            c = alignment_dot_coefficients(p, qt)
            corners = np.array(np.meshgrid(*[[lo, hi] for lo, hi in zip(low, high)])).reshape(k, -1).T
            dots = corners @ c
            if dots.min() <= 0 <= dots.max():
                width = np.abs(c) * (high - low)
                want |= width / width.sum() >= share / k
        got = children_to_enrich(p, q, successes, visits, cfg)
        np.testing.assert_array_equal(got, want)
        assert sign_settled(p, q, successes, visits) == (not want.any())
        chosen_some += want.any() and not want.all()
        settled_some += not want.any()
    assert chosen_some > 10 and settled_some > 10  # partial choices and settled nodes both occur


def test_plan_takes_top_k_by_gkd_and_top_r_by_gap_among_eligible_pairs():
    tree = RolloutTree.from_paths([np.array([0, 1, EOS])], [True])  # nodes: root (depth 0), [0] (depth 1)
    tree.add_rollouts(np.full((150, 1), -1), np.zeros(150, int), np.ones(150, bool), start=(0, 3))
    nodes = np.array([0, 1])
    p = np.array([[0.40, 0.30, 0.15, 0.10, 0.05, 0.00],
                  [0.50, 0.20, 0.20, 0.05, 0.04, 0.01]])
    q = np.array([[[0.10, 0.30, 0.30, 0.25, 0.04, 0.01],
                   [0.20, 0.20, 0.20, 0.20, 0.19, 0.01]]])
    cands = Candidates.from_distributions(nodes, p, q, tau=0.02)
    assert not ((cands.node == 0) & (cands.token == 5)).any()  # p, q <= tau: never a candidate
    cfg = EnrichConfig(top_k=2, top_r=1, n_min=100, tau=0.02)
    plan = plan_window(tree, cands, (0, 1), cfg)  # depth 0 only: the root
    eligible = [(0, t) for t in range(5) if t != 3]  # token 3 already has 150 >= n_min visits
    with np.errstate(divide="ignore"):
        kl = (p[0] * np.where(p[0] > 0, np.log(p[0] / q[0, 0]), 0)).sum()
    gkd = {t: abs(p[0, t] * (np.log(p[0, t]) - np.log(q[0, 0, t]) - kl)) for _, t in eligible}
    gap = {t: abs(q[0, 0, t] - p[0, t]) for _, t in eligible}
    want = set(sorted(gkd, key=gkd.get, reverse=True)[:2]) | set(sorted(gap, key=gap.get, reverse=True)[:1])
    assert {(u, t) for u, t, _ in plan} == {(0, t) for t in want}
    assert all(u == 0 and need == 100 for u, _, need in plan)
    assert plan_window(tree, cands, (5, 10), cfg) == []
