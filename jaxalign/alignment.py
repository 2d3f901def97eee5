"""Alignment of distillation gradients with the ideal gradient, over padded node batches.

Pure array math, jit-compiled and vmapped over nodes. The public kernel is
:func:`node_alignment` (a public interface, docs/design.md); :func:`algorithm_alignment` runs every
algorithm of :mod:`jaxalign.gradients` on a :class:`NodeBatch`. Aggregates across nodes
(weighted cosine, mean signal) and the full-vocabulary divergence features live here too.

A cosine is undefined where either gradient is the zero vector (|S_u| < 2, an SR range of 0, or a
teacher equal to the student on S_u). Such nodes get ``valid=False`` and ``cosine=NaN``; every other
output is finite. Callers count them with ``(~valid).sum()``.
"""

from __future__ import annotations

import functools
from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp

from jaxalign import gradients as G

Array = jax.Array
# A gradient whose L2 norm is at or below this is treated as zero (float32 round-off level for
# probabilities >= 1e-6). Documented in docs/math.md.
ZERO_NORM = 1e-10
ALGORITHMS = ("gkd", "single_sample", "single_sample_mc", "drgrpo_mc", "minillm_mc", "topk_gkd")


def cosine(a: Array, b: Array) -> tuple[Array, Array]:
    """Cosine of two [..., K] vectors over the last axis -> (cosine [...], valid [...] bool).

    cosine is NaN exactly where valid is False (a norm <= ZERO_NORM).
    """
    na = jnp.linalg.norm(a, axis=-1)
    nb = jnp.linalg.norm(b, axis=-1)
    valid = (na > ZERO_NORM) & (nb > ZERO_NORM)
    value = jnp.sum(a * b, axis=-1) / jnp.where(valid, na * nb, 1.0)
    return jnp.where(valid, jnp.clip(value, -1.0, 1.0), jnp.nan), valid


def _node(p, q, s, mask, kl_full, restrict):
    pt, qt = G.renormalize(p, mask), G.renormalize(q, mask)
    g_ideal = G.ideal(p, s, mask)
    g_distill = G.gkd(p, q, mask, restrict, kl_full)
    s_max = jnp.max(jnp.where(mask, s, -jnp.inf))
    s_min = jnp.min(jnp.where(mask, s, jnp.inf))
    return {
        "g_ideal": g_ideal,
        "g_distill": g_distill,
        "advantage": jnp.sum(jnp.where(mask, (qt - pt) * s, 0.0)),
        "sr_range": jnp.where(jnp.any(mask), s_max - s_min, 0.0),
    }


@functools.partial(jax.jit, static_argnames=("restrict",))
def node_alignment(
    p: Array, q: Array, s: Array, mask: Array, *, restrict: str = "renormalize",
    kl_full: Optional[Array] = None,
) -> dict[str, Array]:
    """GKD alignment of a node batch: cosine of the ideal (2.3) and GKD (2.8) gradients (2.12).

    p, q: [N, K] float32 full-vocabulary student / teacher probabilities at the S_u tokens.
    s: [N, K] float32 success probabilities. mask: [N, K] bool (S_u membership; False = padding).
    kl_full: [N] float32 full-vocabulary KL(p‖q), required for restrict="full".
    Returns cosine [N] (NaN only where valid is False), valid [N] bool, advantage [N] (2.1),
    sr_range [N], g_ideal [N, K], g_distill [N, K].
    """
    if restrict not in G.RESTRICT_MODES:
        raise ValueError(f"restrict={restrict!r}; expected one of {G.RESTRICT_MODES}")
    if restrict == "full" and kl_full is None:
        raise ValueError("restrict='full' needs kl_full, the full-vocabulary KL(p‖q) per node")
    p, q, s = (jnp.asarray(x, jnp.float32) for x in (p, q, s))
    kl = jnp.zeros(p.shape[0], jnp.float32) if kl_full is None else jnp.asarray(kl_full, jnp.float32)
    out = jax.vmap(functools.partial(_node, restrict=restrict))(p, q, s, mask, kl)
    out["cosine"], out["valid"] = cosine(out["g_ideal"], out["g_distill"])
    return out


@flax.struct.dataclass
class NodeBatch:
    """Everything the algorithms need about N nodes, padded to K columns (the children seen).

    p, q, s: [N, K] float32, as in :func:`node_alignment` but over every seen child.
    in_s: [N, K] bool, S_u membership. seen: [N, K] bool, a real child (False = padding).
    kl_full: [N] float32. onp_visits, onp_successes: [N, K] float32 on-policy counts per child.
    baseline: [N] float32, the question's pass rate R̄ (Dr. GRPO's group mean).
    node_success: [N] float32, P̂_u, the node's own on-policy success rate (the paper convention's
    baseline; defaults to 0, set it for that convention).
    js, l2, cos_pq: [N] float32 full-vocabulary features (for users' algorithms; 0 when absent).
    Optional (algorithm skipped when None): return_sum [N, K] (MiniLLM reward-to-go sums over the
    stored rollouts through the node) with rollout_visits [N, K] (how many took each child);
    in_topk [N, K] bool, tail_log_ratio [N], kl_bucket [N] (top-k GKD, see topk_bucket_stats).
    """

    p: Array
    q: Array
    s: Array
    in_s: Array
    seen: Array
    kl_full: Array
    onp_visits: Array
    onp_successes: Array
    baseline: Array
    node_success: Optional[Array] = None
    js: Optional[Array] = None
    l2: Optional[Array] = None
    cos_pq: Optional[Array] = None
    return_sum: Optional[Array] = None
    rollout_visits: Optional[Array] = None
    in_topk: Optional[Array] = None
    tail_log_ratio: Optional[Array] = None
    kl_bucket: Optional[Array] = None


