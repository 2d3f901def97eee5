"""Tree estimates and alignment against the exact truth of ExactPolicy."""

import functools

import jax
import numpy as np
import pytest

from jaxalign import gradients as G
from jaxalign.exact import ExactPolicy
from jaxalign.tree import wilson_interval
from tests.exact_helpers import alignment_at, build_tree, enrich, initial_tree

SEEDS = (0, 1, 2, 3)
Z99 = 2.5758


@functools.lru_cache(maxsize=None)
def policy(seed: int) -> ExactPolicy:
    return ExactPolicy(seed=seed)


@functools.lru_cache(maxsize=None)
def built(seed: int):
    return build_tree(policy(seed), seed, n_initial=2000, n_min=100)


def test_exact_p_succ_matches_monte_carlo_at_the_root():
    pol = policy(0)
    batch = pol.sample(None, [np.zeros(0, np.int64)], 4000, pol.max_len, 1.0, jax.random.key(11))
    wins = pol.grade((), batch)
    assert abs(wins.mean() - pol.success_prob(())) < 4 * wins.std() / np.sqrt(len(wins))
    probs = pol.probs(())
    assert np.isclose(probs @ pol.child_success_probs(()), pol.success_prob(()))


def test_success_does_not_depend_on_integer_type():
    """Regression: numpy ints hashed differently from Python ints, giving a sequence two outcomes."""
    pol = policy(0)
    for seq in [(4,), (0, 2, 1, 4), (3, 3, 2, 1, 2, 2, 4)]:
        assert pol.is_success(seq) == pol.is_success(tuple(np.int64(t) for t in seq))
        assert pol.success_prob(seq) == pol.success_prob(np.array(seq))


def test_estimates_lie_in_their_99_percent_interval_of_the_truth():
    covered, total = 0, 0
    for seed in SEEDS[:3]:
        b = built(seed)
        tree, pol = b.tree, b.policy
        counts = tree.edge_counts()
        low, high = wilson_interval(counts["successes"], counts["visits"], Z99)
        exact = np.array([
            pol.success_prob(tuple(tree.prefix(tree.edge_node[e])) + (int(tree.edge_token[e]),))
            for e in range(tree.num_edges)
        ])
        enough = counts["visits"] >= 100
        covered += int(((exact >= low) & (exact <= high))[enough].sum())
        total += int(enough.sum())
    assert total >= 150
    assert covered / total >= 0.97, f"{covered}/{total} = {covered / total:.3f}"


def test_alignment_from_estimates_converges_to_exact_alignment():
    levels = (25, 100, 400)
    errors = {n: [] for n in levels}
    for seed in (0, 1):
        pol = policy(seed)
        teacher = pol.noise_teacher(1.0)  # its cosine is the most sensitive to errors in s
        b = enrich(initial_tree(pol, seed, n_initial=500), levels[0], tau=0.0)
        _, _, nodes, in_s = alignment_at(b, teacher)  # one node set and one S_u for every level
        for r, n_min in enumerate(levels):
            enrich(b, n_min, tau=0.0, round_=r)
            est, valid, _, _ = alignment_at(b, teacher, nodes=nodes, in_s=in_s)
            exact, valid_exact, _, _ = alignment_at(b, teacher, nodes=nodes, in_s=in_s, exact=True)
            errors[n_min].append(np.abs(est - exact)[valid & valid_exact])
    mae = [np.concatenate(errors[n]).mean() for n in levels]
    assert mae[0] > mae[1] > mae[2], mae
    assert mae[2] < 0.6 * mae[0] and mae[2] < 0.08, mae


def _mean_and_halfwidth(values):
    return values.mean(), 1.96 * values.std(ddof=1) / np.sqrt(len(values))


