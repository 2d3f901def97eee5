"""Prefix forking against naive re-prefill: 64 completions of 32 tokens from a 512-token prefix.

    python bench/prefix_fork.py [--quick]

forked: the prefix is prefilled once at batch 1; the 64 forks read it through cascade attention.
naive: every row prefills its own copy of the prefix (the plain layout), as a sampler without
prefix sharing must. Same random weights, same keys, and the same tokens (checked).
"ratio" = naive time / forked time; target >= 4.
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


def main():
    args = parser(__doc__).parse_args()
    prefix_len, forks, new = (256, 32, 16) if args.quick else (512, 64, 32)
    cfg = Qwen3Config(vocab_size=4096, hidden_size=256, intermediate_size=768, num_layers=4, num_heads=8,
                      num_kv_heads=4, head_dim=32, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True,
                      max_position_embeddings=2048)
    params = init_params(cfg, jax.random.key(0), jnp.float32, scale=0.05)
    prefix = np.random.default_rng(0).integers(0, cfg.vocab_size - 1, size=prefix_len)
    kwargs = dict(max_new_tokens=new, key=jax.random.key(1), eos_ids=(cfg.vocab_size,), max_rows=forks)
    runs = {}
    for name, fork in (("forked", True), ("naive", False)):
        def run(fork=fork):
            runs[fork] = sample(params, cfg, [prefix], [forks], fork=fork, **kwargs)
        run()
        runs[name] = best_time(run, 2 if args.quick else 3)
    np.testing.assert_array_equal(runs[True].tokens, runs[False].tokens)
    report("prefix_fork", {"prefix_len": prefix_len, "forks": forks, "new_tokens": new,
                           "forked_s": runs["forked"], "naive_s": runs["naive"],
                           "ratio": runs["naive"] / runs["forked"], "same_tokens": True})


if __name__ == "__main__":
    main()
