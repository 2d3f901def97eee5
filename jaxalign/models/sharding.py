"""Tensor and data parallelism: logical axes of every weight and cache, mapped onto a mesh.

Every array of :mod:`jaxalign.models.qwen3` is named by the einsum letters of its shape: the query
projection is ``"DNH"``, a cache layer ``"BKSH"``. :class:`ShardingRules` maps letters to mesh
axes; a letter it does not map (D, H, S, T, G, P) is replicated. The mesh has two axes:

* ``data``: rows of the batch (B). Each data shard samples its own rows.
* ``model``: tensor parallelism (Megatron layout). Query heads N, kv heads K, the MLP hidden F and
  the vocabulary V are split. Per layer that is one all-reduce after the attention output
  projection (contracts N) and one after the MLP down projection (contracts F); the vocabulary
  split makes the embedding lookup a masked local gather plus an all-reduce, and leaves logits
  split over V, so log-softmax and argmax reduce across ``model``.

GQA: kv heads are split only when ``model`` divides K. Otherwise (8 query and 4 kv heads at
TP = 8, say) K is replicated: each device computes all kv heads and keeps a whole cache, and the
query split N -> (K, G) still tiles cleanly whenever ``model`` is a multiple of K. Every Qwen3
checkpoint has K = 8, so this only costs memory beyond TP = 8.

Nothing here changes a number: a sharded model computes the same function as an unsharded one,
up to the order of the cross-device sums (tested within 1e-5 in fp32).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxalign.errors import ConfigError
from jaxalign.models.config import Qwen3Config
from jaxalign.models.qwen3 import Attention, KVCache, Layer, Qwen3Params

DATA = "data"
MODEL = "model"


@dataclasses.dataclass(frozen=True)
class ShardingRules:
    """The mesh axis (None: replicated) of each sharded einsum letter. Hashable: a jit static arg."""

    batch: Optional[str] = DATA  # B
    heads: Optional[str] = MODEL  # N
    kv_heads: Optional[str] = MODEL  # K
    mlp: Optional[str] = MODEL  # F
    vocab: Optional[str] = MODEL  # V

    def spec(self, axes: str) -> PartitionSpec:
        """PartitionSpec of an array whose dimensions are named by ``axes`` (e.g. "DNH")."""
        table = {"B": self.batch, "N": self.heads, "K": self.kv_heads, "F": self.mlp, "V": self.vocab}
        return PartitionSpec(*(table.get(letter) for letter in axes))


def make_mesh(data: int = -1, model: int = 1, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A (``data``, ``model``) mesh over ``devices`` (default: all). ``data=-1`` takes the rest.

    The axes are ``AxisType.Auto``: jit propagates shardings from the params and the cache
    constraints, so the model code stays free of sharding annotations.
    """
    devices = list(jax.devices() if devices is None else devices)
    if model < 1 or data == 0 or data < -1:
        raise ConfigError(f"mesh sizes must be positive (data may be -1: all remaining devices); "
                          f"got data={data}, model={model}")
    if data == -1:
        if len(devices) % model:
            raise ConfigError(f"mesh model={model} does not divide the {len(devices)} devices; "
                              "pick a model size that divides the device count")
        data = len(devices) // model
    if data * model != len(devices):
        raise ConfigError(
            f"mesh data={data} x model={model} needs {data * model} devices, but {len(devices)} are given "
            f"({devices[0].platform}); make the product equal the device count, or set data=-1"
        )
    return jax.make_mesh((data, model), (DATA, MODEL), axis_types=(AxisType.Auto,) * 2, devices=devices)


def rules_for(cfg: Qwen3Config, mesh: Mesh) -> ShardingRules:
    """The rules for ``cfg`` on ``mesh``; checks that ``model`` divides every axis it splits.

    A mesh without a ``model`` axis (or of size 1) replicates the weights; one without ``data``
    replicates the batch. kv heads fall back to replication when ``model`` does not divide them.
    """
    sizes = dict(mesh.shape)
    model = sizes.get(MODEL, 1)
    split = {"num_heads": cfg.num_heads, "intermediate_size": cfg.intermediate_size,
             "vocab_size": cfg.vocab_size}
    bad = [f"{name}={size}" for name, size in split.items() if size % model]
    if bad:
        raise ConfigError(
            f"tensor parallelism model={model} does not divide {', '.join(bad)}; choose a model size "
            f"that divides num_heads, intermediate_size and vocab_size"
        )
    tensor = MODEL if model > 1 else None
    return ShardingRules(
        batch=DATA if sizes.get(DATA, 1) > 1 else None,
        heads=tensor, mlp=tensor, vocab=tensor,
        kv_heads=tensor if cfg.num_kv_heads % model == 0 else None,
    )