@pytest.mark.parametrize("kind, sign", [("tilt", 1), ("anti", -1), ("noise", 0)])
def test_teachers_of_known_quality(kind, sign):
    cosines = []
    for seed in SEEDS:
        pol = policy(seed)
        teacher = {"tilt": lambda: pol.tilted_teacher(3.0), "anti": lambda: pol.tilted_teacher(-3.0),
                   "noise": lambda: pol.noise_teacher(1.0)}[kind]()
        cos, valid, _, _ = alignment_at(built(seed), teacher)
        cosines.append(cos[valid])
    cosines = np.concatenate(cosines)
    mean, half = _mean_and_halfwidth(cosines)
    assert len(cosines) >= 50
    if sign > 0:
        assert mean - half > 0.5, (mean, half)
    elif sign < 0:
        assert mean + half < -0.5, (mean, half)
    else:
        assert abs(mean) < half and half < 0.25, (mean, half)


def test_monte_carlo_estimators_are_unbiased_at_a_node():
    """E[Dr. GRPO (2.4)] = ideal / σ and E[single-sample (2.9)] = GKD, over real on-policy draws."""
    pol = policy(0)
    teacher = pol.noise_teacher(1.0)
    vocab = pol.vocab_size
    p, q = pol.probs(()), teacher.probs(())
    s = pol.child_success_probs(())
    baseline = pol.success_prob(())
    kl = float(p @ (np.log(p) - np.log(q)))
    everything = np.ones(vocab, bool)
    batches = 60
    grads = {"drgrpo": [], "single": []}
    for i in range(batches):
        draw = pol.sample(None, [np.zeros(0, np.int64)], 200, pol.max_len, 1.0, jax.random.key(100 + i))
        wins = pol.grade((), draw)
        first = draw.tokens[:, 0]
        visits = np.bincount(first, minlength=vocab).astype(float)
        succ = np.bincount(first, weights=wins, minlength=vocab)
        grads["drgrpo"].append(np.asarray(G.drgrpo_mc(p, visits, succ, baseline, everything, everything, "full")))
        grads["single"].append(np.asarray(G.single_sample_mc(p, q, visits, everything, everything, "full")))
    sigma = np.sqrt(baseline * (1 - baseline))
    expected = {
        "drgrpo": np.asarray(G.ideal(p, s, everything)) / sigma,
        "single": np.asarray(G.single_sample_expected(p, q, everything, "full", kl)),
    }
    for name, values in grads.items():
        values = np.stack(values)
        stderr = values.std(0, ddof=1) / np.sqrt(batches)
        assert np.all(np.abs(values.mean(0) - expected[name]) < 4 * stderr + 1e-6), name
        mean = values.mean(0)
        assert mean @ expected[name] / np.linalg.norm(mean) / np.linalg.norm(expected[name]) > 0.98, name


def test_minillm_monte_carlo_matches_its_exact_expectation():
    """E[MiniLLM (2.10, flipped)] = p_j (f_j - f̄), f_k = log q_k - log p_k + E[reward-to-go after k]."""
    pol = policy(1)
    teacher = pol.tilted_teacher(2.0)
    memo: dict = {}
    vocab = pol.vocab_size
    p, q = pol.probs(()), teacher.probs(())
    f = np.log(q) - np.log(p) + np.array([pol.expected_return(teacher, (k,), memo) for k in range(vocab)])
    expected = p * (f - p @ f)
    everything = np.ones(vocab, bool)
    grads = []
    for i in range(40):
        draw = pol.sample(None, [np.zeros(0, np.int64)], 200, pol.max_len, 1.0, jax.random.key(500 + i))
        returns = np.array([
            sum(teacher.logprobs(row[:t])[row[t]] - pol.logprobs(row[:t])[row[t]] for t in range(n))
            for row, n in zip(draw.tokens, draw.lengths)
        ])
        first = draw.tokens[:, 0]
        visits = np.bincount(first, minlength=vocab).astype(float)
        return_sum = np.bincount(first, weights=returns, minlength=vocab)
        grads.append(np.asarray(G.minillm_mc(p, visits, return_sum, everything, everything, "full")))
    grads = np.stack(grads)
    stderr = grads.std(0, ddof=1) / np.sqrt(len(grads))
    assert np.all(np.abs(grads.mean(0) - expected) < 4 * stderr + 1e-6)
