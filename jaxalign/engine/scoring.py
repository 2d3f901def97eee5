"""Teacher/student scoring: next-token log-probs at chosen positions, and on-device comparisons.

One forward pass over (prompt + response) per sequence. Only the hidden states at the requested
positions are projected onto the vocabulary; a full [T, 151936] projection is never made.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.alignment import divergences
from jaxalign.engine.sampling import COMPILES, bucket
from jaxalign.errors import ConfigError
from jaxalign.models.config import Qwen3Config
from jaxalign.models.qwen3 import Qwen3Params, forward_hidden, init_cache, logits_from_hidden


@functools.partial(jax.jit, static_argnames=("cfg",))
def logprobs_at(params: Qwen3Params, cfg: Qwen3Config, tokens: jax.Array, start: jax.Array,
                positions: jax.Array) -> jax.Array:
    """log P(token[i + 1] = . | tokens[: i + 1]) at each i in ``positions``.

    tokens: [B, L] int32 left-padded (row b valid from start[b]); positions: [B, M] int32 indices
    into the padded row. Returns [B, M, V] float32 log-softmax.
    """
    COMPILES["score"] += 1
    cache = init_cache(cfg, tokens.shape[0], tokens.shape[1], params.dtype, start)
    pos = jnp.maximum(jnp.arange(tokens.shape[1])[None, :] - start[:, None], 0)
    hidden, _ = forward_hidden(params, cfg, tokens, pos, cache)
    picked = jnp.take_along_axis(hidden, positions[..., None], axis=1)  # [B, M, D]
    return jax.nn.log_softmax(logits_from_hidden(params, picked), axis=-1)


def response_logprobs(params: Qwen3Params, cfg: Qwen3Config, prompt: np.ndarray, response: np.ndarray,
                      positions: np.ndarray) -> jax.Array:
    """log P(. | prompt + response[:pos]) for each pos in ``positions``: [M, V] float32 (on device).

    pos ranges over 0..len(response): pos = 0 is the first response token's distribution.
    Sequence length and M are bucketed to powers of two to bound recompiles.
    """
    prompt = np.asarray(prompt, np.int32).ravel()
    response = np.asarray(response, np.int32).ravel()
    positions = np.asarray(positions, np.int64).ravel()
    if len(prompt) == 0:
        raise ConfigError("scoring needs a non-empty prompt")
    if len(positions) and (positions.min() < 0 or positions.max() > len(response)):
        raise ConfigError(f"positions must lie in [0, {len(response)}], got [{positions.min()}, {positions.max()}]")
    seq = np.concatenate([prompt, response])
    length = bucket(len(seq), 16)
    if length > cfg.max_position_embeddings:
        raise ConfigError(f"prompt + response = {len(seq)} tokens exceeds max_position_embeddings "
                          f"{cfg.max_position_embeddings}")
    tokens = np.zeros((1, length), np.int32)
    tokens[0, length - len(seq):] = seq
    start = length - len(seq)
    m = bucket(len(positions), 8)
    index = np.full((1, m), length - 1, np.int32)
    index[0, : len(positions)] = start + len(prompt) - 1 + positions
    out = logprobs_at(params, cfg, jnp.asarray(tokens), jnp.asarray([start], jnp.int32), jnp.asarray(index))
    return out[0, : len(positions)]


@jax.jit
def compare(logp: jax.Array, logq: jax.Array, ids: jax.Array) -> dict[str, jax.Array]:
    """Student vs teacher at M positions, reduced on device.

    logp, logq: [M, V] float32 log-softmax; ids: [M, K] int token ids to gather (e.g. S_u).
    Returns p_at, q_at [M, K] probabilities at ``ids`` and kl, js, l2, cos [M] over the vocabulary.
    """
    safe = jnp.maximum(ids, 0)
    out = divergences(logp, logq)
    out["p_at"] = jnp.exp(jnp.take_along_axis(logp, safe, axis=-1))
    out["q_at"] = jnp.exp(jnp.take_along_axis(logq, safe, axis=-1))
    return out