def _node_gradients(b: NodeBatch, restrict: str) -> dict[str, Array]:
    """All algorithms' gradients at one node (fields of ``b`` are per-node slices)."""
    kl = b.kl_full if restrict == "full" else None
    out = {
        "ideal": G.ideal(b.p, b.s, b.in_s),
        "gkd": G.gkd(b.p, b.q, b.in_s, restrict, kl),
        "single_sample": G.single_sample_expected(b.p, b.q, b.in_s, restrict, kl),
        "single_sample_mc": G.single_sample_mc(b.p, b.q, b.onp_visits, b.in_s, b.seen, restrict),
        "drgrpo_mc": G.drgrpo_mc(b.p, b.onp_visits, b.onp_successes, b.baseline, b.in_s, b.seen, restrict),
    }
    if b.return_sum is not None:
        visits = b.onp_visits if b.rollout_visits is None else b.rollout_visits
        out["minillm_mc"] = G.minillm_mc(b.p, visits, b.return_sum, b.in_s, b.seen, restrict)
    if b.in_topk is not None:
        out["topk_gkd"] = G.topk_gkd(b.p, b.q, b.in_s, b.in_topk, b.tail_log_ratio, b.kl_bucket)
    return out


@functools.partial(jax.jit, static_argnames=("restrict",))
def algorithm_alignment(batch: NodeBatch, restrict: str = "renormalize") -> dict[str, dict[str, Array]]:
    """Cosine with the ideal gradient for every algorithm whose inputs are present.

    Returns {algorithm: {"cosine": [N], "valid": [N], "grad": [N, K]}} plus
    {"ideal": {"grad": [N, K]}} and {"node": {"advantage", "sr_range"}} ([N] each).
    """
    grads = jax.vmap(functools.partial(_node_gradients, restrict=restrict))(batch)
    g_ideal = grads.pop("ideal")
    result = {"ideal": {"grad": g_ideal}}
    for name, grad in grads.items():
        cos, valid = cosine(g_ideal, grad)
        result[name] = {"cosine": cos, "valid": valid, "grad": grad}
    base = node_alignment(batch.p, batch.q, batch.s, batch.in_s)
    result["node"] = {"advantage": base["advantage"], "sr_range": base["sr_range"]}
    return result


def weighted_cosine(cos: Array, weight: Array, valid: Array) -> Array:
    """"Weighted cosine": Σ w·cos / Σ w over valid nodes (w = SR range). [N] -> scalar (NaN if Σw=0)."""
    w = jnp.where(valid, weight, 0.0)
    return jnp.sum(w * jnp.where(valid, cos, 0.0)) / jnp.sum(w)


def mean_signal(cos: Array, weight: Array, valid: Array) -> Array:
    """"Mean signal" (paper Table 2): mean of w·cos over valid nodes. [N] -> scalar."""
    return jnp.sum(jnp.where(valid, weight * cos, 0.0)) / jnp.sum(valid)


@jax.jit
def divergences(logp: Array, logq: Array) -> dict[str, Array]:
    """Full-vocabulary student/teacher divergence features per node, for the Spearman analysis.

    logp, logq: [N, V] float32 log-softmax. Returns kl (KL(p‖q)), js (Jensen-Shannon, nats),
    l2 (‖p - q‖₂) and cos (cosine of the probability vectors), each [N] float32.
    """
    p, q = jnp.exp(logp), jnp.exp(logq)
    logm = jnp.log(0.5 * (p + q) + 1e-38)
    return {
        "kl": jnp.sum(p * (logp - logq), -1),
        "js": 0.5 * jnp.sum(p * (logp - logm), -1) + 0.5 * jnp.sum(q * (logq - logm), -1),
        "l2": jnp.linalg.norm(p - q, axis=-1),
        "cos": jnp.sum(p * q, -1) / (jnp.linalg.norm(p, axis=-1) * jnp.linalg.norm(q, axis=-1)),
    }


@functools.partial(jax.jit, static_argnames=("k",))
def topk_bucket_stats(logp: Array, logq: Array, k: int) -> dict[str, Array]:
    """The student's top-k tokens plus one tail bucket, as TRL/verl/SDPO build them.

    logp, logq: [N, V] float32 log-softmax. Returns topk_ids [N, k] int32, tail_log_ratio [N]
    (log p_tail - log q_tail) and kl_bucket [N] (KL over the k + 1 categories).
    """
    _, ids = jax.lax.top_k(logp, k)
    lp, lq = jnp.take_along_axis(logp, ids, -1), jnp.take_along_axis(logq, ids, -1)
    p_tail = jnp.clip(1.0 - jnp.exp(lp).sum(-1), 1e-30, 1.0)
    q_tail = jnp.clip(1.0 - jnp.exp(lq).sum(-1), 1e-30, 1.0)
    tail = jnp.log(p_tail) - jnp.log(q_tail)
    kl = jnp.sum(jnp.exp(lp) * (lp - lq), -1) + p_tail * tail
    return {"topk_ids": ids.astype(jnp.int32), "tail_log_ratio": tail, "kl_bucket": kl}