def param_axes(cfg: Qwen3Config) -> Qwen3Params:
    """A :class:`Qwen3Params` whose leaves are the logical axes (einsum letters) of each weight."""
    bias = cfg.attention_bias
    attn = Attention(q="DNH", k="DKH", v="DKH", o="NHD", q_norm="H", k_norm="H",
                     q_bias="NH" if bias else None, k_bias="KH" if bias else None,
                     v_bias="KH" if bias else None, o_bias="D" if bias else None)
    layer = Layer(attn_norm="D", attn=attn, mlp_norm="D", gate="DF", up="DF", down="FD")
    return Qwen3Params(embed="VD", layers=(layer,) * cfg.num_layers, final_norm="D",
                       lm_head=None if cfg.tie_word_embeddings else "DV")


def cache_axes(cfg: Qwen3Config, batch: str = "B") -> KVCache:
    """Logical axes of a :class:`KVCache`. ``batch="P"`` for a shared prefix (replicated rows)."""
    layers = (batch + "KSH",) * cfg.num_layers
    return KVCache(k=layers, v=layers, start=batch, end="")


def shardings(axes: Any, mesh: Mesh, rules: ShardingRules) -> Any:
    """Maps a pytree of logical axes to the same pytree of NamedShardings on ``mesh``."""
    return jax.tree.map(lambda a: NamedSharding(mesh, rules.spec(a)), axes)


def constrain(tree: Any, axes: Any, mesh: Optional[Mesh], rules: Optional[ShardingRules]) -> Any:
    """Inside jit: pins each array of ``tree`` to the sharding of its logical axes (same pytree).

    Identity without a mesh, so the engine code reads the same sharded or not.
    """
    if mesh is None:
        return tree
    return jax.tree.map(lambda x, a: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, rules.spec(a))),
                        tree, axes)


def shard_params(params: Qwen3Params, cfg: Qwen3Config, mesh: Mesh) -> Qwen3Params:
    """Places every weight on ``mesh`` by its logical axes. Same tree, same values."""
    _check_shapes(params, cfg)
    return jax.device_put(params, shardings(param_axes(cfg), mesh, rules_for(cfg, mesh)))


def placement(cfg: Qwen3Config, mesh: Mesh) -> Callable[[str, jax.Array], jax.Array]:
    """A ``place(path, array)`` for ``load_params``/``load_qwen3``: each tensor goes to its shards
    as it is read, so a teacher larger than one device is never whole on one device.
    ``path`` is the dotted param path, e.g. ``"layers.3.attn.q"``."""
    rules = rules_for(cfg, mesh)
    by_path = {_dotted(path): NamedSharding(mesh, rules.spec(axes))
               for path, axes in jax.tree_util.tree_flatten_with_path(param_axes(cfg))[0]}

    def place(path: str, value: jax.Array) -> jax.Array:
        return jax.device_put(value, by_path[path])

    return place


def _dotted(path) -> str:
    return ".".join(str(getattr(key, "name", getattr(key, "idx", key))) for key in path)


def _check_shapes(params: Qwen3Params, cfg: Qwen3Config) -> None:
    """Raises ConfigError unless ``params`` has the tree and shapes that ``cfg`` implies."""
    sizes = {"D": cfg.hidden_size, "N": cfg.num_heads, "K": cfg.num_kv_heads, "H": cfg.head_dim,
             "F": cfg.intermediate_size, "V": cfg.vocab_size}
    axes = param_axes(cfg)
    if jax.tree.structure(axes) != jax.tree.structure(params):
        raise ConfigError(
            f"params do not match the config ({cfg.num_layers} layers, tie_word_embeddings="
            f"{cfg.tie_word_embeddings}, attention_bias={cfg.attention_bias}); pass the config they were loaded with"
        )
    wrong = []
    for (path, leaf), letters in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(axes)):
        expected = tuple(sizes[letter] for letter in letters)
        if leaf.shape != expected:
            wrong.append(f"{_dotted(path)}: {leaf.shape} != {expected}")
    if wrong:
        raise ConfigError(f"params do not match the config: {'; '.join(wrong[:4])}; pass the config they "
                          "were loaded with")
