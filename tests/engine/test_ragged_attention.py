"""decode_attention=ragged: each row reads only its own slots, with the XLA path's numbers and tokens.

Off a GPU the Pallas kernel runs in its interpreter, which executes the kernel's own block loop,
masks and split merge: the same program a GPU compiles, so these tests check its arithmetic (not
its speed)."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.engine import sample
from jaxalign.models.config import Qwen3Config
from jaxalign.models.init import init_params
from jaxalign.models.qwen3 import _cache_attention, merge_attention
from jaxalign.models.ragged_attention import BLOCK_K, ragged_attention, splits_for

CFG = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=16, rope_theta=1e4, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  max_position_embeddings=1024)
RAGGED = dataclasses.replace(CFG, decode_attention="ragged")
EOS = (60, 61, 62, 63)


def _numpy_attention(q, k, v, start, end):
    """Plain softmax attention of each row's one query over slots [start, end]. q: [B, K, G, H];
    k, v: [B, K, S, H]. Returns (out [B, K, G, H], lse [B, K, G]) in float64."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    out = np.zeros(q.shape)
    lse = np.zeros(q.shape[:3])
    for b in range(q.shape[0]):
        keys, values = k[b, :, start[b]:end[b] + 1], v[b, :, start[b]:end[b] + 1]  # [K, L, H]
        scores = np.einsum("kgh,klh->kgl", q[b], keys) / np.sqrt(q.shape[-1])
        peak = scores.max(-1, keepdims=True)
        weights = np.exp(scores - peak)
        out[b] = np.einsum("kgl,klh->kgh", weights / weights.sum(-1, keepdims=True), values)
        lse[b] = (peak + np.log(weights.sum(-1, keepdims=True)))[..., 0]
    return out, lse


@pytest.mark.parametrize("slots", [64, 512, 4096])
def test_ragged_attention_equals_numpy_and_the_window_path(slots):
    """Rows at slot 0, inside the first block, at a block edge and at the cache's last slot, one
    with left padding. The kernel reads whole blocks and masks their tail, as the window path
    masks its window's; every slot past the block holding a row's end holds NaN, so reading one
    would poison the row."""
    rng = np.random.default_rng(slots)
    batch, kv_heads, groups, head_dim = 6, 2, 3, 16
    end = np.array([0, 5, 127, 128, slots - 1, slots // 2], np.int32) % slots
    start = np.array([0, 0, 3, 0, 0, 1], np.int32)
    start = np.minimum(start, end)
    q = rng.normal(size=(batch, 1, kv_heads, groups, head_dim)).astype(np.float32)
    k = rng.normal(size=(batch, kv_heads, slots, head_dim)).astype(np.float32)
    v = rng.normal(size=(batch, kv_heads, slots, head_dim)).astype(np.float32)
    block = min(BLOCK_K, slots // splits_for(slots))
    past_block = (end // block + 1) * block  # the first slot of the block after the row's end
    past_end = np.arange(slots)[None, None, :, None] >= past_block[:, None, None, None]
    k_poisoned, v_poisoned = np.where(past_end, np.nan, k), np.where(past_end, np.nan, v)

    out, lse = jax.jit(ragged_attention)(q, k_poisoned, v_poisoned, start, end)
    want_out, want_lse = _numpy_attention(q[:, 0], k, v, start, end)
    np.testing.assert_allclose(np.asarray(out)[:, 0], want_out, atol=2e-6, rtol=0)
    np.testing.assert_allclose(np.asarray(lse)[:, 0], want_lse, atol=2e-5, rtol=0)

    window = jax.jit(lambda *a: _cache_attention(*a, jax.lax.Precision.HIGHEST))
    xla_out, xla_lse = window(q, k, v, start, end)
    np.testing.assert_allclose(np.asarray(out), np.asarray(xla_out), atol=2e-6, rtol=0)
    np.testing.assert_allclose(np.asarray(lse), np.asarray(xla_lse), atol=2e-5, rtol=0)


def test_ragged_partials_merge_with_a_shared_prefix_exactly():
    """The cascade: a prefix's partial result and the row's, merged by log-sum-exp, are attention
    over the concatenated keys."""
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 1, 1, 2, 8)).astype(np.float32)
    prefix_k, prefix_v = (rng.normal(size=(2, 1, 10, 8)).astype(np.float32) for _ in range(2))
    k, v = (rng.normal(size=(2, 1, 64, 8)).astype(np.float32) for _ in range(2))
    end = np.array([3, 40], np.int32)
    zeros = np.zeros(2, np.int32)
    out, lse = ragged_attention(q, k, v, zeros, end)
    prefix_out, prefix_lse = _numpy_attention(q[:, 0], prefix_k, prefix_v, zeros, np.full(2, 9))
    merged = merge_attention(jnp.asarray(prefix_out[:, None], jnp.float32), jnp.asarray(prefix_lse[:, None], jnp.float32),
                             out, lse)
    both_k = np.concatenate([prefix_k, k], axis=2)
    both_v = np.concatenate([prefix_v, v], axis=2)
    want, _ = _numpy_attention(q[:, 0], both_k, both_v, zeros, end + 10)
    np.testing.assert_allclose(np.asarray(merged)[:, 0], want, atol=2e-6, rtol=0)


def test_splits_divide_the_cache_into_pieces_of_at_least_min_split():
    assert [splits_for(s) for s in (16, 64, 256, 512, 1024, 4096, 32768)] == [1, 1, 1, 2, 4, 16, 16]


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0), scale=0.3, norm_jitter=0.1)


