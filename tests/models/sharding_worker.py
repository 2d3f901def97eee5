"""Runs the model and the engine on 8 host CPU devices, unsharded and at TP = 2, 4 and 8.

A separate process because jax reads XLA_FLAGS once, at import: tests/models/test_sharding.py
starts it with ``--xla_force_host_platform_device_count=8`` and compares what it saves. This file
only computes; every assertion is in the test module.

Usage: python -m tests.models.sharding_worker OUT.npz
"""

import re
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxalign.engine import sample, sampling, scoring
from jaxalign.errors import ConfigError
from jaxalign.models import forward, init_cache, load_qwen3, make_mesh, placement, rules_for, shard_params
from jaxalign.models.config import Qwen3Config
from jaxalign.models.init import init_params
from jaxalign.models.loading import save_qwen3
from jaxalign.models.sharding import cache_axes, constrain

# GQA 8 query heads over 4 kv heads: TP = 2 and 4 split K, TP = 8 replicates it.
CFG = Qwen3Config(vocab_size=256, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=8, num_kv_heads=4,
                  head_dim=16, rope_theta=1e4, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  max_position_embeddings=256, eos_token_ids=tuple(range(244, 256)))
TIED = Qwen3Config(**{**CFG.__dict__, "tie_word_embeddings": True})
TP_SIZES = (2, 4, 8)
PREFIX_LENGTHS, COUNTS, MAX_NEW = (5, 12, 9), (6, 3, 5), 12
# The forked sampler's buckets for these: 4 prefixes x 8 forks, prefixes of 16 slots, 16 new tokens.
BUCKETS = dict(prefixes=4, forks=8, prefix_len=16, max_new=16)
FORWARD = jax.jit(forward, static_argnums=1)
_GATHER = re.compile(r"= \w+\[([\d,]*)\]\{[^}]*\} all-gather\(")


def make_params(cfg: Qwen3Config):
    """Random fp32 params drawn in NumPy (init_params compiles once per weight shape; too slow here).

    Matrices N(0, 0.2): logits within about +-5 and a top probability near 6%, so sampling is far
    from greedy. Vectors (the norms; these configs have no biases): 1 + N(0, 0.1).
    """
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    return jax.tree.map(lambda leaf: jnp.asarray(
        1.0 + 0.1 * rng.standard_normal(leaf.shape) if leaf.ndim == 1 else 0.2 * rng.standard_normal(leaf.shape),
        jnp.float32), shapes)


def sample_kw() -> dict:
    return dict(max_new_tokens=MAX_NEW, key=jax.random.key(5), eos_ids=CFG.eos_token_ids, temperature=1.0)


def largest_all_gather(compiled_text: str) -> int:
    """Elements of the largest all-gather result in compiled HLO (0 when there is none)."""
    sizes = [int(np.prod([int(d) for d in dims.split(",") if d])) for dims in _GATHER.findall(compiled_text)]
    return max(sizes, default=0)


def chunked_score(params, data) -> np.ndarray:
    """The pipeline's scoring path: chunked prefill, then [C, V] log-probs per chunk of positions."""
    hidden, offset = scoring.path_hidden(params, CFG, data["prompt"], data["response"], prefill_chunk=8)
    return np.concatenate([np.asarray(c) for c in scoring.chunk_logprobs(params, hidden, offset, np.arange(21), 16)])


def one_pass_score(params, data) -> np.ndarray:
    """The reference scorer: one forward pass, [M, V] log-probs."""
    return np.asarray(scoring.response_logprobs(params, CFG, data["prompt"], data["response"], np.arange(21)))


