"""Loads Hugging Face Qwen3 checkpoints (config.json + safetensors) into :class:`Qwen3Params`.

Order of work, so that bad input fails before anything heavy happens:

1. resolve the source (a local directory, or a hub id through ``huggingface_hub``, which honours
   ``HF_HUB_OFFLINE`` and the local cache) and check that it holds config.json and safetensors;
2. parse ``config.json``;
3. find the safetensors files (single, or sharded with ``model.safetensors.index.json``) and read
   only their headers;
4. check the header names and shapes against the name table: every missing, unexpected and
   mis-shaped tensor is reported in one error;
5. stream tensors one at a time: read, transform (transpose/reshape to einsum layout), cast, place.

There is no torch and no pickle here, ever: ``pytorch_model.bin`` files are refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError, safe_open

from jaxalign.errors import CheckpointError
from jaxalign.models.config import Qwen3Config, load_config
from jaxalign.models.qwen3 import Attention, Layer, Qwen3Params

log = logging.getLogger(__name__)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
                 "tokenizer*", "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json"]
# Non-parameter buffers some exporters write; safe to skip.
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")

Transform = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class _Entry:
    target: str  # dotted path in the param tree, e.g. "layers.3.attn.q"
    shape: tuple[int, ...]  # shape in the checkpoint (HF layout)
    transform: Transform  # HF layout -> einsum layout

    transposed: bool = True  # matrices are stored [out, in] by HF and [in, ...] here

    def inverse(self, value):
        """Einsum layout -> HF layout, for saving."""
        if len(self.shape) == 1 or not self.transposed:
            return value.reshape(self.shape)
        return value.reshape(self.shape[1], -1).T


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """Returns a local directory for a path or a hub id (downloading only when allowed)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return check_model_dir(path)
    text = str(name_or_path)
    looks_local = path.exists() or text.startswith((".", "/", "~"))
    if looks_local or not _HUB_ID.match(text):
        raise CheckpointError(
            f"model directory {text!r} does not exist. Pass a local Hugging Face directory "
            "(config.json + *.safetensors) or a hub id such as 'Qwen/Qwen3-0.6B'."
        )
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(repo_id=text, allow_patterns=_HUB_PATTERNS))
    except Exception as err:  # noqa: BLE001 - huggingface_hub raises many types; re-raise as one
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = (
            "HF_HUB_OFFLINE is set and the model is not in the local cache; download it on a "
            "machine with network (huggingface-cli download) or pass a local directory"
            if offline
            else "check the id, your network and HF_TOKEN, or pass a local directory"
        )
        raise CheckpointError(f"could not fetch hub model {text!r}: {err}. {hint}.") from err
    return check_model_dir(snapshot)


def check_model_dir(model_dir: Path) -> Path:
    """Returns ``model_dir`` if it holds config.json and safetensors weights, else raises CheckpointError.

    Runs before the tokenizer and the weights load, so that a wrong or empty directory is named as
    such instead of surfacing as a tokenizer or config error further down.
    """
    missing = [] if (model_dir / "config.json").is_file() else ["config.json"]
    if not ((model_dir / SINGLE_FILE).is_file() or (model_dir / INDEX_FILE).is_file()):
        if _pickle_weights(model_dir):
            raise _pickle_error(model_dir)
        missing.append(f"{SINGLE_FILE} or {INDEX_FILE}")
    if not missing:
        return model_dir
    entries = sorted(p.name for p in model_dir.iterdir())
    holds = f"it holds {entries[:8]}{' ...' if len(entries) > 8 else ''}" if entries else "it is empty"
    raise CheckpointError(
        f"{model_dir} is not a Hugging Face model directory: no {' and no '.join(missing)}; {holds}. "
        "Pass the directory that holds config.json, *.safetensors and the tokenizer files, e.g. one made by "
        "`huggingface-cli download Qwen/Qwen3-0.6B --local-dir DIR`, or a hub id such as 'Qwen/Qwen3-0.6B'."
    )


def _pickle_weights(model_dir: Path) -> bool:
    return bool(list(model_dir.glob("*.bin")) or list(model_dir.glob("*.pt")))


def _pickle_error(model_dir: Path) -> CheckpointError:
    return CheckpointError(
        f"{model_dir}: only PyTorch pickle weights (*.bin/*.pt) found. jaxalign never unpickles; "
        "convert them to safetensors (e.g. save_pretrained(..., safe_serialization=True))."
    )


def weight_files(model_dir: Path) -> dict[str, Path]:
    """Maps each tensor name to the safetensors file that holds it (from the index if sharded)."""
    index_path = model_dir / INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{index_path}: not a valid safetensors index ({err!r})") from err
        files = {name: model_dir / shard for name, shard in weight_map.items()}
        missing = sorted({str(p) for p in files.values() if not p.is_file()})
        if missing:
            raise CheckpointError(
                f"{index_path} lists shard(s) that are not on disk: {missing}. "
                "The download is incomplete; fetch the missing shard(s) again."
            )
        return files
    single = model_dir / SINGLE_FILE
    if single.is_file():
        return {name: single for name in _read_header(single)}
    if _pickle_weights(model_dir):
        raise _pickle_error(model_dir)
    raise CheckpointError(f"{model_dir}: no {SINGLE_FILE} and no {INDEX_FILE}; no weights to load.")


