"""Qwen3 dense decoder as pure functions over a params pytree.

Why pure functions and not ``flax.nnx`` modules: the sampling engine jit-compiles whole decode
loops, donates cache buffers and shards params and batch with ``jax.sharding``. All of that wants
plain pytrees in and out. ``nnx.jit`` walks the object graph in Python on every call, and module
state would have to be split and merged around every ``while_loop``. The containers below are
``flax.struct`` dataclasses, so they are pytrees with named, typed fields.

Axis letters used in shapes and einsums:
  B batch, T new tokens, S cache slots, D hidden, N query heads, K kv heads, G = N // K query heads
  per kv head, H head_dim, F mlp hidden, V vocabulary.

Numerics: params (and the residual stream) are bf16 or fp32. RMSNorm statistics, RoPE angles,
attention softmax and the final logits are always fp32. With fp32 params every matmul runs at
``Precision.HIGHEST``, so fp32 means fp32 on GPUs too (not TF32).

The KV cache (per layer ``[B, K, S, H]``) is left-padded with one write index shared by the batch:
row ``b`` holds valid keys in slots ``[start[b], end)``, and a step of T tokens writes slots
``[end, end + T)``. Writing is then one ``dynamic_update_slice``, not a scatter. (The queued decoder
gives each row its own ``end`` [B] instead, one token per step, written by a vmapped update.)
Example, B=2, S=6, after a 3-token prefill where row 1 had a 2-token prompt (one pad)::

    slot      0  1  2  3  4  5
    row 0     a  b  c  .  .  .    start=0
    row 1     _  x  y  .  .  .    start=1        end=3
"""

from __future__ import annotations

from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax

from jaxalign.models.config import Qwen3Config

Array = jax.Array
_MASKED = float(jnp.finfo(jnp.float32).min)


@flax.struct.dataclass
class Attention:
    q: Array  # [D, N, H]
    k: Array  # [D, K, H]
    v: Array  # [D, K, H]
    o: Array  # [N, H, D]
    q_norm: Array  # [H]
    k_norm: Array  # [H]
    q_bias: Optional[Array] = None  # [N, H], only when config.attention_bias
    k_bias: Optional[Array] = None  # [K, H]
    v_bias: Optional[Array] = None  # [K, H]
    o_bias: Optional[Array] = None  # [D]


@flax.struct.dataclass
class Layer:
    attn_norm: Array  # [D]
    attn: Attention
    mlp_norm: Array  # [D]
    gate: Array  # [D, F]
    up: Array  # [D, F]
    down: Array  # [F, D]


@flax.struct.dataclass
class Qwen3Params:
    embed: Array  # [V, D]
    layers: tuple[Layer, ...]
    final_norm: Array  # [D]
    lm_head: Optional[Array] = None  # [D, V]; None when the embeddings are tied

    @property
    def dtype(self):
        return self.embed.dtype


@flax.struct.dataclass
class KVCache:
    k: tuple[Array, ...]  # per layer [B, K, S, H]
    v: tuple[Array, ...]  # per layer [B, K, S, H]
    start: Array  # [B] int32: first valid slot of each row (left padding)
    end: Array  # [] int32: the slot the next token is written to, shared by all rows; or [B] per row

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]


def init_cache(cfg: Qwen3Config, batch: int, max_len: int, dtype=jnp.bfloat16, start=None) -> KVCache:
    """An empty cache of ``max_len`` slots. ``start`` [B] int32 marks left padding (default 0)."""
    shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
    start = jnp.zeros((batch,), jnp.int32) if start is None else jnp.asarray(start, jnp.int32)
    return KVCache(k=zeros, v=tuple(jnp.zeros_like(z) for z in zeros), start=start, end=jnp.int32(0))


def _precision(dtype):
    return lax.Precision.HIGHEST if dtype == jnp.float32 else lax.Precision.DEFAULT


def rms_norm(x: Array, weight: Array, eps: float) -> Array:
    """RMSNorm over the last axis, statistics in fp32, as transformers' Qwen3RMSNorm.

    x: [..., C] any float dtype; weight: [C]. Returns [..., C] in weight's dtype.
    """
    xf = x.astype(jnp.float32)
    xf = xf * lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight * xf.astype(x.dtype)


def rope(x: Array, positions: Array, theta: float) -> Array:
    """Rotary embedding in the "rotate half" layout of transformers, angles in fp32.

    x: [B, T, heads, H]; positions: [B, T] int. Returns x's shape and dtype.
    """
    head_dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


