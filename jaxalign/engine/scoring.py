"""Teacher/student scoring: next-token log-probs at chosen positions, and on-device reductions.

Two ways to score a path, with the same numbers:

* :func:`response_logprobs` (the reference): one forward pass over prompt + response, then
  [M, V] log-probs at the M requested positions. Its attention holds [T, T] scores per head and
  its output is [M, V]: fine for short paths, but an 8K-token path at V = 151,936 is 5 GB.
* :func:`path_hidden` + :func:`chunk_logprobs` (the pipeline's path): a chunked prefill into the
  KV cache, ``prefill_chunk`` tokens at a time, keeps only the final hidden states [S, D]; each
  chunk of positions is then projected to [C, V] on the device and reduced there
  (:func:`candidate_tokens`, :func:`compare`) to a few numbers per position. No step holds more
  than one chunk of logits, and nothing of size V reaches the host.
"""

from __future__ import annotations

import functools
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.alignment import divergences
from jaxalign.engine.sampling import COMPILES, bucket, coarse_bucket
from jaxalign.errors import ConfigError
from jaxalign.models.config import Qwen3Config
from jaxalign.models.qwen3 import Qwen3Params, SharedPrefix, forward_hidden, init_cache, logits_from_hidden

DEFAULT_PREFILL_CHUNK = 256
DEFAULT_SCORE_CHUNK = 64


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


