"""Batched temperature sampling with a KV cache, and prefix forking with cascade attention.

One call samples ``counts[i]`` completions of each of several prefixes (prompt + partial response
+ forced token). Two layouts compute the same thing:

* forked (default): each prefix is prefilled ONCE, at batch 1, into a :class:`SharedPrefix`; its
  forks get their own small suffix cache, and attention merges the two by log-sum-exp. The prefix
  KV is never copied into the rows.
* plain (``fork=False``): every row prefills its own copy of its prefix. This is the naive
  baseline, and the reference the forked layout is tested against.

The whole decode loop runs inside one ``jax.jit`` (``lax.while_loop``), which stops when every
completion has produced an EOS or reached the limit. The KV caches live in the loop carry and are
updated in place, one token slot per row and step. In the forked layout a call queues more
completions than it has decode rows: a row whose completion ends starts its prefix's next one
(:func:`_sample_forked`, :func:`queue_layout`). Shapes are bucketed: completions per prefix, prefix
length and new-token buffer to powers of two, the number of prefixes to three significant bits.
So a sweep compiles once per bucket touched, never once per length; :data:`COMPILES` counts
traces per layout.

Randomness: row r draws step t from ``fold_in(fold_in(key, row_id[r]), t)`` with the Gumbel-max
trick on float32 logits. A row's tokens therefore depend on (key, row id, prefix) alone: not on
padding, batch neighbours, chunking, sharding or the layout. Given one key per prefix, each
prefix's rows are numbered from 0 under its own key, so a call over many prefixes draws what one
call per prefix would. ``temperature == 0`` is greedy decoding (argmax, no randomness).
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from jaxalign.engine.gumbel import gumbel_rows
from jaxalign.errors import ConfigError
from jaxalign.models.config import Qwen3Config
from jaxalign.models.qwen3 import (MIN_WINDOW, Qwen3Params, SharedPrefix, forward_hidden, init_cache,
                                   logits_from_hidden)
from jaxalign.models.sharding import DATA, MODEL, ShardingRules, cache_axes, constrain, param_axes, rules_for
from jaxalign.policy import SampleBatch

COMPILES: collections.Counter = collections.Counter()
QUEUE_FACTOR = 16  # completions queued per call, per decode row (forked layout)
# The forked layout's shared prefixes take at least this many KV slots. Real prompts are longer, so it
# costs them nothing; short ones (the toy's 40-120 tokens) share one bucket instead of two, one sampler
# shape fewer for the toy default (7 -> 6). Each step reads a prefix once for all its rows (cascade), so
# a short prompt's padding costs one read of 128 slots per prefix and step, not one per row.
PREFIX_SLOTS_MIN = 128


def prefix_slots(tokens: int) -> int:
    """KV slots of a forked call's shared prefix of ``tokens`` tokens (a power of two, >= PREFIX_SLOTS_MIN)."""
    return bucket(tokens, PREFIX_SLOTS_MIN)


def new_slots(max_new_tokens: int, max_new_bound: int = 0) -> int:
    """Slots of a sampled row's own KV cache in a :func:`sample` call (a power of two, >= 8): the
    limit's bucket, and at least min(max_new_bound, MIN_WINDOW). Calls near a caller's limit then share
    one shape, while a row never holds more than the attention's smallest window beyond its need (a
    bound of 4,096 would make every deep call's cache as wide as the first call's, and the prefixes
    that deep calls also hold would raise the job's peak)."""
    return bucket(max(max_new_tokens, min(max_new_bound, MIN_WINDOW)), 8)


def bucket(n: int, minimum: int = 1) -> int:
    """The smallest power of two >= max(n, minimum)."""
    return 1 << max(int(math.ceil(math.log2(max(n, minimum, 1)))), 0)


def padded_prompts(n: int) -> int:
    """How many prompts :meth:`jaxalign.engine.policy.FlaxPolicy.sample_prompts` sends for ``n``: up
    to 8, the next power of two (copies of the first, their rows dropped), since :func:`coarse_bucket`
    keeps each count up to 8 as its own compiled shape; above 8, ``n`` (the engine's chunks and
    buckets bound the shapes there, and copies would be real work)."""
    return bucket(n) if n <= 8 else n


