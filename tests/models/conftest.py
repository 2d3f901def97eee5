"""Tiny random Qwen3 checkpoints, saved by transformers itself, for parity and loader tests."""

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# name -> (Qwen3Config kwargs, save_pretrained kwargs, config.json layout)
TINY_CONFIGS = {
    # tied embeddings; GQA ratio 2; head_dim 16 != hidden/heads = 8
    "tied_gqa": (
        dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
             rope_theta=10000.0, rms_norm_eps=1e-6),
        {}, "v5",
    ),
    # untied; plain MHA; several shards
    "untied_sharded": (
        dict(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
             num_attention_heads=4, num_key_value_heads=4, head_dim=12, tie_word_embeddings=False,
             rope_theta=10000.0, rms_norm_eps=1e-6),
        dict(max_shard_size="40KB"), "v5",
    ),
    # untied; GQA ratio 4; head_dim 32 != 64/8; big theta; transformers-4 style top-level rope_theta
    "untied_gqa4_v4layout": (
        dict(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=8, num_key_value_heads=2, head_dim=32, tie_word_embeddings=False,
             rope_theta=1_000_000.0, rms_norm_eps=1e-5),
        {}, "v4",
    ),
}


def _to_v4_layout(model_dir: Path) -> None:
    """Rewrites config.json as transformers<5 wrote it: rope_theta at the top level."""
    path = model_dir / "config.json"
    raw = json.loads(path.read_text())
    rope = raw.pop("rope_parameters")
    raw["rope_theta"] = rope["rope_theta"]
    raw["rope_scaling"] = None
    path.write_text(json.dumps(raw, indent=2))


def make_hf_qwen3(out_dir: Path, cfg_kwargs: dict, save_kwargs: dict, layout: str, seed: int = 0):
    """Saves a random Qwen3ForCausalLM with weights scaled up so that logits are far from uniform."""
    torch.manual_seed(seed)
    config = transformers.Qwen3Config(**cfg_kwargs, attn_implementation="eager")
    model = transformers.Qwen3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.copy_(0.15 * torch.randn_like(param))
    model.save_pretrained(out_dir, **save_kwargs)
    if layout == "v4":
        _to_v4_layout(out_dir)
    return model


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """{name: (directory, torch model)} for every entry of TINY_CONFIGS."""
    root = tmp_path_factory.mktemp("hf")
    return {
        name: (root / name, make_hf_qwen3(root / name, cfg, save, layout, seed=i))
        for i, (name, (cfg, save, layout)) in enumerate(TINY_CONFIGS.items())
    }


@pytest.fixture
def checkpoint_copy(hf_checkpoints, tmp_path):
    """Returns a function that copies a named checkpoint into a scratch dir for mutation."""

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(hf_checkpoints[name][0], dst)
        return dst

    return copy
