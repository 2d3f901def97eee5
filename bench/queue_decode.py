"""Completion queues (continuous batching) against one decode row per completion.

    python bench/queue_decode.py [--quick]

A random Qwen3 (vocab 4,096, d=256, 4 layers, float32) samples C completions of each of P prefixes
with ``max_rows`` decode rows per call. A sixteenth of the vocabulary is EOS, so completion lengths
are geometric (mean about 16 tokens, a long tail up to the limit): the shape of real rollout
lengths, where a few rows run far past the mean.

* "rows": ``max_queued = max_rows``: every completion has its own row, and a call steps until its
  longest completion ends (the engine before queues);
* "queued": the default, up to 16 x max_rows completions per call; a row whose completion ends
  starts the next one of its prefix.

Both produce identical tokens (checked here). Reported: the wall time of each (best of 2, compiled
first), the decode steps as tokens over rows, and "ratio" = queued / rows time.
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, parser, report  # noqa: E402

from jaxalign.engine import sample  # noqa: E402
from jaxalign.models.config import Qwen3Config  # noqa: E402
from jaxalign.models.init import init_params  # noqa: E402


def main() -> None:
    args = parser(__doc__).parse_args()
    cfg = Qwen3Config(vocab_size=4096, hidden_size=256, intermediate_size=768, num_layers=4, num_heads=8,
                      num_kv_heads=4, head_dim=32, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True,
                      max_position_embeddings=4096)
    params = init_params(cfg, jax.random.key(0), jnp.float32)
    prefixes_n, completions, max_rows, limit = (4, 32, 32, 128) if args.quick else (8, 100, 64, 256)
    rng = np.random.default_rng(0)
    prefixes = [rng.integers(0, 3840, 24) for _ in range(prefixes_n)]
    eos = tuple(range(3840, 4096))
    kwargs = dict(max_new_tokens=limit, key=jax.random.key(1), eos_ids=eos, max_rows=max_rows)
    runs = {"rows": dict(max_queued=max_rows), "queued": {}}
    outs = {name: sample(params, cfg, prefixes, completions, **kwargs, **extra) for name, extra in runs.items()}
    assert all((o.tokens == outs["rows"].tokens).all() for o in outs.values()), "queued tokens differ"
    times = {name: best_time(lambda extra=extra: sample(params, cfg, prefixes, completions, **kwargs, **extra))
             for name, extra in runs.items()}
    lengths = outs["rows"].lengths
    figures = {"prefixes": prefixes_n, "completions_per_prefix": completions, "max_rows": max_rows, "limit": limit,
               "mean_length": float(lengths.mean()), "longest": int(lengths.max()),
               "rows_s": times["rows"], "queued_s": times["queued"], "ratio": times["queued"] / times["rows"]}
    for name, t in times.items():
        print(f"{name:7s} {t:7.2f} s")
    report("queue_decode", figures)


if __name__ == "__main__":
    main()
