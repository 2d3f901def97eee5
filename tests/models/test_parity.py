"""Flax Qwen3 against transformers' PyTorch Qwen3 on tiny random checkpoints."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxalign.models import decoder_layer, forward, forward_hidden, init_cache, load_qwen3, logits_from_hidden
from tests.models.conftest import TINY_CONFIGS

NAMES = list(TINY_CONFIGS)
# Stated bound for bf16 params: per-position KL(p_fp32_reference || p_ours_bf16), in nats.
BF16_MEAN_KL = 1e-3  # measured 0.7e-4 to 1.9e-4; transformers' own bf16 gives 0.6e-4 to 2.2e-4
BF16_MAX_KL = 5e-3  # measured at most 6.6e-4
HIDDEN_ATOL = 5e-5  # fp32 hidden states, |h| up to 12: measured at most 8.8e-6 (deepest layer)


def _tokens(vocab: int, batch: int, steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(batch, steps)).astype(np.int32)


def _torch_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(tokens).long()).logits.float().numpy()


@pytest.mark.parametrize("name", NAMES)
def test_fp32_logits_match_transformers(hf_checkpoints, name):
    path, model = hf_checkpoints[name]
    cfg, params = load_qwen3(path, dtype=jnp.float32)
    tokens = _tokens(cfg.vocab_size, 2, 24)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(jax.jit(forward, static_argnums=1)(params, cfg, tokens))
    ref = _torch_logits(model, tokens)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def _kl(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    logp = p_logits - np.logaddexp.reduce(p_logits, axis=-1, keepdims=True)
    logq = q_logits - np.logaddexp.reduce(q_logits, axis=-1, keepdims=True)
    return (np.exp(logp) * (logp - logq)).sum(-1)


@functools.partial(jax.jit, static_argnums=1)
def _hidden_states(params, cfg, tokens):
    """Ours, in the layout of transformers' hidden states plus the last layer's raw output.

    Returns [embeddings, after layer 1, ..., after layer L, final-normed], each [B, T, D].
    The layers are composed here from ``decoder_layer``; the last entry is ``forward_hidden``.
    """
    batch, steps = tokens.shape
    cache = init_cache(cfg, batch, steps, params.dtype)
    positions = jnp.broadcast_to(jnp.arange(steps), (batch, steps))
    states = [params.embed[tokens]]
    for layer, k_cache, v_cache in zip(params.layers, cache.k, cache.v):
        x, _, _ = decoder_layer(layer, cfg, states[-1], positions, k_cache, v_cache, cache.start, cache.end)
        states.append(x)
    return states + [forward_hidden(params, cfg, tokens, positions, cache)[0]]


def _torch_hidden_states(model, tokens: np.ndarray) -> list[np.ndarray]:
    """transformers' hidden states are [embeddings, after layers 1..L-1, final-normed]; the last
    layer's raw output is not among them, so a hook records it."""
    last = []
    hook = model.model.layers[-1].register_forward_hook(
        lambda module, args, out: last.append(out[0] if isinstance(out, tuple) else out))
    try:
        with torch.no_grad():
            states = model(torch.from_numpy(tokens).long(), output_hidden_states=True).hidden_states
    finally:
        hook.remove()
    assert len(states) == model.config.num_hidden_layers + 1
    return [s.float().numpy() for s in (*states[:-1], last[0], states[-1])]


@pytest.mark.parametrize("name", NAMES)
def test_fp32_hidden_states_match_transformers_after_every_layer(hf_checkpoints, name):
    path, model = hf_checkpoints[name]
    cfg, params = load_qwen3(path, dtype=jnp.float32)
    tokens = _tokens(cfg.vocab_size, 2, 24, seed=5)
    with jax.default_matmul_precision("highest"):
        ours = [np.asarray(s) for s in _hidden_states(params, cfg, tokens)]
    ref = _torch_hidden_states(model, tokens)
    labels = ["embeddings"] + [f"after layer {i + 1}" for i in range(cfg.num_layers)] + ["final norm"]
    for label, got, want in zip(labels, ours, ref, strict=True):
        np.testing.assert_allclose(got, want, atol=HIDDEN_ATOL, rtol=0, err_msg=f"{name}: {label}")


