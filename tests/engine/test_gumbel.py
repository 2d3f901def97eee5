"""The decode step's Gumbel noise and argmax: bit-identical to jax.random and jnp.argmax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.engine.gumbel import gumbel_rows, threefry2x32
from jaxalign.engine.sampling import first_argmax


@pytest.mark.parametrize("key, counter, want", [
    ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
])
def test_threefry_known_answers(key, counter, want):
    """The known-answer vectors published with Random123 for Threefry-2x32-20."""
    words = [jnp.asarray(np.uint32(w)) for w in (*key, *counter)]
    assert tuple(int(w) for w in threefry2x32(*words)) == want


def _reference(keys, width):
    return np.asarray(jax.vmap(lambda k: jax.random.gumbel(k, (width,), jnp.float32))(keys))


@pytest.mark.parametrize("width", [1, 7, 4096, 32769])
def test_gumbel_rows_equal_jax_random_gumbel(width):
    keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(11), jnp.arange(5) * 1000003)
    got = np.asarray(jax.jit(gumbel_rows, static_argnums=1)(keys, width))
    assert got.dtype == np.float32 and got.shape == (5, width)
    np.testing.assert_array_equal(got, _reference(keys, width))


def test_other_prng_settings_fall_back_to_jax_random():
    rbg = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(3, impl="rbg"), jnp.arange(3))
    np.testing.assert_array_equal(np.asarray(gumbel_rows(rbg, 100)), _reference(rbg, 100))
    keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(3), jnp.arange(3))
    partitionable = np.asarray(gumbel_rows(keys, 100))
    with jax.threefry_partitionable(False):
        original = _reference(keys, 100)
        np.testing.assert_array_equal(np.asarray(gumbel_rows(keys, 100)), original)
    assert not np.array_equal(original, partitionable), "the two Threefry layouts should differ"


def test_first_argmax_equals_argmax_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(64, 300)).astype(np.float32)  # many tied maxima per row
    scores[3] = -np.inf
    scores[4, 17] = np.inf
    got = np.asarray(jax.jit(first_argmax)(scores))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np.argmax(scores, axis=-1))
