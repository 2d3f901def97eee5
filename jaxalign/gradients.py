"""The P(f - f̄) family of per-node logit gradients (paper eqs. 2.3, 2.4, 2.8-2.10).

Every function here works on ONE node: arrays of shape [K] whose columns are the child tokens seen
at the node, padded, with masks. :mod:`jaxalign.alignment` vmaps them over [N, K] node batches.

Sign convention: every gradient is the direction that INCREASES the objective, i.e. the logit
update a training step would apply (positive = raise logit j). For GKD this is eq. 2.8 with its
sign flipped; for MiniLLM it is eq. 2.10 with its sign flipped (2.10 as printed is the gradient of
a loss). With that convention 2.9, 2.10 truncated to one step, and the flipped 2.8 all agree.

Columns and masks:
  p, q     [K] float32  full-vocabulary student / teacher probabilities of each column's token
  s        [K] float32  estimated success probability after taking the column's token
  in_s     [K] bool     the column is in S_u (visits >= N_sig)
  seen     [K] bool     the column is a real child (False only for padding); S_u ⊆ seen

``restrict`` picks how a full-vocabulary quantity is brought onto S_u:
  "renormalize" (default): p and q renormalized over S_u (p̃, q̃); means and log-ratios taken there.
  "full": full-vocabulary p, q and ℓ̄ = KL_full(p‖q); the resulting vector is restricted to S_u.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
RESTRICT_MODES = ("renormalize", "full")
_TINY = 1e-30


def renormalize(p: Array, mask: Array) -> Array:
    """p restricted to ``mask`` and renormalized to sum 1 there. p, mask: [K] -> [K] (0 off mask)."""
    masked = jnp.where(mask, p, 0.0)
    return masked / jnp.maximum(masked.sum(), _TINY)


def _safe_log(x: Array) -> Array:
    return jnp.log(jnp.maximum(x, _TINY))


def ideal(p: Array, s: Array, in_s: Array) -> Array:
    """Ideal gradient (2.3) on S_u: g_j = p̃_j (s_j - Σ_k p̃_k s_k). [K] -> [K], 0 off S_u.

    p̃ is renormalized over S_u in both restrict modes, because s is known only on S_u.
    """
    pt = renormalize(p, in_s)
    return _centered_on_s(pt, s, in_s)


def _centered_on_s(pt: Array, f: Array, in_s: Array) -> Array:
    """p̃_j (f_j - Σ_k p̃_k f_k) on S_u, computed as p̃_j Σ_k p̃_k (f_j - f_k).

    The pairwise form is the same number, but exactly 0 when f is constant on S_u (an SR range
    of 0, a teacher equal to the student); the plain form leaves float32 round-off of ~1e-8 there,
    which would turn an undefined cosine into noise.
    """
    pairwise = jnp.where(in_s[None, :], f[:, None] - f[None, :], 0.0)  # [K, K]
    return jnp.where(in_s, pt * (pairwise @ pt), 0.0)


def _centered(weight: Array, f: Array, f_mean: Array, in_s: Array) -> Array:
    """weight_j (f_j - f̄) on S_u, 0 elsewhere: the shape every gradient here shares (2.11)."""
    return jnp.where(in_s, weight * (f - f_mean), 0.0)


def gkd(p: Array, q: Array, in_s: Array, restrict: str = "renormalize", kl_full: Array | None = None) -> Array:
    """GKD gradient (2.8), sign flipped: g_j = -p_j (ℓ_j - ℓ̄), ℓ_k = log p_k - log q_k. [K] -> [K].

    renormalize: p, q -> p̃, q̃ over S_u and ℓ̄ = Σ_{S_u} p̃ ℓ. full: ℓ̄ = kl_full (a scalar).
    """
    if restrict == "renormalize":
        pt, qt = renormalize(p, in_s), renormalize(q, in_s)
        return -_centered_on_s(pt, _safe_log(pt) - _safe_log(qt), in_s)
    _check_full(restrict, kl_full)
    return -_centered(p, _safe_log(p) - _safe_log(q), kl_full, in_s)


def single_sample_expected(
    p: Array, q: Array, in_s: Array, restrict: str = "renormalize", kl_full: Array | None = None
) -> Array:
    """Expectation of the single-sample estimator (2.9) under the student's sampling, [K] -> [K].

    E_r[(log q_r - log p_r - 1)(δ_rj - p_j)], computed as that explicit sum (not by reusing
    :func:`gkd`), so that the identity E[2.9] = GKD is a real check. renormalize: r ~ p̃ on S_u.
    full: r ~ p over the whole vocabulary, whose off-S_u part enters through
    Σ_all p_r w_r = -KL_full - 1.
    """
    if restrict == "renormalize":
        pt, qt = renormalize(p, in_s), renormalize(q, in_s)
        weight = _safe_log(qt) - _safe_log(pt) - 1.0
        mean_weight = jnp.sum(jnp.where(in_s, pt * weight, 0.0))
        return jnp.where(in_s, pt * weight - pt * mean_weight, 0.0)
    _check_full(restrict, kl_full)
    weight = _safe_log(q) - _safe_log(p) - 1.0
    return jnp.where(in_s, p * weight - p * (-kl_full - 1.0), 0.0)


def _sampled_estimator(
    p: Array, per_sample_sum: Array, visits: Array, in_s: Array, seen: Array, restrict: str
) -> Array:
    """(1/n) Σ_i f_i (δ_{r_i j} - p_j) from per-child aggregates, the Monte-Carlo shape of 2.4/2.9/2.10.

    per_sample_sum[k] = Σ over on-policy samples that took child k of f_i; visits[k] = how many.
    renormalize: only samples at S_u children count, baseline p̃. full: every seen child, baseline p.
    """
    pool = in_s if restrict == "renormalize" else seen
    base = renormalize(p, in_s) if restrict == "renormalize" else p
    n = jnp.sum(jnp.where(pool, visits, 0.0))
    total = jnp.sum(jnp.where(pool, per_sample_sum, 0.0))
    grad = jnp.where(in_s, per_sample_sum - base * total, 0.0)
    return grad / jnp.maximum(n, 1.0)


def single_sample_mc(
    p: Array, q: Array, onp_visits: Array, in_s: Array, seen: Array, restrict: str = "renormalize"
) -> Array:
    """Single-sample estimator (2.9) averaged over the real on-policy rollouts at the node. [K] -> [K].

    Its per-sample weight depends only on the sampled token, so per child: Σ_i w_i = n_k w_k.
    """
    if restrict == "renormalize":
        weight = _safe_log(renormalize(q, in_s)) - _safe_log(renormalize(p, in_s)) - 1.0
    else:
        weight = _safe_log(q) - _safe_log(p) - 1.0
    return _sampled_estimator(p, onp_visits * weight, onp_visits, in_s, seen, restrict)


def drgrpo_mc(
    p: Array, onp_visits: Array, onp_successes: Array, baseline: Array, in_s: Array, seen: Array,
    restrict: str = "renormalize",
) -> Array:
    """Dr. GRPO per-node estimator (2.4) from on-policy counts. [K] -> [K].

    A_i = (R_i - R̄)/std(R) with binary R, so Σ_{i: r_i = k} A_i = (successes_k - n_k R̄)/σ. The
    group statistics R̄ (``baseline``, a scalar: the question's pass rate) and σ = sqrt(R̄(1-R̄))
    are batch-level constants; σ only scales the vector and is applied for fidelity.
    """
    sigma = jnp.sqrt(jnp.maximum(baseline * (1.0 - baseline), _TINY))
    return _sampled_estimator(p, (onp_successes - onp_visits * baseline) / sigma, onp_visits, in_s, seen, restrict)


def minillm_mc(
    p: Array, onp_visits: Array, return_sum: Array, in_s: Array, seen: Array, restrict: str = "renormalize"
) -> Array:
    """MiniLLM (2.10), sign flipped, from on-policy rollouts through the node. [K] -> [K].

    return_sum[k] = Σ over on-policy rollouts that took k of their reward-to-go from this node,
    Σ_{t'≥t} (log q(o_t') - log p(o_t')), the token at the node included. Per sample the weight is
    (reward-to-go - 1); the -1 only shifts f̄ and cancels in expectation, kept for fidelity.
    """
    return _sampled_estimator(p, return_sum - onp_visits, onp_visits, in_s, seen, restrict)


def topk_gkd(p: Array, q: Array, in_s: Array, in_topk: Array, restrict: str = "renormalize",
             tail_log_ratio: Array | None = None, kl_bucket: Array | None = None) -> Array:
    """GKD over the student's top-k tokens plus one tail bucket (TRL/verl/SDPO style), sign flipped.

    With categories C = top-k ∪ {tail}, KL_b = Σ_c P_c log(P_c/Q_c) and for every token j
    dKL_b/dz_j = p_j (ℓ_{c(j)} - KL_b), where c(j) is j's category: its own log-ratio inside the
    top-k, the bucket's log(P_tail/Q_tail) outside. [K] -> [K] on S_u; ``in_topk`` [K] bool marks the
    columns among the student's top-k over the full vocabulary.

    full: the vocabulary's buckets; ``tail_log_ratio`` and ``kl_bucket`` are scalars computed on the
    full vocabulary (:func:`jaxalign.alignment.bucket_stats`). renormalize: the same buckets over
    S_u with p̃, q̃ (S_u ∩ top-k one category each, S_u outside the top-k one tail), so it needs
    no full-vocabulary statistic. With every column in the top-k both equal :func:`gkd`.
    """
    if restrict == "renormalize":
        pt, qt = renormalize(p, in_s), renormalize(q, in_s)
        tail = in_s & ~in_topk
        tail_ratio = _safe_log(jnp.sum(jnp.where(tail, pt, 0.0))) - _safe_log(jnp.sum(jnp.where(tail, qt, 0.0)))
        log_ratio = jnp.where(in_topk, _safe_log(pt) - _safe_log(qt), tail_ratio)
        return -_centered_on_s(pt, log_ratio, in_s)
    if restrict != "full":
        raise ValueError(f"restrict={restrict!r}; expected one of {RESTRICT_MODES}")
    if tail_log_ratio is None or kl_bucket is None:
        raise ValueError("restrict='full' needs tail_log_ratio and kl_bucket, the full-vocabulary bucket statistics")
    log_ratio = jnp.where(in_topk, _safe_log(p) - _safe_log(q), tail_log_ratio)
    return -_centered(p, log_ratio, kl_bucket, in_s)


def _check_full(restrict: str, kl_full) -> None:
    if restrict != "full":
        raise ValueError(f"restrict={restrict!r}; expected one of {RESTRICT_MODES}")
    if kl_full is None:
        raise ValueError("restrict='full' needs kl_full, the full-vocabulary KL(p‖q) per node")