@pytest.mark.parametrize("name", NAMES)
def test_bf16_logits_within_kl_bound(hf_checkpoints, name):
    path, model = hf_checkpoints[name]
    cfg, params = load_qwen3(path, dtype=jnp.bfloat16)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(params))
    tokens = _tokens(cfg.vocab_size, 2, 24, seed=1)
    ours = np.asarray(jax.jit(forward, static_argnums=1)(params, cfg, tokens))
    assert ours.dtype == np.float32, "logits are fp32 even with bf16 params"
    kl = _kl(_torch_logits(model, tokens), ours)
    assert kl.mean() < BF16_MEAN_KL and kl.max() < BF16_MAX_KL, (kl.mean(), kl.max())


def greedy(params, cfg, prompt: np.ndarray, steps: int) -> np.ndarray:
    """Greedy decoding with the KV cache: one prefill, then one token per step. prompt: [B, T]."""
    batch, length = prompt.shape
    cache = init_cache(cfg, batch, length + steps, params.dtype)
    step = jax.jit(forward_hidden, static_argnums=1)
    positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
    hidden, cache = step(params, cfg, jnp.asarray(prompt), positions, cache)
    token = jnp.argmax(logits_from_hidden(params, hidden[:, -1]), -1)
    out = [token]
    for i in range(steps - 1):
        hidden, cache = step(params, cfg, token[:, None], jnp.full((batch, 1), length + i), cache)
        token = jnp.argmax(logits_from_hidden(params, hidden[:, -1]), -1)
        out.append(token)
    return np.asarray(jnp.stack(out, axis=1))


@pytest.mark.parametrize("name", NAMES)
def test_16_greedy_tokens_match_transformers(hf_checkpoints, name):
    path, model = hf_checkpoints[name]
    cfg, params = load_qwen3(path, dtype=jnp.float32)
    prompt = _tokens(cfg.vocab_size, 2, 8, seed=2)
    with torch.no_grad():
        ref = model.generate(
            torch.from_numpy(prompt).long(), max_new_tokens=16, min_new_tokens=16, do_sample=False,
            eos_token_id=None, pad_token_id=0,
        )[:, prompt.shape[1]:].numpy()
    with jax.default_matmul_precision("highest"):
        ours = greedy(params, cfg, prompt, 16)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("name", NAMES[:2])
def test_cached_decode_equals_full_forward(hf_checkpoints, name):
    """Logits of a token-by-token cached decode equal the full forward at every step (fp32, 1e-5)."""
    cfg, params = load_qwen3(hf_checkpoints[name][0], dtype=jnp.float32)
    tokens = _tokens(cfg.vocab_size, 3, 12, seed=3)
    full = np.asarray(forward(params, cfg, tokens))
    cache = init_cache(cfg, 3, 16, jnp.float32)
    step = jax.jit(forward_hidden, static_argnums=1)
    hidden, cache = step(params, cfg, tokens[:, :4], jnp.broadcast_to(jnp.arange(4), (3, 4)), cache)
    got = [logits_from_hidden(params, hidden)]
    for t in range(4, 12):
        hidden, cache = step(params, cfg, tokens[:, t:t + 1], jnp.full((3, 1), t), cache)
        got.append(logits_from_hidden(params, hidden))
    np.testing.assert_allclose(np.concatenate([np.asarray(g) for g in got], 1), full, atol=1e-5, rtol=0)


def test_left_padding_does_not_change_a_row(hf_checkpoints):
    cfg, params = load_qwen3(hf_checkpoints["tied_gqa"][0], dtype=jnp.float32)
    tokens = _tokens(cfg.vocab_size, 2, 10, seed=4)
    plain = np.asarray(forward(params, cfg, tokens))
    pads = 3
    padded = np.concatenate([np.zeros((2, pads), np.int32), tokens], 1)
    shifted = np.asarray(forward(params, cfg, padded, start=jnp.array([pads, pads])))
    np.testing.assert_allclose(shifted[:, pads:], plain, atol=1e-5, rtol=0)
    mixed = np.asarray(forward(params, cfg, np.stack([padded[0], np.concatenate([tokens[1], [1, 2, 3]])]),
                               start=jnp.array([pads, 0])))
    np.testing.assert_allclose(mixed[0, pads:], plain[0], atol=1e-5, rtol=0)
    assert np.isfinite(mixed).all()
