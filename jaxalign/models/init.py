"""Random Qwen3 parameters, for tests, benchmarks and training the toy models from scratch."""

import jax
import jax.numpy as jnp

from jaxalign.models.config import Qwen3Config
from jaxalign.models.qwen3 import Attention, Layer, Qwen3Params


def init_params(cfg: Qwen3Config, key: jax.Array, dtype=jnp.float32, scale: float = 0.02,
                norm_jitter: float = 0.0) -> Qwen3Params:
    """N(0, scale) matrices and 1 (+ N(0, norm_jitter)) norm weights, in einsum layout, as ``dtype``."""
    d, n, k, h, f, v = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                        cfg.intermediate_size, cfg.vocab_size)
    keys = iter(jax.random.split(key, 16 * cfg.num_layers + 4))

    def normal(*shape):
        return (scale * jax.random.normal(next(keys), shape, jnp.float32)).astype(dtype)

    def norm(size):
        return (1.0 + norm_jitter * jax.random.normal(next(keys), (size,), jnp.float32)).astype(dtype)

    def bias(*shape):
        return normal(*shape) if cfg.attention_bias else None

    layers = tuple(
        Layer(
            attn_norm=norm(d),
            attn=Attention(q=normal(d, n, h), k=normal(d, k, h), v=normal(d, k, h), o=normal(n, h, d),
                           q_norm=norm(h), k_norm=norm(h), q_bias=bias(n, h), k_bias=bias(k, h),
                           v_bias=bias(k, h), o_bias=bias(d)),
            mlp_norm=norm(d), gate=normal(d, f), up=normal(d, f), down=normal(f, d),
        )
        for _ in range(cfg.num_layers)
    )
    return Qwen3Params(embed=normal(v, d), layers=layers, final_norm=norm(d),
                       lm_head=None if cfg.tie_word_embeddings else normal(d, v))
