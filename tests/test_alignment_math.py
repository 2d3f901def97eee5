"""The alignment kernel against a plain NumPy per-node reference, plus the exact identities.

The reference does not reuse the closed forms of jaxalign.gradients: it builds each gradient from
the softmax Jacobian J_kj = p_k(δ_kj - p_j) over the FULL vocabulary in float64 (or, for top-k,
from central finite differences of the loss), then restricts to S_u.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxalign import gradients as G
from jaxalign.algorithms import alignments
from jaxalign.alignment import (
    NodeBatch,
    divergences,
    mean_signal,
    node_alignment,
    weighted_cosine,
)

from tests.test_topk_gkd import topk_bucket_stats

RTOL, ATOL = 1e-4, 1e-6


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def jacobian(p):
    """d p_k / d z_j = p_k (δ_kj - p_j), as a [k, j] matrix."""
    return np.diag(p) - np.outer(p, p)


def ref_node(z_p, z_q, s, in_s, restrict):
    """Reference ideal and GKD gradients at one node. z_p, z_q: [V] logits; S_u = first K columns."""
    k = len(s)
    idx = np.flatnonzero(in_s)
    out = {"ideal": np.zeros(k), "gkd": np.zeros(k), "adv": 0.0, "sr": 0.0}
    if len(idx) == 0:
        return out
    # ideal: L(z_S) = Σ softmax(z_S)_k s_k, gradient J^T s (renormalized over S_u in both modes)
    pt = softmax(z_p[idx])
    out["ideal"][idx] = jacobian(pt).T @ s[idx]
    qt = softmax(z_q[idx])
    out["adv"] = float(qt @ s[idx] - pt @ s[idx])
    out["sr"] = float(s[idx].max() - s[idx].min())
    if restrict == "renormalize":
        # KL(p̃‖q̃) as a function of z_S; q̃ is constant: dKL = J^T ℓ + J^T 1 (the second term is 0)
        ell = np.log(pt) - np.log(qt)
        out["gkd"][idx] = -(jacobian(pt).T @ ell + jacobian(pt).T @ np.ones(len(idx)))
    else:
        p, q = softmax(z_p), softmax(z_q)
        ell = np.log(p) - np.log(q)
        out["gkd"][idx] = -(jacobian(p).T @ ell)[idx]
    return out


def ref_cosine(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return (a @ b / (na * nb), True) if na > 1e-10 and nb > 1e-10 else (np.nan, False)


@st.composite
def node_batches(draw):
    n = draw(st.integers(1, 6))
    k = draw(st.integers(1, 6))
    extra = draw(st.integers(0, 5))  # vocabulary tokens outside the K columns
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.5, 2.0, 4.0]))
    rng = np.random.default_rng(seed)
    z_p = rng.normal(size=(n, k + extra)) * scale
    z_q = z_p + rng.normal(size=(n, k + extra)) * draw(st.sampled_from([0.0, 0.3, 1.5]))
    s = rng.uniform(size=(n, k))
    if draw(st.booleans()):
        s = np.round(s * 3) / 3  # ties, and nodes with SR range 0
    in_s = rng.uniform(size=(n, k)) < draw(st.sampled_from([0.5, 0.9, 1.0]))
    return z_p, z_q, s, in_s


@settings(max_examples=60, deadline=None)
@given(node_batches(), st.sampled_from(["renormalize", "full"]))
def test_kernel_matches_numpy_reference(batch, restrict):
    z_p, z_q, s, in_s = batch
    n, k = s.shape
    p_full = np.stack([softmax(z) for z in z_p])
    q_full = np.stack([softmax(z) for z in z_q])
    kl_full = (p_full * (np.log(p_full) - np.log(q_full))).sum(-1)
    out = node_alignment(p_full[:, :k], q_full[:, :k], s, in_s, restrict=restrict, kl_full=kl_full)
    out = {key: np.asarray(v) for key, v in out.items()}
    for i in range(n):
        ref = ref_node(z_p[i], z_q[i], s[i], in_s[i], restrict)
        np.testing.assert_allclose(out["g_ideal"][i], ref["ideal"], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(out["g_distill"][i], ref["gkd"], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(out["advantage"][i], ref["adv"], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(out["sr_range"][i], ref["sr"], rtol=RTOL, atol=ATOL)
        cos, valid = ref_cosine(ref["ideal"], ref["gkd"])
        norms = np.linalg.norm(ref["ideal"]), np.linalg.norm(ref["gkd"])
        if min(norms) > 1e-5:  # away from the zero-norm threshold, float32 must agree
            assert out["valid"][i]
            np.testing.assert_allclose(out["cosine"][i], cos, atol=2e-3)
        if not valid and max(norms) == 0.0:
            assert not out["valid"][i]
    assert np.isnan(out["cosine"][~out["valid"]]).all()
    assert np.isfinite(out["cosine"][out["valid"]]).all()
    for key in ("advantage", "sr_range", "g_ideal", "g_distill"):
        assert np.isfinite(out[key]).all()


def _samples_from_counts(rng, p_row, s_row, seen, n_samples):
    """On-policy samples at one node: tokens r_i ~ p over seen columns, outcomes ~ Bernoulli(s)."""
    probs = np.where(seen, p_row, 0.0)
    tokens = rng.choice(len(p_row), size=n_samples, p=probs / probs.sum())
    outcomes = (rng.uniform(size=n_samples) < s_row[tokens]).astype(float)
    returns = rng.normal(size=n_samples)  # MiniLLM reward-to-go per sample, arbitrary here
    return tokens, outcomes, returns


@pytest.mark.parametrize("restrict", ["renormalize", "full"])
def test_monte_carlo_estimators_match_per_sample_loops(restrict):
    """The registered algorithms (jaxalign.algorithms.alignments) against per-sample loops; the
    renormalized convention uses restrict="renormalize", the paper convention restrict="full"."""
    rng = np.random.default_rng(0)
    n, k = 7, 5
    p = rng.dirichlet(np.ones(k + 2), size=n)[:, :k]
    q = rng.dirichlet(np.ones(k + 2), size=n)[:, :k]
    s = rng.uniform(size=(n, k))
    seen = np.ones((n, k), bool)
    seen[0, 3:] = False
    in_s = seen & (rng.uniform(size=(n, k)) < 0.8)
    baseline = rng.uniform(0.2, 0.8, size=n)
    visits, succ, ret_sum = (np.zeros((n, k)) for _ in range(3))
    ref = {name: np.zeros((n, k)) for name in ("ss", "gr", "mini")}
    for i in range(n):
        tokens, outcomes, returns = _samples_from_counts(rng, p[i], s[i], seen[i], 40)
        np.add.at(visits[i], tokens, 1)
        np.add.at(succ[i], tokens, outcomes)
        np.add.at(ret_sum[i], tokens, returns)
        pool = in_s[i] if restrict == "renormalize" else seen[i]
        base = p[i] * in_s[i] / (p[i] * in_s[i]).sum() if restrict == "renormalize" else p[i]
        qq = q[i] * in_s[i] / (q[i] * in_s[i]).sum() if restrict == "renormalize" else q[i]
        keep = pool[tokens]
        sigma = np.sqrt(baseline[i] * (1 - baseline[i]))
        for r, outcome, g_return in zip(tokens[keep], outcomes[keep], returns[keep]):
            onehot = np.eye(k)[r]
            ref["ss"][i] += (np.log(qq[r]) - np.log(base[r]) - 1) * (onehot - base)
            ref["gr"][i] += (outcome - baseline[i]) / sigma * (onehot - base)
            ref["mini"][i] += (g_return - 1) * (onehot - base)
        for name in ref:
            ref[name][i] = np.where(in_s[i], ref[name][i] / max(keep.sum(), 1), 0.0)
    batch = NodeBatch(p=p, q=q, s=s, in_s=in_s, seen=seen, kl_full=np.zeros(n), onp_visits=visits,
                      onp_successes=succ, baseline=baseline, node_success=rng.uniform(size=n), return_sum=ret_sum,
                      rollout_visits=visits)
    convention = "paper" if restrict == "full" else "renormalized"
    out = alignments(batch, ("single_sample_mc", "drgrpo_mc", "minillm_mc"), convention)
    np.testing.assert_allclose(out["single_sample_mc"]["grad"], ref["ss"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["drgrpo_mc"]["grad"], ref["gr"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["minillm_mc"]["grad"], ref["mini"], rtol=1e-4, atol=1e-6)


def test_topk_gkd_matches_finite_differences_of_the_bucketed_kl():
    rng = np.random.default_rng(1)
    vocab, topk = 12, 4
    z_p, z_q = rng.normal(size=vocab) * 2, rng.normal(size=vocab) * 2
    logp = np.log(softmax(z_p))
    logq = np.log(softmax(z_q))
    stats = {k: np.asarray(v) for k, v in topk_bucket_stats(logp[None], logq[None], topk).items()}
    ids = stats["topk_ids"][0]

    def bucket_kl(z):
        p = softmax(z)
        tail = np.setdiff1d(np.arange(vocab), ids)
        pc = np.append(p[ids], p[tail].sum())
        qc = np.append(np.exp(logq[ids]), np.exp(logq[tail]).sum())
        return float(pc @ (np.log(pc) - np.log(qc)))

    eps = 1e-5
    fd = np.array([(bucket_kl(z_p + eps * np.eye(vocab)[j]) - bucket_kl(z_p - eps * np.eye(vocab)[j])) / (2 * eps)
                   for j in range(vocab)])
    assert abs(stats["kl_bucket"][0] - bucket_kl(z_p)) < 1e-5
    columns = np.array([ids[0], ids[2], np.setdiff1d(np.arange(vocab), ids)[0], np.setdiff1d(np.arange(vocab), ids)[3]])
    in_topk = np.isin(columns, ids)
    got = G.topk_gkd(jnp.exp(logp[columns]), jnp.exp(logq[columns]), jnp.ones(4, bool), jnp.asarray(in_topk),
                     "full", tail_log_ratio=stats["tail_log_ratio"][0], kl_bucket=stats["kl_bucket"][0])
    np.testing.assert_allclose(np.asarray(got), -fd[columns], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("restrict", ["renormalize", "full"])
def test_single_sample_expectation_equals_gkd(restrict):
    rng = np.random.default_rng(2)
    z_p, z_q = rng.normal(size=(50, 9)), rng.normal(size=(50, 9))
    p = np.exp(z_p) / np.exp(z_p).sum(-1, keepdims=True)
    q = np.exp(z_q) / np.exp(z_q).sum(-1, keepdims=True)
    kl = (p * np.log(p / q)).sum(-1)
    in_s = rng.uniform(size=(50, 6)) < 0.7
    for i in range(50):
        args = (p[i, :6], q[i, :6], in_s[i], restrict, kl[i] if restrict == "full" else None)
        np.testing.assert_allclose(np.asarray(G.single_sample_expected(*args)), np.asarray(G.gkd(*args)),
                                   rtol=1e-5, atol=1e-7)


def test_cosine_of_ideal_with_itself_is_one():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(5), size=20)
    s = rng.uniform(size=(20, 5))
    mask = np.ones((20, 5), bool)
    g = np.asarray(node_alignment(p, p, s, mask)["g_ideal"])
    from jaxalign.alignment import cosine

    cos, valid = cosine(g, g)
    assert np.asarray(valid).all()
    np.testing.assert_allclose(np.asarray(cos), 1.0, atol=1e-6)


def test_teacher_equal_to_student_is_skipped_and_counted():
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(4), size=8).astype(np.float32)
    s = rng.uniform(size=(8, 4))
    mask = np.ones((8, 4), bool)
    q = p.copy()
    q[:3] = rng.dirichlet(np.ones(4), size=3)  # three nodes with a real teacher
    for restrict in ("renormalize", "full"):
        kl = (p * np.log(p / q)).sum(-1)
        out = node_alignment(p, q, s, mask, restrict=restrict, kl_full=kl)
        assert np.all(np.asarray(out["g_distill"])[3:] == 0.0)
        valid = np.asarray(out["valid"])
        assert valid[:3].all() and int((~valid).sum()) == 5
        assert np.isnan(np.asarray(out["cosine"])[3:]).all()


def test_degenerate_nodes_never_give_nan_where_valid():
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.2, 0.3, 0.5], [0.9, 0.05, 0.05]], np.float32)
    q = np.array([[0.1, 0.9, 0.0], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], np.float32)
    s = np.array([[1.0, 0.0, 0.5], [0.4, 0.4, 0.4], [0.1, 0.9, 0.5], [0.0, 0.0, 0.0]], np.float32)
    mask = np.array([[False, False, False], [True, True, True], [True, False, False], [True, True, False]])
    out = {k: np.asarray(v) for k, v in node_alignment(p, q, s, mask).items()}
    # empty S_u, SR range 0, |S_u| = 1, all-failure: all undefined
    assert not out["valid"].any()
    assert np.isnan(out["cosine"]).all()
    for key in ("advantage", "sr_range", "g_ideal", "g_distill"):
        assert np.isfinite(out[key]).all()


def test_aggregates_and_divergences_match_numpy():
    rng = np.random.default_rng(5)
    cos = rng.uniform(-1, 1, 10)
    w = rng.uniform(0, 1, 10)
    valid = rng.uniform(size=10) < 0.7
    cos_nan = np.where(valid, cos, np.nan)
    np.testing.assert_allclose(weighted_cosine(cos_nan, w, valid), (w * cos)[valid].sum() / w[valid].sum(), rtol=1e-5)
    np.testing.assert_allclose(mean_signal(cos_nan, w, valid), (w * cos)[valid].mean(), rtol=1e-5)
    logits = rng.normal(size=(2, 3, 30))
    logp = logits[0] - np.log(np.exp(logits[0]).sum(-1, keepdims=True))
    logq = logits[1] - np.log(np.exp(logits[1]).sum(-1, keepdims=True))
    p, q = np.exp(logp), np.exp(logq)
    m = (p + q) / 2
    got = {k: np.asarray(v) for k, v in divergences(logp, logq).items()}
    np.testing.assert_allclose(got["kl"], (p * (logp - logq)).sum(-1), rtol=1e-4)
    np.testing.assert_allclose(got["js"], 0.5 * (p * np.log(p / m)).sum(-1) + 0.5 * (q * np.log(q / m)).sum(-1), rtol=1e-4)
    np.testing.assert_allclose(got["l2"], np.linalg.norm(p - q, axis=-1), rtol=1e-4)
    np.testing.assert_allclose(got["cos"], (p * q).sum(-1) / np.linalg.norm(p, axis=-1) / np.linalg.norm(q, axis=-1), rtol=1e-4)


def test_bad_restrict_is_rejected():
    with pytest.raises(ValueError, match="restrict"):
        node_alignment(np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2), bool), restrict="both")
    with pytest.raises(ValueError, match="kl_full"):
        node_alignment(np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2), bool), restrict="full")


def test_a_two_child_node_gives_plus_or_minus_one_under_every_zero_sum_convention():
    """|S_u| = 2: zero-sum vectors in two dimensions are ±(1, -1), so renormalised cosines are a sign test;
    the paper convention's ideal p_j (s_j - P̂_u) is not zero-sum and grades."""
    rng = np.random.default_rng(11)
    n, k = 64, 4
    p = rng.dirichlet(np.ones(8), size=n)[:, :k]
    q = rng.dirichlet(np.ones(8), size=n)[:, :k]
    in_s = np.zeros((n, k), bool)
    in_s[:, :2] = True
    batch = NodeBatch(p=p, q=q, s=rng.uniform(size=(n, k)), in_s=in_s, seen=np.ones((n, k), bool),
                      kl_full=np.full(n, 0.3), onp_visits=np.full((n, k), 30.0), onp_successes=np.full((n, k), 9.0),
                      baseline=np.full(n, 0.4), node_success=rng.uniform(size=n))
    names = ("gkd", "single_sample_mc", "drgrpo_mc")
    renorm = alignments(batch, names, "renormalized")
    for name in names:
        cos = np.asarray(renorm[name]["cosine"])[np.asarray(renorm[name]["valid"])]
        assert len(cos) > n // 2
        np.testing.assert_allclose(np.abs(cos), 1.0, atol=1e-5)
    paper = alignments(batch, ("gkd",), "paper")["gkd"]
    assert np.mean(np.abs(np.asarray(paper["cosine"])) < 0.99) > 0.5


