"""Structured configs (dataclasses) behind the Hydra groups in ``conf/``.

Hydra checks key names and types against these dataclasses when composing, so a typo such as
``budget.n_mim=5`` fails at once, naming the key. :func:`validate` then checks values and
combinations, also before any model is loaded, and names the key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from jaxalign import tasks
from jaxalign.errors import CheckpointError, ConfigError
from jaxalign.tasks.source import has_datasets
from jaxalign.teachers import FORMATS, RULE, TEACHER_KINDS

ASSETS = Path(__file__).resolve().parent / "assets"
CONF = Path(__file__).resolve().parents[1] / "conf"
MODEL_KINDS = ("flax", "exact")
EXACT_DATASET = "exact"  # not a task: each question is an ExactPolicy
DTYPES = ("float32", "bfloat16")
DECODE_ATTENTION = ("xla", "ragged")  # jaxalign.models.ragged_attention; docs/engine.md
TASK_OPTIONS = ("terms", "digits", "path", "hub", "config", "split")  # DatasetConf fields passed to get_task
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Phase 2's rows when algorithms= is not set, and top-k GKD's k (jaxalign.algorithms, which imports jax, reads both)
DEFAULT_ALGORITHMS = ("gkd", "gkd_full", "single_sample_mc", "drgrpo_mc", "minillm_mc")
TOPK_GKD_K = 20  # the student's 20 most likely tokens plus the tail bucket


@dataclasses.dataclass
class MeshConf:
    """A model's (``data``, ``model``) device mesh (:mod:`jaxalign.models.sharding`): sampled rows are
    split over ``data``; query and kv heads, the MLP hidden and the vocabulary over ``model``.

    ``data=-1`` takes all the devices that ``model`` leaves. ``{data: 1, model: 1}`` (the default) is
    one device and no mesh: the run as without this setting. A mesh takes the first data x model
    devices."""

    data: int = 1
    model: int = 1


@dataclasses.dataclass
class ModelConf:
    name: str = "toy"
    kind: str = "flax"  # flax | exact
    path: str = "toy:student"  # a local HF directory, a hub id, or toy:student / toy:teacher
    dtype: str = "float32"
    exact_seed_offset: int = 0  # exact: the question's seed is added to it
    # the student's mesh; self teachers share it, and so do context models unless context_mesh is set
    mesh: MeshConf = dataclasses.field(default_factory=MeshConf)


@dataclasses.dataclass
class TeacherConf:
    """One teacher (see :mod:`jaxalign.teachers`). Model fields take what ModelConf.path takes."""

    kind: str = "self"  # self | external | exact
    context: Optional[str] = None  # self: a format of jaxalign.teachers.FORMATS, e.g. SELF-1C
    source: Optional[str] = None  # self: the model that writes the demonstrations; null: the student
    summarizer: Optional[str] = None  # self, SUM formats: a model, or "rule" (toy_arith)
    model: Optional[str] = None  # external: the teacher model
    tilt: float = 0.0  # exact: beta of the success tilt
    noise: float = 0.0  # exact: sigma of success-independent noise
    mesh: Optional[MeshConf] = None  # external: the teacher's mesh; null: the student's (student.mesh)


@dataclasses.dataclass
class DatasetConf:
    """A task of :mod:`jaxalign.tasks` and its options. Options left null are not passed to the task,
    so each task's own defaults apply (terms/digits belong to toy_arith only)."""

    name: str = "toy_arith"  # a task name (jaxalign.tasks.task_names()) or exact
    num_questions: int = 4  # with questions_file: at most this many of the listed questions
    seed: int = 0
    system: Optional[str] = None  # the system message; null: the task's own (task.system)
    terms: Optional[int] = None  # toy_arith
    digits: Optional[int] = None  # toy_arith
    path: Optional[str] = None  # a local .jsonl / .parquet file with the hub's field names
    hub: Optional[str] = None  # a Hugging Face dataset id
    config: Optional[Any] = None  # the hub dataset's config name, or a list of them
    split: Optional[str] = None
    questions_file: Optional[str] = None  # a screening's questions.json: run exactly those questions


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
    top_k: int = 75  # with top_r and the windows: 45K-200K targeted rollouts per question (docs/cost.md)
    top_r: int = 75
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
class ScreeningConf:
    """``python -m jaxalign.screen``: pass rates per context (Appendix E.9)."""

    rollouts: int = 32  # G per question and context, sampled at temperature 1


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
    screening: ScreeningConf = dataclasses.field(default_factory=ScreeningConf)
    seed: int = 0
    demo_temperature: float = 0.7
    demo_trials: int = 60
    summary_max_tokens: int = 1024  # the longest summary a summarizer model may write
    context_cache_dir: Optional[str] = None  # demos/ and summaries/ live here; null: in the run directory
    # the mesh of the context-only models (demonstration sources, summarizers); null: the student's. Typed Any
    # (checked against MeshConf by from_omegaconf): OmegaConf cannot merge a mapping into a None dataclass
    context_mesh: Any = None
    model_root: Optional[str] = None  # hub ids name directories under it: Qwen/Qwen3-4B -> MODEL_ROOT/Qwen/Qwen3-4B
    # XLA's persistent compilation cache: a run reuses the kernels an earlier run compiled (null: off)
    compile_cache_dir: Optional[str] = "~/.cache/jaxalign/xla"
    device_memory_gb: Optional[float] = None  # the memory models may fill; null: the device's own (skipped on CPU)
    # the sampler's attention over each row's cache: xla (the furthest row's window) or ragged (each row its own
    # slots: a Pallas kernel, for bfloat16 models on GPUs; docs/engine.md)
    decode_attention: str = "xla"
    include_path_rollout: bool = False
    count_ancestors: bool = False
    # Phase 2's rows: built-in algorithms or users' functions by import path, under these conventions
    # (jaxalign.algorithms, docs/math.md), e.g. algorithms=[gkd,my_pkg.algos.kl_gated_gkd]
    algorithms: List[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_ALGORITHMS))
    conventions: List[str] = dataclasses.field(default_factory=lambda: ["renormalized", "paper"])
    topk_gkd_k: int = TOPK_GKD_K  # top-k GKD's k: the student's k likeliest tokens plus one tail bucket (docs/math.md)
    dry_run: bool = False
    # the dry run's throughputs, measured on the device by python -m jaxalign.calibrate (docs/cost.md)
    calibration_file: Optional[str] = None  # null: $JAXALIGN_CALIBRATION, else ~/.cache/jaxalign/calibration.json
    calibration_device: Optional[str] = None  # price with another device's calibration (null: this device)


