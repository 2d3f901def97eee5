"""The models of one job: where they are, what they weigh, whether they fit, and loading them.

A job names models in several roles: the student (whose weights the self teachers share), external
teachers (needed through Phase 1 and 2), and context models that only write demonstrations or
summaries (Qwen3-32B in the paper). Context models run in a pre-pass and are freed before Phase 1,
so the job's memory peak is the larger of

  pre-pass:  the student + the largest context model (one at a time), and the pre-pass's sampler cache
  main:      the student + every external teacher, and the largest KV cache of the main phase

Each model is loaded onto its (data, model) mesh (``student.mesh``, ``teachers.NAME.mesh``;
context-only models ``context_mesh``, else the student's), tensor by tensor (:func:`jaxalign.models.sharding.placement`).
A mesh of one device is no mesh: the model loads as it always did.

Before anything loads, each model is logged with its bytes, computed from its config.json (the
tensor shapes of the Qwen3 name table, at the student's dtype; no weights are read), and the job
refuses to start when a phase's peak on one device exceeds :data:`WEIGHT_SHARE` of the device
memory. The peak is on the first device, which every mesh includes: each resident model's share of
its weights on its mesh, plus the phase's largest KV cache on one device. The main phase's caches
are priced by :func:`jaxalign.cost.model_memory` (the student's widest sampler call at
``budget.max_response_tokens`` and the job's longest prompt; every model's longest scored path),
the pre-pass's by :func:`jaxalign.cost.call_bytes` of each writer's widest call (a round of
demonstrations for a group of questions, queued on ``ContextSettings.max_rows`` rows; a call of
summaries, whose prompts each carry a demonstration). The device memory
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
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from jaxalign import config as C
from jaxalign.errors import ConfigError
from jaxalign.meshes import context_meshes, model_meshes, resolve_mesh

log = logging.getLogger(__name__)

WEIGHT_SHARE = 0.9  # of the device memory: weights and KV caches; the rest is for activations
MAIN_PHASE = "main phase (student and external teachers)"
PRE_PASS = "pre-pass (student and context model)"
STANDIN_MARKER = "standin.json"
EOS_TOKENS = ("<|im_end|>", "<|endoftext|>")  # as Qwen3


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model the job will load: ``id`` as configured, its local ``directory``, its ``roles``
    ('student', 'teacher NAME', 'demonstrations', 'summaries'), its weight bytes at the job's dtype,
    its resolved (data, model) ``mesh`` and its weight bytes on one device of it (None: all of them)."""

    id: str
    directory: Path
    roles: tuple[str, ...]
    nbytes: int
    standin: bool
    mesh: tuple[int, int] = (1, 1)
    device_nbytes: Optional[int] = None

    @property
    def context_only(self) -> bool:
        return all(r in ("demonstrations", "summaries") for r in self.roles)

    @property
    def per_device(self) -> int:
        """Weight bytes on one device of the model's mesh."""
        return self.nbytes if self.device_nbytes is None else self.device_nbytes


@dataclasses.dataclass(frozen=True)
class CacheUse:
    """A phase's largest KV cache on one device: the model, 'sampler' or 'scoring', its size in words
    (rows x slots, or tokens), and its bytes."""

    model: str
    kind: str
    size: str
    nbytes: int
    rows: int = 1  # a sampler cache's rows (all of them, over every data shard)
    # the setting whose data axis splits a sampler cache's rows; None: none does (one row per device)
    data_axis: Optional[str] = "student.mesh.data"


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


def _listed(specs: Sequence[ModelSpec]) -> str:
    """'id bytes' per model, with its share per device where a mesh splits it."""
    return ", ".join(f"{s.id} {_gb(s.nbytes)}" + (f" ({_gb(s.per_device)} per device at model={s.mesh[1]})"
                                                     if s.per_device != s.nbytes else "") for s in specs)


