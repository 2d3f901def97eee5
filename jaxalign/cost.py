"""The dry run's cost model: what a run will cost, before it runs.

:func:`forecast` walks one question through the pipeline as it is built, with the same batching
(``batch_rollouts`` per plan batch, the sampler's chunks of at most ``max_rows`` rows, power-of-two
buckets, static caches), and lists every device call it will make:

  Phase 1  initial   G rollouts from the prompt (decode steps + one prefix prefill per sampler call)
           planner   every model's pass over the 4 paths: prefill + projection of every position
           targeted  per depth window, (top_k + top_r) pairs x N_min rollouts from prefix + token
                     (adaptive: the measured adaptive/fixed ratio of docs/benchmarks.md)
  Phase 2  scoring   every model's pass over the 4 paths (the student's shared by all teachers)
           MiniLLM   every model's batched pass over the counted initial rollouts (teacher reward-to-go)
  pre-pass contexts  each demonstration source's samples (every trial of demo_trials: an upper
                     bound) and each summarizer's summaries (at summary_max_tokens), for a group
                     of questions per call, as the pre-pass batches them

Each call is priced by the device calibration (:mod:`jaxalign.calibrate`), never a typed
throughput: ``seconds = overhead + roofline / efficiency`` with the kernel's measured efficiency.
The same calls priced with another device's roofline give the projections (A100, H100): the
engine is assumed to reach the same fraction of the roofline there as in the probes, overheads
included.
Jit compilation is priced too (each distinct shape once per job), and so are the models' memory
(weights from config.json, the decode KV cache at the run's lengths) and the GPUs a job needs.

The trace lengths come from the paper where it gives them (:data:`TRACES`) and are stated in
the output. Not priced: host work (grading, tree updates, checkpoints), data loading, and a
mesh's communication (device-hours on a mesh are one device's, as if it scaled ideally).
docs/cost.md explains the model and its checks.

``python -m jaxalign.cost DIR ...`` adds up the ``forecast.json`` files of a sweep's dry runs and
prints the total as its last line: ``{"gpu_days": ..., "device": ..., "rollouts_per_question": ...}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
from pathlib import Path
from typing import Iterable, Optional, Sequence

from jaxalign import calibrate as cal
from jaxalign.calibrate import Shape
from jaxalign.engine.sampling import padded_prompts
from jaxalign.engine.scoring import DEFAULT_PREFILL_CHUNK, DEFAULT_SCORE_CHUNK as SCORE_CHUNK_POSITIONS, scored_rows_layout
from jaxalign.enrich import depth_windows
from jaxalign.errors import ConfigError, JaxalignError, run_cli
from jaxalign.pipeline.models import STANDIN_MARKER, WEIGHT_SHARE
from jaxalign.pipeline.question import PipelineConfig
from jaxalign.teachers.summarizers import SUMMARY_PROMPT

CONF = Path(__file__).resolve().parents[1] / "conf"
FORECAST_FILE = "forecast.json"
PATHS = PipelineConfig().paths_correct + PipelineConfig().paths_incorrect  # 2 correct + 2 incorrect
PROJECT_ONTO = ("A100", "H100")

# The adaptive budget's rollouts relative to the fixed N_min budget at the same alignment error:
# 0.49 at mean error 0.05 (bench/enrich_budget.py, docs/benchmarks.md "Enrichment budget", measured
# on ExactPolicy with 8 questions; fixed N_min = 100 has error 0.050 there).
ADAPTIVE_RATIO = 0.49

# Prompt and mean response tokens of each task for the paper's students in thinking mode, and
# where the figure comes from. The longest response of a sampler batch (it sets the decode steps)
# is taken as LONGEST_OVER_MEAN x the mean, capped by max_response_tokens.
TRACES = {
    "boolq": (250, 200, "paper Section 2.5: traces of ~200 tokens on BoolQ; prompt: passage + question"),
    "mmlu": (150, 1000, "assumed: the paper calls MMLU chains medium-length (BoolQ ~200, AIME 5K-30K)"),
    "aime2025": (150, 15000, "paper Section 4.4: AIME traces of 5K-30K tokens"),
    "toy_arith": (36, 51, "the toy chat prompt and reference chain at terms=3, digits=2 (+ EOS), in tokens"),
}
LONGEST_OVER_MEAN = 3.0
# The summarizer's instructions around the question and the response, in tokens: the template's
# characters at about 4 per token (English text in Qwen3's BPE).
SUMMARY_PROMPT_TOKENS = len(SUMMARY_PROMPT.format(question="", response="")) // 4

# config.json fields of the Qwen3 checkpoints on the hub, used only when no config.json is on disk
# (no model_root, nothing in the Hugging Face cache): a dry run prices the paper's grid anywhere.
PUBLISHED = {  # hidden, intermediate, layers, heads, tied
    "Qwen/Qwen3-0.6B": (1024, 3072, 28, 16, True),
    "Qwen/Qwen3-1.7B": (2048, 6144, 28, 16, True),
    "Qwen/Qwen3-4B": (2560, 9728, 36, 32, True),
    "Qwen/Qwen3-8B": (4096, 12288, 36, 32, False),
    "Qwen/Qwen3-14B": (5120, 17408, 40, 40, False),
    "Qwen/Qwen3-32B": (5120, 25600, 64, 64, False),
}


# ----------------------------------------------------------------------------- the run's models
@dataclasses.dataclass(frozen=True)
class ModelUse:
    """A model a run computes with: its id, shape (at the run's dtype) and where the shape came from."""

    id: str
    shape: Shape
    source: str
    standin: bool = False


@dataclasses.dataclass(frozen=True)
class TeacherUse:
    """A teacher: its model, and the demonstrations its prompt carries (a self teacher's context)."""

    name: str
    model: ModelUse
    demonstrations: int


@dataclasses.dataclass(frozen=True)
class ContextUse:
    """A model's work in the context pre-pass (:mod:`jaxalign.teachers.prepass`): ``group``
    questions at a time: ``demo_rounds`` rounds of ``demo_batch`` demonstrations of each question
    (one engine ``sample`` per round), and ``summaries`` summaries of each, at most
    ``summaries_per_call`` in a call (their prompts each hold a demonstration); completions queue
    on ``rows`` decode rows (split over the ``data`` axis of the model's ``mesh``). Upper
    bounds: every trial of ``demo_trials`` is counted, though the pre-pass stops once it has the
    demonstrations the teachers need."""

    model: ModelUse
    demo_rounds: int = 0
    demo_batch: int = 0
    summaries: int = 0
    group: int = 1
    rows: int = 32
    summaries_per_call: int = 1
    mesh: tuple[int, int] = (1, 1)


@dataclasses.dataclass(frozen=True)
class RunModels:
    student: ModelUse
    teachers: tuple[TeacherUse, ...]
    context: tuple[ContextUse, ...] = ()  # the pre-pass's models, the student included where it writes demos

    def externals(self) -> list[ModelUse]:
        """The teachers' own models (self teachers use the student's), each once."""
        seen, out = {self.student.id}, []
        for t in self.teachers:
            if t.model.id not in seen:
                seen.add(t.model.id)
                out.append(t.model)
        return out

    def distinct(self) -> list[ModelUse]:
        return [self.student, *self.externals()]

    def needs(self) -> dict[Shape, set[str]]:
        """{shape: kernels to calibrate}: the student samples and is scored, teachers are scored,
        context models sample."""
        out: dict[Shape, set[str]] = {self.student.shape: set(cal.STUDENT_KINDS)}
        for m in self.externals():
            out.setdefault(m.shape, set()).update(cal.TEACHER_KINDS)
        for c in self.context:
            out.setdefault(c.model.shape, set()).update(cal.SAMPLER_KINDS)
        return out


def compose(overrides: Sequence[str]):
    """The RunConf of ``python -m jaxalign.run OVERRIDES dry_run=true``, validated as a dry run is
    (the dataset's options are checked, its rows are not needed)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from jaxalign import config as C

    C.register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = C.from_omegaconf(hydra_compose(config_name="config", overrides=[*overrides, "dry_run=true"]))
    C.validate(cfg)
    return cfg


def model_shape(model_id: str, dtype: str, model_root: Optional[str] = None) -> ModelUse:
    """A model's shape from its config.json: a local directory (or model_root/ID), the Hugging Face
    cache, or, for a Qwen3 hub id with neither, the published config (:data:`PUBLISHED`)."""
    from jaxalign import config as C
    from jaxalign.models.config import load_config

    local = Path(C.resolve_model_path(model_id, model_root)).expanduser()
    if (local / "config.json").is_file():
        return ModelUse(model_id, Shape.of(load_config(local), dtype), f"{local}/config.json",
                        (local / STANDIN_MARKER).is_file())
    if C.is_hub_id(model_id):
        cached = _hub_cached_config(model_id)
        if cached is not None:
            return ModelUse(model_id, Shape.of(load_config(cached.parent), dtype), str(cached))
        if model_id in PUBLISHED:
            d, f, layers, heads, tied = PUBLISHED[model_id]
            shape = Shape(151936, d, f, layers, heads, 8, 128, tied, dtype)
            return ModelUse(model_id, shape, "published config.json (not on disk)")
    raise ConfigError(f"{model_id}: no config.json to price it by (looked in {local} and the Hugging Face cache); "
                      f"download it (huggingface-cli download {model_id} config.json) or set model_root")


def _hub_cached_config(model_id: str) -> Optional[Path]:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(model_id, "config.json")
    return Path(found) if isinstance(found, str) else None


def run_models(cfg) -> RunModels:
    """The student and the teachers of a validated flax RunConf, with shapes from config.json."""
    from jaxalign.teachers import FORMATS

    dtype = cfg.student.dtype
    student = model_shape(cfg.student.path, dtype, cfg.model_root)
    teachers = []
    for name, t in cfg.teachers.items():
        if t.kind == "external":
            teachers.append(TeacherUse(name, model_shape(t.model, dtype, cfg.model_root), 0))
        else:  # self: the student's weights; its prompt carries the context's demonstrations
            fmt = FORMATS[t.context]
            teachers.append(TeacherUse(name, student, fmt.correct + fmt.wrong))
    return RunModels(student, tuple(teachers), context_uses(cfg, student, teachers))


def context_uses(cfg, student: ModelUse, teachers: Sequence[TeacherUse]) -> tuple[ContextUse, ...]:
    """The pre-pass's work per model, from what the self teachers need
    (:func:`jaxalign.teachers.context_needs`): ceil(demo_trials / batch) rounds per demonstration
    source, one summary of a correct demonstration (and one of a wrong one where a teacher shows it)
    per (source, summarizer model) and question; a job's questions grouped ``questions_per_call``
    at a time."""
    from jaxalign import config as C
    from jaxalign.pipeline.models import mesh_setting
    from jaxalign.teachers import RULE, context_needs
    from jaxalign.teachers.prepass import ContextSettings

    needs = context_needs(cfg.teachers, cfg.student.path)
    known = {student.id: student, **{t.model.id: t.model for t in teachers}}
    settings = ContextSettings()
    group = max(1, min(settings.questions_per_call, -(-C.question_count(cfg) // cfg.shard.count)))
    work: dict[str, dict] = {}
    for source in needs.demos:
        work.setdefault(source, {"rounds": 0, "summaries": 0})["rounds"] = -(-cfg.demo_trials // settings.batch)
    for (_, summarizer), wrong in needs.summaries.items():
        if summarizer != RULE:
            work.setdefault(summarizer, {"rounds": 0, "summaries": 0})["summaries"] += 1 + int(wrong)
    lengths = trace_lengths(cfg)
    per_call = summaries_per_call(lengths.prompt + lengths.response + SUMMARY_PROMPT_TOKENS, settings.max_prefix_slots)
    out = []
    for model_id, w in sorted(work.items()):
        mesh = mesh_setting(cfg, model_id)[1]
        out.append(ContextUse(known.get(model_id) or model_shape(model_id, cfg.student.dtype, cfg.model_root),
                              w["rounds"], min(settings.batch, cfg.demo_trials), w["summaries"], group,
                              settings.max_rows, per_call,
                              (max(mesh.data, 1), mesh.model)))
    return tuple(out)


# ----------------------------------------------------------------------------- trace lengths
@dataclasses.dataclass(frozen=True)
class Lengths:
    """Tokens of the prompt, of a mean response, and of the longest response of a sampler batch."""

    prompt: int
    response: int
    longest: int
    source: str


def trace_lengths(cfg, response_tokens: Optional[int] = None) -> Lengths:
    """The run's assumed lengths: :data:`TRACES` for its task, capped by max_response_tokens.

    ``response_tokens`` overrides the mean response. A task not listed is assumed to fill half of
    max_response_tokens (and said so).
    """
    cap = cfg.budget.max_response_tokens
    prompt, mean, source = TRACES.get(cfg.dataset.name, (200, cap // 2, "not known for this task: half of "
                                                          "budget.max_response_tokens assumed"))
    if response_tokens is not None:
        mean, source = int(response_tokens), "given"
    mean = max(1, min(mean, cap))
    return Lengths(prompt, mean, max(mean, min(cap, int(LONGEST_OVER_MEAN * mean))), source)


# ----------------------------------------------------------------------------- the calls of one question
@dataclasses.dataclass(frozen=True)
class Work:
    """``count`` identical device calls (decode: steps) of one kernel for one model.

    kind: decode (size = rows, slots, prefixes, prefix_slots), sample_call, prefill (tokens, slots, chunk),
    project (positions,). ``overhead=False`` prices the roofline part only (a prefill inside a
    sampler call, whose fixed cost is the call's).
    """

    phase: str
    kind: str
    model: ModelUse
    count: float
    size: tuple = ()
    overhead: bool = True

    def roofline_work(self, s: Shape) -> tuple[float, float]:
        """(FLOPs, bytes) of one call for ``s``: the model's shape, or the dtype it was probed in."""
        if self.kind == "decode":
            return cal.decode_step_work(s, *self.size)
        if self.kind == "prefill":
            return cal.prefill_work(s, *self.size)
        if self.kind == "project":
            return cal.project_work(s, *self.size)
        return 0.0, 0.0

    def seconds(self, calibration: cal.Calibration, device: Optional[cal.Device] = None) -> float:
        """Seconds of all ``count`` calls on the calibrated device (its fitted kernel model), or with
        ``device``, projected onto that device's roofline at the calibration's roofline fraction
        (a sampler call's fixed cost is then left out: its work is in its steps and prefill)."""
        s = self.model.shape
        kernel = calibration.kernel(s, "decode" if self.kind == "sample_call" else self.kind)
        if device is not None:
            if self.kind == "sample_call":
                return 0.0
            return self.count * kernel.projected_seconds(device.roofline(self.roofline_work(s), s.dtype))
        if self.kind == "sample_call":
            return self.count * kernel.call_s
        probed = calibration.probed(s)
        roof = calibration.device.roofline(self.roofline_work(probed), probed.dtype)
        layers = 0 if self.kind == "project" else s.layers
        each = kernel.seconds(roof, layers) if self.overhead else roof / kernel.efficiency
        return self.count * each


@dataclasses.dataclass(frozen=True)
class SamplerCall:
    """One ``_sample_forked`` call: its compiled shape, its decode rows, and the decode steps it runs."""

    prefixes: int
    per_prefix: int  # completions per prefix C, bucketed (the compiled shape)
    prefix_slots: int
    new_slots: int
    steps: int
    valid: int = 0  # completions that carry a rollout (the rest of the P x C grid is padding)
    mean_steps: float = 0.0  # the mean length of those rollouts
    rows_per_prefix: int = 0  # decode rows per prefix (0: one per completion, C)
    read_slots: float = 0.0  # the mean attention window over the rows' own caches, per step (0: new_slots)

    @property
    def rows(self) -> int:
        """Decode rows: what every step computes."""
        return self.prefixes * (self.rows_per_prefix or self.per_prefix)


def sampler_max_rows() -> int:
    """The pipeline's sampler batch limit: FlaxPolicy's max_rows default."""
    from jaxalign.engine.policy import FlaxPolicy

    return int(inspect.signature(FlaxPolicy).parameters["max_rows"].default)


def mean_window(slots: int, steps: float, longest: int) -> float:
    """The mean attention window (:func:`jaxalign.models.qwen3.attention_windows`) that a decode call
    of ``steps`` steps reads from its rows' own ``slots``-slot caches.

    Step s reads the narrowest window holding the furthest row's s-th slot. All rows start together,
    so for the first ``longest`` steps that is s; past them a queued call always has some row deep
    in a completion, and the window stays at the one holding ``longest`` slots.
    """
    from jaxalign.models.qwen3 import attention_windows

    windows = sorted(attention_windows(slots))
    reach = min(steps, longest)
    total, low = 0.0, 0
    for width in windows:
        high = min(width, reach)
        if high > low:
            total += (high - low) * width
            low = high
    total += max(0.0, steps - longest) * min(w for w in windows if w >= min(longest, slots))
    return total / max(steps, 1)


def sampler_calls(counts: Sequence[int], prefix_tokens: int, limit: int, longest: int, max_rows: int,
                  mean: Optional[float] = None, min_rows: int = 1, max_new_bound: int = 0) -> list[SamplerCall]:
    """The calls of one ``sample(prefixes, counts, max_new_tokens=limit)``, split and laid out as the
    engine does (:func:`jaxalign.engine.sampling._chunks`, :func:`~jaxalign.engine.sampling.queue_layout`).

    A call's busiest row runs ``rounds`` = ceil(completions / rows) of its prefix's completions back to
    back: ``(rounds - 1) x mean + longest`` steps (one row per completion: the longest, capped at the
    limit). Rollouts are ``mean`` tokens long on average. ``min_rows``: the student mesh's ``data``
    size, which the engine rounds rows per prefix up to. ``max_new_bound``: the policy's
    (:class:`~jaxalign.engine.policy.FlaxPolicy`; the response limit for the student's rollouts).
    """
    from jaxalign.engine.sampling import QUEUE_FACTOR, _chunks, new_slots, prefix_slots, queue_layout

    out = []
    longest = max(1, min(limit, longest))
    mean = min(float(longest), mean if mean is not None else float(longest))
    for chunk in _chunks(list(counts), max_rows, QUEUE_FACTOR * max_rows, min_rows):
        prefixes, columns, rows = queue_layout(chunk, max_rows, min_rows)
        rounds = -(-max(c for _, _, c in chunk) // rows)
        steps = int(math.ceil((rounds - 1) * mean + longest))
        slots = new_slots(limit, max_new_bound)
        out.append(SamplerCall(prefixes, columns, prefix_slots(prefix_tokens), slots, steps,
                               sum(c for _, _, c in chunk), mean, rows, mean_window(slots, steps, longest)))
    return out


def _plan_batches(counts: Sequence[int], batch_rollouts: int) -> list[list[int]]:
    """Pairs packed into batches of at most batch_rollouts rollouts, whole pairs (QuestionRun._run_plan)."""
    batches, current, total = [], [], 0
    for c in counts:
        if current and total + c > batch_rollouts:
            batches.append(current)
            current, total = [], 0
        current.append(c)
        total += c
    return batches + ([current] if current else [])


def _sampling_work(phase: str, student: ModelUse, calls: Iterable[SamplerCall], decode_attention: str,
                   share: float = 1.0) -> list[Work]:
    """Each call's fixed cost, its prefixes' prefill and its decode steps, times ``share`` (a
    question's part of calls that serve several). ``decode_attention``:

    xla     every decode row steps until its call ends, reading the attention window of the call's
            furthest row (:func:`mean_window`) from its own cache
    ragged  each row reads only its own completion's slots, rounded up to the kernel's blocks: half
            a mean rollout plus half a block on average (:mod:`jaxalign.models.ragged_attention`)
    """
    from jaxalign.models.ragged_attention import BLOCK_K

    work = []
    for c in calls:
        read = c.read_slots or c.new_slots
        if decode_attention == "ragged":
            read = min(read, max(1.0, c.mean_steps / 2) + BLOCK_K / 2)
        work.append(Work(phase, "sample_call", student, share))
        work.append(Work(phase, "prefill", student, share, (c.prefixes * c.prefix_slots, c.prefix_slots,
                                                            c.prefix_slots), overhead=False))
        work.append(Work(phase, "decode", student, share * c.steps, (c.rows, read, c.prefixes, c.prefix_slots)))
    return work


def _forward_work(phase: str, model: ModelUse, tokens: int, positions: int, count: float,
                  prefill_chunk: int) -> list[Work]:
    """``count`` scoring passes: a chunked prefill of ``tokens`` and the projection of ``positions``."""
    chunk, slots = cal.prefill_layout(tokens, prefill_chunk)
    chunks = -(-positions // SCORE_CHUNK_POSITIONS)
    return [Work(phase, "prefill", model, count, (tokens, slots, chunk)),
            Work(phase, "project", model, count * chunks, (SCORE_CHUNK_POSITIONS,))]


@dataclasses.dataclass(frozen=True)
class QuestionPlan:
    """One question's rollouts, generated tokens, sampler calls and device work."""

    windows: int
    initial_rollouts: int
    targeted_rollouts: float
    tokens: float
    calls: tuple[SamplerCall, ...]
    work: tuple[Work, ...]
    minillm_rollouts: int = 0  # rollouts each model scores for MiniLLM's reward-to-go (0: not computed)
    context_calls: tuple[tuple[str, SamplerCall], ...] = ()  # the pre-pass's sampler calls: (model id, call)


def minillm_rollouts(cfg) -> int:
    """The stored rollouts each model scores for MiniLLM (``minillm_mc`` among the run's algorithms
    and some teacher): the counted initial ones (:mod:`jaxalign.pipeline.minillm`); else 0."""
    if "minillm_mc" not in cfg.algorithms or not cfg.teachers:
        return 0
    return cfg.budget.num_initial - (0 if cfg.include_path_rollout else PATHS)


def _rows_scoring_work(phase: str, model: ModelUse, prompt: int, response: int, longest: int,
                       rollouts: int) -> list[Work]:
    """:func:`jaxalign.engine.scoring.token_logprobs` over ``rollouts`` rollouts of ``response`` tokens on
    average: per call of :func:`~jaxalign.engine.scoring.scored_rows_layout`'s rows, the prompt's prefill
    once, the rows' batched prefill, and the projection of every row position."""
    rows, chunk, slots = scored_rows_layout(rollouts, longest)
    calls = -(-rollouts // rows)
    prompt_chunk, prompt_slots = cal.prefill_layout(prompt, DEFAULT_PREFILL_CHUNK)
    steps = -(-response // chunk)
    return [Work(phase, "prefill", model, calls, (prompt_slots, prompt_slots, prompt_chunk)),
            Work(phase, "prefill", model, calls, (rows * response, slots + prompt_slots, rows * chunk, rows),
                 overhead=False),
            Work(phase, "project", model, calls * steps, (rows * chunk,))]


def _shape_counts(compiled: Sequence[tuple[str, ModelUse, int]]) -> dict[str, int]:
    """{"KERNEL MODEL": distinct compiled shapes} (:func:`compile_work` names each kernel of a model once)."""
    return {f"{kind} {model.id}": n for kind, model, n in compiled}


def summaries_per_call(prompt_tokens: int, max_prefix_slots: int) -> int:
    """The most summary prompts of ``prompt_tokens`` tokens that one call takes, as
    :func:`jaxalign.teachers.summarizers.prompt_groups` groups them: their slots, padded count
    (:func:`jaxalign.engine.sampling.padded_prompts`) included, within ``max_prefix_slots``."""
    from jaxalign.engine.sampling import prefix_slots

    fit = max(1, max_prefix_slots // prefix_slots(prompt_tokens))
    return max(n for n in range(1, fit + 1) if padded_prompts(n) <= fit)


def _decode_attention(cfg, kv_heads: int, model_axis: Optional[int] = None) -> str:
    """The sampler's attention as the job runs it: ragged unless the model axis of the sampling
    model's mesh (default: the student's) does not divide its ``kv_heads`` (then the kernel cannot
    run per device and the window path runs)."""
    model_axis = cfg.student.mesh.model if model_axis is None else model_axis
    return "ragged" if cfg.decode_attention == "ragged" and kv_heads % model_axis == 0 else "xla"


def question_plan(cfg, models: RunModels, lengths: Lengths, max_rows: Optional[int] = None,
                  decode_attention: Optional[str] = None, data: Optional[int] = None) -> QuestionPlan:
    """The device work of one (not skipped) question under ``cfg``'s budget, with the sampler's
    ``decode_attention`` (default: the run's; see :func:`_sampling_work`). ``data``: the student
    mesh's resolved data axis (a job knows it); by default ``student.mesh.data``, with data=-1 (all
    the devices a job gets) priced as 1."""
    from jaxalign.config import DECODE_ATTENTION

    decode_attention_given = decode_attention
    decode_attention = decode_attention or _decode_attention(cfg, models.student.shape.kv_heads)
    if decode_attention not in DECODE_ATTENTION:
        raise ConfigError(f"decode_attention={decode_attention!r}: choose one of {DECODE_ATTENTION}")
    b, student = cfg.budget, models.student
    max_rows = max_rows or sampler_max_rows()
    cap, m, longest, prompt = b.max_response_tokens, lengths.response, lengths.longest, lengths.prompt
    data = max(cfg.student.mesh.data, 1) if data is None else data
    work: list[Work] = []
    calls: list[SamplerCall] = []

    # Phase 1, initial rollouts: batches of batch_rollouts from the prompt alone
    tokens = float(b.num_initial * m)
    for first in range(0, b.num_initial, b.batch_rollouts):
        calls += sampler_calls([min(b.batch_rollouts, b.num_initial - first)], prompt, cap, longest, max_rows, m,
                               data, cap)

    # Phase 1, the planner's pass: every model over the 4 paths (a self teacher with its context)
    scored = [(student, prompt)] + [(t.model, prompt + t.demonstrations * m) for t in models.teachers]
    for model, model_prompt in scored:
        work += _forward_work("phase1", model, model_prompt + m, m, PATHS, DEFAULT_PREFILL_CHUNK)

    # Phase 1, targeted rollouts: (top_k + top_r) pairs per window, N_min each (adaptive: the ratio)
    windows = depth_windows(m, b.first_window, b.window_growth)
    pairs = b.top_k + b.top_r
    per_pair = ADAPTIVE_RATIO * b.n_min if b.adaptive else float(b.n_min)
    step = min(b.adaptive_step, b.n_min) if b.adaptive else b.n_min
    targeted = 0.0
    for lo, hi in windows:
        depth = (lo + min(hi, m)) // 2  # the pairs' mean depth: a token in the middle of the window
        rounds = pairs * per_pair / step  # pair-rounds of `step` rollouts each
        counts = [step] * int(math.ceil(rounds))
        for batch in _plan_batches(counts, b.batch_rollouts):
            calls += sampler_calls(batch, prompt + depth + 1, max(1, cap - depth - 1), max(1, longest - depth - 1),
                                   max_rows, max(1, m - depth - 1), data, cap)
        targeted += pairs * per_pair
        tokens += pairs * per_pair * max(1, m - depth - 1)
    work += _sampling_work("phase1", student, calls, decode_attention)

    # Phase 2: every model over the 4 paths; MiniLLM: every model over each counted initial rollout
    for model, model_prompt in scored:
        work += _forward_work("phase2", model, model_prompt + m, m, PATHS, DEFAULT_PREFILL_CHUNK)
    counted = minillm_rollouts(cfg) if models.teachers else 0
    if counted:
        for model, model_prompt in scored:
            work += _rows_scoring_work("phase2", model, model_prompt, m, longest, counted)

    # the context pre-pass, a group of questions per call: demonstrations at the task's lengths, then
    # summaries of one at summary_max_tokens; each question pays its share of the group's calls
    context_calls = []
    for c in models.context:
        summary_limit = cfg.summary_max_tokens
        data = c.mesh[0]  # FlaxPolicy.sample_prompts pads a call's prompts (padded_prompts)
        mine = [call for _ in range(c.demo_rounds)
                for call in sampler_calls([c.demo_batch] * padded_prompts(c.group), prompt, cap, longest, c.rows, m,
                                          data)]
        summaries = c.summaries * c.group
        for first in range(0, summaries, c.summaries_per_call):
            count = padded_prompts(min(c.summaries_per_call, summaries - first))
            mine += sampler_calls([1] * count, prompt + m + SUMMARY_PROMPT_TOKENS, summary_limit, summary_limit,
                                  c.rows, summary_limit, data)
        attention = decode_attention_given or _decode_attention(cfg, c.model.shape.kv_heads, c.mesh[1])
        work += _sampling_work("prepass", c.model, mine, attention, share=1 / c.group)
        context_calls += [(c.model.id, call) for call in mine]
    return QuestionPlan(len(windows), b.num_initial, targeted, tokens, tuple(calls), tuple(work), counted,
                        tuple(context_calls))


# ----------------------------------------------------------------------------- compilation and memory
def compile_work(plan: QuestionPlan, models: RunModels, lengths: Lengths) -> list[tuple[str, ModelUse, int]]:
    """(kernel, model, distinct shapes) compiled by one job: sampler shapes of the plan, and the
    prefill/projection sizes of every scored length between a quarter response and the longest."""
    def shape(c: SamplerCall) -> tuple:
        return c.prefixes, c.per_prefix, c.rows_per_prefix, c.prefix_slots, c.new_slots

    # a call's keys are data (one per prefix), so the pre-pass and the main phase share executables
    samplers = {models.student.id: (models.student, {shape(c) for c in plan.calls})}
    by_id = {c.model.id: c.model for c in models.context}
    for model_id, call in plan.context_calls:
        samplers.setdefault(model_id, (by_id[model_id], set()))[1].add(shape(call))
    out = [("decode", model, len(shapes)) for model, shapes in samplers.values()]
    prompts: dict[str, tuple[ModelUse, set]] = {}
    for model, extra in [(models.student, 0)] + [(t.model, t.demonstrations) for t in models.teachers]:
        prompts.setdefault(model.id, (model, set()))[1].add(lengths.prompt + extra * lengths.response)
    for model, model_prompts in prompts.values():
        sizes = {cal.prefill_layout(p + n, DEFAULT_PREFILL_CHUNK)
                 for p in model_prompts for n in range(max(1, lengths.response // 4), lengths.longest + 1)}
        out += [("prefill", model, len(sizes)), ("project", model, len({slots for _, slots in sizes}))]
    return out


def _split(n: int, ways: int) -> int:
    """``n`` items over ``ways`` devices: the most one device holds."""
    return -(-n // ways)


def kv_split(s: Shape, model: int) -> int:
    """Ways the kv heads are split on a ``model``-way tensor-parallel mesh: ``model`` when it
    divides them, else 1 (replicated; :func:`jaxalign.models.sharding.rules_for`)."""
    return model if s.kv_heads % model == 0 else 1


def weight_bytes_per_device(s: Shape, model: int = 1) -> int:
    """Bytes of one device's share of the weights on a ``model``-way mesh, laid out as
    :func:`jaxalign.models.sharding.param_axes` places them: query heads N, the MLP hidden F and the
    vocabulary V split; kv heads K as :func:`kv_split`; norms (D, H) and the output bias replicated.
    ``model=1`` gives ``s.weight_bytes``."""
    d, n, k, h, f = s.hidden, s.heads, s.kv_heads, s.head_dim, s.intermediate
    kv = kv_split(s, model)
    layer = (_split(d * n * h, model) + 2 * _split(d * k * h, kv) + _split(n * h * d, model)
             + 3 * _split(d * f, model) + 2 * d + 2 * h)
    if s.bias:
        layer += _split(n * h, model) + 2 * _split(k * h, kv) + d
    embed = _split(s.vocab * d, model) * (1 if s.tied else 2)
    return (s.layers * layer + embed + d) * s.itemsize


def kv_slot_bytes_per_device(s: Shape, model: int = 1) -> int:
    """KV-cache bytes of one token slot of one row on one device (all layers, keys and values)."""
    return s.layers * 2 * _split(s.kv_heads, kv_split(s, model)) * s.head_dim * s.itemsize


def sampler_cache_bytes(s: Shape, rows: int, new_slots: int, prefixes: int, prefix_slots: int,
                        data: int = 1, model: int = 1, completions: int = 0) -> int:
    """One device's bytes of a forked sampler call (:func:`jaxalign.engine.sampling._sample_forked`):
    the rows' own caches [rows, K, new_slots, H] (rows over ``data``), each prefix's shared cache
    [prefixes, K, prefix_slots, H] (replicated over ``data``), both per layer for keys and values,
    kv heads as :func:`kv_split`; three float32 [rows, V] arrays of logits, noise and draws
    (rows over ``data``, V over ``model``); and the int32 tokens [completions, new_slots] of the
    queued completions (over ``data``)."""
    slot = kv_slot_bytes_per_device(s, model)
    own = _split(rows, data)
    tokens = _split(completions, data) * new_slots * 4
    return (own * new_slots + prefixes * prefix_slots) * slot + 3 * own * _split(s.vocab, model) * 4 + tokens


def rows_scoring_bytes(s: Shape, rollouts: int, prompt: int, longest: int, model: int = 1) -> tuple[int, str]:
    """One device's bytes of a MiniLLM scoring call (:func:`jaxalign.engine.scoring.token_logprobs`) and
    its size in words: the rows' caches [rows, K, slots, H], the prompt's once, and four float32
    [rows x positions, V] arrays of a step (V over ``model``); not split over ``data``."""
    rows, chunk, slots = scored_rows_layout(rollouts, longest)
    _, prompt_slots = cal.prefill_layout(prompt, DEFAULT_PREFILL_CHUNK)
    nbytes = (rows * slots + prompt_slots) * kv_slot_bytes_per_device(s, model) + 4 * rows * chunk * _split(s.vocab, model) * 4
    return nbytes, f"{rows} rows x {slots} slots + a {prompt_slots}-slot prompt"


def scoring_cache_bytes(s: Shape, tokens: int, model: int = 1) -> int:
    """One device's bytes of a scored path of ``tokens`` tokens (:func:`jaxalign.engine.scoring.path_hidden`,
    one row, not split over ``data``): its KV cache and hidden states [slots, D] at the chunked
    prefill's slots, and four float32 [positions, V] arrays of a projection chunk (V over ``model``)."""
    _, slots = cal.prefill_layout(tokens, DEFAULT_PREFILL_CHUNK)
    return (slots * (kv_slot_bytes_per_device(s, model) + s.hidden * s.itemsize)
            + 4 * SCORE_CHUNK_POSITIONS * _split(s.vocab, model) * 4)


@dataclasses.dataclass(frozen=True)
class ModelMemory:
    """One model's bytes on one device of its (data, model) mesh: its weights, its largest KV cache
    (``cache``: 'sampler' or 'scoring', of ``cache_size``: rows x slots, or tokens) and the whole weights."""

    id: str
    weights: int
    weights_per_device: int
    cache_bytes: int
    cache: str
    cache_size: str
    mesh: tuple[int, int]


def widest_call(plan: QuestionPlan, s: Shape, data: int = 1, model: int = 1) -> SamplerCall:
    """The plan's sampler call whose caches take the most bytes on one device (:func:`sampler_cache_bytes`)."""
    return max(plan.calls, key=lambda c: call_bytes(s, c, data, model))


def call_bytes(s: Shape, call: SamplerCall, data: int = 1, model: int = 1) -> int:
    """:func:`sampler_cache_bytes` of one planned sampler call."""
    return sampler_cache_bytes(s, call.rows, call.new_slots, call.prefixes, call.prefix_slots, data, model,
                               call.prefixes * call.per_prefix)


def model_memory(plan: QuestionPlan, models: RunModels, lengths: Lengths,
                 meshes: Optional[dict] = None) -> list[ModelMemory]:
    """Per distinct model (student first): weights and its largest KV cache on one device. The student
    samples (:func:`sampler_cache_bytes` of the plan's widest call) and is scored; every model scores
    its longest path (:func:`scoring_cache_bytes`: its longest prompt, a self teacher's with its
    demonstrations, plus the longest response) and, for MiniLLM, batches of the stored rollouts
    (:func:`rows_scoring_bytes`). ``meshes``: model id -> (data, model), default (1, 1)."""
    out = []
    for model in models.distinct():
        s = model.shape
        data, tp = (meshes or {}).get(model.id, (1, 1))
        longest_prompt = max([lengths.prompt] + [lengths.prompt + t.demonstrations * lengths.response
                                                 for t in models.teachers if t.model.id == model.id])
        tokens = longest_prompt + lengths.longest
        cache, kind, size = scoring_cache_bytes(s, tokens, tp), "scoring", f"{tokens} tokens"
        if plan.minillm_rollouts:
            rows, rows_size = rows_scoring_bytes(s, plan.minillm_rollouts, longest_prompt, lengths.longest, tp)
            if rows > cache:
                cache, kind, size = rows, "MiniLLM scoring", rows_size
        if model is models.student:
            widest = widest_call(plan, s, data, tp)
            decode = call_bytes(s, widest, data, tp)
            if decode > cache:
                cache, kind = decode, "sampler"
                size = (f"{widest.rows} rows x {widest.new_slots} slots + {widest.prefixes} prefixes x "
                        f"{widest.prefix_slots} slots, {widest.prefixes * widest.per_prefix} completions")
        out.append(ModelMemory(model.id, s.weight_bytes, weight_bytes_per_device(s, tp), cache, kind, size,
                               (data, tp)))
    return out


def memory(plan: QuestionPlan, models: RunModels, lengths: Lengths, device_bytes: Optional[float],
           meshes: Optional[dict] = None) -> dict:
    """Bytes per model (weights + its largest KV cache at the run's lengths), the job's peak, GPUs per job.

    Without ``meshes`` (model id -> (data, model)) every model is on one device, and GPUs per job is
    the peak over the usable memory of one device, rounded up. With them, weights and caches are
    counted per device as the sharding places them, and the peak is that of the first device, which
    every mesh includes: all the weights' shares plus the largest cache. GPUs per job is then the
    largest mesh, when that peak fits a device (``fits``), else None. The context pre-pass is a
    second peak (``prepass``, :func:`prepass_memory`); both must fit."""
    parts = model_memory(plan, models, lengths, meshes)
    rows = [{"id": m.id, "weights_gb": m.weights / 1e9, "weights_per_device_gb": m.weights_per_device / 1e9,
             "kv_cache_gb": m.cache_bytes / 1e9, "kv_cache": m.cache, "kv_cache_size": m.cache_size,
             "mesh": {"data": m.mesh[0], "model": m.mesh[1]}, "shape": u.shape.key, "source": u.source}
            for m, u in zip(parts, models.distinct())]
    peak = (sum(m.weights_per_device for m in parts) + max(m.cache_bytes for m in parts)) / 1e9
    student = (meshes or {}).get(models.student.id, (1, 1))
    widest = widest_call(plan, models.student.shape, *student)
    out = {"models": rows, "peak_gb": peak,
           "decode_cache": {"rows": widest.rows, "new_slots": widest.new_slots, "prefixes": widest.prefixes,
                            "prefix_slots": widest.prefix_slots, "completions": widest.prefixes * widest.per_prefix}}
    prepass = prepass_memory(plan, models, meshes)
    if prepass is not None:
        out["prepass"] = prepass
    highest = max(peak, prepass["peak_gb"] if prepass else 0.0)
    out["device_gb"] = None if device_bytes is None else device_bytes / 1e9
    usable = None if device_bytes is None else WEIGHT_SHARE * device_bytes
    spans = {data * model for data, model in (meshes or {}).values()}
    if max(spans, default=1) > 1:  # the meshes fix the job's devices: do they hold the per-device peaks?
        out["mesh_devices"] = max(spans)
        out["fits"] = None if usable is None else highest * 1e9 <= usable
        out["gpus_per_job"] = max(spans) if out["fits"] else None
    else:
        out["gpus_per_job"] = None if usable is None else max(1, math.ceil(highest * 1e9 / usable))
    return out


def prepass_memory(plan: QuestionPlan, models: RunModels, meshes: Optional[dict] = None) -> Optional[dict]:
    """The context pre-pass's peak on one device, as the job checks it (:mod:`jaxalign.pipeline.models`):
    the student's share of the weights, the largest share of another model that writes
    demonstrations or summaries (they are loaded one at a time), and the largest KV cache of a
    pre-pass call (:func:`call_bytes` of ``plan.context_calls`` on the writing model's mesh). None
    when the pre-pass has no work."""
    if not models.context:
        return None
    student_mesh = (meshes or {}).get(models.student.id, (1, 1))
    others = [c for c in models.context if c.model.id != models.student.id]
    placed = {models.student.id: (models.student.shape, student_mesh),
              **{c.model.id: (c.model.shape, c.mesh) for c in others}}
    largest = max(others, key=lambda c: weight_bytes_per_device(c.model.shape, c.mesh[1]), default=None)
    weights = weight_bytes_per_device(models.student.shape, student_mesh[1]) + (
        0 if largest is None else weight_bytes_per_device(largest.model.shape, largest.mesh[1]))
    caches = [(call_bytes(placed[model_id][0], call, *placed[model_id][1]), model_id, call)
              for model_id, call in plan.context_calls if model_id in placed]
    cache, model_id, call = max(caches, key=lambda c: c[0])
    return {"peak_gb": (weights + cache) / 1e9, "weights_per_device_gb": weights / 1e9, "kv_cache_gb": cache / 1e9,
            "kv_cache": f"{model_id}: {call.rows} rows x {call.new_slots} slots + {call.prefixes} prefixes x "
                        f"{call.prefix_slots} slots", "context_model": None if largest is None else largest.model.id}


# ----------------------------------------------------------------------------- the forecast
def run_meshes(cfg) -> Optional[dict[str, tuple[int, int]]]:
    """Model id -> (data, model) of the run's meshes (``student.mesh``, ``teachers.NAME.mesh``), or
    None when every model is on one device. ``data=-1`` (all the devices a job gets) counts as 1: the
    per-device cache is then the whole batch's, an upper bound."""
    from jaxalign.config import MeshConf
    from jaxalign.meshes import model_meshes

    meshes = model_meshes(cfg)
    if all(mesh == MeshConf() for _, mesh in meshes.values()):
        return None
    return {model: (max(mesh.data, 1), mesh.model) for model, (_, mesh) in meshes.items()}


def _context_devices(cfg, gpus: Optional[int]) -> Optional[int]:
    """GPUs per job, raised to the widest ``context_mesh`` of the context pre-pass."""
    from jaxalign.meshes import context_meshes

    spans = [mesh.data * mesh.model for _, mesh in context_meshes(cfg).values() if mesh.data != -1]
    return gpus if gpus is None or not spans else max(gpus, *spans)


def forecast(cfg, calibration: cal.Calibration, *, models: Optional[RunModels] = None,
             response_tokens: Optional[int] = None, decode_attention: Optional[str] = None) -> dict:
    """Rollouts, tokens, Phase 1 / Phase 2 / compile GPU-hours, memory and GPUs per job of a validated
    RunConf, priced by ``calibration`` (its device), with A100 and H100 projections.

    ``response_tokens`` replaces the task's assumed mean response; ``decode_attention`` the run's
    setting of that name (a what-if, said in the output as ``decode_attention``; :func:`_sampling_work`)."""
    from jaxalign import config as C

    b = cfg.budget
    questions = C.question_count(cfg)
    base = {"questions": questions, "teachers": len(cfg.teachers), "shards": cfg.shard.count,
            "budget": {"name": b.name, "adaptive": b.adaptive,
                       **({"adaptive_ratio": ADAPTIVE_RATIO} if b.adaptive else {})}}
    if cfg.student.kind == "exact":
        windows = len(depth_windows(b.max_response_tokens, b.first_window, b.window_growth))
        per_question = b.num_initial + windows * (b.top_k + b.top_r) * b.n_min
        return {**base, "device": None, "windows": windows, "rollouts_per_question": per_question,
                "rollouts": questions * per_question, "tokens": None, "gpu_hours": 0.0, "gpu_days": 0.0,
                "note": "ExactPolicy computes on the host: rollouts counted, no device time priced"}
    models = models or run_models(cfg)
    lengths = trace_lengths(cfg, response_tokens)
    decode_attention = decode_attention or _decode_attention(cfg, models.student.shape.kv_heads)
    plan = question_plan(cfg, models, lengths, decode_attention=decode_attention)
    compiled = compile_work(plan, models, lengths)
    meshes = run_meshes(cfg)
    # A context_mesh wider than the main phase's meshes is held by the job from start to end: the
    # devices it adds sit idle through Phase 1 and 2, and a cluster bills them.
    main_span = max((data * model for data, model in (meshes or {}).values()), default=1)
    held = _context_devices(cfg, main_span) / main_span

    def hours(device: Optional[cal.Device]) -> dict:
        phase = {"prepass": 0.0, "phase1": 0.0, "phase2": 0.0}
        for w in plan.work:
            phase[w.phase] += held * w.seconds(calibration, device)
        compile_s = held * sum(n * calibration.kernel(m.shape, kind).compile_seconds(
            0 if kind == "project" else m.shape.layers) for kind, m, n in compiled)
        out = {f"{name}_gpu_hours": questions * seconds / 3600 for name, seconds in phase.items()}
        out["compile_gpu_hours"] = cfg.shard.count * compile_s / 3600
        out["gpu_hours"] = sum(out.values())
        out["gpu_days"] = out["gpu_hours"] / 24
        out["per_question_s"] = dict(phase)
        return out

    device = calibration.device
    own_memory = cfg.device_memory_gb * 1e9 if cfg.device_memory_gb else device.memory
    projections = {}
    for name in PROJECT_ONTO:
        target = cal.SPECS[name]
        gpus = memory(plan, models, lengths, target.memory, meshes)["gpus_per_job"]
        projections[name] = {**hours(target), "device": target.kind, "gpus_per_job": _context_devices(cfg, gpus)}
    own = memory(plan, models, lengths, own_memory, meshes)
    own["gpus_per_job"] = _context_devices(cfg, own["gpus_per_job"])
    per_question = plan.initial_rollouts + plan.targeted_rollouts
    return {
        **base, "device": device.kind, "peaks": device.peaks, "calibration": str(calibration.path),
        "calibrated_now": list(calibration.measured_now),
        "student": models.student.id, "models": [m.id for m in models.distinct()],
        "standins": [m.id for m in models.distinct() if m.standin],
        "trace_tokens": dataclasses.asdict(lengths), "decode_attention": decode_attention, "windows": plan.windows,
        "rollouts_per_question": per_question, "targeted_rollouts_per_question": plan.targeted_rollouts,
        "tokens_per_question": plan.tokens, "rollouts": questions * per_question, "tokens": questions * plan.tokens,
        **hours(None),
        "compiled_shapes": _shape_counts(compiled),
        "prepass": {"models": {c.model.id: {"demonstrations": c.demo_rounds * c.demo_batch, "summaries": c.summaries,
                                            "questions_per_call": c.group} for c in models.context},
                    "note": "per question, upper bounds: every trial of demo_trials and summaries at "
                            "summary_max_tokens, as if no context cache had them (runs that share "
                            "context_cache_dir pay them once)"},
        "memory": own,
        "projections": projections,
        "not_priced": "host work (grading, tree, checkpoints) and a mesh's communication: a mesh's device-hours are "
                      "one device's, as at ideal scaling",
        **({"idle_held_devices": f"x{held:g}: context_mesh holds more devices than the main phase uses, idle "
                                 "through Phase 1 and 2 and priced"} if held > 1 else {}),
    }


def dry_run(cfg, calibration_file: Optional[str] = None, device: Optional[str] = None,
            response_tokens: Optional[int] = None) -> dict:
    """The dry run of a validated RunConf: its models' shapes, their calibration on this device (measured
    now, once, where the file lacks it), and :func:`forecast`."""
    if cfg.student.kind == "exact":
        return forecast(cfg, None)
    models = run_models(cfg)
    calibration = cal.ensure(models.needs(), cal.calibration_path(calibration_file), device)
    return forecast(cfg, calibration, models=models, response_tokens=response_tokens)


# ----------------------------------------------------------------------------- a sweep's total
def read_forecasts(paths: Iterable[Path]) -> list[tuple[Path, dict]]:
    """Every forecast.json under the given directories (or the given files), sorted by path."""
    found = []
    for p in map(Path, paths):
        files = [p] if p.is_file() else sorted(p.rglob(FORECAST_FILE))
        found += [(f, json.loads(f.read_text())) for f in files]
    return found


def total(forecasts: Sequence[tuple[Path, dict]]) -> dict:
    """The sweep's GPU-days (and the A100 projection), rollouts per question, and its device."""
    if not forecasts:
        raise JaxalignError("no forecast.json found; run the sweep's dry run first (launch/sweep.sh --dry-run ...)")
    devices = sorted({f["device"] for _, f in forecasts if f.get("device")})
    if len(devices) > 1:
        raise JaxalignError(f"the forecasts were priced on different devices ({', '.join(devices)}); "
                            "calibrate once on one device and rerun the dry run with it")
    questions = sum(f["questions"] for _, f in forecasts)
    per_question = [f["rollouts_per_question"] for _, f in forecasts]
    out = {"gpu_days": sum(f["gpu_days"] for _, f in forecasts), "device": devices[0] if devices else None,
           "rollouts_per_question": sum(f["rollouts"] for _, f in forecasts) / max(questions, 1),
           "rollouts_per_question_range": [min(per_question), max(per_question)], "runs": len(forecasts),
           "questions": questions}
    for name in PROJECT_ONTO:
        out[f"{name.lower()}_days"] = sum(f.get("projections", {}).get(name, {}).get("gpu_days", 0.0)
                                          for _, f in forecasts)
    return out


def main(argv: Optional[Sequence[str]] = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m jaxalign.cost",
                                 description="Adds up a sweep's dry-run forecasts (forecast.json files).")
    ap.add_argument("dirs", nargs="+", help="sweep directories (searched for forecast.json) or forecast files")
    args = ap.parse_args(argv)
    forecasts = read_forecasts(args.dirs)
    summary = total(forecasts)
    for path, f in forecasts:
        a100 = f.get("projections", {}).get("A100", {}).get("gpu_days", 0.0)
        print(f"{str(path.parent.name):<60} {f['questions']:>5} q  {f['rollouts_per_question']:>9,.0f} rollouts/q  "
              f"{f['gpu_days']:>9.2f} {f.get('device')}-days  {a100:>8.2f} A100-days (projected)")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    run_cli(main, "cost")
