"""Batched scoring of many sequences after one prompt (MiniLLM's reward-to-go) against the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.engine import scoring
from jaxalign.engine.scoring import response_logprobs, token_logprobs
from jaxalign.models.config import Qwen3Config
from jaxalign.models.init import init_params


def _reference(params, cfg, prompt, seq):
    """log P(seq[t] | prompt + seq[:t]) from one full forward pass per sequence: [L] float32."""
    full = np.asarray(response_logprobs(params, cfg, prompt, seq, np.arange(len(seq))))
    return full[np.arange(len(seq)), seq]


def _model(vocab, hidden=32, layers=2, seed=0):
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_layers=layers,
                      num_heads=4, num_kv_heads=2, head_dim=8, rope_theta=10000.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, max_position_embeddings=1024)
    return init_params(cfg, jax.random.key(seed), jnp.float32), cfg


@pytest.mark.parametrize("prefill_chunk", [16, 256])
def test_batched_rows_equal_one_pass_per_sequence(prefill_chunk):
    """Rows of mixed lengths (1 to 90 tokens), a prompt longer than one prefill chunk, more rows than
    one call holds: every log-prob equals the reference's."""
    params, cfg = _model(vocab=61)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, cfg.vocab_size, 37)
    lengths = [1, 90, 5, 33, 2, 64, 17] + list(rng.integers(1, 40, scoring.MAX_SCORED_ROWS))
    sequences = [rng.integers(0, cfg.vocab_size, n) for n in lengths] + [np.zeros(0, np.int64)]
    got = token_logprobs(params, cfg, prompt, sequences, prefill_chunk)
    assert [len(g) for g in got] == lengths + [0]
    for seq, scored in zip(sequences[:-1], got):
        np.testing.assert_allclose(scored, _reference(params, cfg, prompt, seq), atol=2e-5)


def test_qwen_vocabulary_rows_equal_the_reference():
    """At Qwen3's 151,936-token vocabulary only [rows, positions] log-probs leave the device."""
    params, cfg = _model(vocab=151_936, hidden=16, layers=1)
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, cfg.vocab_size, 12)
    sequences = [rng.integers(0, cfg.vocab_size, n) for n in (3, 20, 9)]
    got = token_logprobs(params, cfg, prompt, sequences)
    for seq, scored in zip(sequences, got):
        assert scored.dtype == np.float32
        np.testing.assert_allclose(scored, _reference(params, cfg, prompt, seq), atol=2e-5)


def test_a_sequence_past_the_context_is_refused():
    params, cfg = _model(vocab=11)
    with pytest.raises(Exception, match="max_position_embeddings"):
        token_logprobs(params, cfg, np.ones(1000, np.int64), [np.ones(30, np.int64)])


@pytest.mark.parametrize("count, width, expect", [(3, 40, (4, 64, 64)), (500, 200, (64, 4, 256)),
                                                   (500, 4000, (8, 32, 4096)), (90, 30_000, (1, 256, 32768))])
def test_a_call_stays_within_its_row_slot_and_position_budgets(count, width, expect):
    """At 30K-token AIME traces one row per call; the KV cache is at most SCORED_ROW_SLOTS row-slots
    and a step projects at most SCORED_POSITIONS positions onto the vocabulary."""
    rows, chunk, slots = scoring.scored_rows_layout(count, width)
    assert (rows, chunk, slots) == expect
    assert rows * slots <= max(scoring.SCORED_ROW_SLOTS, slots) and rows * chunk <= scoring.SCORED_POSITIONS
    assert slots >= width and slots % chunk == 0
