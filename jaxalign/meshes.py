"""A run's device meshes: which (``data``, ``model``) mesh each model gets, checked before any work.

The settings are ``student.mesh``, ``teachers.NAME.mesh`` and ``context_mesh``
(:class:`jaxalign.config.MeshConf`);
docs/models.md describes them. Here: the sizes and the combinations are checked
(:func:`check_meshes`, at config time), tensor-parallel splits against each model's config.json
and the devices jax sees (:func:`validate_meshes`, called by :func:`jaxalign.config.validate`),
and the GPUs a job or a whole sweep needs (:func:`mesh_devices`, :func:`sweep_devices`, which
launch/sweep.sh asks before it submits).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional, Sequence

from jaxalign.config import CONF, MeshConf, RunConf, from_omegaconf, register_schema, resolve_model_path
from jaxalign.errors import CheckpointError, ConfigError
from jaxalign.teachers import RULE

log = logging.getLogger(__name__)


def _check_mesh_sizes(key: str, mesh: MeshConf) -> None:
    """Raises ConfigError unless ``model`` >= 1 and ``data`` >= 1 or -1 (integers)."""
    for field in ("data", "model"):
        value = getattr(mesh, field)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}.{field}: {value!r} is not an integer")
    if mesh.model < 1:
        raise ConfigError(f"{key}.model: {mesh.model} must be >= 1 (the devices that split one copy of the model)")
    if mesh.data < 1 and mesh.data != -1:
        raise ConfigError(f"{key}.data: {mesh.data} must be >= 1, or -1 for all the devices that model={mesh.model} "
                          "leaves")


def _mesh_text(mesh: MeshConf) -> str:
    return f"{{data: {mesh.data}, model: {mesh.model}}}"


def model_meshes(cfg: RunConf) -> dict[str, tuple[str, MeshConf]]:
    """The mesh of each model of the main phase: model id -> (the setting that gives it, the mesh).

    The student (and the self teachers, on its weights) has ``student.mesh``; an external teacher
    ``teachers.NAME.mesh``, or the student's when it sets none. A model is loaded once, so two
    settings that give one model two meshes are a ConfigError. Context models (demonstrations,
    summaries) are not listed: :func:`context_meshes` gives theirs.
    """
    out = {cfg.student.path: ("student.mesh", cfg.student.mesh)}
    for name, t in cfg.teachers.items():
        if t.kind != "external" or not t.model:
            continue
        key, mesh = (f"teachers.{name}.mesh", t.mesh) if t.mesh is not None else ("student.mesh", cfg.student.mesh)
        if t.model in out and out[t.model][1] != mesh:
            other, theirs = out[t.model]
            raise ConfigError(f"{key}: {t.model} is loaded once, but {other} gives it {_mesh_text(theirs)} and {key} "
                              f"{_mesh_text(mesh)}; give both the same mesh")
        out.setdefault(t.model, (key, mesh))
    return out


def resolve_mesh(key: str, mesh: MeshConf, devices: int) -> tuple[int, int]:
    """(data, model) of ``mesh`` on ``devices`` devices (data=-1: all that model leaves); raises
    ConfigError, naming ``key`` and the fix, when the mesh needs more devices than there are."""
    if mesh.data == -1:
        if mesh.model > devices or devices % mesh.model:
            raise ConfigError(f"{key}: model={mesh.model} with data=-1 needs a multiple of {mesh.model} devices, but "
                              f"jax sees {devices}; request such a multiple (hydra.launcher.gpus_per_node), or give "
                              "data explicitly")
        return devices // mesh.model, mesh.model
    need = mesh.data * mesh.model
    if need > devices:
        raise ConfigError(f"{key}: data={mesh.data} x model={mesh.model} needs {need} devices, but jax sees {devices}; "
                          f"run the job with {need} GPUs (launch/sweep.sh asks SLURM for them) or shrink the mesh")
    return mesh.data, mesh.model


def _check_spans(spans: dict[str, int]) -> None:
    """Every mesh of more than one device must span the same devices: Phase 1 and 2 compute on the
    student's and the teachers' log-probs together, and jit refuses arrays on different device sets."""
    wide = {key: span for key, span in spans.items() if span > 1}
    if len(set(wide.values())) > 1:
        shown = ", ".join(f"{key} spans {span}" for key, span in wide.items())
        raise ConfigError(f"{next(iter(wide))}: the meshes span different numbers of devices ({shown}). The student's "
                          "and the teachers' log-probs meet in one computation, so every mesh of more than one device "
                          "must span the same devices: make data x model equal (e.g. {data: 2, model: 2} and "
                          "{data: 1, model: 4}), or use data=-1")


def _context_models(cfg: RunConf) -> dict[str, str]:
    """Context-only models (demonstration sources, summarizers that are neither the student nor an
    external teacher): model id -> the setting that names it."""
    main = {cfg.student.path} | {t.model for t in cfg.teachers.values() if t.kind == "external" and t.model}
    out = {}
    for name, t in cfg.teachers.items():
        if t.kind != "self":
            continue
        for field in ("source", "summarizer"):
            model = getattr(t, field)
            if model and model != RULE and model not in main:
                out.setdefault(model, f"teachers.{name}.{field}")
    return out


def context_meshes(cfg: RunConf) -> dict[str, tuple[str, MeshConf]]:
    """The mesh of each context-only model: model id -> (the setting that gives it, the mesh).

    ``context_mesh``, or the student's when it is null. A context model that is also the student or
    an external teacher is loaded as that (:func:`model_meshes`). Context models only write text, so
    their mesh need not span the main phase's devices."""
    key, mesh = ("context_mesh", cfg.context_mesh) if cfg.context_mesh is not None else ("student.mesh",
                                                                                       cfg.student.mesh)
    return {model: (key, mesh) for model in _context_models(cfg)}


