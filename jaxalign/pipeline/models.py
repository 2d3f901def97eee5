"""The models of one job: where they are, what they weigh, whether they fit, and loading them.

A job names models in several roles: the student (whose weights the self teachers share), external
teachers (needed through Phase 1 and 2), and context models that only write demonstrations or
summaries (Qwen3-32B in the paper). Context models run in a pre-pass and are freed before Phase 1,
so the job's memory peak is the larger of

  pre-pass:  the student + the largest context model (one at a time)
  main:      the student + every external teacher

Before anything loads, each model is logged with its bytes, computed from its config.json (the
tensor shapes of the Qwen3 name table, at the student's dtype; no weights are read), and the job
refuses to start when a peak exceeds :data:`WEIGHT_SHARE` of the device memory. The device memory
is ``device_memory_gb`` if set, else ``jax.devices()[0].memory_stats()["bytes_limit"]``; a device
without memory stats (the CPU) is not checked unless ``device_memory_gb`` is set.

A directory with a ``standin.json`` marker is a stand-in (``python -m jaxalign.toy.standins``):
random weights under a real name. The job says so loudly; its numbers mean nothing.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
from pathlib import Path
from typing import Mapping, Optional

import jax
import jax.numpy as jnp

from jaxalign import config as C
from jaxalign.errors import ConfigError

log = logging.getLogger(__name__)

WEIGHT_SHARE = 0.9  # of the device memory; the rest is for KV caches and activations
STANDIN_MARKER = "standin.json"
EOS_TOKENS = ("<|im_end|>", "<|endoftext|>")  # as Qwen3


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model the job will load: ``id`` as configured, its local ``directory``, its ``roles``
    ('student', 'teacher NAME', 'demonstrations', 'summaries'), its weight bytes at the job's dtype."""

    id: str
    directory: Path
    roles: tuple[str, ...]
    nbytes: int
    standin: bool

    @property
    def context_only(self) -> bool:
        return all(r in ("demonstrations", "summaries") for r in self.roles)


def weight_bytes(model_dir: Path, dtype) -> int:
    """Bytes of a Qwen3 checkpoint's parameters at ``dtype``, from config.json alone."""
    from jaxalign.models.config import load_config
    from jaxalign.models.loading import weight_table

    cfg = load_config(model_dir)
    return sum(math.prod(e.shape) for e in weight_table(cfg).values()) * jnp.dtype(dtype).itemsize


