"""Sampling engine: cascade decode, forked vs plain, row independence, frequencies, scoring, compiles."""

import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxalign.engine import COMPILES, bucket, sample
from jaxalign.engine.policy import FlaxPolicy
from jaxalign.engine.scoring import compare, response_logprobs
from jaxalign.errors import ConfigError
from jaxalign.models.config import Qwen3Config
from jaxalign.models.init import init_params
from jaxalign.models.qwen3 import SharedPrefix, forward, forward_hidden, init_cache, logits_from_hidden

CFG = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=16, rope_theta=1e4, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  max_position_embeddings=256)
EOS = (60, 61, 62, 63)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0), scale=0.3, norm_jitter=0.1)


@jax.jit
def _padded_forward(params, tokens, start):
    return forward(params, CFG, tokens, start)


def reference_logits(params, seq, width: int = 64) -> np.ndarray:
    """Full-forward logits [len(seq), V] of one sequence, left-padded to a fixed width (one compile)."""
    tokens = np.zeros((1, width), np.int32)
    tokens[0, width - len(seq):] = seq
    out = _padded_forward(params, tokens, np.array([width - len(seq)], np.int32))
    return np.asarray(out)[0, width - len(seq):]


def _prefixes(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 60, size=n) for n in lengths]


def test_cascade_decode_equals_full_forward(params):
    """Prefix KV at batch 1 per prefix + a per-fork suffix cache give the full-forward logits."""
    prefixes = _prefixes([5, 9])
    rng = np.random.default_rng(1)
    forks = 3
    suffix_tokens = rng.integers(0, 60, size=(2 * forks, 6))
    length = 16
    ptok = np.zeros((2, length), np.int32)
    pstart = np.array([length - len(p) for p in prefixes], np.int32)
    for i, p in enumerate(prefixes):
        ptok[i, pstart[i]:] = p
    cache = init_cache(CFG, 2, length, jnp.float32, pstart)
    _, cache = forward_hidden(params, CFG, ptok, np.maximum(np.arange(length) - pstart[:, None], 0), cache)
    shared = SharedPrefix(k=cache.k, v=cache.v, start=jnp.asarray(pstart))
    suffix = init_cache(CFG, 2 * forks, 8, jnp.float32)
    plen = np.repeat([len(p) for p in prefixes], forks)
    want = [reference_logits(params, np.concatenate([prefixes[row // forks], suffix_tokens[row]]))
            for row in range(2 * forks)]
    for t in range(suffix_tokens.shape[1]):
        hidden, suffix = forward_hidden(params, CFG, suffix_tokens[:, t:t + 1], (plen + t)[:, None], suffix, shared)
        got = np.asarray(logits_from_hidden(params, hidden[:, 0]))
        for row in range(2 * forks):
            np.testing.assert_allclose(got[row], want[row][len(prefixes[row // forks]) + t], atol=1e-5, rtol=0)


def test_forked_sampling_equals_unforked(params):
    prefixes = _prefixes([4, 17, 2, 9])
    counts = [5, 0, 3, 7]
    kwargs = dict(max_new_tokens=20, key=jax.random.key(3), eos_ids=EOS)
    forked = sample(params, CFG, prefixes, counts, **kwargs)
    plain = sample(params, CFG, prefixes, counts, fork=False, **kwargs)
    np.testing.assert_array_equal(forked.tokens, plain.tokens)
    np.testing.assert_array_equal(forked.lengths, plain.lengths)
    np.testing.assert_array_equal(forked.prefix_index, np.repeat(np.arange(4), counts))
    assert (forked.lengths < 20).any(), "some rows should stop at EOS"
    for row, n in zip(forked.tokens, forked.lengths):
        assert (row[n:] == -1).all() and (row[:n] >= 0).all()
        assert row[n - 1] in EOS or n == 20
        assert not np.isin(row[: n - 1], EOS).any()


def test_queued_completions_equal_one_row_each(params):
    """Continuous batching: with 1 decode row per prefix and up to 23 completions each, rows take
    the next completion of their prefix when one ends; every completion is the plain sampler's."""
    from jaxalign.engine import sampling

    prefixes = _prefixes([4, 17, 2], seed=3)
    counts = [23, 6, 1]
    kwargs = dict(max_new_tokens=20, key=jax.random.key(4), eos_ids=EOS)
    before = sampling.COMPILES["forked"]
    queued = sample(params, CFG, prefixes, counts, max_rows=4, max_queued=128, **kwargs)
    assert sampling.COMPILES["forked"] - before <= 1  # one call: 3 prefixes x 1 row, 23 completions queued
    assert sampling.queue_layout([(0, 0, 23), (1, 0, 6), (2, 0, 1)], 4) == (3, 32, 1)
    assert sampling.queue_layout([(p, 0, 25) for p in range(20)], 256) == (20, 32, 12)  # no padding prefixes
    # a mesh's data axis of 8 gives each prefix 8 rows: 20 prefixes of one call would need 160 rows of 64
    calls = sampling._chunks([4] * 20, 64, 16 * 64, min_rows=8)
    assert [len(c) for c in calls] == [8, 8, 4]
    assert all(math.prod(sampling.queue_layout(c, 64, 8)[::2]) <= 64 for c in calls)
    plain = sample(params, CFG, prefixes, counts, fork=False, **kwargs)
    np.testing.assert_array_equal(queued.tokens, plain.tokens)
    np.testing.assert_array_equal(queued.lengths, plain.lengths)
    assert len(set(queued.lengths.tolist())) > 3, "completions of several lengths exercise the refill"
    one_call_each = sample(params, CFG, prefixes, counts, max_rows=64, max_queued=64, **kwargs)
    np.testing.assert_array_equal(queued.tokens, one_call_each.tokens)


def test_a_queued_call_stops_at_the_limit_and_after_the_last_completion(params):
    """limit 1: every completion is one token; a prefix with no completions leaves its rows idle."""
    prefixes = _prefixes([5, 3], seed=8)
    out = sample(params, CFG, prefixes, [9, 0], max_new_tokens=1, key=jax.random.key(1), eos_ids=EOS,
                 max_rows=2, max_queued=32)
    assert out.tokens.shape == (9, 1) and (out.lengths == 1).all() and (out.tokens[:, 0] >= 0).all()
    plain = sample(params, CFG, prefixes, [9, 0], max_new_tokens=1, key=jax.random.key(1), eos_ids=EOS, fork=False)
    np.testing.assert_array_equal(out.tokens, plain.tokens)


def test_short_prefixes_share_one_compiled_shape(params):
    """Prefixes of 30 and 90 tokens both take PREFIX_SLOTS_MIN = 128 slots: one compile, not two."""
    from jaxalign.engine import sampling

    assert [sampling.prefix_slots(n) for n in (1, 30, 128, 129)] == [128, 128, 128, 256]
    kwargs = dict(max_new_tokens=4, key=jax.random.key(2), eos_ids=EOS, max_rows=8)
    before = sampling.COMPILES["forked"]
    for length in (30, 90):
        sample(params, CFG, _prefixes([length, length + 1, length + 2], seed=length), [3, 2, 1], **kwargs)
    assert sampling.COMPILES["forked"] - before == 1


def test_limits_under_one_bound_share_one_compiled_shape(params):
    """With ``max_new_bound``, calls whose max_new_tokens differ (rollouts from nodes at different
    depths) compile one sampler shape and draw exactly what they draw without it. A shared key and
    one key per prefix take the same executable."""
    kwargs = dict(key=jax.random.key(5), eos_ids=EOS, max_rows=8)
    prefixes = _prefixes([6, 9], seed=11)
    before = COMPILES["forked"]
    bounded = {limit: sample(params, CFG, prefixes, [3, 2], max_new_tokens=limit, max_new_bound=100, **kwargs)
               for limit in (5, 20, 40)}
    assert COMPILES["forked"] - before == 1
    for limit, got in bounded.items():
        alone = sample(params, CFG, prefixes, [3, 2], max_new_tokens=limit, **kwargs)
        np.testing.assert_array_equal(got.tokens, alone.tokens)
        np.testing.assert_array_equal(got.lengths, alone.lengths)
    assert bounded[40].lengths.max() > 8, "rows run past the unbounded call's smallest cache"
    before = COMPILES["forked"]
    keys = jax.random.split(jax.random.key(6), 2)
    own = sample(params, CFG, prefixes, [3, 2], max_new_tokens=40, max_new_bound=100, key=keys, eos_ids=EOS, max_rows=8)
    assert COMPILES["forked"] - before == 0
    first = sample(params, CFG, prefixes[:1], 3, max_new_tokens=40, key=keys[0], eos_ids=EOS, max_rows=8)
    np.testing.assert_array_equal(own.tokens[:3], first.tokens)


def test_idle_rows_never_widen_the_attention_window(params, monkeypatch):
    """A prefix whose queue is empty leaves its row idle; the window is chosen from the furthest
    *active* row's slot (at most limit - 2), never from a row that stopped."""
    import dataclasses

    from jaxalign.models import qwen3

    ends, attend = [], qwen3._cache_attention

    def spy(q, k, v, start, end, *rest):
        if jnp.ndim(end) == 1:
            jax.debug.callback(lambda e: ends.append(np.asarray(e)), end)
        return attend(q, k, v, start, end, *rest)

    monkeypatch.setattr(qwen3, "_cache_attention", spy)
    cfg = dataclasses.replace(CFG, max_position_embeddings=2048)
    limit = 40
    out = sample(params, cfg, _prefixes([5, 7], seed=11), [1, 24], max_new_tokens=limit, key=jax.random.key(3),
                 eos_ids=(63,), max_rows=2, max_queued=64)
    ends = np.stack(ends)  # [steps, rows]
    assert len(ends) > 2 * limit and out.lengths[0] < len(ends) // 2  # row 0 idles for most of the call
    assert ends.max() <= limit - 2


def test_queued_completions_cross_attention_windows(params):
    """Completions of 300 tokens in a 512-slot cache (windows 256 and 512), two queued per row."""
    import dataclasses

    cfg = dataclasses.replace(CFG, max_position_embeddings=1024)
    kwargs = dict(max_new_tokens=300, key=jax.random.key(5), eos_ids=(CFG.vocab_size,))  # an id never drawn
    prefixes = _prefixes([6, 3], seed=12)
    queued = sample(params, cfg, prefixes, [4, 3], max_rows=4, max_queued=16, **kwargs)
    plain = sample(params, cfg, prefixes, [4, 3], fork=False, **kwargs)
    assert (queued.lengths == 300).all()
    np.testing.assert_array_equal(queued.tokens, plain.tokens)


@pytest.mark.parametrize("fork", [True, False])
def test_one_key_per_prefix_draws_what_one_call_per_prefix_draws(params, fork):
    """The pre-pass samples many questions' demonstrations in one call, each under its own key."""
    prefixes, counts = _prefixes([4, 17, 2], seed=21), [5, 3, 6]
    keys = jnp.stack([jax.random.key(s) for s in (7, 8, 9)])
    kwargs = dict(max_new_tokens=12, eos_ids=EOS, fork=fork, max_rows=4)
    together = sample(params, CFG, prefixes, counts, key=keys, **kwargs)
    rows = np.cumsum([0] + counts)
    for p, (prefix, count) in enumerate(zip(prefixes, counts)):
        alone = sample(params, CFG, [prefix], count, key=keys[p], **kwargs)
        np.testing.assert_array_equal(together.tokens[rows[p]:rows[p + 1]], alone.tokens)
        np.testing.assert_array_equal(together.lengths[rows[p]:rows[p + 1]], alone.lengths)
    shared = sample(params, CFG, prefixes, counts, key=keys[0], **kwargs)
    assert not np.array_equal(shared.tokens[rows[1]:], together.tokens[rows[1]:])
    with pytest.raises(ConfigError, match="one key, or one per prefix"):
        sample(params, CFG, prefixes, counts, key=keys[:2], **kwargs)
    with pytest.raises(ConfigError, match="row_offset=3 with one key per prefix"):
        sample(params, CFG, prefixes, counts, key=keys, row_offset=3, **kwargs)


def test_a_row_does_not_depend_on_padding_or_neighbours(params):
    a, long_neighbour = _prefixes([3, 40], seed=5)
    key = jax.random.key(9)
    alone = sample(params, CFG, [a], [4], max_new_tokens=12, key=key, eos_ids=EOS)
    crowded = sample(params, CFG, [a, long_neighbour], [4, 11], max_new_tokens=12, key=key, eos_ids=EOS)
    chunked = sample(params, CFG, [a, long_neighbour], [4, 11], max_new_tokens=12, key=key, eos_ids=EOS, max_rows=2)
    longer = sample(params, CFG, [a], [4], max_new_tokens=30, key=key, eos_ids=EOS)
    np.testing.assert_array_equal(alone.tokens, crowded.tokens[:4])
    np.testing.assert_array_equal(crowded.tokens, chunked.tokens)
    np.testing.assert_array_equal(alone.tokens, np.where(np.arange(12) < np.minimum(longer.lengths, 12)[:, None],
                                                         longer.tokens[:, :12], -1))
    # rows are keyed by their global index: an offset reproduces the same rows elsewhere
    shifted = sample(params, CFG, [long_neighbour], [11], max_new_tokens=12, key=key, eos_ids=EOS, row_offset=4)
    np.testing.assert_array_equal(shifted.tokens, crowded.tokens[4:])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_frequencies_match_softmax(temperature):
    params = init_params(CFG, jax.random.key(1), scale=0.08)
    prefix = _prefixes([6], seed=2)[0]
    n = 4096
    draws = sample(params, CFG, [prefix], [n], max_new_tokens=1, key=jax.random.key(4), eos_ids=EOS,
                   temperature=temperature, max_rows=4096)
    logits = reference_logits(params, prefix)[-1].astype(np.float64) / temperature
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    observed = np.bincount(draws.tokens[:, 0], minlength=CFG.vocab_size)
    assert probs.min() * n > 5, "expected counts too small for a chi-square test"
    _, p_value = stats.chisquare(observed, probs * n)
    assert p_value > 1e-3, p_value


def test_temperature_zero_is_greedy(params):
    prefix = _prefixes([7], seed=3)[0]
    got = sample(params, CFG, [prefix], [2], max_new_tokens=10, key=jax.random.key(0), eos_ids=EOS, temperature=0.0)
    seq = list(prefix)
    for _ in range(10):
        token = int(np.argmax(reference_logits(params, np.array(seq))[-1]))
        seq.append(token)
        if token in EOS:
            break
    want = np.array(seq[len(prefix):])
    for row, n in zip(got.tokens, got.lengths):
        np.testing.assert_array_equal(row[:n], want)


def test_scoring_equals_full_forward_at_positions(params):
    prompt, response = _prefixes([6, 10], seed=4)
    positions = np.array([0, 3, 4, 10])
    got = np.asarray(response_logprobs(params, CFG, prompt, response, positions))
    full = reference_logits(params, np.concatenate([prompt, response]))
    full = full - np.logaddexp.reduce(full, axis=-1, keepdims=True)
    np.testing.assert_allclose(got, full[len(prompt) - 1 + positions], atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="positions"):
        response_logprobs(params, CFG, prompt, response, np.array([11]))


def test_compare_matches_numpy():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(2, 5, 64)) * 2
    logp, logq = (x - np.logaddexp.reduce(x, -1, keepdims=True) for x in logits)
    ids = rng.integers(0, 64, size=(5, 3))
    got = {k: np.asarray(v) for k, v in compare(logp, logq, ids).items()}
    p, q = np.exp(logp), np.exp(logq)
    m = (p + q) / 2
    np.testing.assert_allclose(got["p_at"], np.take_along_axis(p, ids, -1), rtol=1e-5)
    np.testing.assert_allclose(got["q_at"], np.take_along_axis(q, ids, -1), rtol=1e-5)
    np.testing.assert_allclose(got["kl"], (p * (logp - logq)).sum(-1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["js"], 0.5 * (p * np.log(p / m) + q * np.log(q / m)).sum(-1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["l2"], np.linalg.norm(p - q, axis=-1), rtol=1e-4)
    np.testing.assert_allclose(got["cos"], (p * q).sum(-1) / np.linalg.norm(p, axis=-1) / np.linalg.norm(q, axis=-1),
                               rtol=1e-4)


def test_compiles_stay_bounded(params):
    from jaxalign.engine import sampling

    rng = np.random.default_rng(7)
    touched = set()
    before = COMPILES["forked"]
    for _ in range(20):
        lengths = rng.integers(1, 33, size=rng.integers(1, 3))
        counts = rng.integers(2, 5, size=len(lengths))
        max_new = int(rng.integers(1, 17))
        sample(params, CFG, _prefixes(lengths, seed=int(rng.integers(1000))), counts, max_new_tokens=max_new,
               key=jax.random.key(0), eos_ids=EOS)
        touched.add((sampling.coarse_bucket(len(lengths)), bucket(int(counts.max())),
                     sampling.prefix_slots(int(lengths.max())), bucket(max_new, 8)))
    compiles = COMPILES["forked"] - before
    assert compiles <= len(touched), (compiles, len(touched))
    assert len(touched) < 20  # bucketing actually merged shapes


def test_bad_input_is_named(params):
    kwargs = dict(max_new_tokens=4, key=jax.random.key(0), eos_ids=EOS)
    with pytest.raises(ConfigError, match="empty"):
        sample(params, CFG, [np.array([], np.int32)], [1], **kwargs)
    with pytest.raises(ConfigError, match="cache limit of 256"):
        sample(params, CFG, [np.zeros(254, np.int32)], [1], **kwargs)
    with pytest.raises(ConfigError, match="temperature"):
        sample(params, CFG, [np.zeros(3, np.int32)], [1], temperature=-1.0, **kwargs)
    with pytest.raises(ConfigError, match="eos_ids"):
        sample(params, CFG, [np.zeros(3, np.int32)], [1], max_new_tokens=4, key=jax.random.key(0), eos_ids=())
    with pytest.raises(ConfigError, match="counts"):
        sample(params, CFG, [np.zeros(3, np.int32)], [1, 2], **kwargs)
    with pytest.raises(ConfigError, match="max_queued=0 must be >= 1"):
        sample(params, CFG, [np.zeros(3, np.int32)], [2], max_queued=0, **kwargs)


def test_flax_policy_implements_the_protocol(params):
    policy = FlaxPolicy(params, CFG, EOS)
    prompt, partial = _prefixes([5, 3], seed=8)
    batch = policy.sample(prompt, [partial, partial[:1]], [2, 3], 6, 1.0, jax.random.key(2))
    assert batch.tokens.shape == (5, 6) and list(batch.prefix_index) == [0, 0, 1, 1, 1]
    direct = sample(params, CFG, [np.concatenate([prompt, partial]), np.concatenate([prompt, partial[:1]])], [2, 3],
                    max_new_tokens=6, key=jax.random.key(2), eos_ids=EOS)
    np.testing.assert_array_equal(batch.tokens, direct.tokens)
    lp = policy.next_token_logprobs(prompt, partial, np.array([0, 1, 3]))
    assert lp.shape == (3, CFG.vocab_size) and np.allclose(np.exp(lp).sum(-1), 1, atol=1e-5)


SHARDED_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import Mesh
    from tests.engine.test_engine import CFG, EOS, _prefixes
    from jaxalign.engine import sample
    from jaxalign.models.init import init_params
    assert jax.device_count() == 4, jax.devices()
    params = init_params(CFG, jax.random.key(0), scale=0.3, norm_jitter=0.1)
    prefixes, counts = _prefixes([5, 12]), [6, 3]
    kw = dict(max_new_tokens=16, key=jax.random.key(5), eos_ids=EOS)
    one = sample(params, CFG, prefixes, counts, **kw)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    for fork in (True, False):
        four = sample(params, CFG, prefixes, counts, mesh=mesh, fork=fork, **kw)
        np.testing.assert_array_equal(one.tokens, four.tokens)
        np.testing.assert_array_equal(one.lengths, four.lengths)
    print("SHARDED-OK")
""")


def test_sharded_sampling_equals_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, cwd=root, capture_output=True,
                            text=True, timeout=600)
    assert "SHARDED-OK" in result.stdout, result.stdout[-2000:] + result.stderr[-4000:]