@flax.struct.dataclass
class SharedPrefix:
    """Prefix KV stored once per prefix and read by every fork of it (cascade attention).

    k, v: per layer [P, K, Sp, H]; start: [P] int32, first valid slot (left padding). The query
    batch is grouped: rows ``[p * R, (p + 1) * R)`` continue prefix ``p``. Nothing is copied per
    fork: a 4K-token prefix x 64 forks of a 32B teacher would be ~68 GB as copies.
    """

    k: tuple[Array, ...]
    v: tuple[Array, ...]
    start: Array

    @property
    def num_prefixes(self) -> int:
        return self.start.shape[0]

    @property
    def length(self) -> Array:
        """[P] int32 number of valid prefix tokens."""
        return self.k[0].shape[2] - self.start


def _partial_attention(q: Array, k: Array, v: Array, visible: Array, prec) -> tuple[Array, Array]:
    """Softmax attention over one block of keys, with its log-sum-exp for merging.

    q: [B, T, K, G, H]; k, v: [B, K, S, H]; visible: [B, T, S] bool (broadcastable).
    Returns (out [B, T, K, G, H] float32, lse [B, T, K, G] float32).
    """
    head_dim = q.shape[-1]
    scores = jnp.einsum("btkgh,bksh->btkgs", q, k, precision=prec, preferred_element_type=jnp.float32)
    scores = jnp.where(visible[:, :, None, None, :], scores * head_dim**-0.5, _MASKED)
    peak = jnp.max(scores, axis=-1, keepdims=True)
    weights = jnp.exp(scores - peak)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    out = jnp.einsum("btkgs,bksh->btkgh", (weights / total).astype(v.dtype), v, precision=prec,
                     preferred_element_type=jnp.float32)
    return out, (peak + jnp.log(total))[..., 0]


def merge_attention(out_a: Array, lse_a: Array, out_b: Array, lse_b: Array) -> Array:
    """Exact softmax over the union of two key blocks from their partial results (cascade merge).

    out_*: [B, T, K, G, H] float32; lse_*: [B, T, K, G] float32. Returns [B, T, K, G, H] float32.
    """
    lse = jnp.logaddexp(lse_a, lse_b)
    return out_a * jnp.exp(lse_a - lse)[..., None] + out_b * jnp.exp(lse_b - lse)[..., None]


MIN_WINDOW = 256


def attention_windows(slots: int) -> tuple[int, ...]:
    """The static key windows ``[0, w)`` of a cache of ``slots`` slots, widest first: the cache
    itself, then every power of two below it down to :data:`MIN_WINDOW`."""
    windows = [slots]
    width = 1 << ((slots - 1).bit_length() - 1)
    while width >= MIN_WINDOW:
        windows.append(width)
        width //= 2
    return tuple(windows)


def _cache_attention(q: Array, k_cache: Array, v_cache: Array, start: Array, end: Array, prec,
                     kernel: str = "xla", mesh=None, rules=None):
    """Attention of T queries at slots ``[end, end + T)`` over the cache's filled slots.

    q: [B, T, K, G, H]; k_cache, v_cache: [B, K, S, H]; start: [B] int32; end: [] int32, or [B]
    int32 when rows sit at different slots (the queued decoder; the window then covers the furthest).
    Returns (out [B, T, K, G, H] float32, lse [B, T, K, G] float32).

    Slots at or past end + T are empty, so only the narrowest window of :func:`attention_windows`
    that holds ``end + T`` slots is read (``lax.switch``, one static shape per branch). A
    decode loop in a 4K-slot buffer thus reads 256..512 slots at its start, not 4K. Every branch
    is the same exact softmax; the slots it leaves out are masked in the full one. With
    ``kernel="ragged"`` and a per-row ``end``, each row reads only its own slots instead
    (:func:`jaxalign.models.ragged_attention.ragged_attention`, on ``mesh`` by ``rules`` when the
    rows are sharded).
    """
    steps = q.shape[1]
    if kernel == "ragged" and steps == 1 and jnp.ndim(end) == 1:
        from jaxalign.models import ragged_attention as ragged

        if ragged.applies(k_cache.shape[2], q.shape[0], q.shape[2], mesh, rules):
            return ragged.ragged_attention(q, k_cache, v_cache, start, end, mesh, rules)

    def attend(width):
        def branch(q, k_cache, v_cache, start, end):
            key_slot = jnp.arange(width)[None, None, :]  # [1, 1, W]
            query_slot = (jnp.reshape(end, (-1, 1, 1)) + jnp.arange(steps)[None, :, None])  # [1 or B, T, 1]
            visible = (key_slot >= start[:, None, None]) & (key_slot <= query_slot)  # [B, T, W]
            return _partial_attention(q, k_cache[:, :, :width], v_cache[:, :, :width], visible, prec)
        return branch

    windows = attention_windows(k_cache.shape[2])
    if len(windows) == 1:
        return attend(windows[0])(q, k_cache, v_cache, start, end)
    narrowest = jnp.sum(jnp.asarray(windows) >= jnp.max(end) + steps) - 1
    return lax.switch(narrowest, [attend(w) for w in windows], q, k_cache, v_cache, start, end)


