"""Sampling throughput: jaxalign's jit decode loop against transformers' generate.

    python bench/sample_vs_hf.py [--quick] [--one-thread]

Two random Qwen3 shapes, each saved by transformers and loaded by jaxalign, so both stacks run the
same weights in float32 on the CPU:

* "small": vocab 4,096, d=256 (the shape of the first figures);
* "wide": vocab 32,768, d=512, F=1,536: closer to Qwen3's proportions, where the vocabulary
  projection and the draw over V dominate a decode step.

transformers runs twice: its default ``generate`` (dynamic cache, what a PyTorch user gets) and
``cache_implementation="static"``. Each batch row gets its own prompt (jaxalign's plain layout:
no shared prefix, so the comparison is decode against decode). The EOS is unreachable, so every
row generates exactly ``new`` tokens. The three sides are timed in alternation, so that load from
other processes falls on all of them alike. Reported per shape and batch size: tokens/s of each
side and jaxalign / transformers ratios. The last line's "ratio" is jaxalign / dynamic cache on
the wide shape at the main batch (16).

Both stacks use every core by default. On a machine shared with other jobs, torch's OpenMP
threads lose most of their speed when a core is taken (a 2-thread decode step of the wide shape
went from 41 ms on one thread to 270 ms on two); ``--one-thread`` runs both stacks on one thread,
which is far less sensitive to such load.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

if "--one-thread" in sys.argv:  # XLA reads its thread count when jax is imported, below
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"])

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, report  # noqa: E402

from jaxalign.engine import sample  # noqa: E402
from jaxalign.models import load_qwen3  # noqa: E402

MAIN_SHAPE, MAIN_BATCH = "wide", 16
SHAPES = {
    "small": dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=4, head_dim=32),
    "wide": dict(vocab_size=32768, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                 num_attention_heads=8, num_key_value_heads=4, head_dim=64),
}


def best_times(fns: dict, repeats: int) -> dict:
    """Best wall time of each blocking fn(), calling them in turn ``repeats`` times."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_shape(shape: dict, batches, prompt_len: int, new: int, repeats: int) -> dict:
    hf_cfg = transformers.Qwen3Config(**shape, tie_word_embeddings=True, max_position_embeddings=1024,
                                      attn_implementation="sdpa")
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(hf_cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        cfg, params = load_qwen3(tmp, dtype=jnp.float32)
    unreachable_eos = (cfg.vocab_size,)
    results = {}
    for batch in batches:
        prompts = np.random.default_rng(batch).integers(0, cfg.vocab_size - 1, size=(batch, prompt_len))

        def jaxalign_sample():
            out = sample(params, cfg, list(prompts), 1, max_new_tokens=new, key=jax.random.key(0),
                         eos_ids=unreachable_eos, fork=False, max_rows=max(batches))
            assert (out.lengths == new).all()

        def hf_generate(**cache):
            ids = torch.from_numpy(prompts)
            with torch.no_grad():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                                     top_k=0, top_p=1.0, max_new_tokens=new, min_new_tokens=new,
                                     eos_token_id=None, pad_token_id=0, **cache)
            assert out.shape == (batch, prompt_len + new)

        sides = {"jaxalign": jaxalign_sample, "dynamic": hf_generate,
                 "static": lambda: hf_generate(cache_implementation="static")}
        for fn in sides.values():
            fn()  # compile / warm up
        seconds = best_times(sides, repeats)
        row = {f"{name}_tokens_per_s": round(batch * new / s, 1) for name, s in seconds.items()}
        row["ratio_vs_dynamic"] = round(seconds["dynamic"] / seconds["jaxalign"], 3)
        row["ratio_vs_static"] = round(seconds["static"] / seconds["jaxalign"], 3)
        results[f"batch_{batch}"] = row
        print(shape["vocab_size"], shape["hidden_size"], batch, row, flush=True)
    return results


def main():
    ap = parser(__doc__)
    ap.add_argument("--one-thread", action="store_true", help="one thread for XLA and for torch")
    args = ap.parse_args()
    batches = (MAIN_BATCH,) if args.quick else (1, 16, 64)
    prompt_len, new = (32, 16) if args.quick else (64, 64)
    shapes = (MAIN_SHAPE,) if args.quick else ("small", "wide")
    torch.set_num_threads(1 if args.one_thread else max(1, torch.get_num_threads()))
    results = {name: bench_shape(SHAPES[name], batches, prompt_len, new, repeats=1 if args.quick else 3)
               for name in shapes}
    report("sample_vs_hf", {
        "prompt_len": prompt_len, "new_tokens": new, "torch_threads": torch.get_num_threads(),
        "xla_threads": 1 if args.one_thread else os.cpu_count(),
        "shapes": {name: SHAPES[name] for name in shapes}, "results": results,
        "main": f"{MAIN_SHAPE} batch {MAIN_BATCH} vs dynamic cache",
        "ratio": results[MAIN_SHAPE][f"batch_{MAIN_BATCH}"]["ratio_vs_dynamic"],
    })


if __name__ == "__main__":
    main()