def register_schema() -> None:
    """Stores RunConf as the Hydra config node ``run_schema`` (conf/config.yaml's first default)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="run_schema", node=RunConf)


def is_hub_id(path: str) -> bool:
    """'owner/name' that is not a local path ('./x/y', '/x/y', '~/x' and existing directories are local)."""
    return (bool(_HUB_ID.match(path)) and not path.startswith((".", "/", "~"))
            and not Path(path).expanduser().exists())


def resolve_model_path(path: str, model_root: Optional[str] = None) -> str:
    """Where a model setting points: the one place model names become directories.

    ``toy:NAME`` is an embedded checkpoint; with ``model_root``, a hub id ``owner/name`` is the
    directory ``model_root/owner/name`` (stand-ins, or a mirror of the hub); anything else is
    returned unchanged (a local directory, or a hub id to download).
    """
    if path.startswith("toy:"):
        target = ASSETS / "toy" / path.split(":", 1)[1]
        if not (target / "config.json").is_file():
            raise ConfigError(f"embedded model {path!r} is missing at {target}; reinstall jaxalign or retrain it "
                              "with python -m jaxalign.toy.train")
        return str(target)
    if model_root is not None and is_hub_id(path):
        return str(Path(model_root).expanduser() / path)
    return path


def _check_model(key: str, path: Optional[str], model_root: Optional[str],
                 tokens: Optional[tuple[str, int]] = None) -> None:
    """A model setting must name an embedded model, a complete local directory or a hub id; checked
    before the run directory is claimed. With model_root, a hub id's directory must exist.
    ``tokens`` = (setting, value): a token count that must fit the model's max_position_embeddings,
    read from its config.json when the directory is local (no weights are read)."""
    if not path:
        raise ConfigError(f"{key}: a model is needed here (a local directory, a hub id or toy:NAME)")
    local = resolve_model_path(path, model_root)
    if path.startswith("toy:"):
        _check_positions(key, Path(local), tokens)
        return
    directory = Path(local).expanduser()
    if local != path and not directory.is_dir():
        raise ConfigError(f"{key}: {path!r} maps to {directory} under model_root={model_root}, which does not exist; "
                          f"write stand-ins there (python -m jaxalign.toy.standins {model_root}) or copy the model")
    if not directory.is_dir():
        if not is_hub_id(path):
            raise ConfigError(f"{key}: {path!r} is neither a directory nor a hub id")
        return
    from jaxalign.models.loading import check_model_dir  # imports jax: only when a local directory is named

    try:
        check_model_dir(directory)
    except CheckpointError as err:
        raise ConfigError(f"{key}: {err}") from err
    _check_positions(key, directory, tokens)


def _check_positions(key: str, directory: Path, tokens: Optional[tuple[str, int]]) -> None:
    """Raises ConfigError when ``tokens`` cannot fit the model's context (its config.json), naming the setting."""
    if tokens is None or not (directory / "config.json").is_file():
        return
    try:
        limit = int(json.loads((directory / "config.json").read_text()).get("max_position_embeddings", 40960))
    except (ValueError, TypeError):
        return  # the loader names a broken config.json, with its own message
    setting, value = tokens
    if value >= limit:
        raise ConfigError(f"{setting}: {value} tokens cannot fit {key}'s context of max_position_embeddings={limit} "
                          f"(in {directory / 'config.json'}), which must also hold the prompt; lower {setting}")


