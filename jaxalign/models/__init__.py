"""Qwen3 in JAX: config, params pytree, forward pass with KV cache, checkpoint loading, tokenizer,
and the (data, model) mesh layout."""

from jaxalign.models.config import Qwen3Config, load_config
from jaxalign.models.loading import load_qwen3
from jaxalign.models.qwen3 import (
    KVCache,
    Qwen3Params,
    decoder_layer,
    forward,
    forward_hidden,
    init_cache,
    logits_from_hidden,
)
from jaxalign.models.sharding import ShardingRules, make_mesh, placement, rules_for, shard_params
from jaxalign.models.tokenizer import encode_chat, load_tokenizer, render_chat

__all__ = [
    "KVCache", "Qwen3Config", "Qwen3Params", "ShardingRules", "decoder_layer", "encode_chat", "forward",
    "forward_hidden", "init_cache", "load_config", "load_qwen3", "load_tokenizer", "logits_from_hidden",
    "make_mesh", "placement", "render_chat", "rules_for", "shard_params",
]
