"""Token-level training algorithms, compared with the ideal gradient under two conventions.

An *algorithm* is a pure, jit-traceable function of a node batch that returns its logit gradient
over S_u::

    def my_algorithm(batch: NodeBatch, convention: str) -> jax.Array:  # [N, K], 0 off batch.in_s

``batch`` holds, per node and column (the children seen): ``p``, ``q`` (full-vocabulary student and
teacher probabilities), ``s`` (P̂_succ), ``in_s`` (S_u), ``seen``, on-policy counts, and per-node
full-vocabulary features (``kl_full``, ``js``, ``l2``, ``cos_pq``); see
:class:`jaxalign.alignment.NodeBatch`. The sign convention is the logit update a training step
would apply (positive = raise the logit). ``convention`` is the one the row is computed under, so
an algorithm may follow it (the built-ins do) or ignore it.

Built-ins: ``gkd`` (2.8), ``gkd_full`` (GKD with the full-vocabulary KL as baseline, compared with
the renormalised ideal; renormalised convention only), ``single_sample_mc`` (2.9),
``drgrpo_mc`` (2.4), ``minillm_mc`` (2.10; needs the teacher reward-to-go of the stored
rollouts) and ``topk_gkd`` (GKD over the student's top-k tokens plus one tail bucket, as TRL, verl
and SDPO train; k is :func:`jaxalign.pipeline.phase2.score_paths`'s ``topk_k``, default
:data:`jaxalign.config.TOPK_GKD_K`; not in :data:`DEFAULT`, name it to get its rows). A user's algorithm is named by
its import path, ``algorithms=[gkd,my_pkg.mod.my_algo]``, and gets rows like the built-ins. docs/math.md has a worked example (a KL-gated GKD).

Conventions (docs/math.md):
* ``renormalized`` (default): ideal p̃_j (s_j − Σ p̃ s) with p̃ renormalised over S_u; built-ins
  renormalise p and q over S_u (top-k GKD: the same buckets over S_u).
* ``paper``: the paper's literal formulas, restricted to S_u without renormalising: ideal
  p_j (s_j − P̂_u) with P̂_u the node's own on-policy success rate; GKD −p_j (ℓ_j − KL_full);
  top-k GKD −p_j (ℓ_{c(j)} − KL_b) with the vocabulary's buckets.
"""

from __future__ import annotations

import functools
import importlib
from typing import Callable

import jax
import jax.numpy as jnp

from jaxalign import gradients as G
from jaxalign.alignment import NodeBatch, cosine
from jaxalign.config import DEFAULT_ALGORITHMS
from jaxalign.errors import ConfigError

Algorithm = Callable[[NodeBatch, str], jax.Array]
CONVENTIONS = ("renormalized", "paper")
_RESTRICT = {"renormalized": "renormalize", "paper": "full"}


def ideal(batch: NodeBatch, convention: str) -> jax.Array:
    """The ideal gradient (2.3) under ``convention``: [N, K], 0 off S_u."""
    if convention == "renormalized":
        return jax.vmap(G.ideal)(batch.p, batch.s, batch.in_s)
    return jnp.where(batch.in_s, batch.p * (batch.s - batch.node_success[:, None]), 0.0)


def gkd(batch: NodeBatch, convention: str) -> jax.Array:
    restrict = _RESTRICT[convention]
    return jax.vmap(functools.partial(G.gkd, restrict=restrict))(batch.p, batch.q, batch.in_s, kl_full=batch.kl_full)


def gkd_full(batch: NodeBatch, convention: str) -> jax.Array:
    return jax.vmap(functools.partial(G.gkd, restrict="full"))(batch.p, batch.q, batch.in_s, kl_full=batch.kl_full)


def single_sample_mc(batch: NodeBatch, convention: str) -> jax.Array:
    restrict = _RESTRICT[convention]
    return jax.vmap(functools.partial(G.single_sample_mc, restrict=restrict))(
        batch.p, batch.q, batch.onp_visits, batch.in_s, batch.seen)