def task_options(dataset: DatasetConf) -> dict:
    """The task options the dataset settings give (nulls left out, so the task's defaults apply)."""
    return {k: getattr(dataset, k) for k in TASK_OPTIONS if getattr(dataset, k) is not None}


def question_count(cfg: "RunConf") -> int:
    """Questions the run takes: num_questions, or fewer when a questions_file lists fewer."""
    if cfg.dataset.questions_file is None:
        return cfg.dataset.num_questions
    from jaxalign.teachers.screening import read_question_list

    return min(cfg.dataset.num_questions, len(read_question_list(cfg.dataset.questions_file).qids))


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
        nested = {"student": ModelConf, "dataset": DatasetConf, "budget": BudgetConf, "shard": ShardConf,
                  "screening": ScreeningConf}
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
    cfg.teachers = {name: _as_dataclass(f"teachers.{name}", TeacherConf, conf, "{kind: external, model: PATH}")
                    for name, conf in cfg.teachers.items()}
    if cfg.context_mesh is not None:
        cfg.context_mesh = _as_dataclass("context_mesh", MeshConf, cfg.context_mesh, "{data: 1, model: 4}")
    return cfg


def _as_dataclass(key: str, cls: type, value, example: str):
    """``value`` (a mapping typed Any in RunConf) checked and converted to ``cls``; a ConfigError names
    ``key`` when it is not a mapping or has a wrong key or type."""
    from omegaconf import OmegaConf

    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping like {example}, got {value!r}")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), value))
    except Exception as err:  # noqa: BLE001 - OmegaConf's validation errors have many types
        raise ConfigError(f"{key}: {err}".split("\n")[0]) from err


