"""Alignment of distillation gradients with the ideal gradient, over padded node batches.

Pure array math, jit-compiled and vmapped over nodes. The public kernel is
:func:`node_alignment` (a public interface, docs/design.md); :class:`NodeBatch` is what
:func:`jaxalign.algorithms.alignments` runs the registered algorithms on. Aggregates across nodes
(weighted cosine, mean signal), the full-vocabulary divergence features and the top-k bucket
statistics (on-device reductions of [N, V] log-softmaxes) live here too.

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
    in_topk [N, K] bool (the column's token is among the student's top-k over the vocabulary),
    tail_log_ratio [N], kl_bucket [N] (top-k GKD, see :func:`bucket_stats`); Phase 2 fills them
    when ``topk_gkd`` is among the algorithms.
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
def student_topk(logp: Array, k: int) -> tuple[Array, Array]:
    """The student's top-k tokens per row: (ids [N, min(k, V)] int32, mask [N, V] bool).

    logp: [N, V] float32 log-softmax. k >= V takes every token (the tail bucket is then empty).
    """
    _, ids = jax.lax.top_k(logp, min(k, logp.shape[-1]))
    rows = jnp.arange(logp.shape[0])[:, None]
    mask = jnp.zeros(logp.shape, bool).at[rows, ids].set(True)
    return ids.astype(jnp.int32), mask


@jax.jit
def bucket_stats(logp: Array, logq: Array, ids: Array, mask: Array) -> dict[str, Array]:
    """KL over the categories top-k ∪ {tail}, the top-k from :func:`student_topk`.

    logp, logq: [N, V] float32 log-softmax; ids: [N, k] int32 and mask: [N, V] bool, the top-k.
    Returns tail_log_ratio [N] (log P_tail - log Q_tail, 0 where the tail is empty) and
    kl_bucket [N] (Σ_topk p ℓ + P_tail · tail_log_ratio). The tails are log-sum-exps over the
    tokens outside the top-k, not 1 - Σ_topk, so a tail far below float32's 1e-7 keeps its
    relative precision.
    """
    lp, lq = jnp.take_along_axis(logp, ids, -1), jnp.take_along_axis(logq, ids, -1)
    log_p_tail = jax.nn.logsumexp(jnp.where(mask, -jnp.inf, logp), axis=-1)
    log_q_tail = jax.nn.logsumexp(jnp.where(mask, -jnp.inf, logq), axis=-1)
    empty = jnp.all(mask, axis=-1)
    tail = jnp.where(empty, 0.0, log_p_tail - log_q_tail)  # -inf - -inf where empty: not selected
    kl = jnp.sum(jnp.exp(lp) * (lp - lq), -1) + jnp.where(empty, 0.0, jnp.exp(log_p_tail) * tail)
    return {"tail_log_ratio": tail, "kl_bucket": kl}
