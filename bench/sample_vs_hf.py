"""Sampling throughput: jaxalign's jit decode loop against transformers' generate (static cache).

    python bench/sample_vs_hf.py [--quick]

One random Qwen3 config, saved by transformers and loaded by jaxalign, so both run the same
weights in float32 on the CPU. Each batch row gets its own prompt (the plain layout: no shared
prefix, so the comparison is decode against decode). The EOS is unreachable, so every row
generates exactly ``new`` tokens. Reported per batch size: tokens/s for each side and
"ratio" = jaxalign / transformers (target >= 1 at batch >= 16).
"""

import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, parser, report  # noqa: E402

from jaxalign.engine import sample  # noqa: E402
from jaxalign.models import load_qwen3  # noqa: E402


def main():
    args = parser(__doc__).parse_args()
    batches = (1, 16) if args.quick else (1, 16, 64)
    prompt_len, new = (32, 16) if args.quick else (64, 64)
    hf_cfg = transformers.Qwen3Config(
        vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=4, head_dim=32, tie_word_embeddings=True, max_position_embeddings=1024,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(hf_cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        cfg, params = load_qwen3(tmp, dtype=jnp.float32)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    unreachable_eos = (cfg.vocab_size,)
    results = {}
    for batch in batches:
        prompts = np.random.default_rng(batch).integers(0, cfg.vocab_size - 1, size=(batch, prompt_len))

        def ours():
            out = sample(params, cfg, list(prompts), 1, max_new_tokens=new, key=jax.random.key(0),
                         eos_ids=unreachable_eos, fork=False, max_rows=max(batches))
            assert (out.lengths == new).all()

        def theirs():
            with torch.no_grad():
                out = model.generate(torch.from_numpy(prompts), attention_mask=torch.ones_like(torch.from_numpy(prompts)),
                                     do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new,
                                     min_new_tokens=new, eos_token_id=None, pad_token_id=0,
                                     cache_implementation="static")
            assert out.shape == (batch, prompt_len + new)

        ours()
        theirs()
        repeats = 2 if args.quick else 3
        ours_s, theirs_s = best_time(ours, repeats), best_time(theirs, repeats)
        results[f"batch_{batch}"] = {
            "jaxalign_tokens_per_s": batch * new / ours_s, "transformers_tokens_per_s": batch * new / theirs_s,
            "ratio": theirs_s / ours_s,
        }
    report("sample_vs_hf", {"prompt_len": prompt_len, "new_tokens": new, "torch_threads": torch.get_num_threads(),
                            "results": results, "ratio": min(r["ratio"] for k, r in results.items() if k != "batch_1")})


if __name__ == "__main__":
    main()