def _check_mesh_splits(key: str, path: str, model_root: Optional[str], model: int, role: str = "") -> None:
    """A tensor-parallel size must divide the heads, the MLP hidden and the vocabulary of the model's
    config.json (:func:`jaxalign.models.sharding.rules_for`), when it is on disk; no weights are read."""
    if model == 1:
        return
    directory = Path(resolve_model_path(path, model_root)).expanduser()
    if not (directory / "config.json").is_file():
        return  # a hub id not downloaded yet: the job checks it again before loading
    from jax.sharding import AbstractMesh

    from jaxalign.models.config import load_config
    from jaxalign.models.sharding import DATA, MODEL, rules_for

    try:
        model_cfg = load_config(directory)
    except CheckpointError:
        return  # the loader names a broken config.json, with its own message
    try:
        rules_for(model_cfg, AbstractMesh((1, model), (DATA, MODEL)))
    except ConfigError as err:
        raise ConfigError(f"{key}.model: {err} ({path}{role})") from err


def check_meshes(cfg: RunConf) -> dict[str, tuple[str, MeshConf]]:
    """The checks that need neither devices nor model files: sizes, meshes only on the student and
    external teachers, one mesh per model, equal spans of the meshes with a fixed ``data``.
    Returns :func:`model_meshes` ({} for an exact student)."""
    _check_mesh_sizes("student.mesh", cfg.student.mesh)
    if cfg.context_mesh is not None:
        _check_mesh_sizes("context_mesh", cfg.context_mesh)
    for name, t in cfg.teachers.items():
        if t.mesh is None:
            continue
        key = f"teachers.{name}.mesh"
        if t.kind == "self":
            raise ConfigError(f"{key}: a self teacher runs on the student's weights, so on the student's mesh; "
                              f"remove {key} and set student.mesh instead")
        if t.kind != "external":
            raise ConfigError(f"{key}: {t.kind} teachers compute on the host, without a mesh; remove {key}")
        _check_mesh_sizes(key, t.mesh)
    if cfg.student.kind == "exact":
        for key, mesh in (("student.mesh", cfg.student.mesh), ("context_mesh", cfg.context_mesh)):
            if mesh not in (None, MeshConf()):
                raise ConfigError(f"{key}: exact models compute on the host, without a mesh; remove {key}")
        return {}
    meshes = model_meshes(cfg)
    _check_spans({key: m.data * m.model for key, m in meshes.values() if m.data != -1})
    return meshes


def validate_meshes(cfg: RunConf, check_models: bool) -> None:
    """:func:`check_meshes`; with ``check_models``, the splits against each model's config.json and,
    outside dry runs, the devices jax sees."""
    meshes = check_meshes(cfg)
    named = _context_models(cfg)
    if cfg.context_mesh is not None and meshes and not named:
        log.warning("context_mesh is set, but no teacher's source or summarizer is a context-only model (one that "
                    "is neither the student nor an external teacher): it is unused")
    if not check_models or not meshes:
        return
    for model, (key, mesh) in meshes.items():
        _check_mesh_splits(key, model, cfg.model_root, mesh.model)
    context = context_meshes(cfg)
    for model, (key, mesh) in context.items():
        _check_mesh_splits(key, model, cfg.model_root, mesh.model, f", the context model named by {named[model]}")
    every = [*meshes.values(), *context.values()]
    if cfg.dry_run or all(m == MeshConf() for _, m in every):
        return  # a dry run prices the job, it need not run here; one-device meshes need no device count
    import jax

    devices = jax.device_count()
    for key, mesh in context.values():
        resolve_mesh(key, mesh, devices)
    _check_spans({key: math.prod(resolve_mesh(key, m, devices)) for key, m in meshes.values()})


def mesh_devices(cfg: RunConf) -> Optional[int]:
    """The devices a job of ``cfg`` needs for its meshes: the largest data x model of the student, the
    external teachers and the context models. None when no mesh fixes it: every mesh is one device,
    or takes all the devices it is given (data=-1), so the launcher's count stays as given."""
    if cfg.student.kind == "exact":
        return None
    every = [*model_meshes(cfg).values(), *context_meshes(cfg).values()]
    spans = [m.data * m.model for _, m in every if m.data != -1]
    return max(spans) if spans and max(spans) > 1 else None


def sweep_devices(overrides: Sequence[str]) -> Optional[int]:
    """The largest :func:`mesh_devices` of the jobs of a sweep (Hydra overrides, comma lists expanded
    as the basic sweeper does): one SLURM array asks for one GPU count. ``hydra.`` overrides are
    left out. Each job's meshes are checked first (:func:`check_meshes`)."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    job_overrides = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    jobs = [job for batch in BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(job_overrides), None)
            for job in batch]
    register_schema()
    counts = []
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        for job in jobs:
            cfg = from_omegaconf(compose(config_name="config", overrides=list(job)))
            check_meshes(cfg)
            counts.append(mesh_devices(cfg))
    fixed = [c for c in counts if c is not None]
    return max(fixed) if fixed else None


def sweep_devices_main(argv: Sequence[str]) -> int:
    """launch/sweep.sh's GPU count: prints :func:`sweep_devices` of the overrides ``argv`` (nothing
    when no mesh fixes it); a bad mesh is named on stderr, exit status 2."""
    import sys

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        count = sweep_devices(argv)
    except (ConfigError, HydraException, OmegaConfBaseException) as err:
        print(f"sweep.sh: configuration error, nothing submitted: {' '.join(str(err).splitlines()[:2])}",
              file=sys.stderr)
        return 2
    if count is not None:
        print(count)
    return 0
