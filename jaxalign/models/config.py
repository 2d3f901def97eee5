"""Qwen3 hyperparameters, read from a Hugging Face ``config.json``.

Every field comes from the file; nothing is silently defaulted that changes the numbers. Two traps
this guards against:

* ``head_dim`` is its own field in Qwen3 (0.6B: 16 heads x 128 = 2048 != hidden 1024). It is only
  derived from hidden/heads when the file omits it, as transformers does.
* ``rope_theta`` sits at the top level in transformers < 5 and inside ``rope_parameters`` in
  transformers >= 5. Both are read; a file with neither is an error, not a silent 10000.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from jaxalign.errors import CheckpointError

SUPPORTED_ARCHITECTURES = ("Qwen3ForCausalLM",)


@dataclasses.dataclass(frozen=True)
class Qwen3Config:
    """Static hyperparameters of a dense Qwen3 decoder (hashable, so usable as a jit static arg)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    attention_bias: bool = False
    max_position_embeddings: int = 40960
    eos_token_ids: tuple[int, ...] = ()
    # Not from config.json: how the queued decoder attends a row's own cache. "xla": the narrowest
    # power-of-two window holding the call's furthest row; "ragged": each row only its own slots
    # (a Pallas kernel, jaxalign.models.ragged_attention). The run's decode_attention setting.
    decode_attention: str = "xla"

    @property
    def num_groups(self) -> int:
        """Query heads per KV head (GQA ratio)."""
        return self.num_heads // self.num_kv_heads

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "Qwen3Config":
        """Builds a config from a parsed ``config.json``; ``source`` names the file in errors."""
        archs = raw.get("architectures") or []
        model_type = raw.get("model_type")
        if model_type != "qwen3" or (archs and not set(archs) & set(SUPPORTED_ARCHITECTURES)):
            raise CheckpointError(
                f"{source}: model_type={model_type!r}, architectures={archs!r} is not a dense Qwen3 "
                f"decoder. jaxalign supports {SUPPORTED_ARCHITECTURES} (model_type 'qwen3')."
            )
        if raw.get("use_sliding_window"):
            raise CheckpointError(
                f"{source}: use_sliding_window=true is not supported; Qwen3 checkpoints ship false."
            )
        if raw.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"{source}: hidden_act={raw['hidden_act']!r}; Qwen3 uses 'silu'.")

        rope_theta, rope_type = _read_rope(raw, source)
        if rope_type not in (None, "default"):
            raise CheckpointError(
                f"{source}: rope type {rope_type!r} (rope scaling) is not supported; "
                "only the default RoPE of Qwen3 is implemented."
            )

        required = (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "rms_norm_eps",
        )
        missing = [k for k in required if k not in raw]
        if missing:
            raise CheckpointError(f"{source}: missing required keys {missing}")

        num_heads = int(raw["num_attention_heads"])
        num_kv_heads = int(raw.get("num_key_value_heads") or num_heads)
        if num_heads % num_kv_heads:
            raise CheckpointError(
                f"{source}: num_attention_heads={num_heads} is not a multiple of "
                f"num_key_value_heads={num_kv_heads}; GQA needs whole groups"
            )
        head_dim = raw.get("head_dim") or raw["hidden_size"] // num_heads
        eos = raw.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (eos,))
        return cls(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=int(head_dim),
            rope_theta=float(rope_theta),
            rms_norm_eps=float(raw["rms_norm_eps"]),
            # transformers defaults tie_word_embeddings to True for PretrainedConfig in v4 and to
            # False for Qwen3Config in v5; a file without the key is ambiguous, so refuse it.
            tie_word_embeddings=_require_bool(raw, "tie_word_embeddings", source),
            attention_bias=bool(raw.get("attention_bias", False)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 40960)),
            eos_token_ids=tuple(int(e) for e in eos_ids),
        )


def _read_rope(raw: dict[str, Any], source: str) -> tuple[float, str | None]:
    """Returns (rope_theta, rope_type) from either the v4 or the v5 layout of config.json."""
    params = raw.get("rope_parameters")
    scaling = raw.get("rope_scaling")
    theta_top = raw.get("rope_theta")
    theta_nested = params.get("rope_theta") if isinstance(params, dict) else None
    if theta_top is not None and theta_nested is not None and float(theta_top) != float(theta_nested):
        raise CheckpointError(
            f"{source}: rope_theta={theta_top} disagrees with rope_parameters.rope_theta="
            f"{theta_nested}; fix the file so the two agree"
        )
    theta = theta_nested if theta_nested is not None else theta_top
    if theta is None:
        raise CheckpointError(
            f"{source}: no rope_theta, neither at the top level (transformers<5) nor in "
            "rope_parameters (transformers>=5). Refusing to guess a default."
        )
    rope_type = None
    for block in (params, scaling):
        if isinstance(block, dict):
            rope_type = block.get("rope_type", block.get("type", rope_type))
    return float(theta), rope_type


def _require_bool(raw: dict[str, Any], key: str, source: str) -> bool:
    if key not in raw:
        raise CheckpointError(f"{source}: missing {key!r}; set it to true or false explicitly")
    return bool(raw[key])


def load_config(model_dir: str | Path) -> Qwen3Config:
    """Reads ``<model_dir>/config.json`` into a :class:`Qwen3Config`."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: no config.json; is {model_dir} a Hugging Face model directory?")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    return Qwen3Config.from_dict(raw, source=str(path))