def device_memory(setting_gb: Optional[float]) -> Optional[int]:
    """Bytes the models may fill: the setting, else the first device's limit, else None (unknown)."""
    if setting_gb is not None:
        return int(setting_gb * 1e9)
    stats = jax.devices()[0].memory_stats()
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def _gb(n: int) -> str:
    """Bytes in the largest decimal unit that keeps them >= 1 (1.21 GB, 63.2 kB, 60 B)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{n} B"


def check_fits(phases: Mapping[str, list[ModelSpec]], limit: Optional[int], where: str, dtype="bfloat16") -> None:
    """Raises ConfigError when the weights of a phase exceed WEIGHT_SHARE of ``limit`` bytes."""
    if limit is None:
        log.info("device memory unknown (%s); the models' fit is not checked (set device_memory_gb to check it)",
                 where)
        return
    for phase, specs in phases.items():
        need = sum(s.nbytes for s in specs)
        if need > WEIGHT_SHARE * limit:
            listed = ", ".join(f"{s.id} {_gb(s.nbytes)}" for s in specs)
            smaller = " or student.dtype=bfloat16," if jnp.dtype(dtype) == jnp.float32 else ""
            raise ConfigError(
                f"the {phase} needs {_gb(need)} of weights ({listed}), more than {WEIGHT_SHARE:.0%} of the "
                f"{_gb(limit)} of {where}. Use a device with more memory,{smaller} or fewer or smaller models "
                "(leave a teacher out with ~teachers.NAME)")


class JobModels:
    """Resolves, sizes, checks and (lazily) loads every model of a job.

    ``roles`` maps model ids to their roles; the student's id is ``student``. Tokenizers of the
    student and the external teachers must agree (response tokens are shared); context models
    only exchange text, so theirs may differ.
    """

    def __init__(self, cfg: C.RunConf, roles: Mapping[str, tuple[str, ...]], student: str):
        from jaxalign.models import load_tokenizer
        from jaxalign.models.loading import resolve_model_dir
        from jaxalign.models.tokenizer import check_same_tokenizer

        self.dtype = jnp.bfloat16 if cfg.student.dtype == "bfloat16" else jnp.float32
        self.student = student
        self.specs: dict[str, ModelSpec] = {}
        for model_id, model_roles in roles.items():
            directory = resolve_model_dir(C.resolve_model_path(model_id, cfg.model_root))
            self.specs[model_id] = ModelSpec(model_id, directory, tuple(model_roles),
                                             weight_bytes(directory, self.dtype),
                                             (directory / STANDIN_MARKER).is_file())
        self.tokenizers = {m: load_tokenizer(s.directory) for m, s in self.specs.items()}
        for model_id, spec in self.specs.items():  # a mismatch fails before any weights load
            if model_id != student and not spec.context_only:
                check_same_tokenizer(self.tokenizers[student], self.tokenizers[model_id], cfg.student.name,
                                     ", ".join(spec.roles))
        for spec in self.specs.values():
            log.info("model %s (%s): %s of weights at %s, %s%s", spec.id, ", ".join(spec.roles), _gb(spec.nbytes),
                     jnp.dtype(self.dtype).name, spec.directory, " [STAND-IN: random weights]" if spec.standin else "")
        if self.standins:
            log.warning("STAND-IN MODELS (%s): random weights under real names; this run checks the pipeline, "
                        "its numbers mean nothing", ", ".join(self.standins))
        stats_where = ("device_memory_gb" if cfg.device_memory_gb is not None
                       else f"{jax.devices()[0]} (memory_stats bytes_limit)")
        check_fits(self.phases(), device_memory(cfg.device_memory_gb), stats_where, self.dtype)
        self._loaded: dict = {}

    @property
    def standins(self) -> list[str]:
        return [s.id for s in self.specs.values() if s.standin]

    def phases(self) -> dict[str, list[ModelSpec]]:
        """The models resident together: the pre-pass (with its largest context model) and the main phase."""
        student = self.specs[self.student]
        context = [s for s in self.specs.values() if s.context_only]
        main = [s for s in self.specs.values() if not s.context_only]
        out = {"main phase (student and external teachers)": main}
        if context:
            out["pre-pass (student and context model)"] = [student, max(context, key=lambda s: s.nbytes)]
        return out

    def record(self) -> list[dict]:
        """For run.json: each model's id, roles, bytes and whether it is a stand-in."""
        return [{"id": s.id, "roles": list(s.roles), "bytes": s.nbytes, "standin": s.standin,
                 "directory": str(s.directory)} for s in self.specs.values()]

    def eos(self, model_id: str) -> tuple[int, ...]:
        tokenizer = self.tokenizers[model_id]
        return tuple(tokenizer.convert_tokens_to_ids(t) for t in EOS_TOKENS)

    def policy(self, model_id: str):
        """The model as a FlaxPolicy, loaded on first use."""
        if model_id not in self._loaded:
            from jaxalign.engine.policy import FlaxPolicy
            from jaxalign.models import load_qwen3

            spec = self.specs[model_id]
            log.info("loading %s (%s)", model_id, _gb(spec.nbytes))
            model_cfg, params = load_qwen3(spec.directory, self.dtype)
            self._loaded[model_id] = FlaxPolicy(params, model_cfg, self.eos(model_id))
        return self._loaded[model_id]

    def release(self, model_id: str) -> None:
        """Frees a model's device memory now (the student is never released)."""
        policy = self._loaded.pop(model_id, None)
        if policy is None or model_id == self.student:
            if policy is not None:
                self._loaded[model_id] = policy
            return
        jax.tree.map(lambda a: a.delete() if isinstance(a, jax.Array) else None, policy.params)
        del policy
        gc.collect()
        log.info("released %s", model_id)

    def standin_note(self) -> Optional[str]:
        if not self.standins:
            return None
        return ("stand-in models (random weights under real names): " + ", ".join(self.standins)
                + ". The numbers of this run mean nothing.")


def standin_record(directory: Path) -> Optional[dict]:
    marker = Path(directory) / STANDIN_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None
