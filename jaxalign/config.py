"""Structured configs (dataclasses) behind the Hydra groups in ``conf/``.

Hydra checks key names and types against these dataclasses when composing, so a typo such as
``budget.n_mim=5`` fails at once, naming the key. :func:`validate` then checks values and
combinations, also before any model is loaded, and names the key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Dict, Optional

from jaxalign.contexts import FORMATS
from jaxalign.errors import CheckpointError, ConfigError

ASSETS = Path(__file__).resolve().parent / "assets"
MODEL_KINDS = ("flax", "exact")
TEACHER_KINDS = ("self", "external", "exact")
DATASETS = ("toy_arith", "exact")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass
class ModelConf:
    name: str = "toy"
    kind: str = "flax"  # flax | exact
    path: str = "toy:student"  # a local HF directory, a hub id, or toy:student / toy:teacher
    dtype: str = "float32"
    exact_seed_offset: int = 0  # exact: the question's seed is added to it


@dataclasses.dataclass
class TeacherConf:
    kind: str = "self"  # self | external | exact
    context: Optional[str] = None  # self: SELF-1C | SELF-1C1W | SELF-SUM-1C
    summarizer: Optional[str] = None  # self, SUM formats: "rule" (toy)
    model: Optional[str] = None  # external: a model path like ModelConf.path
    tilt: float = 0.0  # exact: beta of the success tilt
    noise: float = 0.0  # exact: sigma of success-independent noise


@dataclasses.dataclass
class DatasetConf:
    name: str = "toy_arith"  # toy_arith | exact
    num_questions: int = 4
    seed: int = 0
    terms: int = 3
    digits: int = 2
    system: Optional[str] = None  # a system message for every prompt


@dataclasses.dataclass
class BudgetConf:
    """Phase 1's budget and the planner's knobs. The defaults are the paper's settings (Section 2.5,
    Appendix D) and the only defaults: :class:`jaxalign.enrich.EnrichConfig` and
    :class:`jaxalign.pipeline.PipelineConfig` take theirs from here. ``conf/budget/*.yaml`` set
    the presets (``small``, the embedded default, overrides the sizes)."""

    name: str = "paper"
    num_initial: int = 200  # G
    max_response_tokens: int = 4096
    batch_rollouts: int = 512
    n_min: int = 100
    n_sig: int = 20
    tau: float = 0.02
    top_k: int = 8
    top_r: int = 8
    first_window: int = 50
    window_growth: float = 2.0
    adaptive: bool = False  # further rounds only where some teacher's alignment sign is still open
    adaptive_step: int = 25  # rollouts per pair per adaptive round
    adaptive_max: int = 400  # visits cap per pair in adaptive mode
    adaptive_share: float = 1.0  # a child of an open node gets a round if its share of the sign interval >= this / K


@dataclasses.dataclass
class ShardConf:
    """Question sharding: this job takes questions index, index + count, ... (a SLURM array task i of n)."""

    index: int = 0
    count: int = 1


@dataclasses.dataclass
class RunConf:
    student: ModelConf = dataclasses.field(default_factory=ModelConf)
    # name -> TeacherConf. Typed as Any so that ``+teachers.NAME={kind:external,model:PATH}`` can add a
    # teacher from the command line (OmegaConf cannot merge a dict into a Dict[str, dataclass]);
    # :func:`from_omegaconf` checks and converts each entry against TeacherConf.
    teachers: Dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset: DatasetConf = dataclasses.field(default_factory=DatasetConf)
    budget: BudgetConf = dataclasses.field(default_factory=BudgetConf)
    shard: ShardConf = dataclasses.field(default_factory=ShardConf)
    seed: int = 0
    demo_temperature: float = 0.7
    demo_trials: int = 60
    include_path_rollout: bool = False
    count_ancestors: bool = False
    dry_run: bool = False
    throughput_tokens_per_s: float = 20000.0  # for the dry run's GPU-hour estimate


def resolve_model_path(path: str) -> str:
    """toy:NAME -> the embedded checkpoint directory; anything else unchanged."""
    if path.startswith("toy:"):
        target = ASSETS / "toy" / path.split(":", 1)[1]
        if not (target / "config.json").is_file():
            raise ConfigError(f"embedded model {path!r} is missing at {target}; reinstall jaxalign or retrain it "
                              "with python -m jaxalign.toy.train")
        return str(target)
    return path


def _check_local_model_dir(key: str, path: str) -> None:
    """A local model directory must hold config.json and safetensors: checked before the run directory is claimed."""
    if path.startswith("toy:") or not Path(path).expanduser().is_dir():
        return
    from jaxalign.models.loading import check_model_dir  # imports jax: only when a local directory is named

    try:
        check_model_dir(Path(path).expanduser())
    except CheckpointError as err:
        raise ConfigError(f"{key}: {err}") from err


def check_keys(node, schema=RunConf, where: str = "") -> None:
    """Raises ConfigError for a key that no dataclass field names, e.g. ``+budget.nmin=50``.

    Hydra's ``+`` adds keys even to a structured config, and ``OmegaConf.to_object`` then drops
    them without a word; this walks ``node`` (a DictConfig or dict) against ``schema``.
    """
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in node.keys():
        name = f"{where}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {where}{close[0]}?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"{name}: unknown key{hint}")
        value = node[key]
        nested = {"student": ModelConf, "dataset": DatasetConf, "budget": BudgetConf, "shard": ShardConf}
        if where == "" and key in nested and hasattr(value, "keys"):
            check_keys(value, nested[key], name + ".")
        elif where == "" and key == "teachers" and hasattr(value, "keys"):
            for teacher, conf in value.items():
                if hasattr(conf, "keys"):
                    check_keys(conf, TeacherConf, f"teachers.{teacher}.")


def from_omegaconf(dcfg) -> RunConf:
    """The job's DictConfig (without ``hydra``) as a RunConf, with unknown keys rejected by name."""
    from omegaconf import OmegaConf

    check_keys(dcfg)
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConf), dcfg))
    teachers = {}
    for name, conf in cfg.teachers.items():
        if not isinstance(conf, dict):
            raise ConfigError(f"teachers.{name}: expected a mapping like {{kind: external, model: PATH}}, got {conf!r}")
        try:
            teachers[name] = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TeacherConf), conf))
        except Exception as err:  # noqa: BLE001 - OmegaConf's validation errors have many types
            raise ConfigError(f"teachers.{name}: {err}".split("\n")[0]) from err
    cfg.teachers = teachers
    return cfg


def validate(cfg: RunConf) -> None:
    """Raises ConfigError naming the first bad key. Runs before any model is loaded."""
    def check(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {message}")

    check(cfg.student.kind in MODEL_KINDS, "student.kind", f"{cfg.student.kind!r} is not one of {MODEL_KINDS}")
    check(cfg.student.dtype in DTYPES, "student.dtype", f"{cfg.student.dtype!r} is not one of {DTYPES}")
    check(cfg.dataset.name in DATASETS, "dataset.name", f"{cfg.dataset.name!r} is not one of {DATASETS}")
    check((cfg.student.kind == "exact") == (cfg.dataset.name == "exact"), "dataset.name",
          "student=exact goes with dataset=exact (and only with it)")
    check(cfg.dataset.num_questions >= 1, "dataset.num_questions", "must be >= 1")
    check(len(cfg.teachers) >= 1, "teachers", "no teachers configured; pick a set, e.g. teachers=toy")
    for name, t in cfg.teachers.items():
        key = f"teachers.{name}"
        check(t.kind in TEACHER_KINDS, key + ".kind", f"{t.kind!r} is not one of {TEACHER_KINDS}")
        check((t.kind == "exact") == (cfg.student.kind == "exact"), key + ".kind",
              "exact teachers need student=exact, and student=exact needs exact teachers")
        if t.kind == "self":
            check(t.context in FORMATS, key + ".context", f"{t.context!r} is not one of {FORMATS}")
            check(not (t.context or "").startswith("SELF-SUM") or t.summarizer == "rule", key + ".summarizer",
                  "SELF-SUM formats need a summarizer (only 'rule', for toy_arith, exists yet)")
        if t.kind == "external":
            check(bool(t.model), key + ".model", "an external teacher needs a model path")
            if t.model.startswith("toy:"):
                resolve_model_path(t.model)
            elif not Path(t.model).expanduser().is_dir() and "/" not in t.model:
                raise ConfigError(f"{key}.model: {t.model!r} is neither a directory nor a hub id")
            _check_local_model_dir(key + ".model", t.model)
    b = cfg.budget
    for field in ("num_initial", "max_response_tokens", "batch_rollouts", "n_min", "n_sig", "first_window",
                  "adaptive_step", "adaptive_max"):
        check(getattr(b, field) >= 1, f"budget.{field}", "must be >= 1")
    check(b.n_sig <= b.n_min, "budget.n_sig", f"{b.n_sig} exceeds budget.n_min={b.n_min}; S_u could never fill")
    check(0 < b.tau < 1, "budget.tau", f"{b.tau} must lie in (0, 1)")
    check(b.top_k >= 0 and b.top_r >= 0, "budget.top_k", "top_k and top_r must be >= 0")
    check(b.window_growth >= 1, "budget.window_growth", "must be >= 1")
    check(0 < b.adaptive_share <= 1, "budget.adaptive_share", f"{b.adaptive_share} must lie in (0, 1]")
    check(cfg.demo_temperature > 0, "demo_temperature", "must be > 0")
    check(cfg.demo_trials >= 1, "demo_trials", "must be >= 1")
    check(cfg.shard.count >= 1, "shard.count", "must be >= 1")
    check(0 <= cfg.shard.index < cfg.shard.count, "shard.index",
          f"{cfg.shard.index} is outside 0..{cfg.shard.count - 1} (shard.count={cfg.shard.count})")
    check(cfg.shard.count <= cfg.dataset.num_questions, "shard.count",
          f"{cfg.shard.count} shards for {cfg.dataset.num_questions} questions would leave shards empty")
    check(cfg.throughput_tokens_per_s > 0, "throughput_tokens_per_s", "must be > 0")
    if cfg.student.kind == "flax" and cfg.student.path.startswith("toy:"):
        resolve_model_path(cfg.student.path)
    if cfg.student.kind == "flax" and not cfg.student.path.startswith("toy:"):
        check(Path(cfg.student.path).expanduser().is_dir() or "/" in cfg.student.path, "student.path",
              f"{cfg.student.path!r} is neither a directory nor a hub id")
        _check_local_model_dir("student.path", cfg.student.path)