def drgrpo_mc(batch: NodeBatch, convention: str) -> jax.Array:
    restrict = _RESTRICT[convention]
    return jax.vmap(functools.partial(G.drgrpo_mc, restrict=restrict))(
        batch.p, batch.onp_visits, batch.onp_successes, batch.baseline, batch.in_s, batch.seen)


def topk_gkd(batch: NodeBatch, convention: str) -> jax.Array:
    """Top-k GKD (docs/math.md) from ``in_topk`` and, under ``paper``, the vocabulary's bucket statistics."""
    if convention == "renormalized":
        return jax.vmap(functools.partial(G.topk_gkd, restrict="renormalize"))(batch.p, batch.q, batch.in_s,
                                                                              batch.in_topk)
    return jax.vmap(functools.partial(G.topk_gkd, restrict="full"))(
        batch.p, batch.q, batch.in_s, batch.in_topk, tail_log_ratio=batch.tail_log_ratio, kl_bucket=batch.kl_bucket)


def minillm_mc(batch: NodeBatch, convention: str) -> jax.Array:
    """MiniLLM (2.10) over the stored rollouts through each node (``rollout_visits``, ``return_sum``)."""
    restrict = _RESTRICT[convention]
    return jax.vmap(functools.partial(G.minillm_mc, restrict=restrict))(
        batch.p, batch.rollout_visits, batch.return_sum, batch.in_s, batch.seen)


BUILTIN: dict[str, Algorithm] = {"gkd": gkd, "gkd_full": gkd_full, "single_sample_mc": single_sample_mc,
                                 "drgrpo_mc": drgrpo_mc, "minillm_mc": minillm_mc, "topk_gkd": topk_gkd}
DEFAULT = DEFAULT_ALGORITHMS
# algorithms that are defined under one convention only
ONLY_UNDER = {"gkd_full": "renormalized"}
# built-ins whose inputs are optional NodeBatch fields: left out of a batch that lacks them
NEEDS = {"minillm_mc": ("return_sum",), "topk_gkd": ("in_topk",)}


def resolve(name: str) -> Algorithm:
    """A built-in by name, or a user's function by import path (``pkg.module.function``)."""
    if name in BUILTIN:
        return BUILTIN[name]
    module, _, attr = name.rpartition(".")
    if not module:
        raise ConfigError(f"algorithms: {name!r} is not a built-in ({', '.join(BUILTIN)}) nor an import path "
                          "like my_pkg.module.function")
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"algorithms: cannot import {name!r} ({err}); is its package installed and on "
                          "PYTHONPATH?") from err
    if not callable(found):
        raise ConfigError(f"algorithms: {name!r} is not a function")
    return found


def check(names, conventions) -> None:
    """Raises ConfigError, before any model loads, for an unknown algorithm or convention."""
    if not names:
        raise ConfigError("algorithms: empty; name at least one, e.g. algorithms=[gkd]")
    for name in names:
        resolve(name)
    for convention in conventions:
        if convention not in CONVENTIONS:
            raise ConfigError(f"conventions: {convention!r} is not one of {CONVENTIONS}")
    if not conventions:
        raise ConfigError(f"conventions: empty; name at least one of {CONVENTIONS}")


@functools.partial(jax.jit, static_argnames=("names", "convention"))
def alignments(batch: NodeBatch, names: tuple[str, ...], convention: str) -> dict[str, dict[str, jax.Array]]:
    """Cosine with the ideal gradient for each algorithm in ``names`` under ``convention``.

    Returns {name: {"cosine": [N] (NaN where not valid), "valid": [N] bool, "grad": [N, K]}}.
    Built-ins that need inputs the batch lacks (:data:`NEEDS`: ``minillm_mc`` without ``return_sum``,
    ``topk_gkd`` without ``in_topk``) are left out.
    """
    target = ideal(batch, convention)
    out = {}
    for name in names:
        if any(getattr(batch, field) is None for field in NEEDS.get(name, ())):
            continue
        if ONLY_UNDER.get(name, convention) != convention:
            continue
        grad = jnp.asarray(resolve(name)(batch, convention), jnp.float32)
        grad = jnp.where(batch.in_s, grad, 0.0)
        cos, valid = cosine(target, grad)
        out[name] = {"cosine": cos, "valid": valid, "grad": grad}
    return out