def test_the_queued_decoder_draws_the_same_tokens_with_ragged_attention(params, monkeypatch):
    """Completions of up to 300 tokens, queued two or more per row, in a 512-slot cache: rows sit at
    very different depths, and the ragged path draws exactly the window path's tokens."""
    from jaxalign.models import ragged_attention as module

    traced = []
    monkeypatch.setattr(module, "ragged_attention", lambda *a: traced.append(a[0].shape) or ragged_attention(*a))
    prefixes = [np.random.default_rng(s).integers(0, 60, size=n) for s, n in ((1, 6), (2, 3), (3, 11))]
    kwargs = dict(max_new_tokens=300, key=jax.random.key(5), eos_ids=EOS, max_rows=4, max_queued=16)
    window = sample(params, CFG, prefixes, [5, 3, 4], **kwargs)
    ragged = sample(params, RAGGED, prefixes, [5, 3, 4], **kwargs)
    assert len(set(window.lengths.tolist())) > 3, "completions of several lengths put rows at different depths"
    assert traced and all(shape[1] == 1 for shape in traced), "the decode steps ran the kernel"
    np.testing.assert_array_equal(ragged.tokens, window.tokens)
    np.testing.assert_array_equal(ragged.lengths, window.lengths)


def test_float32_on_a_gpu_is_refused_and_an_uneven_mesh_keeps_the_window(monkeypatch, caplog):
    """Triton's dots would run a float32 model's attention in TF32; the kernel runs per device only
    where the mesh's model axis divides the kv heads."""
    from jaxalign import config as C
    from jaxalign.errors import ConfigError
    from jaxalign.pipeline import models

    cfg = C.RunConf(decode_attention="ragged")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(ConfigError, match="decode_attention=ragged.*student.dtype=bfloat16"):
        models._check_decode_attention(cfg, {"toy:student": (1, 8)})
    cfg.student.dtype = "bfloat16"
    with caplog.at_level("INFO", logger=models.__name__):
        models._check_decode_attention(cfg, {"toy:student": (1, 8), "big": (4, 8), "odd": (16, 8)})
    assert "odd keep the xla window" in caplog.text and "big" not in caplog.text
    assert "interpreter" not in caplog.text


MESH_SCRIPT = textwrap.dedent("""
    import dataclasses, jax, numpy as np
    from tests.engine.test_ragged_attention import CFG, EOS, RAGGED
    from jaxalign.engine import sample
    from jaxalign.models import make_mesh, shard_params
    from jaxalign.models import ragged_attention as module
    from jaxalign.models.init import init_params
    assert jax.device_count() == 8, jax.devices()
    kernel, traced = module._ragged_attention, []
    module._ragged_attention = lambda *a: traced.append(a[1].shape) or kernel(*a)
    params = init_params(CFG, jax.random.key(0), scale=0.3, norm_jitter=0.1)
    prefixes = [np.random.default_rng(s).integers(0, 60, size=n) for s, n in ((1, 6), (2, 3))]
    kw = dict(max_new_tokens=40, key=jax.random.key(5), eos_ids=EOS, max_rows=8, max_queued=32)
    one = sample(params, CFG, prefixes, [9, 7], **kw)
    # 8 rows a call; kv heads = 2: model = 2 splits them (the kernel runs per shard on [rows / data, 1]
    # of the cache); model = 4 cannot (the window path)
    for data, model, per_shard in ((8, 1, (1, 2)), (4, 2, (2, 1)), (2, 4, None)):
        mesh = make_mesh(data, model)
        traced.clear()
        got = sample(shard_params(params, RAGGED, mesh), RAGGED, prefixes, [9, 7], mesh=mesh, **kw)
        np.testing.assert_array_equal(one.tokens, got.tokens)
        np.testing.assert_array_equal(one.lengths, got.lengths)
        shapes = {shape[:2] for shape in traced}
        assert shapes == ({per_shard} if per_shard else set()), (data, model, shapes)
    print("RAGGED-MESH-OK")
""")


def test_ragged_attention_on_meshes_runs_per_shard_and_draws_the_same_tokens():
    """On 8 host devices: rows over data = 8, or rows and kv heads over (4, 2), run the kernel on each
    device's own rows and kv heads (its local cache shapes show it) and draw the one-device window
    path's tokens; (2, 4), where model does not divide the kv heads, keeps the window path."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", MESH_SCRIPT], env=env, cwd=root, capture_output=True,
                            text=True, timeout=600)
    assert "RAGGED-MESH-OK" in result.stdout, result.stdout[-2000:] + result.stderr[-4000:]


def test_calls_the_kernel_cannot_take_keep_the_window_path(params):
    """Fewer than 16 slots (max_new_tokens <= 8), or rows or kv heads that a mesh does not divide:
    the window path runs, with the same tokens."""
    from jaxalign.models import make_mesh
    from jaxalign.models.ragged_attention import applies
    from jaxalign.models.sharding import rules_for

    prefixes = [np.random.default_rng(s).integers(0, 60, size=n) for s, n in ((1, 6), (2, 3))]
    kwargs = dict(max_new_tokens=4, key=jax.random.key(5), eos_ids=EOS, max_rows=4, max_queued=16)
    np.testing.assert_array_equal(sample(params, RAGGED, prefixes, [5, 3], **kwargs).tokens,
                                  sample(params, CFG, prefixes, [5, 3], **kwargs).tokens)
    assert [applies(s, 4, 2) for s in (8, 16, 24, 4096)] == [False, True, False, True]
    mesh = make_mesh(1, 1)
    rules = rules_for(CFG, mesh)
    assert applies(16, 6, 2, mesh, rules)
    six = type(rules)(batch="data", heads=None, kv_heads=None, mlp=None, vocab=None)
    assert not applies(16, 6, 2, type("Mesh", (), {"shape": {"data": 4, "model": 1}})(), six)  # 6 rows on data = 4
