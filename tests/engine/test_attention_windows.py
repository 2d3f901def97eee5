"""Attention reads only the filled part of a long cache, and still gives the full-forward logits."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.models.config import Qwen3Config
from jaxalign.models.init import init_params
from jaxalign.models.qwen3 import MIN_WINDOW, attention_windows, forward, forward_hidden, init_cache, logits_from_hidden

CFG = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=16, rope_theta=1e4, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  max_position_embeddings=1024)
SLOTS = 640


def test_windows_are_the_cache_then_powers_of_two_down_to_the_minimum():
    assert MIN_WINDOW == 256
    assert attention_windows(128) == (128,)
    assert attention_windows(256) == (256,)
    assert attention_windows(640) == (640, 512, 256)
    assert attention_windows(4608) == (4608, 4096, 2048, 1024, 512, 256)


@jax.jit
def _step(params, tokens, cache):
    positions = cache.end + jnp.arange(tokens.shape[1], dtype=jnp.int32)[None, :]
    hidden, cache = forward_hidden(params, CFG, tokens, positions, cache)
    return logits_from_hidden(params, hidden), cache


def _run(params, seq, chunks, poison_from=None):
    """Logits [sum(chunks), V] of seq fed in chunks through one cache; slots >= poison_from start as NaN."""
    cache = init_cache(CFG, 1, SLOTS, jnp.float32)
    if poison_from is not None:
        poison = jnp.arange(SLOTS)[None, None, :, None] >= poison_from  # [1, 1, S, 1]
        cache = cache.replace(k=tuple(jnp.where(poison, jnp.nan, k) for k in cache.k),
                              v=tuple(jnp.where(poison, jnp.nan, v) for v in cache.v))
    got, first = [], 0
    for size in chunks:
        logits, cache = _step(params, seq[None, first:first + size], cache)
        got.append(np.asarray(logits[0]))
        first += size
    return np.concatenate(got)


def test_windowed_cache_attention_equals_full_forward_and_skips_empty_slots():
    """Slots past a window hold NaN in some runs: reading them would poison the output (0 * NaN)."""
    params = init_params(CFG, jax.random.key(0), scale=0.3, norm_jitter=0.1)
    seq = np.random.default_rng(0).integers(0, CFG.vocab_size, size=530).astype(np.int32)
    want = np.asarray(jax.jit(forward, static_argnums=1)(params, CFG, seq[None]))[0]
    prefill, decode, crossing = [250], [1] * 12, [268]  # ends at slots 250 (window 256), 262 (512), 530 (640)
    np.testing.assert_allclose(_run(params, seq, prefill, poison_from=256), want[:250], atol=2e-5, rtol=0)
    np.testing.assert_allclose(_run(params, seq, prefill + decode, poison_from=512), want[:262], atol=2e-5, rtol=0)
    np.testing.assert_allclose(_run(params, seq, prefill + decode + crossing), want, atol=2e-5, rtol=0)
    assert np.isnan(_run(params, seq, prefill + decode + crossing, poison_from=600)[262:]).all(), \
        "past slot 512 the whole cache is read, poisoned slots included"
