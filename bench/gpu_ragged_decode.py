"""decode_attention=ragged against xla in the queued decoder, at the Qwen3-0.6B shape (GPU).

    python bench/gpu_ragged_decode.py [--quick] [--rows 128] [--limit 2048] [--eos-every 256]

Random bf16 weights at the 0.6B shape (V = 151,936). ``--eos-every`` N makes every N-th token id
an EOS, so completion lengths are geometric with mean about N, with a long tail up to ``--limit``:
rows of one call then sit at very different depths, as real rollouts do. One call samples
``rows`` x 8 completions of 4 prefixes on ``rows`` decode rows (the completion queue). The xla
path reads, per row and step, the power-of-two window of the call's furthest row; the ragged
path each row's own slots. Reported: the wall time of each (best of 2, compiled first), their
ratio, the decode tokens per second, and how many completions drew the same tokens (bf16 sums
in another order can flip a rare near-tie; a flip changes the rest of that completion).

``--quick`` runs a tiny shape on any backend (off a GPU the kernel runs interpreted: it checks
the script, not the speed). Needs only jax, numpy and jaxalign (no hydra/submitit). The defaults
fit one 80 GB card: the rows' own caches hold rows x limit slots of 114,688 bytes at the 0.6B shape
(30 GB here; 256 rows x 4,096 would be 120 GB).
"""

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, parser, report  # noqa: E402
from gpu_decode import SHAPES  # noqa: E402

from jaxalign.engine import sample  # noqa: E402
from jaxalign.models.config import Qwen3Config  # noqa: E402
from jaxalign.models.init import init_params  # noqa: E402


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--limit", type=int, default=2048)
    ap.add_argument("--eos-every", type=int, default=256)
    args = ap.parse_args()
    name, dtype = ("tiny", jnp.float32) if args.quick else ("qwen3-0.6b", jnp.bfloat16)
    rows, limit, eos_every = (8, 64, 16) if args.quick else (args.rows, args.limit, args.eos_every)
    cfg = Qwen3Config(**SHAPES[name], rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True,
                      max_position_embeddings=40960)
    params = init_params(cfg, jax.random.key(0), dtype, scale=0.02)
    rng = np.random.default_rng(0)
    prefixes = [rng.integers(0, cfg.vocab_size, 200) for _ in range(4)]
    completions = rows * 8 // len(prefixes)
    kwargs = dict(max_new_tokens=limit, key=jax.random.key(1), eos_ids=tuple(range(0, cfg.vocab_size, eos_every)),
                  max_rows=rows, max_queued=rows * 8)
    configs = {mode: dataclasses.replace(cfg, decode_attention=mode) for mode in ("xla", "ragged")}
    outs = {mode: sample(params, c, prefixes, [completions] * len(prefixes), **kwargs) for mode, c in configs.items()}
    times = {mode: best_time(lambda c=c: sample(params, c, prefixes, [completions] * len(prefixes), **kwargs), 2)
             for mode, c in configs.items()}
    lengths = outs["xla"].lengths
    same = np.mean([(a == b).all() for a, b in zip(outs["xla"].tokens, outs["ragged"].tokens)])
    tokens = int(lengths.sum())
    for mode, t in times.items():
        print(f"{mode:7s} {t:8.2f} s  {tokens / t:10.0f} tokens/s")
    report("gpu_ragged_decode", {
        "device": jax.devices()[0].device_kind, "shape": name, "rows": rows, "limit": limit,
        "completions": completions * len(prefixes), "mean_length": float(lengths.mean()), "longest": int(lengths.max()),
        "xla_s": times["xla"], "ragged_s": times["ragged"], "ratio": times["ragged"] / times["xla"],
        "tokens_per_s": {mode: tokens / t for mode, t in times.items()}, "same_completions": float(same)})


if __name__ == "__main__":
    main()