def _write(cache: Array, new: Array, end: Array) -> Array:
    """``new`` [B, T, K, H] written into ``cache`` [B, K, S, H] at slots [end, end + T): one slice when
    ``end`` is shared ([]), a per-row scatter when it is [B] (then T must be 1)."""
    new = new.transpose(0, 2, 1, 3).astype(cache.dtype)
    if jnp.ndim(end) == 0:
        return lax.dynamic_update_slice(cache, new, (0, 0, end, 0))
    if new.shape[2] != 1:
        raise ValueError(f"a cache with a slot per row takes one token per step, got {new.shape[2]}")
    # vmapped, the per-row update is a scatter with a batch dimension: sharded rows update in place
    return jax.vmap(lambda rows, token, slot: lax.dynamic_update_slice(rows, token, (0, slot, 0)))(cache, new, end)


def _attention(
    layer: Attention, cfg: Qwen3Config, x: Array, positions: Array, k_cache: Array, v_cache: Array,
    start: Array, end: Array, prefix: Optional[tuple[Array, Array, Array]] = None, mesh=None, rules=None,
) -> tuple[Array, Array, Array]:
    """One attention block over T new tokens appended to the cache at slot ``end``.

    x: [B, T, D]; positions: [B, T] int32 RoPE positions; k_cache, v_cache: [B, K, S, H];
    start: [B] int32; end: [] or [B] int32. prefix: optional (k [P, K, Sp, H], v, start [P]) shared by
    groups of B // P consecutive rows. mesh, rules: where the rows and heads are sharded (the ragged
    kernel runs per shard). Returns (out [B, T, D], new k_cache, new v_cache).
    """
    prec = _precision(x.dtype)
    batch, steps, _ = x.shape
    q = jnp.einsum("btd,dnh->btnh", x, layer.q, precision=prec)
    k = jnp.einsum("btd,dkh->btkh", x, layer.k, precision=prec)
    v = jnp.einsum("btd,dkh->btkh", x, layer.v, precision=prec)
    if layer.q_bias is not None:
        q, k, v = q + layer.q_bias, k + layer.k_bias, v + layer.v_bias
    q = rope(rms_norm(q, layer.q_norm, cfg.rms_norm_eps), positions, cfg.rope_theta)
    k = rope(rms_norm(k, layer.k_norm, cfg.rms_norm_eps), positions, cfg.rope_theta)

    # Heads before slots: the attention einsums batch over (b, k), and this layout lets their
    # dots read the cache in place instead of transposing all of it at every decode step.
    k_cache, v_cache = _write(k_cache, k, end), _write(v_cache, v, end)

    q = q.reshape(batch, steps, cfg.num_kv_heads, cfg.num_groups, cfg.head_dim)
    out, lse = _cache_attention(q, k_cache, v_cache, start, end, prec, cfg.decode_attention, mesh, rules)
    if prefix is not None:
        prefix_k, prefix_v, prefix_start = prefix
        groups = prefix_k.shape[0]
        grouped_q = q.reshape(groups, (batch // groups) * steps, *q.shape[2:])
        prefix_visible = (jnp.arange(prefix_k.shape[2])[None, :] >= prefix_start[:, None])[:, None, :]
        out_p, lse_p = _partial_attention(grouped_q, prefix_k, prefix_v, prefix_visible, prec)
        out = merge_attention(out_p.reshape(out.shape), lse_p.reshape(lse.shape), out, lse)
    out = out.astype(x.dtype).reshape(batch, steps, cfg.num_heads, cfg.head_dim)
    out = jnp.einsum("btnh,nhd->btd", out, layer.o, precision=prec)
    if layer.o_bias is not None:
        out = out + layer.o_bias
    return out, k_cache, v_cache


def _mlp(layer: Layer, x: Array) -> Array:
    """SwiGLU MLP. x: [B, T, D] -> [B, T, D]."""
    prec = _precision(x.dtype)
    gate = jnp.einsum("btd,df->btf", x, layer.gate, precision=prec)
    up = jnp.einsum("btd,df->btf", x, layer.up, precision=prec)
    return jnp.einsum("btf,fd->btd", jax.nn.silu(gate) * up, layer.down, precision=prec)


def decoder_layer(
    layer: Layer, cfg: Qwen3Config, x: Array, positions: Array, k_cache: Array, v_cache: Array,
    start: Array, end: Array, prefix: Optional[tuple[Array, Array, Array]] = None, mesh=None, rules=None,
) -> tuple[Array, Array, Array]:
    """One pre-norm block: attention then SwiGLU MLP, each added to the residual stream.

    x: [B, T, D] in the params dtype; the other arguments as in ``_attention``.
    Returns (x [B, T, D], new k_cache [B, K, S, H], new v_cache).
    """
    attn, k_cache, v_cache = _attention(
        layer.attn, cfg, rms_norm(x, layer.attn_norm, cfg.rms_norm_eps), positions, k_cache, v_cache,
        start, end, prefix, mesh, rules,
    )
    x = x + attn
    x = x + _mlp(layer, rms_norm(x, layer.mlp_norm, cfg.rms_norm_eps))
    return x, k_cache, v_cache


def forward_hidden(
    params: Qwen3Params, cfg: Qwen3Config, tokens: Array, positions: Array, cache: KVCache,
    shared: Optional[SharedPrefix] = None, mesh=None, rules=None,
) -> tuple[Array, KVCache]:
    """Runs T new tokens through the decoder, appending their keys and values to ``cache``.

    tokens: [B, T] int32; positions: [B, T] int32 RoPE positions (normally slot - cache.start,
    plus the prefix length when ``shared`` is given). shared: a prefix read by groups of
    B // P consecutive rows, merged with the rows' own cache by log-sum-exp. mesh, rules: the
    sampler's (:mod:`jaxalign.models.sharding`), for ``decode_attention="ragged"``.
    Returns (final-normed hidden states [B, T, D] in the params dtype, cache with end += T).
    Layers are unrolled on purpose: XLA does not hoist stacked-weight slicing out of a decode
    ``while_loop`` on GPU.
    """
    x = params.embed[tokens]
    new_k, new_v = [], []
    for i, (layer, k_cache, v_cache) in enumerate(zip(params.layers, cache.k, cache.v)):
        prefix = None if shared is None else (shared.k[i], shared.v[i], shared.start)
        x, k_cache, v_cache = decoder_layer(layer, cfg, x, positions, k_cache, v_cache, cache.start,
                                            cache.end, prefix, mesh, rules)
        new_k.append(k_cache)
        new_v.append(v_cache)
    hidden = rms_norm(x, params.final_norm, cfg.rms_norm_eps)
    cache = cache.replace(k=tuple(new_k), v=tuple(new_v), end=cache.end + tokens.shape[1])
    return hidden, cache


def logits_from_hidden(params: Qwen3Params, hidden: Array) -> Array:
    """Projects hidden states onto the vocabulary in fp32. hidden: [..., D] -> [..., V] float32.

    Call it only at the positions you need: at Qwen3's 151,936 tokens a full [B, T, V] is huge.
    """
    prec = _precision(hidden.dtype)
    if params.lm_head is None:
        return jnp.einsum(
            "...d,vd->...v", hidden, params.embed, precision=prec, preferred_element_type=jnp.float32
        )
    return jnp.einsum(
        "...d,dv->...v", hidden, params.lm_head, precision=prec, preferred_element_type=jnp.float32
    )


def forward(params: Qwen3Params, cfg: Qwen3Config, tokens: Array, start: Optional[Array] = None) -> Array:
    """Full causal forward without a persistent cache: logits at every position.

    tokens: [B, T] int32, left-padded; start: [B] int32 count of left pads per row (default 0).
    Returns float32 logits [B, T, V]; rows' padded positions hold meaningless values.
    """
    batch, steps = tokens.shape
    start = jnp.zeros((batch,), jnp.int32) if start is None else jnp.asarray(start, jnp.int32)
    cache = init_cache(cfg, batch, steps, params.dtype, start)
    positions = jnp.maximum(jnp.arange(steps)[None, :] - start[:, None], 0)
    hidden, _ = forward_hidden(params, cfg, tokens, positions, cache)
    return logits_from_hidden(params, hidden)
