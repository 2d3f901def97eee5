"""Ragged decode attention: each row reads only its own filled cache slots.

The queued decoder gives every row its own ``end`` (:func:`jaxalign.engine.sampling._sample_forked`).
The XLA path (:func:`jaxalign.models.qwen3._cache_attention`) reads, for every row, the narrowest
power-of-two window that holds the call's *furthest* row: once one row is 3,000 tokens into an MMLU
completion, rows that started 200 tokens ago read 4,096 slots too. At Qwen3-0.6B and 256 rows that
is most of a decode step's HBM traffic (docs/cost.md). This path runs JAX's Pallas decode-attention
kernel (``jax.experimental.pallas.ops.gpu.decode_attention``, Triton), which splits each row's
cache into ``k_splits`` pieces and skips the pieces and blocks past the row's own end, so a row
reads about its own length rounded up to a block.

It is chosen with ``decode_attention=ragged`` (``Qwen3Config.decode_attention``). Off a GPU the
kernel runs in Pallas' interpreter: exact, and slow, for tests. Triton's default dots take
float32 inputs as TF32, so on a GPU the path is for bfloat16 models (:mod:`jaxalign.pipeline.models`
refuses float32 there).

On a mesh, XLA cannot split a Pallas call: it would gather every row's cache onto every device.
The kernel runs under ``shard_map`` instead, on each device's own rows (``data``) and kv heads
(``model``), which needs no communication: attention is independent per row and kv head. When
``model`` does not divide the kv heads (:func:`jaxalign.models.sharding.rules_for` then
replicates them and splits the query groups), the window path is kept (:func:`splits_cleanly`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

BLOCK_K = 128  # keys per kernel block; a row's read is its length rounded up to this
MAX_SPLITS = 16  # programs per (row, kv head): parallelism for long caches, one partial result each
MIN_SPLIT = 256  # slots per split at least (the kernel needs >= 16; fewer splits on short caches)


def splits_for(slots: int) -> int:
    """The number of cache pieces for a cache of ``slots`` slots (a power of two >= 16): at most
    :data:`MAX_SPLITS`, each at least :data:`MIN_SPLIT` slots (or the whole cache)."""
    splits = 1
    while splits < MAX_SPLITS and slots // (2 * splits) >= MIN_SPLIT and slots % (2 * splits) == 0:
        splits *= 2
    return splits


def splits_cleanly(rules) -> bool:
    """Whether the kernel can run per shard under ``rules`` (a ShardingRules, None off a mesh): the
    query heads are split only where their kv heads are."""
    return rules is None or rules.heads is None or rules.kv_heads is not None


def applies(slots: int, rows: int, kv_heads: int, mesh=None, rules=None) -> bool:
    """Whether a decode step over ``rows`` caches of ``slots`` slots can run the kernel: a power of
    two of at least 16 slots (its block shapes; shorter calls keep the window path, which reads
    them whole anyway), and on a mesh, query heads split with their kv heads and rows and kv heads
    that divide evenly over its devices (``shard_map`` does not pad)."""
    if slots < 16 or slots & (slots - 1):
        return False
    if mesh is None:
        return True
    sizes = dict(mesh.shape)
    even = all(n % sizes.get(axis, 1) == 0 for n, axis in ((rows, rules.batch), (kv_heads, rules.kv_heads)) if axis)
    return splits_cleanly(rules) and even


def ragged_attention(q: Array, k_cache: Array, v_cache: Array, start: Array, end: Array, mesh=None,
                     rules=None) -> tuple[Array, Array]:
    """One decode step's attention of each row over its own slots ``[start[b], end[b]]``.

    q: [B, 1, K, G, H] (the token written at slot ``end``); k_cache, v_cache: [B, K, S, H]; start,
    end: [B] int32. Returns (out [B, 1, K, G, H] float32, lse [B, 1, K, G] float32), the same
    partial result as :func:`jaxalign.models.qwen3._partial_attention`, so a shared prefix merges
    with it by log-sum-exp. With a ``mesh`` (and its ShardingRules ``rules``, for which
    :func:`splits_cleanly` holds) each device runs the kernel on its own rows and kv heads.
    """
    if not applies(k_cache.shape[2], q.shape[0], q.shape[2], mesh, rules):
        raise ValueError(f"ragged attention cannot take this call ({k_cache.shape[2]} slots, {q.shape[0]} rows, "
                         f"{q.shape[2]} kv heads, mesh {None if mesh is None else dict(mesh.shape)}); see applies()")
    if mesh is None:
        return _ragged_attention(q, k_cache, v_cache, start, end)
    spec = rules.spec
    return jax.shard_map(_ragged_attention, mesh=mesh, check_vma=False,
                         in_specs=(spec("BTKGH"), spec("BKSH"), spec("BKSH"), spec("B"), spec("B")),
                         out_specs=(spec("BTKGH"), spec("BTKG")))(q, k_cache, v_cache, start, end)


def _ragged_attention(q, k_cache, v_cache, start, end):
    from jax.experimental.pallas.ops.gpu import decode_attention

    batch, steps, kv_heads, groups, head_dim = q.shape
    if steps != 1:
        raise ValueError(f"ragged attention decodes one token per row, got {steps}")
    slots = k_cache.shape[2]
    # gqa takes keys as [B, S, K, H] and swaps them back to [B, K, S, H] itself: the two transposes
    # cancel in XLA, so the cache is read in place.
    out, (total, peak) = decode_attention.gqa(
        q.reshape(batch, kv_heads * groups, head_dim), jnp.swapaxes(k_cache, 1, 2), jnp.swapaxes(v_cache, 1, 2),
        start_idx=start, kv_seq_len=end + 1, sm_scale=head_dim**-0.5, block_k=min(BLOCK_K, slots),
        k_splits=splits_for(slots), interpret=jax.default_backend() != "gpu", return_residuals=True,
    )
    out = out.astype(jnp.float32).reshape(batch, 1, kv_heads, groups, head_dim)
    lse = (peak + jnp.log(total)).reshape(batch, 1, kv_heads, groups)
    return out, lse