def check_fits(phases: Mapping[str, list[ModelSpec]], limit: Optional[int], where: str, dtype="bfloat16",
               caches: Optional[Mapping[str, CacheUse]] = None, batch_rollouts: Optional[int] = None) -> None:
    """Raises ConfigError when a phase's peak on one device exceeds WEIGHT_SHARE of ``limit`` bytes:
    first every phase's weights alone (each model's share of its mesh), then the weights and the phase's
    largest KV cache (``caches``, by phase). ``batch_rollouts``: the run's, for the fix it names
    (half the rows of the widest sampler call, at most half the batch)."""
    if limit is None:
        log.info("device memory unknown (%s); the models' fit is not checked (set device_memory_gb to check it)",
                 where)
        return
    def model_axis(phase: str) -> str:
        return ("student.mesh.model, context_mesh.model" if phase == PRE_PASS
                else "student.mesh.model, teachers.NAME.mesh.model")

    for phase, specs in phases.items():
        need = sum(s.per_device for s in specs)
        if need > WEIGHT_SHARE * limit:
            smaller = " or student.dtype=bfloat16," if jnp.dtype(dtype) == jnp.float32 else ""
            raise ConfigError(
                f"the {phase} needs {_gb(need)} of weights ({_listed(specs)}), more than {WEIGHT_SHARE:.0%} of the "
                f"{_gb(limit)} of {where}. Use a device with more memory,{smaller} or fewer or smaller models "
                f"(leave a teacher out with ~teachers.NAME), or split them over more devices with a larger model "
                f"axis ({model_axis(phase)})")
    for phase, specs in phases.items():
        need = sum(s.per_device for s in specs)
        cache = (caches or {}).get(phase)
        if cache is None or need + cache.nbytes <= WEIGHT_SHARE * limit:
            continue
        if cache.kind == "sampler" and phase == PRE_PASS:  # the pre-pass's rows are fixed (ContextSettings)
            fewer = f"a data axis that splits the rows ({cache.data_axis}), " if cache.data_axis else ""
        elif cache.kind == "sampler":
            half = max(1, min(batch_rollouts or cache.rows, cache.rows) // 2)
            fewer = (f"a data axis that splits the rows ({cache.data_axis}), fewer rows per sampler call "
                     f"(budget.batch_rollouts={half}), ")
        else:
            fewer = "shorter responses (budget.max_response_tokens), "
        raise ConfigError(
            f"the {phase} needs a peak of {_gb(need + cache.nbytes)} per device: {_gb(need)} of weights "
            f"({_listed(specs)}) and {_gb(cache.nbytes)} for the largest KV cache ({cache.model}'s {cache.kind} "
            f"cache, {cache.size}), more than {WEIGHT_SHARE:.0%} of the {_gb(limit)} of {where}. Use a larger model "
            f"axis ({model_axis(phase)}: it splits the weights and the kv heads), {fewer}"
            "or a device with more memory (device_memory_gb)")


def _check_decode_attention(cfg: C.RunConf, splits: Mapping[str, tuple[int, int]]) -> None:
    """``decode_attention=ragged``: refused where Triton would compute float32 attention in TF32
    (a GPU), logged where it runs interpreted (off a GPU) or not at all (a model whose mesh's
    ``model`` axis does not divide its kv heads). ``splits``: each model's (model axis, kv heads)."""
    if cfg.decode_attention != "ragged":
        return
    backend = jax.default_backend()
    if backend == "gpu" and cfg.student.dtype == "float32":
        raise ConfigError(
            "decode_attention=ragged: the Pallas (Triton) kernel's dots take float32 inputs as TF32 on a GPU, so a "
            "float32 model would not be float32. Set student.dtype=bfloat16, or decode_attention=xla")
    if backend != "gpu":
        log.warning("decode_attention=ragged on %s runs the Pallas kernel in its interpreter: exact but slow, for "
                    "tests; use decode_attention=xla here", backend)
    uneven = sorted(m for m, (model, kv_heads) in splits.items() if kv_heads % model)
    if uneven:
        log.info("decode_attention=ragged: %s keep the xla window (their mesh's model axis does not divide their kv "
                 "heads, so the kernel cannot run per device)", ", ".join(uneven))


def mesh_setting(cfg: C.RunConf, model_id: str) -> tuple[str, C.MeshConf]:
    """(the setting that gives ``model_id`` its mesh, that mesh): ``student.mesh``,
    ``teachers.NAME.mesh`` or ``context_mesh`` (a model no setting names: the student's)."""
    return {**context_meshes(cfg), **model_meshes(cfg)}.get(model_id, ("student.mesh", cfg.student.mesh))


def job_meshes(cfg: C.RunConf, model_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """model id -> its resolved (data, model): the student's and external teachers' settings
    (:func:`jaxalign.meshes.model_meshes`), ``context_mesh`` (else the student's) for context-only
    models (:func:`jaxalign.meshes.context_meshes`). jax's device count is read only when some mesh
    is not one device."""
    chosen = {m: mesh_setting(cfg, m) for m in model_ids}
    if all(mesh == C.MeshConf() for _, mesh in chosen.values()):
        return {m: (1, 1) for m in model_ids}
    devices = jax.device_count()
    return {m: resolve_mesh(key, mesh, devices) for m, (key, mesh) in chosen.items()}


class JobModels:
    """Resolves, sizes, checks and (lazily) loads every model of a job.

    ``roles`` maps model ids to their roles; the student's id is ``student``. Tokenizers of the
    student and the external teachers must agree (response tokens are shared); context models
    only exchange text, so theirs may differ. ``prompts`` (user messages, with ``system``) give the
    longest student prompt, for the KV caches of the memory check.
    """

    def __init__(self, cfg: C.RunConf, roles: Mapping[str, tuple[str, ...]], student: str,
                 prompts: Sequence[str] = (), system: Optional[str] = None):
        from jaxalign.calibrate import Shape
        from jaxalign.cost import weight_bytes_per_device
        from jaxalign.models import load_config, load_tokenizer
        from jaxalign.models.loading import resolve_model_dir
        from jaxalign.models.tokenizer import check_same_tokenizer
        from jaxalign.teachers import RULE, context_needs

        self.dtype = jnp.bfloat16 if cfg.student.dtype == "bfloat16" else jnp.float32
        self.student = student
        self.questions = len(prompts)  # the job's (0: not given)
        self.meshes = job_meshes(cfg, list(roles))
        self.decode_attention = cfg.decode_attention
        self.response_tokens = cfg.budget.max_response_tokens
        needs = context_needs(cfg.teachers, cfg.student.path)
        # the models that write demonstrations or summaries in the pre-pass (a rule summarizer is no model)
        self.prepass_writers = (set(needs.demos) | {s for _, s in needs.summaries}) - {RULE}
        self._meshes: dict = {}
        self._loaded: dict = {}
        self.specs: dict[str, ModelSpec] = {}
        self.shapes: dict[str, Shape] = {}
        for model_id, model_roles in roles.items():
            directory = resolve_model_dir(C.resolve_model_path(model_id, cfg.model_root))
            self.shapes[model_id] = shape = Shape.of(load_config(directory), jnp.dtype(self.dtype).name)
            mesh = self.meshes[model_id]
            self.specs[model_id] = ModelSpec(model_id, directory, tuple(model_roles),
                                             weight_bytes(directory, self.dtype),
                                             (directory / STANDIN_MARKER).is_file(), mesh,
                                             weight_bytes_per_device(shape, mesh[1]) if mesh[1] > 1 else None)
        _check_decode_attention(cfg, {m: (self.meshes[m][1], shape.kv_heads) for m, shape in self.shapes.items()})
        self.tokenizers = {m: load_tokenizer(s.directory) for m, s in self.specs.items()}
        for model_id, spec in self.specs.items():  # a mismatch fails before any weights load
            if model_id != student and not spec.context_only:
                check_same_tokenizer(self.tokenizers[student], self.tokenizers[model_id], cfg.student.name,
                                     ", ".join(spec.roles))
        for spec in self.specs.values():
            on = f" on mesh data={spec.mesh[0]} x model={spec.mesh[1]}" if spec.mesh != (1, 1) else ""
            log.info("model %s (%s): %s of weights at %s%s, %s%s", spec.id, ", ".join(spec.roles), _gb(spec.nbytes),
                     jnp.dtype(self.dtype).name, on, spec.directory,
                     " [STAND-IN: random weights]" if spec.standin else "")
        if self.standins:
            log.warning("STAND-IN MODELS (%s): random weights under real names; this run checks the pipeline, "
                        "its numbers mean nothing", ", ".join(self.standins))
        stats_where = ("device_memory_gb" if cfg.device_memory_gb is not None
                       else f"{jax.devices()[0]} (memory_stats bytes_limit)")
        caches = self.caches(cfg, self.prompt_tokens(prompts, system))
        for phase, cache in caches.items():
            weights = sum(s.per_device for s in self.phases()[phase])
            log.info("%s: peak %s per device (weights %s, largest KV cache %s: %s's %s cache, %s)", phase,
                     _gb(weights + cache.nbytes), _gb(weights), _gb(cache.nbytes), cache.model, cache.kind, cache.size)
        check_fits(self.phases(), device_memory(cfg.device_memory_gb), stats_where, self.dtype, caches,
                   cfg.budget.batch_rollouts)

    def prompt_tokens(self, prompts: Sequence[str], system: Optional[str]) -> int:
        """Tokens of the longest of the student's chat prompts for ``prompts`` (1 without any)."""
        from jaxalign.models import encode_chat

        tokenizer = self.tokenizers[self.student]
        return max([1] + [len(encode_chat(tokenizer, user, system=system)) for user in prompts])

    def caches(self, cfg: C.RunConf, prompt_tokens: int) -> dict[str, CacheUse]:
        """Each phase's largest KV cache on one device (see the module docstring), by phase name."""
        from jaxalign import cost
        from jaxalign.engine.sampling import padded_prompts
        from jaxalign.teachers import FORMATS, context_needs
        from jaxalign.teachers.prepass import ContextSettings

        cap = cfg.budget.max_response_tokens
        use = {m: cost.ModelUse(m, self.shapes[m], str(self.specs[m].directory)) for m in self.specs}
        teachers = []
        for name, t in cfg.teachers.items():
            if t.kind == "external" and t.model in use:
                teachers.append(cost.TeacherUse(name, use[t.model], 0))
            elif t.kind == "self":
                fmt = FORMATS[t.context]
                teachers.append(cost.TeacherUse(name, use[self.student], fmt.correct + fmt.wrong))
        models = cost.RunModels(use[self.student], tuple(teachers))
        lengths = cost.Lengths(prompt_tokens, cap, cap, "the job's longest prompt; budget.max_response_tokens")
        plan = cost.question_plan(cfg, models, lengths, cost.sampler_max_rows(), data=self.meshes[self.student][0])
        parts = cost.model_memory(plan, models, lengths, self.meshes)
        largest = max(parts, key=lambda m: m.cache_bytes)
        phases = self.phases()
        widest = cost.widest_call(plan, self.shapes[self.student], *self.meshes[self.student]).rows
        out = {MAIN_PHASE: CacheUse(largest.id, largest.cache, largest.cache_size, largest.cache_bytes,
                                    widest if largest.cache == "sampler" else 1)}
        if PRE_PASS in phases:
            settings = ContextSettings()
            group = min(settings.questions_per_call, self.questions or C.question_count(cfg))
            needs = context_needs(cfg.teachers, cfg.student.path)
            writes_demos, summarizes = set(needs.demos), {s for _, s in needs.summaries}

            def writer_mesh(model_id: str) -> str:  # the setting to change for this writer's rows
                return "context_mesh" if model_id in context_meshes(cfg) else mesh_setting(cfg, model_id)[0]

            def widest(spec, counts: list[int], prefix: int, limit: int, hint: Optional[str]) -> CacheUse:
                calls = cost.sampler_calls(counts, prefix, limit, limit, settings.max_rows, limit, spec.mesh[0])
                call = max(calls, key=lambda c: cost.call_bytes(self.shapes[spec.id], c, *spec.mesh))
                size = (f"{call.rows} rows x {call.new_slots} slots + {call.prefixes} prefixes x {call.prefix_slots} "
                        "slots")
                return CacheUse(spec.id, "sampler", size, cost.call_bytes(self.shapes[spec.id], call, *spec.mesh),
                                call.rows, hint)

            found = []
            for spec in (self.specs[m] for m in sorted(self.prepass_writers)):  # each writer's largest call
                if spec.id in writes_demos:  # a round of demonstrations: batch of each question in a group
                    found.append(widest(spec, [settings.batch] * padded_prompts(group), prompt_tokens, cap,
                                        f"{writer_mesh(spec.id)}.data"))
                if spec.id in summarizes:  # a correct and a wrong summary of each question in a group
                    prompt = prompt_tokens + cap + cost.SUMMARY_PROMPT_TOKENS
                    fit = cost.summaries_per_call(prompt, settings.max_prefix_slots)
                    per_call = padded_prompts(min(2 * group, fit))
                    # the prompts hold the demonstrations, copied to every data shard: data does not shrink them
                    found.append(widest(spec, [1] * per_call, prompt, cfg.summary_max_tokens, None))
            if found:
                out[PRE_PASS] = max(found, key=lambda c: c.nbytes)
        return out

    @property
    def standins(self) -> list[str]:
        return [s.id for s in self.specs.values() if s.standin]

    def phases(self) -> dict[str, list[ModelSpec]]:
        """The models resident together: the main phase, and the pre-pass when it has work (the
        student with the largest other model that writes demonstrations or summaries)."""
        student = self.specs[self.student]
        main = [s for s in self.specs.values() if not s.context_only]
        out = {MAIN_PHASE: main}
        writers = [self.specs[m] for m in self.prepass_writers if m != self.student]
        if writers or self.student in self.prepass_writers:
            out[PRE_PASS] = [student] + ([max(writers, key=lambda s: s.per_device)] if writers else [])
        return out

    def record(self) -> list[dict]:
        """For run.json: each model's id, roles, bytes, mesh and whether it is a stand-in."""
        return [{"id": s.id, "roles": list(s.roles), "bytes": s.nbytes, "standin": s.standin,
                 "directory": str(s.directory), "mesh": {"data": s.mesh[0], "model": s.mesh[1]}}
                for s in self.specs.values()]

    def mesh(self, model_id: str):
        """The model's jax Mesh over the first data x model devices; None for a one-device mesh."""
        data, model = self.specs[model_id].mesh
        if (data, model) == (1, 1):
            return None
        if (data, model) not in self._meshes:
            from jaxalign.models import make_mesh

            self._meshes[data, model] = make_mesh(data, model, devices=jax.devices()[: data * model])
        return self._meshes[data, model]

    def eos(self, model_id: str) -> tuple[int, ...]:
        tokenizer = self.tokenizers[model_id]
        return tuple(tokenizer.convert_tokens_to_ids(t) for t in EOS_TOKENS)

    def policy(self, model_id: str):
        """The model as a FlaxPolicy, loaded on first use."""
        if model_id not in self._loaded:
            from jaxalign.engine.policy import FlaxPolicy
            from jaxalign.models import load_config, load_qwen3, placement

            spec = self.specs[model_id]
            mesh = self.mesh(model_id)
            log.info("loading %s (%s)%s", model_id, _gb(spec.nbytes),
                     f" onto mesh data={spec.mesh[0]} x model={spec.mesh[1]}" if mesh is not None else "")
            place = placement(load_config(spec.directory), mesh) if mesh is not None else None
            model_cfg, params = load_qwen3(spec.directory, self.dtype, place)
            model_cfg = dataclasses.replace(model_cfg, decode_attention=self.decode_attention)
            # the student's rollouts start at every depth; those near the limit share one compiled shape
            bound = self.response_tokens if model_id == self.student else 0
            self._loaded[model_id] = FlaxPolicy(params, model_cfg, self.eos(model_id), mesh=mesh, max_new_bound=bound)
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
