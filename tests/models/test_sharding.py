"""Tensor and data parallelism: the rules table in-process, and numbers on 8 host CPU devices.

The multi-device half runs tests/models/sharding_worker.py once, in a subprocess started with
``--xla_force_host_platform_device_count=8`` (jax reads XLA_FLAGS at import), and compares what it
saved: TP = 2, 4 and 8 over data = 4, 2 and 1, on 8 query heads sharing 4 kv heads.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType, PartitionSpec

from jaxalign.errors import ConfigError
from jaxalign.models import init_cache, make_mesh, placement, rules_for, shard_params
from jaxalign.models.config import Qwen3Config
from jaxalign.models.init import init_params
from jaxalign.models.loading import weight_table
from jaxalign.models.sharding import ShardingRules, cache_axes, param_axes
from tests.models.sharding_worker import BUCKETS, CFG, TP_SIZES

ROOT = Path(__file__).resolve().parents[2]
BIASED_TIED = Qwen3Config(**{**CFG.__dict__, "tie_word_embeddings": True, "attention_bias": True})


def _mesh(data: int, model: int) -> AbstractMesh:
    return AbstractMesh((data, model), ("data", "model"))


def _sizes(cfg: Qwen3Config, batch: int = 0, slots: int = 0) -> dict[str, int]:
    return {"B": batch, "P": batch, "S": slots, "D": cfg.hidden_size, "N": cfg.num_heads, "K": cfg.num_kv_heads,
            "H": cfg.head_dim, "F": cfg.intermediate_size, "V": cfg.vocab_size}


# ---------------------------------------------------------------- the rules, on one device


def test_spec_maps_einsum_letters_to_mesh_axes():
    rules = ShardingRules()
    assert rules.spec("BSKH") == PartitionSpec("data", None, "model", None)
    assert rules.spec("DNH") == PartitionSpec(None, "model", None)
    assert rules.spec("FD") == PartitionSpec("model", None)
    assert rules.spec("VD") == PartitionSpec("model", None)
    assert rules.spec("PSKH") == PartitionSpec(None, None, "model", None)
    assert rules.spec("") == PartitionSpec()


@pytest.mark.parametrize("data, model, kv_split", [(8, 1, False), (4, 2, True), (2, 4, True), (1, 8, False)])
def test_kv_heads_split_only_when_model_divides_them(data, model, kv_split):
    rules = rules_for(CFG, _mesh(data, model))  # 8 query heads, 4 kv heads
    tensor = "model" if model > 1 else None
    assert (rules.heads, rules.mlp, rules.vocab) == (tensor, tensor, tensor)
    assert rules.kv_heads == ("model" if kv_split else None)
    assert rules.batch == ("data" if data > 1 else None)


def test_a_mesh_without_a_model_axis_replicates_weights():
    rules = rules_for(CFG, AbstractMesh((4,), ("data",)))
    assert rules == ShardingRules(batch="data", heads=None, kv_heads=None, mlp=None, vocab=None)


@pytest.mark.parametrize("field, value, named", [("num_heads", 12, "num_heads=12"),
                                                 ("intermediate_size", 68, "intermediate_size=68"),
                                                 ("vocab_size", 250, "vocab_size=250")])
def test_a_model_size_that_does_not_divide_is_refused(field, value, named):
    cfg = Qwen3Config(**{**CFG.__dict__, field: value, "num_kv_heads": 4})
    with pytest.raises(ConfigError, match=named):
        rules_for(cfg, _mesh(1, 8))


@pytest.mark.parametrize("cfg", [CFG, BIASED_TIED], ids=["untied", "tied_bias"])
def test_param_axes_name_every_dimension_of_every_weight(cfg):
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    axes = param_axes(cfg)
    assert jax.tree.structure(axes) == jax.tree.structure(shapes)
    sizes = _sizes(cfg)
    for leaf, letters in zip(jax.tree.leaves(shapes), jax.tree.leaves(axes)):
        assert leaf.shape == tuple(sizes[letter] for letter in letters), (letters, leaf.shape)


def test_cache_axes_name_every_dimension_of_the_cache():
    cache = init_cache(CFG, batch=3, max_len=5, dtype=jnp.float32)
    axes = cache_axes(CFG)
    assert jax.tree.structure(axes) == jax.tree.structure(cache)
    sizes = _sizes(CFG, batch=3, slots=5)
    for leaf, letters in zip(jax.tree.leaves(cache), jax.tree.leaves(axes)):
        assert leaf.shape == tuple(sizes[letter] for letter in letters), (letters, leaf.shape)


def test_make_mesh_names_its_axes_and_refuses_a_wrong_device_count():
    mesh = make_mesh()
    assert dict(mesh.shape) == {"data": jax.device_count(), "model": 1}
    assert mesh.axis_types == (AxisType.Auto, AxisType.Auto)
    with pytest.raises(ConfigError, match="needs 16 devices"):
        make_mesh(data=16, model=1)
    with pytest.raises(ConfigError, match="positive"):
        make_mesh(data=1, model=0)
    with pytest.raises(ConfigError, match="does not divide"):
        make_mesh(data=-1, model=jax.device_count() + 1)


def test_shard_params_refuses_params_of_another_config():
    params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, np.float32),
                          jax.eval_shape(lambda: init_params(CFG, jax.random.key(0))))
    other = Qwen3Config(**{**CFG.__dict__, "intermediate_size": 32})
    with pytest.raises(ConfigError, match="layers.0.gate"):
        shard_params(params, other, make_mesh())
    with pytest.raises(ConfigError, match="tie_word_embeddings"):
        shard_params(params, BIASED_TIED, make_mesh())


@pytest.mark.parametrize("cfg", [CFG, BIASED_TIED], ids=["untied", "tied_bias"])
def test_placement_knows_every_name_the_loader_produces(cfg):
    """The loader's dotted targets and the sharding paths are spelled alike (else KeyError)."""
    mesh = make_mesh()
    place = placement(cfg, mesh)
    targets = [entry.target for entry in weight_table(cfg).values()]
    assert len(targets) == len(jax.tree.leaves(param_axes(cfg)))
    for entry in weight_table(cfg).values():
        placed = place(entry.target, entry.transform(np.zeros(entry.shape, np.float32)))
        assert placed.sharding.mesh == mesh


