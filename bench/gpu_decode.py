"""Decode throughput at Qwen3-0.6B / 1.7B shapes with random bf16 weights, against the HBM roofline.

    python bench/gpu_decode.py [--quick] [--batch 256] [--peak-gbps 3350]

Decode time is isolated as time(1 + steps tokens) - time(1 token) on the same compiled function
(the loop limit is a traced argument, so no recompile). Per decode step the kernel reads every
weight once and the whole static KV cache of every row (masked slots included), so
    roofline_s = (weight_bytes + kv_cache_bytes) / peak_bandwidth,   fraction = roofline_s / step_s.
Target: fraction >= 0.40 at batch 256 on an H100/H200. ``--quick`` runs a tiny shape on any backend
(it checks the script, not the hardware). Needs only jax, numpy and jaxalign (no hydra/submitit).
"""

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, report  # noqa: E402

from jaxalign.engine.sampling import _sample_plain  # noqa: E402
from jaxalign.models.config import Qwen3Config  # noqa: E402
from jaxalign.models.init import init_params  # noqa: E402

SHAPES = {
    "qwen3-0.6b": dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_layers=28, num_heads=16,
                       num_kv_heads=8, head_dim=128),
    "qwen3-1.7b": dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_layers=28, num_heads=16,
                       num_kv_heads=8, head_dim=128),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                 head_dim=16),
}
PEAK_GBPS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0}


def peak_bandwidth(override):
    if override:
        return override * 1e9
    kind = jax.devices()[0].device_kind
    for name, gbps in PEAK_GBPS.items():
        if name in kind:
            return gbps * 1e9
    return None


def measure(name, batch, prompt_len, steps):
    cfg = Qwen3Config(**SHAPES[name], rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True,
                      max_position_embeddings=40960)
    # bf16 as on a GPU; XLA's CPU backend has no bf16 x bf16 -> f32 dot, so --quick there runs in f32
    dtype = jnp.bfloat16 if jax.default_backend() == "gpu" else jnp.float32
    params = init_params(cfg, jax.random.key(0), dtype, scale=0.02)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size - 1, size=(batch, prompt_len)), jnp.int32)
    zeros = jnp.zeros(batch, jnp.int32)
    ids = jnp.arange(batch, dtype=jnp.int32)
    valid = jnp.ones(batch, bool)
    statics = dict(max_new=steps + 1, eos_ids=(cfg.vocab_size,), greedy=False, key_impl="threefry2x32")

    def run(limit):
        keys = jnp.broadcast_to(jax.random.key_data(jax.random.key(1)), (batch, 2))  # raw threefry data
        out = _sample_plain(params, cfg, tokens, zeros, ids, valid, keys, jnp.float32(1.0), jnp.int32(limit),
                            **statics)
        jax.block_until_ready(out)

    run(1)
    run(steps + 1)
    times = {}
    for limit in (1, steps + 1):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            run(limit)
            best = min(best, time.perf_counter() - start)
        times[limit] = best
    step_s = (times[steps + 1] - times[1]) / steps
    weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    cache_slots = prompt_len + steps + 1
    kv_bytes = cfg.num_layers * 2 * batch * cache_slots * cfg.num_kv_heads * cfg.head_dim * jnp.dtype(dtype).itemsize
    return {"batch": batch, "prompt_len": prompt_len, "decode_steps": steps, "step_ms": step_s * 1e3,
            "tokens_per_s": batch / step_s, "weight_gb": weight_bytes / 1e9, "kv_cache_gb": kv_bytes / 1e9,
            "bytes_per_step_gb": (weight_bytes + kv_bytes) / 1e9}


def main():
    ap = parser(__doc__)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--peak-gbps", type=float, default=None)
    args = ap.parse_args()
    shapes = ["tiny"] if args.quick else ["qwen3-0.6b", "qwen3-1.7b"]
    batch = 8 if args.quick else args.batch
    peak = peak_bandwidth(args.peak_gbps)
    results = {}
    for name in shapes:
        r = measure(name, batch, prompt_len=32 if args.quick else 128, steps=16 if args.quick else 128)
        if peak:
            r["roofline_fraction"] = r["bytes_per_step_gb"] * 1e9 / peak / (r["step_ms"] / 1e3)
        results[name] = r
    report("gpu_decode", {"device": jax.devices()[0].device_kind, "peak_gbps": peak and peak / 1e9,
                          "results": results})


if __name__ == "__main__":
    main()