@functools.partial(jax.jit, static_argnames=("cfg", "chunk"))
def _prefill_hidden(params: Qwen3Params, cfg: Qwen3Config, tokens: jax.Array, length: jax.Array, *,
                    chunk: int) -> jax.Array:
    """Final hidden states of a right-padded sequence, prefilled ``chunk`` tokens at a time.

    tokens: [S] int32 (S a multiple of chunk), valid in [:length]; length: [] int32.
    Returns [S, D] in the params dtype; rows at or past ``length`` are meaningless.
    Each step attends C queries to the S-slot cache, so attention scores stay [C, S] per head
    instead of [S, S]; only ceil(length / chunk) steps run.
    """
    COMPILES["prefill"] += 1
    size = tokens.shape[0]
    cache = init_cache(cfg, 1, size, params.dtype)
    hidden = jnp.zeros((size, cfg.hidden_size), params.dtype)

    def step(i, carry):
        cache, hidden = carry
        first = i * chunk
        piece = jax.lax.dynamic_slice_in_dim(tokens, first, chunk)[None]
        positions = (first + jnp.arange(chunk, dtype=jnp.int32))[None]
        out, cache = forward_hidden(params, cfg, piece, positions, cache)
        return cache, jax.lax.dynamic_update_slice_in_dim(hidden, out[0], first, axis=0)

    _, hidden = jax.lax.fori_loop(0, (length + chunk - 1) // chunk, step, (cache, hidden))
    return hidden


def path_hidden(params: Qwen3Params, cfg: Qwen3Config, prompt: np.ndarray, response: np.ndarray,
                prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> tuple[jax.Array, int]:
    """Hidden states of prompt + response on the device, and the offset of response position 0.

    Returns (hidden [S, D] params dtype, offset): the distribution before response token ``pos``
    comes from hidden[offset + pos]. S is len(prompt + response) rounded up to a whole number
    of at most three significant bits (4, 5, 6, 7, 8, 10, 12, 14, 16, ... chunks): compiles stay
    bounded across lengths (four sizes per doubling) and the KV cache wastes at most a quarter.
    """
    prompt = np.asarray(prompt, np.int32).ravel()
    response = np.asarray(response, np.int32).ravel()
    if len(prompt) == 0:
        raise ConfigError("scoring needs a non-empty prompt")
    if prefill_chunk < 1 or prefill_chunk & (prefill_chunk - 1):
        raise ConfigError(f"prefill_chunk must be a power of two, got {prefill_chunk}")
    seq = np.concatenate([prompt, response])
    if len(seq) > cfg.max_position_embeddings:
        raise ConfigError(f"prompt + response = {len(seq)} tokens exceeds max_position_embeddings "
                          f"{cfg.max_position_embeddings}")
    chunk = min(prefill_chunk, bucket(len(seq), 16))
    size = chunk * coarse_bucket(-(-len(seq) // chunk))
    tokens = np.zeros(size, np.int32)
    tokens[: len(seq)] = seq
    return _prefill_hidden(params, cfg, jnp.asarray(tokens), jnp.int32(len(seq)), chunk=chunk), len(prompt) - 1


@jax.jit
def _project(params: Qwen3Params, hidden: jax.Array, index: jax.Array) -> jax.Array:
    """log-softmax of the logits at hidden[index]. hidden: [S, D]; index: [C] int32 -> [C, V] float32."""
    return jax.nn.log_softmax(logits_from_hidden(params, hidden[index]), axis=-1)


def chunk_logprobs(params: Qwen3Params, hidden: jax.Array, offset: int, positions: np.ndarray,
                   chunk: int = DEFAULT_SCORE_CHUNK) -> Iterator[jax.Array]:
    """log P(. | prompt + response[:pos]) for ``positions``, ``chunk`` positions at a time.

    hidden, offset: from :func:`path_hidden`. Yields [chunk, V] float32 device arrays; the last is
    padded by repeating the last position (callers slice it off).
    """
    positions = np.asarray(positions, np.int64).ravel()
    limit = hidden.shape[0] - offset - 1
    if len(positions) and (positions.min() < 0 or positions.max() > limit):
        raise ConfigError(f"positions must lie in [0, {limit}], got [{positions.min()}, {positions.max()}]")
    for first in range(0, len(positions), chunk):
        piece = positions[first: first + chunk]
        index = np.full(chunk, offset + piece[-1], np.int32)
        index[: len(piece)] = offset + piece
        yield _project(params, hidden, jnp.asarray(index))


@jax.jit
def _threshold_counts(logp: jax.Array, logq: jax.Array, tau: jax.Array) -> jax.Array:
    """[C] int32: tokens with p > tau or any teacher's q > tau. logp [C, V]; logq [T, C, V]."""
    return jnp.sum(_top_prob(logp, logq) > tau, axis=-1, dtype=jnp.int32)


def _top_prob(logp: jax.Array, logq: jax.Array) -> jax.Array:
    """max(p, q_1, ..., q_T) per token: [C, V] float32."""
    return jnp.exp(jnp.maximum(logp, jnp.max(logq, axis=0)))


@functools.partial(jax.jit, static_argnames=("width",))
def _threshold_gather(logp: jax.Array, logq: jax.Array, tau: jax.Array, *, width: int) -> dict[str, jax.Array]:
    values, ids = jax.lax.top_k(_top_prob(logp, logq), width)  # every token above tau is in the top `width`
    p = jnp.exp(jnp.take_along_axis(logp, ids, axis=-1))
    q = jnp.exp(jnp.take_along_axis(logq, jnp.broadcast_to(ids, logq.shape[:1] + ids.shape), axis=-1))
    kl = jnp.sum(jnp.exp(logp)[None] * (logp[None] - logq), axis=-1)
    return {"token": ids, "keep": values > tau, "p": p, "q": q, "kl": kl}


def candidate_tokens(logp: jax.Array, logq: jax.Array, tau: float) -> dict[str, np.ndarray]:
    """The planner's candidates at C positions: tokens with P_θ > τ or some P_te > τ, on the device.

    logp: [C, V] float32 student log-softmax; logq: [T, C, V] float32 teachers' log-softmax.
    Returns numpy arrays, W = the most candidates at any of the C positions, bucketed:
    token [C, W] int32 (ascending within a row where ``keep``), keep [C, W] bool,
    p [C, W] and q [T, C, W] float32 probabilities, kl [T, C] float32 full-vocabulary KL(p‖q_t).
    At most (T + 1) / τ tokens can pass, so W is small; only it and the [T, C] KLs reach the host.
    """
    tau = jnp.float32(tau)
    width = bucket(int(np.asarray(_threshold_counts(logp, logq, tau)).max(initial=1)), 4)
    out = {k: np.asarray(v) for k, v in _threshold_gather(logp, logq, tau, width=min(width, logp.shape[-1])).items()}
    order = np.argsort(np.where(out["keep"], out["token"], np.iinfo(np.int32).max), axis=-1, kind="stable")
    for name in ("token", "keep", "p"):
        out[name] = np.take_along_axis(out[name], order, axis=-1)
    out["q"] = np.take_along_axis(out["q"], np.broadcast_to(order, out["q"].shape), axis=-1)
    return out


SCORED_POSITIONS = 256  # rows x positions projected per step: [256, 151936] float32 is 156 MB
SCORED_ROW_SLOTS = 32768  # rows x cache slots per call: 3.8 GB of bf16 KV for Qwen3-0.6B, 5.4 GB for 14B
MAX_SCORED_ROWS = 64  # rows per call of :func:`token_logprobs`


def scored_rows_layout(count: int, width: int, prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> tuple[int, int, int]:
    """(rows B, positions per step, cache slots S) of one :func:`token_logprobs` call scoring ``count``
    sequences of at most ``width`` tokens: B a power of two of at most :data:`MAX_SCORED_ROWS` rows
    with B x S <= :data:`SCORED_ROW_SLOTS` (at least one row), B x positions <= :data:`SCORED_POSITIONS`."""
    slots = bucket(width, 8)  # the loop stops at the longest row: a wider cache only costs memory
    fits = 1 << (max(SCORED_ROW_SLOTS // slots, 1).bit_length() - 1)  # the most rows, a power of two
    rows = min(bucket(count), MAX_SCORED_ROWS, fits)
    return rows, min(prefill_chunk, max(1, SCORED_POSITIONS // rows), slots), slots


@functools.partial(jax.jit, static_argnames=("cfg", "prompt_chunk", "chunk"))
def _rows_logprobs(params: Qwen3Params, cfg: Qwen3Config, prompt: jax.Array, prompt_start: jax.Array,
                   rows: jax.Array, lengths: jax.Array, *, prompt_chunk: int, chunk: int) -> jax.Array:
    """log P(rows[b, t] | prompt + rows[b, :t]) for every row and t, on the device.

    prompt: [Sp] int32 left-padded (valid from ``prompt_start``, Sp a multiple of prompt_chunk);
    rows: [B, S] int32 right-padded (S a multiple of chunk); lengths: [B] int32 (each >= 1).
    Returns [B, S] float32, meaningless at t >= lengths[b].

    The prompt is prefilled once, ``prompt_chunk`` tokens at a time, and every row reads its KV as a
    shared prefix (cascade attention), so a long self-teacher context is never copied per row. The
    rows then run ``chunk`` positions at a time; each step projects [B, chunk] positions onto the
    vocabulary and keeps only the taken tokens' log-probs.
    """
    COMPILES["score_rows"] += 1
    size = prompt.shape[0]
    batch, slots = rows.shape
    prefix = init_cache(cfg, 1, size, params.dtype, prompt_start[None])

    def prompt_step(i, carry):
        cache, _ = carry
        first = i * prompt_chunk
        piece = jax.lax.dynamic_slice_in_dim(prompt, first, prompt_chunk)[None]
        positions = jnp.maximum(first + jnp.arange(prompt_chunk, dtype=jnp.int32) - prompt_start, 0)[None]
        hidden, cache = forward_hidden(params, cfg, piece, positions, cache)
        return cache, hidden[0, -1]

    last = jnp.zeros((cfg.hidden_size,), params.dtype)
    prefix, last = jax.lax.fori_loop(0, size // prompt_chunk, prompt_step, (prefix, last))
    shared = SharedPrefix(k=prefix.k, v=prefix.v, start=prompt_start[None])
    first = jax.nn.log_softmax(logits_from_hidden(params, last))[rows[:, 0]]  # [B]
    following = jnp.concatenate([rows[:, 1:], jnp.zeros((batch, 1), rows.dtype)], axis=1)  # [B, S]

    def row_step(i, carry):
        cache, taken = carry
        at = i * chunk
        piece = jax.lax.dynamic_slice_in_dim(rows, at, chunk, axis=1)
        positions = jnp.broadcast_to(size - prompt_start + at + jnp.arange(chunk, dtype=jnp.int32), piece.shape)
        hidden, cache = forward_hidden(params, cfg, piece, positions, cache, shared)
        logp = jax.nn.log_softmax(logits_from_hidden(params, hidden), axis=-1)  # [B, chunk, V]
        nxt = jax.lax.dynamic_slice_in_dim(following, at, chunk, axis=1)
        picked = jnp.take_along_axis(logp, nxt[..., None], axis=-1)[..., 0]
        return cache, jax.lax.dynamic_update_slice_in_dim(taken, picked, at, axis=1)

    cache = init_cache(cfg, batch, slots, params.dtype)
    steps = (jnp.max(lengths) - 1 + chunk - 1) // chunk  # positions 0 .. L-2 predict tokens 1 .. L-1
    _, taken = jax.lax.fori_loop(0, steps, row_step, (cache, jnp.zeros((batch, slots), jnp.float32)))
    return jnp.concatenate([first[:, None], taken[:, :-1]], axis=1)


def token_logprobs(params: Qwen3Params, cfg: Qwen3Config, prompt: np.ndarray, sequences: Sequence[np.ndarray],
                   prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> list[np.ndarray]:
    """log P(seq[t] | prompt + seq[:t]) for every t of every sequence: [len(seq)] float32 each.

    Batched: sequences of similar lengths share a device call (:func:`scored_rows_layout` bounds its
    rows, cache and logits), and the prompt's KV is prefilled once per call and shared. Shapes are
    bucketed (rows and sequence slots to powers of two, the prompt to three significant bits of
    chunks), and only the [B, S] taken log-probs reach the host.
    """
    prompt = np.asarray(prompt, np.int32).ravel()
    sequences = [np.asarray(s, np.int32).ravel() for s in sequences]
    if len(prompt) == 0:
        raise ConfigError("scoring needs a non-empty prompt")
    if prefill_chunk < 1 or prefill_chunk & (prefill_chunk - 1):
        raise ConfigError(f"prefill_chunk must be a power of two, got {prefill_chunk}")
    out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(sequences)
    order = [i for i in np.argsort([len(s) for s in sequences], kind="stable") if len(sequences[i])]
    if not order:
        return out
    longest = len(prompt) + max(len(sequences[i]) for i in order)
    if longest > cfg.max_position_embeddings:
        raise ConfigError(f"prompt + sequence = {longest} tokens exceeds max_position_embeddings "
                          f"{cfg.max_position_embeddings}")
    prompt_chunk = min(prefill_chunk, bucket(len(prompt), 16))
    size = prompt_chunk * coarse_bucket(-(-len(prompt) // prompt_chunk))
    padded_prompt = np.zeros(size, np.int32)
    padded_prompt[size - len(prompt):] = prompt
    start = jnp.int32(size - len(prompt))
    first = 0
    while first < len(order):  # shortest first: similar lengths share a call, with little padding
        group = [order[first]]
        while first + len(group) < len(order):
            trial = group + [order[first + len(group)]]
            if scored_rows_layout(len(trial), len(sequences[trial[-1]]), prefill_chunk)[0] < len(trial):
                break
            group = trial
        first += len(group)
        width = len(sequences[group[-1]])
        batch, chunk, slots = scored_rows_layout(len(group), width, prefill_chunk)
        rows = np.zeros((batch, slots), np.int32)
        lengths = np.ones(batch, np.int32)
        for r, i in enumerate(group):
            rows[r, : len(sequences[i])] = sequences[i]
            lengths[r] = len(sequences[i])
        got = np.asarray(_rows_logprobs(params, cfg, jnp.asarray(padded_prompt), start, jnp.asarray(rows),
                                        jnp.asarray(lengths), prompt_chunk=prompt_chunk, chunk=chunk))
        for r, i in enumerate(group):
            out[i] = got[r, : len(sequences[i])]
    return out
