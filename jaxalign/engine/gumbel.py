"""Gumbel noise for the decode step, bit for bit ``jax.random.gumbel``, without its CPU slowdown.

On the CPU backend JAX lowers its Threefry-2x32 hash as a rolled 5-iteration loop, so that big
programs compile faster. Each iteration then writes and reads the whole ``[B, V]`` counter state:
at 16 x 32K, 2.1 ms for the bits alone. Here the same hash is written out round by round in
``jnp``; XLA fuses it into one elementwise pass (0.9 ms for the finished noise), on every
backend. Figures: docs/benchmarks.md, issue #13. The counters, the bit mixing and the float conversion follow the layout
of ``jax.random.gumbel`` with the default settings (``threefry2x32`` keys, partitionable
Threefry, "low" Gumbel mode), so the noise, and therefore every sampled token, is unchanged;
``tests/engine/test_gumbel.py`` checks the equality. With any other PRNG setting
:func:`gumbel_rows` simply calls ``jax.random.gumbel``.

Threefry-2x32 with 20 rounds: Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC 2011).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)
_TINY = np.float32(np.finfo(np.float32).tiny)


def threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 block cipher (20 rounds) of counters (x0, x1) under key (k0, k1).

    All uint32, broadcastable to one shape. Returns the two uint32 output words.
    """
    schedule = (k0, k1, k0 ^ k1 ^ _KEY_PARITY)
    x0, x1 = x0 + schedule[0], x1 + schedule[1]
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))) ^ x0
        x0 = x0 + schedule[(block + 1) % 3]
        x1 = x1 + schedule[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


def _is_default_threefry(keys: jax.Array) -> bool:
    return (jax.config.jax_threefry_partitionable and jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
            and str(jax.random.key_impl(keys)) == "threefry2x32")


def gumbel_rows(keys: jax.Array, width: int) -> jax.Array:
    """Standard Gumbel noise, one row per key. keys: [B] typed PRNG keys.

    Returns [B, width] float32, equal to ``vmap(lambda k: jax.random.gumbel(k, (width,)))(keys)``.
    """
    if not _is_default_threefry(keys):
        return jax.vmap(lambda k: jax.random.gumbel(k, (width,), jnp.float32))(keys)
    key_words = jax.random.key_data(keys)  # [B, 2] uint32
    counter = jnp.arange(width, dtype=jnp.uint32)[None, :]  # the flat index's low word; its high word is 0
    y0, y1 = threefry2x32(key_words[:, :1], key_words[:, 1:], jnp.zeros_like(counter), counter)
    bits = y0 ^ y1
    # 23 random mantissa bits under exponent 0 give a float in [1, 2); shifted into [tiny, 1).
    unit = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(0x3F800000), jnp.float32) - 1.0
    uniform = jnp.maximum(_TINY, unit * (np.float32(1.0) - _TINY) + _TINY)
    return -jnp.log(-jnp.log(uniform))