def test_paper_convention_gradients_and_cosines_equal_numpy():
    """The paper-literal convention (jaxalign.algorithms): ideal p_j (s_j - P̂_u) and GKD
    -p_j (log p_j - log q_j - KL_full), both on S_u and not renormalised, against plain NumPy; the
    renormalised convention's GKD equals node_alignment, the kernel tested against the Jacobian
    reference above."""
    rng = np.random.default_rng(12)
    n, k = 32, 6
    p = rng.dirichlet(np.ones(20), size=n)[:, :k]
    q = rng.dirichlet(np.ones(20), size=n)[:, :k]
    s = rng.uniform(size=(n, k))
    in_s = rng.uniform(size=(n, k)) < 0.7
    in_s[:, :2] = True
    kl_full = rng.uniform(0.01, 1.0, size=n)
    node_success = rng.uniform(size=n)
    visits = rng.integers(1, 40, size=(n, k)).astype(float)
    batch = NodeBatch(p=p, q=q, s=s, in_s=in_s, seen=np.ones((n, k), bool), kl_full=kl_full, onp_visits=visits,
                      onp_successes=np.floor(visits * s), baseline=np.full(n, 0.4), node_success=node_success)
    got = alignments(batch, ("gkd",), "paper")["gkd"]
    ideal = np.where(in_s, p * (s - node_success[:, None]), 0.0)
    gkd = np.where(in_s, -p * (np.log(p) - np.log(q) - kl_full[:, None]), 0.0)
    np.testing.assert_allclose(np.asarray(got["grad"]), gkd, rtol=1e-4, atol=1e-7)
    want = (ideal * gkd).sum(1) / (np.linalg.norm(ideal, axis=1) * np.linalg.norm(gkd, axis=1))
    np.testing.assert_allclose(np.asarray(got["cosine"]), want, rtol=1e-4, atol=1e-5)

    renorm = alignments(batch, ("gkd",), "renormalized")["gkd"]
    reference = node_alignment(p, q, s, in_s)
    np.testing.assert_allclose(np.asarray(renorm["grad"]), np.asarray(reference["g_distill"]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(renorm["cosine"]), np.asarray(reference["cosine"]), rtol=1e-5, atol=1e-6)
