"""Loader and config: every bad input fails with a message naming the file and the problem."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxalign.errors import CheckpointError
from jaxalign.models import load_config, load_qwen3
from jaxalign.models.config import Qwen3Config


def _edit_config(model_dir, **changes):
    path = model_dir / "config.json"
    raw = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))


def test_config_reads_head_dim_gqa_and_both_rope_layouts(hf_checkpoints):
    v5 = load_config(hf_checkpoints["tied_gqa"][0])
    assert (v5.head_dim, v5.num_heads, v5.hidden_size, v5.num_groups) == (16, 4, 32, 2)
    assert v5.tie_word_embeddings and v5.rope_theta == 10000.0
    v4 = load_config(hf_checkpoints["untied_gqa4_v4layout"][0])
    assert "rope_parameters" not in json.loads((hf_checkpoints["untied_gqa4_v4layout"][0] / "config.json").read_text())
    assert v4.rope_theta == 1_000_000.0 and v4.rms_norm_eps == 1e-5 and v4.num_groups == 4
    assert not v4.tie_word_embeddings


def test_real_qwen3_0_6b_config_values():
    raw = {  # the published Qwen3-0.6B config.json (transformers 4.51 layout)
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "eos_token_id": 151645,
        "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024, "intermediate_size": 3072,
        "max_position_embeddings": 40960, "model_type": "qwen3", "num_attention_heads": 16,
        "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": None,
        "rope_theta": 1000000, "tie_word_embeddings": True, "use_sliding_window": False,
        "vocab_size": 151936,
    }
    cfg = Qwen3Config.from_dict(raw)
    assert cfg.head_dim * cfg.num_heads == 2048 != cfg.hidden_size
    assert cfg.rope_theta == 1e6 and cfg.eos_token_ids == (151645,)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(model_type="llama", architectures=["LlamaForCausalLM"]), "not a dense Qwen3"),
        (dict(rope_parameters=None, rope_theta=None), "no rope_theta"),
        (dict(rope_theta=5.0), "disagrees"),
        (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}), "not supported"),
        (dict(use_sliding_window=True), "use_sliding_window"),
        (dict(tie_word_embeddings=None), "tie_word_embeddings"),
        (dict(num_key_value_heads=3), "multiple"),
    ],
)
def test_bad_config_is_named(checkpoint_copy, changes, message):
    model_dir = checkpoint_copy("tied_gqa")
    _edit_config(model_dir, **changes)
    with pytest.raises(CheckpointError, match=message) as err:
        load_config(model_dir)
    assert "config.json" in str(err.value)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_qwen3(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_qwen3("./relative/missing")


def test_hub_id_offline_and_uncached_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        load_qwen3("Qwen/Qwen3-0.6B")


def test_missing_shard(checkpoint_copy):
    model_dir = checkpoint_copy("untied_sharded")
    shards = sorted(model_dir.glob("model-*.safetensors"))
    assert len(shards) > 2
    shards[1].unlink()
    with pytest.raises(CheckpointError, match=f"not on disk.*{shards[1].name}"):
        load_qwen3(model_dir)


def test_shape_mismatch(checkpoint_copy):
    model_dir = checkpoint_copy("tied_gqa")
    _edit_config(model_dir, intermediate_size=65)
    with pytest.raises(CheckpointError, match=r"shape mismatches: .*mlp\.gate_proj\.weight: checkpoint \(64, 32\)"):
        load_qwen3(model_dir)


def test_missing_and_unexpected_keys_all_reported(checkpoint_copy):
    model_dir = checkpoint_copy("tied_gqa")
    path = model_dir / "model.safetensors"
    tensors = load_file(path)
    del tensors["model.layers.1.self_attn.k_norm.weight"]
    del tensors["model.norm.weight"]
    tensors["model.layers.7.mlp.extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, path)
    with pytest.raises(CheckpointError) as err:
        load_qwen3(model_dir)
    text = str(err.value)
    assert "missing tensors (2)" in text and "model.layers.1.self_attn.k_norm.weight" in text
    assert "model.norm.weight" in text and "unexpected tensors (1)" in text
    assert "model.layers.7.mlp.extra.weight" in text


def test_untied_checkpoint_without_lm_head(checkpoint_copy):
    model_dir = checkpoint_copy("untied_gqa4_v4layout")
    path = model_dir / "model.safetensors"
    tensors = load_file(path)
    del tensors["lm_head.weight"]
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match="missing tensors.*lm_head.weight"):
        load_qwen3(model_dir)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_safetensors(checkpoint_copy, damage):
    model_dir = checkpoint_copy("tied_gqa")
    path = model_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(b"not a safetensors file at all" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: unreadable safetensors"):
        load_qwen3(model_dir)


def test_pickle_weights_are_refused(checkpoint_copy):
    model_dir = checkpoint_copy("tied_gqa")
    (model_dir / "model.safetensors").unlink()
    (model_dir / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_qwen3(model_dir)


def test_tied_checkpoint_with_equal_lm_head_is_dropped(checkpoint_copy):
    model_dir = checkpoint_copy("tied_gqa")
    path = model_dir / "model.safetensors"
    tensors = load_file(path)
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
    save_file(tensors, path)
    _, params = load_qwen3(model_dir, dtype=jnp.float32)
    assert params.lm_head is None


def test_tied_checkpoint_with_different_lm_head_fails(checkpoint_copy):
    model_dir = checkpoint_copy("tied_gqa")
    path = model_dir / "model.safetensors"
    tensors = load_file(path)
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"] + 1.0
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match="lm_head.weight differs"):
        load_qwen3(model_dir)


def test_params_have_einsum_layout_and_requested_dtype(hf_checkpoints):
    cfg, params = load_qwen3(hf_checkpoints["untied_gqa4_v4layout"][0], dtype=jnp.bfloat16)
    attn = params.layers[0].attn
    assert attn.q.shape == (cfg.hidden_size, cfg.num_heads, cfg.head_dim)
    assert attn.k.shape == (cfg.hidden_size, cfg.num_kv_heads, cfg.head_dim)
    assert attn.o.shape == (cfg.num_heads, cfg.head_dim, cfg.hidden_size)
    assert params.lm_head.shape == (cfg.hidden_size, cfg.vocab_size)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    with pytest.raises(CheckpointError, match="dtype"):
        load_qwen3(hf_checkpoints["tied_gqa"][0], dtype=jnp.float16)


def test_save_load_round_trip_and_transformers_reads_it(hf_checkpoints, tmp_path):
    import torch
    import transformers

    from jaxalign.models import forward
    from jaxalign.models.loading import save_qwen3

    for name in ("tied_gqa", "untied_gqa4_v4layout"):
        cfg, params = load_qwen3(hf_checkpoints[name][0], dtype=jnp.float32)
        out = save_qwen3(params, cfg, tmp_path / name)
        cfg2, params2 = load_qwen3(out, dtype=jnp.float32)
        assert cfg2 == cfg
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        tokens = np.arange(12, dtype=np.int32)[None] % cfg.vocab_size
        model = transformers.Qwen3ForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
        with torch.no_grad():
            ref = model(torch.from_numpy(tokens).long()).logits.numpy()
        with jax.default_matmul_precision("highest"):
            np.testing.assert_allclose(np.asarray(forward(params, cfg, tokens)), ref, atol=1e-4, rtol=0)