def coarse_bucket(n: int) -> int:
    """The smallest m >= n with at most three significant bits: 1..8, 10, 12, 14, 16, 20, 24, 28, 32, ..."""
    n = max(int(n), 1)
    step = 1 << max(n.bit_length() - 3, 0)
    return -(-n // step) * step


def first_argmax(scores: jax.Array) -> jax.Array:
    """``jnp.argmax(scores, -1)`` (the first maximum) as two plain reductions. scores: [B, V] float32.

    Returns [B] int32. XLA:CPU runs argmax's (value, index) pair reduction element by element;
    a max followed by a min over matching indices vectorises. Fused with the Gumbel noise, the pair
    reduction was 2-3x slower at 16 x 32K. Rows holding NaN give V - 1 instead of the NaN's index.
    """
    vocab = scores.shape[-1]
    peak = jnp.max(scores, axis=-1, keepdims=True)
    first = jnp.min(jnp.where(scores == peak, jnp.arange(vocab, dtype=jnp.int32), vocab), axis=-1)
    return jnp.minimum(first, vocab - 1)


def _draw(logits: jax.Array, row_keys: jax.Array, step, temperature, greedy: bool) -> jax.Array:
    """One token per row. logits: [B, V] float32; row_keys: [B] keys; step: [] or [B] int32, the
    index of the token being drawn in its row's completion. Returns [B] int32."""
    if greedy:
        return first_argmax(logits)
    keys = jax.vmap(jax.random.fold_in)(row_keys, jnp.broadcast_to(step, row_keys.shape))
    # The barrier materialises the perturbed logits once; fused, both reductions would recompute the hash.
    return first_argmax(jax.lax.optimization_barrier(logits / temperature + gumbel_rows(keys, logits.shape[-1])))


def _decode(params, cfg, first_logits, row_keys, valid, cache, positions0, temperature, limit, *,
            max_new, eos_ids, greedy, shared=None, pin=lambda x, axes: x):
    """The sampling loop shared by both layouts. first_logits: [B, V]; valid, positions0: [B].

    Returns (tokens [B, max_new] int32, -1 padded; lengths [B] int32, EOS included).
    """
    eos = jnp.asarray(eos_ids, jnp.int32)
    first = jnp.where(valid, _draw(first_logits, row_keys, 0, temperature, greedy), -1)
    out = pin(jnp.full((first.shape[0], max_new), -1, jnp.int32).at[:, 0].set(first), "BT")
    lengths = valid.astype(jnp.int32)
    done = ~valid | jnp.isin(first, eos) | (limit <= 1)

    def cond(state):
        step, _, _, _, _, done = state
        return (step < limit) & ~jnp.all(done)

    def body(state):
        step, token, cache, out, lengths, done = state
        positions = (positions0 + step - 1)[:, None]
        hidden, cache = forward_hidden(params, cfg, jnp.maximum(token, 0)[:, None], positions, cache, shared)
        nxt = jnp.where(done, -1, _draw(logits_from_hidden(params, hidden[:, 0]), row_keys, step, temperature, greedy))
        out = pin(jax.lax.dynamic_update_slice(out, nxt[:, None], (0, step)), "BT")
        lengths = lengths + (~done).astype(jnp.int32)
        return step + 1, nxt, cache, out, lengths, done | jnp.isin(nxt, eos)

    state = (jnp.int32(1), first, cache, out, lengths, done)
    _, _, _, out, lengths, _ = jax.lax.while_loop(cond, body, state)
    return out, lengths


def _row_keys(keys, row_ids):
    """keys: [B] typed keys, one per row; row_ids: [B] int32. Returns [B] keys fold_in(keys[r], row_ids[r])."""
    return jax.vmap(jax.random.fold_in)(keys, row_ids)


def _pinner(mesh: Optional[Mesh], rules: Optional[ShardingRules]):
    """pin(tree, logical axes): the tree constrained to the mesh (identity without one)."""
    return lambda tree, axes: constrain(tree, axes, mesh, rules)


@functools.partial(jax.jit, static_argnames=("cfg", "max_new", "eos_ids", "greedy", "mesh", "rules", "slots",
                                             "key_impl"))
def _sample_forked(params, cfg, prefix_tokens, prefix_start, row_ids, row_valid, key_data, temperature, limit, *,
                   max_new, eos_ids, greedy, key_impl, mesh=None, rules=None, slots=None):
    """The forked layout with a completion queue per prefix.

    prefix_tokens: [P, Lp] left-padded; prefix_start: [P] int32; row_ids, row_valid: [P, C]: prefix
    p's completions are its first sum(row_valid[p]) columns, drawn with prefix p's key: key_data
    [P, ...] uint32, the raw data of ``key_impl`` keys (a key shared by all prefixes comes repeated, so
    that one compiled shape serves shared and per-prefix keys).
    ``slots`` (static, default C): decode rows per prefix. With fewer slots than completions, a row
    whose completion ends takes the next one of its prefix at the next step (continuous batching):
    the call runs for about C / slots completion lengths, not until the longest of C rows, and no
    row idles while its prefix has work. Each row writes its own cache slot (a per-row ``end``), and
    a new completion masks the old one's keys out, so nothing is cleared.
    Returns tokens [P * C, max_new] int32 (-1 padded) and lengths [P * C] int32, EOS included.
    """
    COMPILES["forked"] += 1
    num_prefixes, prefix_len = prefix_tokens.shape
    columns = row_ids.shape[1]
    per_prefix = columns if slots is None else slots
    rows = num_prefixes * per_prefix
    pin = _pinner(mesh, rules)
    cache = pin(init_cache(cfg, num_prefixes, prefix_len, params.dtype, prefix_start), cache_axes(cfg, "P"))
    positions = jnp.maximum(jnp.arange(prefix_len)[None, :] - prefix_start[:, None], 0)
    hidden, cache = forward_hidden(params, cfg, prefix_tokens, positions, cache)
    shared = SharedPrefix(k=cache.k, v=cache.v, start=prefix_start)
    prefix_of = jnp.repeat(jnp.arange(num_prefixes, dtype=jnp.int32), per_prefix)  # [rows]
    first_hidden = hidden[:, -1][prefix_of]  # [rows, D]: every completion's first token is drawn from it
    base = jnp.repeat(shared.length, per_prefix)  # [rows] RoPE position of suffix slot 0
    keys = jax.random.wrap_key_data(key_data, impl=key_impl)  # [P]
    job_keys = _row_keys(jnp.repeat(keys, columns, axis=0), row_ids.reshape(-1))  # [P * C]
    count = jnp.sum(row_valid, axis=1, dtype=jnp.int32)  # [P]
    eos = jnp.asarray(eos_ids, jnp.int32)
    suffix = init_cache(cfg, rows, max_new, params.dtype)
    suffix = pin(suffix.replace(end=jnp.zeros(rows, jnp.int32)), cache_axes(cfg).replace(end="B"))
    column = jnp.tile(jnp.arange(per_prefix, dtype=jnp.int32), num_prefixes)
    job = jnp.where(column < count[prefix_of], column, -1)  # [rows] the completion (column) a row runs; -1 idle
    out = pin(jnp.full((num_prefixes * columns, max_new), -1, jnp.int32), "BT")
    lengths = jnp.zeros(num_prefixes * columns, jnp.int32)

    def body(state):
        job, drawn, token, fresh, cache, out, lengths, queued = state
        active = job >= 0
        slot = jnp.maximum(drawn - 1, 0)  # where this step's input token goes (a fresh row's is discarded)
        hidden, cache = forward_hidden(params, cfg, token[:, None], (base + slot)[:, None], cache.replace(end=slot),
                                       shared, mesh, rules)
        state_for_draw = jnp.where(fresh[:, None], first_hidden, hidden[:, 0])
        flat = prefix_of * columns + jnp.maximum(job, 0)
        nxt = _draw(logits_from_hidden(params, state_for_draw), job_keys[flat], drawn, temperature, greedy)
        nxt = jnp.where(active, nxt, -1)
        target = jnp.where(active, flat, out.shape[0])  # idle rows write nowhere
        out = pin(out.at[target, drawn].set(nxt, mode="drop"), "BT")
        drawn = drawn + 1
        lengths = lengths.at[target].set(drawn, mode="drop")
        ended = (active & (jnp.isin(nxt, eos) | (drawn >= limit))).reshape(num_prefixes, per_prefix)
        candidate = queued[:, None] + jnp.cumsum(ended, axis=1, dtype=jnp.int32) - 1
        takes = ended & (candidate < count[:, None])
        job = jnp.where(ended, jnp.where(takes, candidate, -1), job.reshape(ended.shape)).reshape(rows)
        fresh = takes.reshape(rows)
        # a fresh row restarts at slot 0; so does an idle one, so that it never widens the attention window
        return (job, jnp.where(fresh | (job < 0), 0, drawn), jnp.where(fresh, 0, jnp.maximum(nxt, 0)), fresh, cache,
                out, lengths, queued + jnp.sum(takes, axis=1, dtype=jnp.int32))

    zeros = jnp.zeros(rows, jnp.int32)
    state = (job, zeros, zeros, job >= 0, suffix, out, lengths, jnp.minimum(count, per_prefix))
    state = jax.lax.while_loop(lambda state: jnp.any(state[0] >= 0), body, state)
    return state[5], state[6]


@functools.partial(jax.jit, static_argnames=("cfg", "max_new", "eos_ids", "greedy", "mesh", "rules", "key_impl"))
def _sample_plain(params, cfg, tokens, start, row_ids, row_valid, key_data, temperature, limit, *,
                  max_new, eos_ids, greedy, key_impl, mesh=None, rules=None):
    """tokens: [B, L] left-padded full prefixes (one copy per row); start, row_ids, row_valid: [B];
    key_data: [B, ...] uint32, each row's prefix's key (raw ``key_impl`` data)."""
    COMPILES["plain"] += 1
    rows, length = tokens.shape
    pin = _pinner(mesh, rules)
    cache = pin(init_cache(cfg, rows, length + max_new, params.dtype, start), cache_axes(cfg))
    positions = jnp.maximum(jnp.arange(length)[None, :] - start[:, None], 0)
    hidden, cache = forward_hidden(params, cfg, tokens, positions, cache)
    keys = jax.random.wrap_key_data(key_data, impl=key_impl)
    return _decode(params, cfg, logits_from_hidden(params, hidden[:, -1]), _row_keys(keys, row_ids), row_valid,
                   cache, length - start, temperature, limit, max_new=max_new, eos_ids=eos_ids, greedy=greedy,
                   pin=pin)


def _left_pad(seqs: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.zeros((len(seqs), length), np.int32)
    start = np.zeros(len(seqs), np.int32)
    for i, seq in enumerate(seqs):
        tokens[i, length - len(seq):] = seq
        start[i] = length - len(seq)
    return tokens, start


def _chunks(counts: Sequence[int], max_rows: int, max_jobs: Optional[int] = None,
            min_rows: int = 1) -> list[list[tuple[int, int, int]]]:
    """Splits (prefix, completions) into calls of (prefix, first, count) pieces, each piece at most
    ``max_jobs`` completions, with bucket(#prefixes) x min_rows <= max_rows and bucket(#prefixes) x
    bucket(largest piece) <= max_jobs (default max_rows: every completion gets its own decode row).
    ``min_rows``: the rows each prefix gets at least (the mesh's data axis), so that a call of several
    prefixes stays within max_rows."""
    max_jobs = max_rows if max_jobs is None else max_jobs
    pieces = [(p, first, min(max_jobs, c - first)) for p, c in enumerate(counts) for first in range(0, c, max_jobs)]
    chunks, current = [], []
    for piece in pieces:
        trial = current + [piece]
        if current and (bucket(len(trial)) * min_rows > max_rows
                        or bucket(len(trial)) * bucket(max(c for _, _, c in trial)) > max_jobs):
            chunks.append(current)
            trial = [piece]
        current = trial
    return chunks + ([current] if current else [])


def queue_layout(chunk: Sequence[tuple[int, int, int]], max_rows: int, min_rows: int = 1) -> tuple[int, int, int]:
    """(prefixes P, completions per prefix C, decode rows per prefix) of one call of :func:`_chunks`.

    C is a power of two (>= min_rows). P has at most three significant bits (20 prefixes stay 20, not
    32: a padding prefix's rows would step idle through the whole call). Rows per prefix: as many as
    fit P x rows <= max_rows, a multiple of min_rows (the mesh's data axis), at most C. P x rows
    exceeds max_rows only for one prefix with max_rows < min_rows (:func:`_chunks` with the same
    ``min_rows`` splits the rest).
    """
    prefixes, columns = coarse_bucket(len(chunk)), bucket(max(c for _, _, c in chunk), min_rows)
    rows = max(min_rows, max_rows // prefixes // min_rows * min_rows)
    return prefixes, columns, min(columns, rows)


def sample(
    params: Qwen3Params,
    cfg: Qwen3Config,
    prefixes: Sequence[np.ndarray],
    counts: int | Sequence[int],
    *,
    max_new_tokens: int,
    key: jax.Array,
    eos_ids: Sequence[int],
    temperature: float = 1.0,
    fork: bool = True,
    max_rows: int = 256,
    max_len: Optional[int] = None,
    mesh: Optional[Mesh] = None,
    row_offset: int = 0,
    max_queued: Optional[int] = None,
    max_new_bound: int = 0,
) -> SampleBatch:
    """``counts[i]`` completions of each full token prefix (prompt + response so far).

    Rows are numbered in order (prefix 0's completions first), starting at ``row_offset``; row r
    uses ``fold_in(key, r)``. With one key per prefix (``key`` a [len(prefixes)] typed key array),
    prefix p's rows are numbered from 0 and use ``keys[p]``: each prefix draws what
    ``sample([prefixes[p]], counts[p], key=keys[p])`` would. Batches larger than ``max_rows`` are split
    automatically, with the same tokens as one big batch. In the forked layout a call decodes at most
    ``max_rows`` rows but takes up to ``max_queued`` completions (default :data:`QUEUE_FACTOR` x
    max_rows): a row that ends starts the next completion of its prefix. ``mesh`` (see
    :func:`jaxalign.models.sharding.make_mesh`): rows and KV caches are sharded over its 'data' axis,
    KV heads over 'model'; with model > 1 the params must already be sharded by
    :func:`~jaxalign.models.sharding.shard_params` on the same mesh. ``max_new_bound``: the largest
    ``max_new_tokens`` of the caller's calls. Each row's own cache takes at least min(max_new_bound,
    256) slots (:func:`new_slots`), so calls whose limits differ only below that (rollouts from nodes
    near the response limit; all of the toy's) share one compiled shape.
    Returns tokens [N, max_new_tokens] int64 (-1 padded), lengths [N], prefix_index [N].
    """
    counts = [int(counts)] * len(prefixes) if np.ndim(counts) == 0 else [int(c) for c in counts]
    prefixes = [np.asarray(p, np.int32).ravel() for p in prefixes]
    max_len = cfg.max_position_embeddings if max_len is None else max_len
    _validate(prefixes, counts, max_new_tokens, temperature, max_len, eos_ids)
    if max_rows < 1 or (max_queued is not None and max_queued < 1):
        raise ConfigError(f"max_rows={max_rows} and max_queued={max_queued} must be >= 1")
    key_data, key_impl, own_keys = _prefix_keys(key, len(prefixes))
    if own_keys and row_offset:
        raise ConfigError(f"row_offset={row_offset} with one key per prefix: each prefix's rows are numbered from 0")
    first_out = np.concatenate([[0], np.cumsum(counts)])[:-1].astype(np.int64)  # each prefix's first output row
    first_draw = np.zeros(len(counts), np.int64) if own_keys else row_offset + first_out
    tokens_out = np.full((sum(counts), max_new_tokens), -1, np.int64)
    lengths_out = np.zeros(sum(counts), np.int64)
    max_new = new_slots(max_new_tokens, max_new_bound)
    rules = None if mesh is None else _rules_checked(params, cfg, mesh)
    min_rows = 1 if mesh is None else dict(mesh.shape).get(DATA, 1)
    statics = dict(max_new=max_new, eos_ids=tuple(int(e) for e in eos_ids), greedy=temperature == 0,
                   mesh=mesh, rules=rules, key_impl=key_impl)
    dynamics = (jnp.float32(max(temperature, 1e-6)), jnp.int32(max_new_tokens))
    if fork:
        work = _chunks(counts, max_rows, QUEUE_FACTOR * max_rows if max_queued is None else max_queued, min_rows)
    else:
        flat_rows = [(p, j) for p, c in enumerate(counts) for j in range(c)]
        work = [flat_rows[i: i + max_rows] for i in range(0, len(flat_rows), max_rows)]
    for chunk in work:
        if fork:
            num_p, per_p, slots = queue_layout(chunk, max_rows, min_rows)
            owners = [p for p, _, _ in chunk] + [chunk[0][0]] * (num_p - len(chunk))
            ptok, pstart = _left_pad([prefixes[p] for p in owners],
                                     prefix_slots(max(len(prefixes[p]) for p in owners)))
            ids = np.zeros((num_p, per_p), np.int32)
            where = np.zeros((num_p, per_p), np.int64)  # the output row of each completion
            valid = np.zeros((num_p, per_p), bool)
            for i, (p, first, c) in enumerate(chunk):
                ids[i, :c] = first_draw[p] + first + np.arange(c)
                where[i, :c] = first_out[p] + first + np.arange(c)
                valid[i, :c] = True
            call_keys = key_data[np.asarray(owners) if own_keys else np.zeros(len(owners), np.int64)]
            out, lengths = _sample_forked(params, cfg, ptok, pstart, ids, valid, call_keys, *dynamics, slots=slots,
                                          **statics)
        else:
            rows = bucket(len(chunk), min_rows)
            owners = [p for p, _ in chunk] + [chunk[0][0]] * (rows - len(chunk))
            tok, start = _left_pad([prefixes[p] for p in owners], bucket(max(len(prefixes[p]) for p in owners), 16))
            ids = np.zeros(rows, np.int32)
            ids[: len(chunk)] = [first_draw[p] + j for p, j in chunk]
            where = np.zeros(rows, np.int64)
            where[: len(chunk)] = [first_out[p] + j for p, j in chunk]
            valid = np.arange(rows) < len(chunk)
            call_keys = key_data[np.asarray(owners) if own_keys else np.zeros(len(owners), np.int64)]
            out, lengths = _sample_plain(params, cfg, tok, start, ids, valid, call_keys, *dynamics, **statics)
        out, lengths = np.asarray(out).reshape(-1, max_new), np.asarray(lengths).reshape(-1)
        chosen = np.asarray(valid).reshape(-1)
        rows_out = where.reshape(-1)[chosen]
        tokens_out[rows_out] = out[chosen, :max_new_tokens]
        lengths_out[rows_out] = lengths[chosen]
    return SampleBatch(tokens=tokens_out, lengths=lengths_out, prefix_index=np.repeat(np.arange(len(counts)), counts))


def _prefix_keys(key: jax.Array, num_prefixes: int) -> tuple[np.ndarray, object, bool]:
    """(key data [1 or num_prefixes, ...] uint32 on the host, the keys' impl, whether each prefix
    has its own key). ``key``: one key (typed, or a raw uint32 [2] key), or a typed [num_prefixes]
    key array. On the host, a call's keys are picked by numpy indexing, not by one eager op each."""
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    if key.ndim != 0 and key.shape != (num_prefixes,):
        raise ConfigError(f"key: one key, or one per prefix ({num_prefixes}); got keys of shape {key.shape}")
    data = np.asarray(jax.random.key_data(key))
    return data.reshape(-1, *data.shape[key.ndim:]), jax.random.key_impl(key), key.ndim != 0


def _rules_checked(params: Qwen3Params, cfg: Qwen3Config, mesh: Mesh) -> ShardingRules:
    """The mesh's rules, after checking that tensor-parallel params were placed on it."""
    rules = rules_for(cfg, mesh)
    if dict(mesh.shape).get(MODEL, 1) > 1:
        expected = NamedSharding(mesh, rules.spec(param_axes(cfg).embed))
        if not params.embed.sharding.is_equivalent_to(expected, params.embed.ndim):
            raise ConfigError(
                f"mesh {dict(mesh.shape)} splits the model, but the params are placed on "
                f"{params.embed.sharding}; call jaxalign.models.shard_params(params, cfg, mesh) once after loading"
            )
    return rules


def _validate(prefixes, counts, max_new_tokens, temperature, max_len, eos_ids) -> None:
    if len(prefixes) != len(counts):
        raise ConfigError(f"{len(prefixes)} prefixes but {len(counts)} counts")
    if any(c < 0 for c in counts):
        raise ConfigError(f"completion counts must be >= 0, got {counts}")
    for i, prefix in enumerate(prefixes):
        if len(prefix) == 0:
            raise ConfigError(f"prefix {i} is empty: sampling needs at least the rendered chat prompt")
        if len(prefix) + max_new_tokens > max_len:
            raise ConfigError(
                f"prefix {i} has {len(prefix)} tokens; with max_new_tokens={max_new_tokens} that exceeds "
                f"the cache limit of {max_len} positions. Shorten the prompt or lower max_new_tokens."
            )
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0 or not math.isfinite(temperature):
        raise ConfigError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if len(eos_ids) == 0:
        raise ConfigError("eos_ids is empty; pass the model's EOS ids (Qwen3: <|im_end|>, <|endoftext|>)")