# ---------------------------------------------------------------- 8 host devices, one subprocess


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    """The arrays the worker saved (see tests/models/sharding_worker.py)."""
    out = tmp_path_factory.mktemp("sharding") / "out.npz"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-m", "tests.models.sharding_worker", str(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    return dict(np.load(out))


@pytest.mark.parametrize("tp", TP_SIZES)
def test_sharded_logits_equal_unsharded(eight, tp):
    np.testing.assert_allclose(eight[f"tp{tp}_logits"], eight["logits"], atol=1e-5, rtol=0)


def test_sharded_tied_logits_equal_unsharded(eight):
    """Tied embeddings split over V serve as both the lookup table and the output head."""
    np.testing.assert_allclose(eight["tp8_tied_logits"], eight["tied_logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("tp, fork", [(2, True), (4, True), (8, True), (2, False), (8, False)])
def test_sharded_sampling_draws_identical_tokens(eight, tp, fork):
    np.testing.assert_array_equal(eight[f"tp{tp}_tokens_fork{fork:d}"], eight[f"tokens_fork{fork:d}"])
    np.testing.assert_array_equal(eight[f"tp{tp}_lengths_fork{fork:d}"], eight[f"lengths_fork{fork:d}"])
    assert len(set(eight["lengths_fork1"])) > 2, "some rows must stop at an EOS for the lengths to mean much"


@pytest.mark.parametrize("tp, path", [(2, "chunked_score"), (4, "chunked_score"), (8, "chunked_score"), (8, "score")])
def test_sharded_scoring_equals_unsharded(eight, tp, path):
    """chunked_score: the pipeline's path_hidden + chunk_logprobs; score: response_logprobs.

    Log-probs reach -15 here, where an fp32 ulp is 1e-6: hence a relative term (measured 1.2e-6).
    """
    np.testing.assert_allclose(eight[f"tp{tp}_{path}"], eight[path], atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("tp", TP_SIZES)
def test_weights_are_split_over_model(eight, tp):
    d, n, k, h, f, v = (CFG.hidden_size, CFG.num_heads, CFG.num_kv_heads, CFG.head_dim, CFG.intermediate_size,
                        CFG.vocab_size)
    local_k = k // tp if k % tp == 0 else k  # GQA: 4 kv heads are replicated at TP = 8
    assert list(eight[f"tp{tp}_shard_q"]) == [d, n // tp, h]
    assert list(eight[f"tp{tp}_shard_k"]) == [d, local_k, h]
    assert list(eight[f"tp{tp}_shard_gate"]) == [d, f // tp]
    assert list(eight[f"tp{tp}_shard_embed"]) == [v // tp, d]
    assert list(eight[f"tp{tp}_shard_lm_head"]) == [d, v // tp]


@pytest.mark.parametrize("tp", TP_SIZES)
def test_kv_cache_is_split_over_data_and_model(eight, tp):
    data, k = 8 // tp, CFG.num_kv_heads
    rows = BUCKETS["prefixes"] * BUCKETS["forks"]
    expected = [rows // data, k // tp if k % tp == 0 else k, BUCKETS["max_new"], CFG.head_dim]
    assert list(eight[f"tp{tp}_cache_shard"]) == expected


@pytest.mark.parametrize("tp", TP_SIZES)
def test_the_sampler_never_gathers_weights(eight, tp):
    """No weights, caches or activations are gathered: nothing larger than one candidate per row and
    model shard (the vocab-split argmax is a max and a min, two all-reduces), or the (completion, token
    index) pair per row that the queued decoder scatters its draws to (32 x 2 int32 here)."""
    rows = BUCKETS["prefixes"] * BUCKETS["forks"]
    assert int(eight[f"tp{tp}_largest_all_gather"]) <= max(rows // (8 // tp) * tp, 2 * rows)


@pytest.mark.parametrize("tp", TP_SIZES)
def test_the_chunked_prefill_never_gathers(eight, tp):
    """Scoring's prefill: weights stay split; only all-reduces cross devices."""
    assert int(eight[f"tp{tp}_prefill_largest_all_gather"]) == 0


def test_sampling_refuses_params_not_placed_on_the_mesh(eight):
    assert "shard_params(params, cfg, mesh)" in str(eight["unsharded_params_error"])


def test_loading_with_placement_equals_shard_params(eight):
    assert bool(eight["placed_same_sharding"])
    assert float(eight["placed_max_diff"]) == 0.0