def _read_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Returns {name: (shape, dtype string)} from a safetensors header, without reading data."""
    try:
        with safe_open(str(path), framework="flax") as f:
            return {
                name: (tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype())
                for name in f.keys()
            }
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable safetensors file ({err}). Re-download it.") from err


def weight_table(cfg: Qwen3Config) -> dict[str, _Entry]:
    """The name-mapping table: HF tensor name -> (param path, expected HF shape, transform)."""
    d, n, k, h, f, v = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                        cfg.intermediate_size, cfg.vocab_size)
    ident: Transform = lambda w: w  # noqa: E731
    transpose: Transform = lambda w: w.T  # noqa: E731
    table = {
        "model.embed_tokens.weight": _Entry("embed", (v, d), ident, transposed=False),
        "model.norm.weight": _Entry("final_norm", (d,), ident),
    }
    if not cfg.tie_word_embeddings:
        table["lm_head.weight"] = _Entry("lm_head", (v, d), transpose)
    for i in range(cfg.num_layers):
        hf, ours = f"model.layers.{i}.", f"layers.{i}."
        table.update({
            hf + "input_layernorm.weight": _Entry(ours + "attn_norm", (d,), ident),
            hf + "post_attention_layernorm.weight": _Entry(ours + "mlp_norm", (d,), ident),
            hf + "self_attn.q_proj.weight": _Entry(ours + "attn.q", (n * h, d), lambda w: w.T.reshape(d, n, h)),
            hf + "self_attn.k_proj.weight": _Entry(ours + "attn.k", (k * h, d), lambda w: w.T.reshape(d, k, h)),
            hf + "self_attn.v_proj.weight": _Entry(ours + "attn.v", (k * h, d), lambda w: w.T.reshape(d, k, h)),
            hf + "self_attn.o_proj.weight": _Entry(ours + "attn.o", (d, n * h), lambda w: w.T.reshape(n, h, d)),
            hf + "self_attn.q_norm.weight": _Entry(ours + "attn.q_norm", (h,), ident),
            hf + "self_attn.k_norm.weight": _Entry(ours + "attn.k_norm", (h,), ident),
            hf + "mlp.gate_proj.weight": _Entry(ours + "gate", (f, d), transpose),
            hf + "mlp.up_proj.weight": _Entry(ours + "up", (f, d), transpose),
            hf + "mlp.down_proj.weight": _Entry(ours + "down", (d, f), transpose),
        })
        if cfg.attention_bias:
            table.update({
                hf + "self_attn.q_proj.bias": _Entry(ours + "attn.q_bias", (n * h,), lambda b: b.reshape(n, h)),
                hf + "self_attn.k_proj.bias": _Entry(ours + "attn.k_bias", (k * h,), lambda b: b.reshape(k, h)),
                hf + "self_attn.v_proj.bias": _Entry(ours + "attn.v_bias", (k * h,), lambda b: b.reshape(k, h)),
                hf + "self_attn.o_proj.bias": _Entry(ours + "attn.o_bias", (d,), ident),
            })
    return table


def check_checkpoint(cfg: Qwen3Config, files: dict[str, Path]) -> None:
    """Validates tensor names and shapes from headers alone; raises one error listing every problem."""
    headers: dict[str, tuple[tuple[int, ...], str]] = {}
    for path in sorted(set(files.values())):
        header = _read_header(path)
        listed_here = {name for name, p in files.items() if p == path}
        absent = sorted(listed_here - header.keys())
        if absent:
            raise CheckpointError(
                f"{path}: the index says it holds {absent[:5]}{'...' if len(absent) > 5 else ''} "
                "but the file does not; the index and the shards disagree"
            )
        headers.update({name: header[name] for name in listed_here})

    table = weight_table(cfg)
    present = {name for name in headers if not _IGNORED.match(name)}
    optional = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    missing = sorted(table.keys() - present)
    unexpected = sorted(present - table.keys() - optional)
    wrong_shape = [
        f"{name}: checkpoint {headers[name][0]}, config.json implies {table[name].shape}"
        for name in sorted(present & table.keys())
        if headers[name][0] != table[name].shape
    ]
    if cfg.tie_word_embeddings and "lm_head.weight" in present and headers["lm_head.weight"][0] != (
        cfg.vocab_size, cfg.hidden_size
    ):
        wrong_shape.append(f"lm_head.weight: checkpoint {headers['lm_head.weight'][0]}")
    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): {unexpected}")
    if wrong_shape:
        problems.append("shape mismatches: " + "; ".join(wrong_shape))
    if problems:
        raise CheckpointError(
            f"checkpoint in {next(iter(files.values())).parent} does not match its config.json "
            f"(Qwen3, {cfg.num_layers} layers, tie_word_embeddings={cfg.tie_word_embeddings}):\n  "
            + "\n  ".join(problems)
        )


def _assemble(cfg: Qwen3Config, flat: dict[str, jax.Array]) -> Qwen3Params:
    def attention(i: int) -> Attention:
        names = ["q", "k", "v", "o", "q_norm", "k_norm"]
        if cfg.attention_bias:
            names += ["q_bias", "k_bias", "v_bias", "o_bias"]
        return Attention(**{name: flat[f"layers.{i}.attn.{name}"] for name in names})

    layers = tuple(
        Layer(
            attn_norm=flat[f"layers.{i}.attn_norm"],
            attn=attention(i),
            mlp_norm=flat[f"layers.{i}.mlp_norm"],
            gate=flat[f"layers.{i}.gate"],
            up=flat[f"layers.{i}.up"],
            down=flat[f"layers.{i}.down"],
        )
        for i in range(cfg.num_layers)
    )
    return Qwen3Params(embed=flat["embed"], layers=layers, final_norm=flat["final_norm"],
                       lm_head=flat.get("lm_head"))


def load_params(
    cfg: Qwen3Config,
    model_dir: Path,
    dtype=jnp.bfloat16,
    place: Optional[Callable[[str, jax.Array], jax.Array]] = None,
) -> Qwen3Params:
    """Streams every tensor through the name table into a :class:`Qwen3Params`.

    dtype: jnp.bfloat16 or jnp.float32 for all params. place(path, array) puts one transformed
    array where it belongs (e.g. ``jax.device_put`` with a sharding); default: leave it as is.
    """
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)):
        raise CheckpointError(f"param dtype {dtype} is not supported; use bfloat16 or float32")
    files = weight_files(model_dir)
    check_checkpoint(cfg, files)
    table = weight_table(cfg)
    flat: dict[str, jax.Array] = {}
    tied_head = None
    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    for path, names in sorted(by_file.items()):
        try:
            with safe_open(str(path), framework="flax") as f:
                for name in names:
                    if _IGNORED.match(name):
                        continue
                    tensor = f.get_tensor(name)
                    if name not in table:  # the tied lm_head copy: checked against embed below
                        tied_head = np.asarray(tensor.astype(dtype).astype(jnp.float32))
                        continue
                    entry = table[name]
                    value = entry.transform(tensor).astype(dtype)
                    flat[entry.target] = place(entry.target, value) if place else value
        except SafetensorError as err:
            raise CheckpointError(f"{path}: unreadable safetensors data ({err}). Re-download it.") from err
    if tied_head is not None:
        embed = np.asarray(flat["embed"].astype(jnp.float32))
        if not np.array_equal(tied_head.astype(embed.dtype), embed):
            raise CheckpointError(
                f"{model_dir}: tie_word_embeddings=true but lm_head.weight differs from "
                f"model.embed_tokens.weight (max |diff| {np.abs(tied_head - embed).max():.3g}). "
                "Set tie_word_embeddings=false in config.json if the head is really separate."
            )
        log.info("%s: tied checkpoint ships lm_head.weight; equal to embed_tokens, dropped", model_dir)
    return _assemble(cfg, flat)


def load_qwen3(
    name_or_path: str | os.PathLike,
    dtype=jnp.bfloat16,
    place: Optional[Callable[[str, jax.Array], jax.Array]] = None,
) -> tuple[Qwen3Config, Qwen3Params]:
    """Loads config and params of a Qwen3 checkpoint from a local directory or a hub id."""
    model_dir = resolve_model_dir(name_or_path)
    cfg = load_config(model_dir)
    return cfg, load_params(cfg, model_dir, dtype, place)


def save_qwen3(params: Qwen3Params, cfg: Qwen3Config, out_dir: str | os.PathLike, dtype=jnp.float32,
               extra_config: Optional[dict] = None) -> Path:
    """Writes config.json + model.safetensors in Hugging Face layout (loadable by transformers)."""
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        flat[".".join(str(getattr(k, "name", getattr(k, "idx", k))) for k in path)] = leaf
    tensors = {
        name: np.ascontiguousarray(np.asarray(entry.inverse(flat[entry.target].astype(jnp.float32)), np.float32)
                                   .astype(jnp.dtype(dtype)))
        for name, entry in weight_table(cfg).items()
    }
    save_file(tensors, str(out / SINGLE_FILE), metadata={"format": "pt"})
    config = {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim, "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta, "rope_scaling": None,
        "tie_word_embeddings": cfg.tie_word_embeddings, "attention_bias": cfg.attention_bias,
        "max_position_embeddings": cfg.max_position_embeddings, "use_sliding_window": False,
        "torch_dtype": jnp.dtype(dtype).name, **(extra_config or {}),
    }
    if cfg.eos_token_ids:
        config["eos_token_id"] = list(cfg.eos_token_ids) if len(cfg.eos_token_ids) > 1 else cfg.eos_token_ids[0]
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out