def validate(cfg: RunConf, check_models: bool = True) -> None:
    """Raises ConfigError naming the first bad key. Runs before any model is loaded.

    ``check_models=False`` skips the checks against the models' own config.json (token limits):
    the launch check validates the sweep's base config, before its groups are swept, and each
    job checks its own models again before it claims its directory.
    """
    def check(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {message}")

    check(cfg.student.kind in MODEL_KINDS, "student.kind", f"{cfg.student.kind!r} is not one of {MODEL_KINDS}")
    check(cfg.student.dtype in DTYPES, "student.dtype", f"{cfg.student.dtype!r} is not one of {DTYPES}")
    check(cfg.decode_attention in DECODE_ATTENTION, "decode_attention",
          f"{cfg.decode_attention!r} is not one of {DECODE_ATTENTION}")
    check(cfg.model_root is None or Path(cfg.model_root).expanduser().is_dir(), "model_root",
          f"{cfg.model_root} is not a directory; write stand-ins there with python -m jaxalign.toy.standins DIR")
    _validate_dataset(cfg)
    check(len(cfg.teachers) >= 1, "teachers", "no teachers configured; pick a set, e.g. teachers=toy")
    for name, t in cfg.teachers.items():
        _validate_teacher(cfg, f"teachers.{name}", t, check_models)
    b = cfg.budget
    for field in ("num_initial", "max_response_tokens", "batch_rollouts", "n_min", "n_sig", "first_window",
                  "adaptive_step", "adaptive_max"):
        check(getattr(b, field) >= 1, f"budget.{field}", "must be >= 1")
    check(b.n_sig <= b.n_min, "budget.n_sig", f"{b.n_sig} exceeds budget.n_min={b.n_min}; S_u could never fill")
    check(0 < b.tau < 1, "budget.tau", f"{b.tau} must lie in (0, 1)")
    check(b.top_k >= 0 and b.top_r >= 0, "budget.top_k", "top_k and top_r must be >= 0")
    check(b.window_growth >= 1, "budget.window_growth", "must be >= 1")
    check(0 < b.adaptive_share <= 1, "budget.adaptive_share", f"{b.adaptive_share} must lie in (0, 1]")
    from jaxalign import algorithms  # imports jax; the names are checked (and users' modules imported) here

    algorithms.check(cfg.algorithms, cfg.conventions)
    check(cfg.topk_gkd_k >= 1, "topk_gkd_k", f"{cfg.topk_gkd_k} must be >= 1 (top-k GKD's k)")
    check(cfg.demo_temperature > 0, "demo_temperature", "must be > 0")
    check(cfg.demo_trials >= 1, "demo_trials", "must be >= 1")
    check(cfg.summary_max_tokens >= 1, "summary_max_tokens", "must be >= 1")
    check(cfg.screening.rollouts >= 1, "screening.rollouts", "must be >= 1")
    check(cfg.device_memory_gb is None or cfg.device_memory_gb > 0, "device_memory_gb", "must be > 0 (or null)")
    check(cfg.shard.count >= 1, "shard.count", "must be >= 1")
    check(0 <= cfg.shard.index < cfg.shard.count, "shard.index",
          f"{cfg.shard.index} is outside 0..{cfg.shard.count - 1} (shard.count={cfg.shard.count})")
    questions = question_count(cfg)
    check(cfg.shard.count <= questions, "shard.count",
          f"{cfg.shard.count} shards for {questions} questions would leave shards empty")
    if cfg.student.kind == "flax":
        _check_model("student.path", cfg.student.path, cfg.model_root,
                     ("budget.max_response_tokens", cfg.budget.max_response_tokens) if check_models else None)
    from jaxalign.meshes import validate_meshes  # checks config.json splits; imports jax lazily

    validate_meshes(cfg, check_models)


def _validate_dataset(cfg: RunConf) -> None:
    d = cfg.dataset
    valid = (*tasks.task_names(), EXACT_DATASET)
    if d.name not in valid:
        raise ConfigError(f"dataset.name: {d.name!r} is not a task; valid: {', '.join(valid)}")
    if (cfg.student.kind == "exact") != (d.name == EXACT_DATASET):
        raise ConfigError("dataset.name: student=exact goes with dataset=exact (and only with it)")
    if d.num_questions < 1:
        raise ConfigError("dataset.num_questions: must be >= 1")
    if d.name == EXACT_DATASET:
        return
    options = task_options(d)
    if cfg.dry_run and d.path is None and not has_datasets():
        # pricing a sweep needs no data: check the option names, not access to the hub
        unknown = sorted(set(options) - set(tasks.TASKS[d.name].options))
        if unknown:
            raise ConfigError(f"dataset: {d.name} has no option {', '.join(map(repr, unknown))}")
        return
    try:
        tasks.check_options(d.name, options)
    except ConfigError as err:
        raise ConfigError(f"dataset: {err}") from err
    if d.questions_file is not None:
        from jaxalign.teachers.screening import read_question_list

        listed = read_question_list(d.questions_file)
        if listed.task != d.name:
            raise ConfigError(f"dataset.questions_file: {d.questions_file} lists {listed.task} questions, but "
                              f"dataset.name is {d.name}; pass dataset={listed.task} or another file")


def _validate_teacher(cfg: RunConf, key: str, t: TeacherConf, check_models: bool = True) -> None:
    def check(ok: bool, where: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{key}{where}: {message}")

    check(t.kind in TEACHER_KINDS, ".kind", f"{t.kind!r} is not one of {TEACHER_KINDS}")
    check((t.kind == "exact") == (cfg.student.kind == "exact"), ".kind",
          "exact teachers need student=exact, and student=exact needs exact teachers")
    if t.kind == "self":
        check(t.context in FORMATS, ".context", f"{t.context!r} is not one of {tuple(FORMATS)}")
        if FORMATS[t.context].summarized:
            check(bool(t.summarizer), ".summarizer",
                  f"{t.context} needs a summarizer: a model (e.g. Qwen/Qwen3-32B) or 'rule' on toy_arith")
            check(t.summarizer != RULE or cfg.dataset.name == "toy_arith", ".summarizer",
                  "the 'rule' summarizer reads toy_arith chains only; name a summarizer model, e.g. Qwen/Qwen3-32B")
            if t.summarizer != RULE:
                _check_model(key + ".summarizer", t.summarizer, cfg.model_root,
                         ("summary_max_tokens", cfg.summary_max_tokens) if check_models else None)
        if t.source is not None:
            _check_model(key + ".source", t.source, cfg.model_root)
    if t.kind != "self":
        extra = [k for k in ("context", "source", "summarizer") if getattr(t, k) is not None]
        check(not extra, f".{extra[0] if extra else ''}", f"only kind: self teachers take a context, source or "
              f"summarizer; this one is kind: {t.kind}")
    if t.kind == "external":
        _check_model(key + ".model", t.model, cfg.model_root,
                     ("budget.max_response_tokens", cfg.budget.max_response_tokens) if check_models else None)