def run(out_path: str) -> None:
    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    data = dict(
        tokens=rng.integers(0, CFG.vocab_size, size=(8, 24)).astype(np.int32),
        start=np.array([0, 3, 0, 7, 1, 0, 0, 5], np.int32),  # left padding on some rows
        prefixes=[rng.integers(0, 244, size=n) for n in PREFIX_LENGTHS],
        prompt=rng.integers(0, 244, size=7), response=rng.integers(0, 244, size=20),
    )
    params, tied = make_params(CFG), make_params(TIED)
    out = unsharded(params, tied, data)
    for tp in TP_SIZES:
        out.update({f"tp{tp}_{name}": value for name, value in sharded(params, make_mesh(8 // tp, tp), data).items()})
    mesh = make_mesh(data=1, model=8)
    out["tp8_tied_logits"] = np.asarray(FORWARD(shard_params(tied, TIED, mesh), TIED, data["tokens"], data["start"]))
    out.update(placement_checks(params, data))
    np.savez(out_path, **out)


def unsharded(params, tied, data) -> dict[str, np.ndarray]:
    out = {"logits": np.asarray(FORWARD(params, CFG, data["tokens"], data["start"])),
           "tied_logits": np.asarray(FORWARD(tied, TIED, data["tokens"], data["start"])),
           "score": one_pass_score(params, data), "chunked_score": chunked_score(params, data)}
    for fork in (True, False):
        batch = sample(params, CFG, data["prefixes"], list(COUNTS), fork=fork, **sample_kw())
        out[f"tokens_fork{fork:d}"], out[f"lengths_fork{fork:d}"] = batch.tokens, batch.lengths
    return out


def sharded(params, mesh, data) -> dict[str, np.ndarray]:
    """Everything at one mesh: numbers, shard shapes, and the sampler's collectives."""
    tp, rules = mesh.shape["model"], rules_for(CFG, mesh)
    params = shard_params(params, CFG, mesh)
    out = {f"shard_{name}": np.array(leaf.addressable_shards[0].data.shape) for name, leaf in (
        ("q", params.layers[0].attn.q), ("k", params.layers[0].attn.k), ("gate", params.layers[0].gate),
        ("embed", params.embed), ("lm_head", params.lm_head))}
    rows = jax.device_put(data["tokens"], NamedSharding(mesh, PartitionSpec("data")))
    out["logits"] = np.asarray(FORWARD(params, CFG, rows, data["start"]))
    out["chunked_score"] = chunked_score(params, data)
    if tp == 8:  # the one-pass reference scorer, at the finest split
        out["score"] = one_pass_score(params, data)
    for fork in (True, False) if tp in (2, 8) else (True,):  # both layouts at the extremes
        batch = sample(params, CFG, data["prefixes"], list(COUNTS), mesh=mesh, fork=fork, **sample_kw())
        out[f"tokens_fork{fork:d}"], out[f"lengths_fork{fork:d}"] = batch.tokens, batch.lengths

    # The same arguments as the forked call above, so this reuses its executable.
    prefixes, forks = BUCKETS["prefixes"], BUCKETS["forks"]
    compiled = sampling._sample_forked.lower(
        params, CFG, np.zeros((prefixes, BUCKETS["prefix_len"]), np.int32), np.zeros(prefixes, np.int32),
        np.zeros((prefixes, forks), np.int32), np.zeros((prefixes, forks), bool),
        np.zeros((prefixes, 2), np.uint32),
        jnp.float32(1.0), jnp.int32(MAX_NEW), max_new=BUCKETS["max_new"], eos_ids=CFG.eos_token_ids, greedy=False,
        key_impl="threefry2x32", mesh=mesh, rules=rules,
    ).compile()
    out["largest_all_gather"] = np.array(largest_all_gather(compiled.as_text()))
    prefill = scoring._prefill_hidden.lower(params, CFG, jnp.zeros(32, jnp.int32), jnp.int32(27), chunk=8).compile()
    out["prefill_largest_all_gather"] = np.array(largest_all_gather(prefill.as_text()))
    cache = jax.jit(lambda: constrain(init_cache(CFG, prefixes * forks, BUCKETS["max_new"], jnp.float32),
                                      cache_axes(CFG), mesh, rules))()
    out["cache_shard"] = np.array(cache.k[0].addressable_shards[0].data.shape)
    return out


def placement_checks(params, data) -> dict[str, np.ndarray]:
    """Unsharded params refused by a tensor-parallel sampler; a checkpoint loaded straight onto shards."""
    mesh = make_mesh(data=2, model=4)
    out = {"unsharded_params_error": np.array("")}
    try:
        sample(params, CFG, data["prefixes"], list(COUNTS), mesh=mesh, **sample_kw())
    except ConfigError as err:
        out["unsharded_params_error"] = np.array(str(err))
    with tempfile.TemporaryDirectory() as tmp:
        save_qwen3(params, CFG, tmp)
        _, loaded = load_qwen3(tmp, dtype=jnp.float32, place=placement(CFG, mesh))
    pairs = list(zip(jax.tree.leaves(loaded), jax.tree.leaves(shard_params(params, CFG, mesh))))
    out["placed_same_sharding"] = np.array(all(a.sharding.is_equivalent_to(b.sharding, a.ndim) for a, b in pairs))
    out["placed_max_diff"] = np.array(max(np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in pairs))
    return out


if __name__ == "__main__":
    run(sys.argv[1])
