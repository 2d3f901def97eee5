"""Qwen3 in JAX: config, params pytree, forward pass with KV cache, checkpoint loading, tokenizer."""

from jaxalign.models.config import Qwen3Config, load_config
from jaxalign.models.loading import load_qwen3
from jaxalign.models.qwen3 import (
    KVCache,
    Qwen3Params,
    forward,
    forward_hidden,
    init_cache,
    logits_from_hidden,
)
from jaxalign.models.tokenizer import encode_chat, load_tokenizer, render_chat

__all__ = [
    "KVCache", "Qwen3Config", "Qwen3Params", "encode_chat", "forward", "forward_hidden",
    "init_cache", "load_config", "load_qwen3", "load_tokenizer", "logits_from_hidden", "render_chat",
]
