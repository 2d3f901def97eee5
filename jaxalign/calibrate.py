"""Device calibration for the dry run: ``python -m jaxalign.calibrate [--file F] [--force] [OVERRIDE ...]``.

The dry run (:mod:`jaxalign.cost`) prices a run with throughputs measured here, never with a
typed constant. For each model shape a run uses (read from its config.json), and for the device
this process runs on, a few jit calls of the engine's own kernels are timed on random weights
of that shape:

  decode   ``_sample_forked``, the jit decode loop: seconds per step at a few (rows, slots) points,
           timed at steps whose attention window is all ``slots`` slots
  prefill  ``path_hidden``, the chunked prefill of a scored path: seconds per call at a few lengths
  project  ``_project`` + ``compare``, one chunk of positions onto the vocabulary and its reduction
           (:func:`probe_plan` gives the sizes, :func:`probe_depths` the layers)

Each kernel is reduced to a :class:`KernelModel`: ``seconds = overhead + layers x layer_overhead +
roofline / efficiency``, where ``roofline`` is the kernel's ideal time on the device
(:func:`Device.roofline`: FLOPs over peak FLOP/s or bytes over peak bandwidth, whichever is larger)
and ``efficiency`` is the fraction of it the engine reaches, fitted by non-negative least squares
over the probes. The first call of each probe is timed too: minus the steady call, that is its
jit compile time.

On the CPU the probes run at 1 and 2 layers, not at the model's depth (a 28-layer Qwen3-0.6B decode
probe would take minutes there), and everything is scaled linearly to the real depth: the roofline
is linear in the layers by construction and ``layer_overhead`` / the compile time per layer come
from the difference between the two depths. On a GPU the probes run at full depth.

The CPU backend of XLA has no bf16 x bf16 -> f32 dot, so there a bfloat16 model is probed (and
priced) in float32 (:func:`probe_dtype`).

Peaks: an A100, H100 or H200 uses its data-sheet figures (:data:`SPECS`); any other device (the
CPU) has its peaks measured here by a matmul and a streaming kernel. The same roofline projects a
calibration onto another device (:func:`jaxalign.cost.forecast` reports the A100 and H100): the
engine is assumed to reach the probes' fraction of the roofline there
(:attr:`KernelModel.roofline_fraction`).

Results are cached per (device kind, shape) in a JSON file: ``--file``, else ``$JAXALIGN_CALIBRATION``,
else ``~/.cache/jaxalign/calibration.json``. A shape already there is not measured again
(``--force`` does).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from jaxalign.errors import ConfigError, JaxalignError, run_cli
from jaxalign.files import write_json

log = logging.getLogger("jaxalign.calibrate")

ENV = "JAXALIGN_CALIBRATION"
VERSION = 1
KINDS = ("decode", "prefill", "project")
STUDENT_KINDS = frozenset(KINDS)  # the student samples (decode) and is scored
TEACHER_KINDS = frozenset({"prefill", "project"})  # a teacher is only scored
SAMPLER_KINDS = frozenset({"decode", "prefill"})  # a context model only samples (decode, and its prompt's prefill)
CPU_PROBE_LAYERS = (1, 2)
PROBE_PREFIX = 16  # prompt tokens of the decode probe
DECODE_STEPS = 4  # timed decode steps per probe (after one untimed step)
REPEATS = 2  # best of


# ----------------------------------------------------------------------------- shapes
@dataclasses.dataclass(frozen=True)
class Shape:
    """The cost-relevant fields of a Qwen3 config.json, and the dtype the run loads it in."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    dtype: str  # float32 | bfloat16
    bias: bool = False

    @classmethod
    def of(cls, cfg, dtype: str) -> "Shape":
        """From a :class:`jaxalign.models.config.Qwen3Config` and a dtype name."""
        return cls(cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.num_heads,
                   cfg.num_kv_heads, cfg.head_dim, cfg.tie_word_embeddings, dtype, cfg.attention_bias)

    @property
    def key(self) -> str:
        """The cache key, e.g. ``qwen3-L28-D1024-F3072-N16-K8-H128-V151936-tied-bfloat16``."""
        return (f"qwen3-L{self.layers}-D{self.hidden}-F{self.intermediate}-N{self.heads}-K{self.kv_heads}"
                f"-H{self.head_dim}-V{self.vocab}-{'tied' if self.tied else 'untied'}"
                f"{'-bias' if self.bias else ''}-{self.dtype}")

    @property
    def itemsize(self) -> int:
        return 4 if self.dtype == "float32" else 2

    @property
    def layer_matmul_params(self) -> int:
        """Weights of one decoder layer that multiply activations: q, k, v, o, gate, up, down."""
        d, n, k, h, f = self.hidden, self.heads, self.kv_heads, self.head_dim, self.intermediate
        return d * (n * h + 2 * k * h) + n * h * d + 3 * d * f

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer: the matmul weights, the four norms and any biases."""
        d, n, k, h = self.hidden, self.heads, self.kv_heads, self.head_dim
        bias = n * h + 2 * k * h + d if self.bias else 0
        return self.layer_matmul_params + 2 * d + 2 * h + bias

    @property
    def params(self) -> int:
        """All parameters: layers, embedding, final norm and (untied) LM head."""
        return self.layers * self.layer_params + self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def weight_bytes(self) -> int:
        return self.params * self.itemsize

    @property
    def kv_bytes_per_slot(self) -> int:
        """KV-cache bytes of one token slot of one row, all layers (keys and values)."""
        return self.layers * 2 * self.kv_heads * self.head_dim * self.itemsize

    def with_layers(self, layers: int) -> "Shape":
        return dataclasses.replace(self, layers=layers)

    def config(self):
        """A Qwen3Config of this shape (rope and norm constants do not change the cost)."""
        from jaxalign.models.config import Qwen3Config

        return Qwen3Config(vocab_size=self.vocab, hidden_size=self.hidden, intermediate_size=self.intermediate,
                           num_layers=self.layers, num_heads=self.heads, num_kv_heads=self.kv_heads,
                           head_dim=self.head_dim, rope_theta=1e6, rms_norm_eps=1e-6,
                           tie_word_embeddings=self.tied, attention_bias=self.bias, max_position_embeddings=1 << 20)


# ----------------------------------------------------------------------------- work of one kernel call
def _attention_flops(shape: Shape, queries: float, slots: float) -> float:
    """Scores and weighted values: 2 matmuls of 2 FLOPs per (query, slot, head, head_dim), all layers."""
    return 4.0 * queries * slots * shape.heads * shape.head_dim * shape.layers


def decode_step_work(shape: Shape, rows: int, slots: int, prefixes: int = 0,
                     prefix_slots: int = 0) -> tuple[float, float]:
    """(FLOPs, bytes) of one decode step: ``rows`` rows, each with its own cache of ``slots`` slots,
    forked from ``prefixes`` shared prefixes of ``prefix_slots`` slots (the engine's forked layout).

    Every layer's weights and the LM head are read once; every row's whole own cache is read
    (masked slots included: the engine's cache is static, not paged); each shared prefix is read
    once per step and attended by all its rows; the [rows, V] float32 logits are written and read
    back for the Gumbel draw.
    """
    matmul = shape.layers * shape.layer_matmul_params + shape.vocab * shape.hidden
    read = shape.layers * shape.layer_params + shape.vocab * shape.hidden + shape.hidden  # + the final norm
    flops = 2.0 * rows * matmul + _attention_flops(shape, rows, slots + prefix_slots)
    cache = (rows * slots + prefixes * prefix_slots) * shape.kv_bytes_per_slot
    data = read * shape.itemsize + cache + 2 * rows * shape.vocab * 4
    return flops, float(data)


def prefill_work(shape: Shape, tokens: int, slots: int, chunk: int, rows: int = 1) -> tuple[float, float]:
    """(FLOPs, bytes) of a chunked prefill of ``tokens`` tokens into ``rows`` caches of ``slots`` slots.

    ceil(tokens / chunk) steps each read the layers' weights and attend ``chunk`` queries (all rows
    together) to the whole cache (the engine's :func:`jaxalign.engine.scoring._prefill_hidden`; with
    ``rows`` > 1, :func:`~jaxalign.engine.scoring.token_logprobs`' batched rows).
    """
    steps = -(-tokens // chunk)
    flops = (2.0 * steps * chunk * shape.layers * shape.layer_matmul_params
             + _attention_flops(shape, steps * chunk, slots))
    data = steps * (shape.layers * shape.layer_params * shape.itemsize + rows * slots * shape.kv_bytes_per_slot)
    return flops, float(data)


def project_work(shape: Shape, positions: int) -> tuple[float, float]:
    """(FLOPs, bytes) of projecting ``positions`` hidden states onto the vocabulary, the float32
    log-softmax and one reduction over it (about four [positions, V] float32 passes)."""
    flops = 2.0 * positions * shape.hidden * shape.vocab + 10.0 * positions * shape.vocab
    data = shape.vocab * shape.hidden * shape.itemsize + 4 * positions * shape.vocab * 4
    return flops, float(data)


# ----------------------------------------------------------------------------- devices
@dataclasses.dataclass(frozen=True)
class Device:
    """A device's peaks: ``flops`` per dtype name (FLOP/s) and ``bandwidth`` (bytes/s) of its memory.
    ``peaks`` says where they come from: 'spec' (data sheet) or 'measured' (by :func:`measure_peaks`)."""

    kind: str
    platform: str
    flops: Mapping[str, float]
    bandwidth: float
    memory: Optional[int] = None  # bytes; None: unknown (the CPU)
    peaks: str = "spec"

    def roofline(self, work: tuple[float, float], dtype: str) -> float:
        """Seconds of (FLOPs, bytes) at peak: the larger of compute and memory time."""
        flops, data = work
        return max(flops / self.flops[dtype], data / self.bandwidth)

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"flops": dict(self.flops)}

    @classmethod
    def from_json(cls, raw: dict) -> "Device":
        return cls(**raw)


# Data-sheet peaks (dense, no sparsity). fp32 without TF32: the engine runs fp32 matmuls at HIGHEST.
SPECS = {
    "A100": Device("A100 80GB (data sheet)", "gpu", {"bfloat16": 312e12, "float32": 19.5e12}, 2.0e12, 80 * 10**9),
    "H100": Device("H100 SXM (data sheet)", "gpu", {"bfloat16": 989e12, "float32": 67e12}, 3.35e12, 80 * 10**9),
    "H200": Device("H200 (data sheet)", "gpu", {"bfloat16": 989e12, "float32": 67e12}, 4.8e12, 141 * 10**9),
}


def spec_for(kind: str) -> Optional[Device]:
    """The data sheet of a device kind string such as 'NVIDIA H100 80GB HBM3' (PCIe parts excluded)."""
    if "PCIe" in kind or "PCIE" in kind:
        return None
    for name, spec in SPECS.items():
        if name in kind:
            return spec
    return None


def device_kind() -> str:
    import jax

    return jax.devices()[0].device_kind


def measure_peaks(dtypes: Iterable[str]) -> tuple[dict[str, float], float]:
    """This device's matmul FLOP/s per dtype and streaming bandwidth (bytes/s), best of a few calls."""
    import jax
    import jax.numpy as jnp

    gpu = jax.default_backend() != "cpu"
    n = 8192 if gpu else 1024
    flops = {}
    for name in sorted(set(dtypes)):
        a = jnp.ones((n, n), jnp.dtype(name))
        matmul = jax.jit(lambda x, y: x @ y)
        flops[name] = 2.0 * n**3 / best_time(lambda: matmul(a, a).block_until_ready())
    x = jnp.ones((1 << (28 if gpu else 25),), jnp.float32)
    stream = jax.jit(jnp.sum)  # reads every byte once and allocates nothing
    bandwidth = x.nbytes / best_time(lambda: stream(x).block_until_ready())
    return flops, bandwidth


def current_device(dtypes: Iterable[str]) -> Device:
    """The device this process computes on, with its peaks (data sheet, or measured now)."""
    import jax

    kind, platform = device_kind(), jax.default_backend()
    stats = jax.devices()[0].memory_stats() or {}
    memory = int(stats["bytes_limit"]) if "bytes_limit" in stats else None
    spec = spec_for(kind)
    if spec is not None:
        return dataclasses.replace(spec, kind=kind, platform=platform, memory=memory or spec.memory)
    flops, bandwidth = measure_peaks(dtypes)
    return Device(kind, platform, flops, bandwidth, memory, "measured")


# ----------------------------------------------------------------------------- fitted kernel models
@dataclasses.dataclass(frozen=True)
class KernelModel:
    """Seconds of one call (prefill, project) or one step (decode) on the calibrated device.

    seconds = overhead_s + layers x layer_overhead_s + roofline_s / efficiency;
    compile = compile_s + layers x compile_layer_s (once per distinct shape, per process).
    ``call_s`` (decode only): the fixed cost of one sampler call (host work, the first draw).
    ``roofline_fraction``: the probes' total roofline time over their total measured time, overheads
    included. Projections onto another device use it alone (:meth:`projected_seconds`): an overhead
    fitted on one device is not known to be host time, and on a CPU it is mostly not.
    """

    overhead_s: float
    layer_overhead_s: float
    efficiency: float
    compile_s: float
    compile_layer_s: float
    call_s: float = 0.0
    roofline_fraction: float = 1.0

    def seconds(self, roofline_s: float, layers: int) -> float:
        return self.overhead_s + layers * self.layer_overhead_s + roofline_s / self.efficiency

    def projected_seconds(self, roofline_s: float) -> float:
        """Seconds on another device whose roofline time for the same call is ``roofline_s``."""
        return roofline_s / self.roofline_fraction

    def compile_seconds(self, layers: int) -> float:
        return self.compile_s + layers * self.compile_layer_s

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def fit_kernel(points: Sequence[Mapping[str, float]]) -> tuple[float, float, float]:
    """(overhead_s, layer_overhead_s, efficiency) from probes {layers, roofline_s, seconds}.

    Non-negative least squares of seconds on [1, layers, roofline_s]; the layers column only
    when the probes span two depths. Probes too noisy to show any roofline dependence fall back to
    efficiency = roofline / (seconds - overhead) of the largest probe. Efficiency is capped at 1: a
    kernel faster than the roofline means the measured peaks are low, not that it beats them.
    """
    from scipy.optimize import nnls

    layers = np.array([p["layers"] for p in points], np.float64)
    roof = np.array([p["roofline_s"] for p in points], np.float64)
    seconds = np.array([p["seconds"] for p in points], np.float64)
    columns = [np.ones_like(roof)] + ([layers] if len(set(layers.tolist())) > 1 else []) + [roof]
    # scale columns to comparable magnitudes so that NNLS is well conditioned
    matrix = np.stack(columns, 1)
    scale = np.maximum(np.abs(matrix).max(0), 1e-30)
    coef, _ = nnls(matrix / scale, seconds)
    coef = coef / scale
    overhead = float(coef[0])
    layer_overhead = float(coef[1]) if len(columns) == 3 else 0.0
    inverse_efficiency = float(coef[-1])
    if inverse_efficiency <= 0:
        top = int(np.argmax(roof))
        rest = seconds[top] - overhead - layer_overhead * layers[top]
        inverse_efficiency = max(rest, 1e-12) / roof[top]
    return overhead, layer_overhead, min(1.0, 1.0 / inverse_efficiency)


def fit_compile(points: Sequence[Mapping[str, float]]) -> tuple[float, float]:
    """(compile_s, compile_layer_s): compile seconds linear in the layers, from {layers, compile_s}.

    One depth: all of it is compile_s. Two or more: a least-squares line, slope clamped >= 0.
    """
    layers = np.array([p["layers"] for p in points], np.float64)
    seconds = np.array([max(p["compile_s"], 0.0) for p in points], np.float64)
    if len(set(layers.tolist())) < 2:
        return float(seconds.mean()), 0.0
    slope, intercept = np.polyfit(layers, seconds, 1)
    slope = max(float(slope), 0.0)
    return float(max(np.mean(seconds - slope * layers), 0.0)), slope


# ----------------------------------------------------------------------------- probes
def best_time(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Best wall time of ``repeats`` calls of fn() (which must block until its result is ready)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _first_and_best(fn: Callable[[], object]) -> tuple[float, float]:
    """(first call seconds, best steady call seconds): their difference is the compile time.
    The jit caches are cleared first, so that a shape met before (another model's probe) compiles again."""
    import jax

    jax.clear_caches()
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    return first, best_time(fn)


def probe_params(shape: Shape, with_layers: bool = True):
    """Constant-filled params of ``shape`` (timings do not depend on the values, and filling is
    far faster than drawing random numbers at V = 151,936). Without layers: the embedding only,
    which is also the (tied) head: an untied head costs the same to apply."""
    import jax
    import jax.numpy as jnp

    from jaxalign.models.init import init_params

    cfg = shape.config() if with_layers else dataclasses.replace(shape.config(), num_layers=0,
                                                                   tie_word_embeddings=True)
    structure = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0), jnp.dtype(shape.dtype)))
    return jax.tree.map(lambda s: jnp.full(s.shape, 0.01, s.dtype), structure), cfg


def prefill_layout(length: int, prefill_chunk: int) -> tuple[int, int]:
    """(chunk, slots) that :func:`jaxalign.engine.scoring.path_hidden` uses for a ``length``-token sequence."""
    from jaxalign.engine.sampling import bucket
    from jaxalign.engine.scoring import coarse_bucket

    chunk = min(prefill_chunk, bucket(length, 16))
    return chunk, chunk * coarse_bucket(-(-length // chunk))


def probe_decode(shape: Shape, rows: int, slots: int) -> dict:
    """One decode probe at ``shape`` (its layers as given): seconds per step, per call, compile."""
    import jax
    import jax.numpy as jnp

    from jaxalign.engine.sampling import _sample_forked
    from jaxalign.models.qwen3 import attention_windows

    params, cfg = probe_params(shape)
    prefix = jnp.ones((1, PROBE_PREFIX), jnp.int32)
    # an id never drawn: rows run to the limit
    statics = dict(max_new=slots, eos_ids=(shape.vocab,), greedy=False, key_impl="threefry2x32")
    ids, valid = jnp.arange(rows, dtype=jnp.int32)[None], jnp.ones((1, rows), bool)

    def call(limit: int):
        return lambda: jax.block_until_ready(_sample_forked(
            params, cfg, prefix, jnp.zeros(1, jnp.int32), ids, valid, jnp.zeros((1, 2), jnp.uint32), jnp.float32(1.0),
            jnp.int32(limit), **statics))

    # The decode loop reads only the cache's filled power-of-two window (models.qwen3.attention_windows),
    # so the timed steps are the ones whose window is the whole ``slots``-slot cache: the first few when
    # the cache has a single window, else every step past half of it.
    short = 1 if attention_windows(slots) == (slots,) else slots // 2 + 1
    long = short + DECODE_STEPS if short == 1 else slots
    first, one = _first_and_best(call(1))
    early = one if short == 1 else best_time(call(short))
    step = max(best_time(call(long)) - early, 0.0) / (long - short)
    # a call of limit 1 runs one step (the first token is drawn inside the loop): the rest is the call's cost
    return {"kind": "decode", "layers": shape.layers, "rows": rows, "slots": slots, "seconds": step,
            "call_s": max(one - step, 0.0), "compile_s": first - one,
            "roofline_work": decode_step_work(shape, rows, slots, 1, PROBE_PREFIX)}


def probe_prefill(shape: Shape, tokens: int, prefill_chunk: int) -> dict:
    """One prefill probe: a ``tokens``-long path through :func:`path_hidden`, seconds per call."""
    import jax

    from jaxalign.engine.scoring import path_hidden

    # a prefill never applies the head and only gathers embedding rows: a small tied vocabulary
    # keeps the probe's memory to its layers (a 14B model's untied float32 head alone is 3 GB)
    params, cfg = probe_params(dataclasses.replace(shape, vocab=min(shape.vocab, 4096), tied=True))
    prompt, response = np.ones(8, np.int32), np.ones(tokens - 8, np.int32)
    first, best = _first_and_best(
        lambda: jax.block_until_ready(path_hidden(params, cfg, prompt, response, prefill_chunk)[0]))
    chunk, slots = prefill_layout(tokens, prefill_chunk)
    return {"kind": "prefill", "layers": shape.layers, "tokens": tokens, "slots": slots, "chunk": chunk,
            "seconds": best, "compile_s": first - best, "roofline_work": prefill_work(shape, tokens, slots, chunk)}


def probe_project(shape: Shape, positions: int) -> dict:
    """One projection probe: ``positions`` hidden states onto the vocabulary, compared, to the host."""
    import jax.numpy as jnp

    from jaxalign.engine.scoring import _project, compare

    params, _ = probe_params(shape, with_layers=False)
    hidden = jnp.full((128, shape.hidden), 0.01, jnp.dtype(shape.dtype))
    index = jnp.arange(positions, dtype=jnp.int32)
    ids = jnp.zeros((positions, 8), jnp.int32)

    def call():
        logp = _project(params, hidden, index)
        out = compare(logp, logp, ids)
        return {k: np.asarray(v) for k, v in out.items()}

    first, best = _first_and_best(call)
    return {"kind": "project", "layers": 0, "positions": positions, "seconds": best, "compile_s": first - best,
            "roofline_work": project_work(shape, positions)}


@dataclasses.dataclass(frozen=True)
class ProbePlan:
    """Probe sizes for one platform: decode (rows, slots) points, prefill lengths, projection chunks."""

    decode: tuple[tuple[int, int], ...]
    prefill: tuple[int, ...]
    project: tuple[int, ...]


def probe_plan(shape: Shape, platform: str, memory: Optional[int]) -> ProbePlan:
    """CPU: small sizes (a probe is seconds; each fit has at most three unknowns); GPU: the sizes a
    run uses, with the decode cache kept within a quarter of the device memory."""
    from jaxalign.engine.scoring import DEFAULT_SCORE_CHUNK

    if platform == "cpu":
        return ProbePlan(((4, 32), (16, 128)), (64, 256), (16, DEFAULT_SCORE_CHUNK))
    rows, slots = 256, 2048
    budget = (memory or 16 * 10**9) / 4
    while rows > 16 and rows * slots * shape.kv_bytes_per_slot > budget:
        rows //= 2
    return ProbePlan(((rows // 4, 512), (rows, 512), (rows, slots)), (256, 1024, 4096), (16, DEFAULT_SCORE_CHUNK))


def probe_depths(shape: Shape, platform: str) -> tuple[int, ...]:
    """The depths probed: the model's own on a GPU or when it is at most 2 layers deep; else 1 and 2
    layers on the CPU (scaled linearly to the model's depth)."""
    if platform != "cpu" or shape.layers <= max(CPU_PROBE_LAYERS):
        return (shape.layers,)
    return CPU_PROBE_LAYERS


def probe_dtype(dtype: str, platform: str) -> str:
    """The dtype probes run in: the run's, except on the CPU, whose XLA backend has no bf16 x bf16 ->
    f32 dot (the LM head's); there bfloat16 shapes are probed, and priced, in float32."""
    return "float32" if platform == "cpu" else dtype


def calibrate_shape(shape: Shape, kinds: Iterable[str], device: Device,
                    prefill_chunk: Optional[int] = None) -> dict:
    """Measures ``kinds`` (of :data:`KINDS`) for ``shape`` on this device; returns its cache record."""
    from jaxalign.engine.scoring import DEFAULT_PREFILL_CHUNK

    prefill_chunk = prefill_chunk or DEFAULT_PREFILL_CHUNK
    kinds = [k for k in KINDS if k in set(kinds)]
    shape = dataclasses.replace(shape, dtype=probe_dtype(shape.dtype, device.platform))
    plan = probe_plan(shape, device.platform, device.memory)
    depths = probe_depths(shape, device.platform)
    probes: list[dict] = []
    start = time.perf_counter()
    for kind in kinds:
        if kind == "project":
            probes += [probe_project(shape, c) for c in plan.project]
            continue
        for i, depth in enumerate(depths):
            sub = shape.with_layers(depth)
            if kind == "decode":
                # the first point at every depth (it separates the per-layer cost), the others at the deepest
                points = plan.decode if i == len(depths) - 1 else plan.decode[:1]
                probes += [probe_decode(sub, rows, slots) for rows, slots in points]
            else:
                lengths = plan.prefill if i == len(depths) - 1 else plan.prefill[:1]
                probes += [probe_prefill(sub, n, prefill_chunk) for n in lengths]
    for p in probes:
        p["roofline_s"] = device.roofline(p.pop("roofline_work"), shape.dtype)
    models = {kind: kernel_model([p for p in probes if p["kind"] == kind]).to_json() for kind in kinds}
    return {"shape": dataclasses.asdict(shape), "probe_dtype": shape.dtype, "probe_layers": list(depths),
            "kernels": models, "probes": probes,
            "seconds": round(time.perf_counter() - start, 1),
            "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "jax": _jax_version()}


def kernel_model(probes: Sequence[dict]) -> KernelModel:
    """A :class:`KernelModel` fitted to one kernel's probes."""
    overhead, per_layer, efficiency = fit_kernel(probes)
    compile_s, compile_layer_s = fit_compile(probes)
    calls = [p["call_s"] for p in probes if "call_s" in p]
    fraction = sum(p["roofline_s"] for p in probes) / max(sum(p["seconds"] for p in probes), 1e-12)
    return KernelModel(overhead, per_layer, efficiency, compile_s, compile_layer_s,
                       float(min(calls)) if calls else 0.0, min(1.0, fraction))


def _jax_version() -> str:
    import jax

    return jax.__version__


# ----------------------------------------------------------------------------- the cache file
def calibration_path(setting: Optional[str] = None) -> Path:
    """The calibration file: the setting, else $JAXALIGN_CALIBRATION, else ~/.cache/jaxalign/calibration.json
    ($XDG_CACHE_HOME honoured)."""
    if setting:
        return Path(setting).expanduser()
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "jaxalign" / "calibration.json"


def read_file(path: Path) -> dict:
    """The file's contents ({"version", "devices": {kind: {"device", "shapes": {key: record}}}}), empty if absent."""
    if not path.is_file():
        return {"version": VERSION, "devices": {}}
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise JaxalignError(f"{path}: not valid JSON ({err}); delete it and calibrate again "
                            "(python -m jaxalign.calibrate)") from err
    if raw.get("version") != VERSION or not isinstance(raw.get("devices"), dict):
        raise JaxalignError(f"{path}: not a jaxalign calibration file of version {VERSION}; delete it and "
                            "calibrate again (python -m jaxalign.calibrate)")
    return raw


@dataclasses.dataclass
class Calibration:
    """The calibrated device and its kernel models per shape key (from one calibration file)."""

    device: Device
    shapes: dict[str, dict]
    path: Optional[Path] = None
    measured_now: tuple[str, ...] = ()

    def kernel(self, shape: Shape, kind: str) -> KernelModel:
        record = self.shapes.get(shape.key, {}).get("kernels", {})
        if kind not in record:
            raise JaxalignError(
                f"no {kind} calibration for {shape.key} on {self.device.kind} in {self.path}; run "
                f"`python -m jaxalign.calibrate` with the run's overrides on that device")
        return KernelModel(**record[kind])

    def probed(self, shape: Shape) -> Shape:
        """``shape`` in the dtype its probes ran in (float32 for a bfloat16 model on the CPU)."""
        return dataclasses.replace(shape, dtype=self.shapes.get(shape.key, {}).get("probe_dtype", shape.dtype))


def ensure(needs: Mapping[Shape, Iterable[str]], path: Optional[Path] = None, device: Optional[str] = None,
           force: bool = False, measure: Callable[..., dict] = calibrate_shape) -> Calibration:
    """The calibration covering ``needs`` ({shape: kinds}) for ``device`` (default: this process's device).

    Shapes missing from the file are measured now on this device, said in the log, and saved;
    for another device they cannot be, and the error names the command to run there.
    """
    path = calibration_path(None) if path is None else Path(path)
    data = read_file(path)
    here = device_kind()
    kind = device or here
    entry = data["devices"].get(kind)
    missing = {s: set(k) for s, k in needs.items()
               if force or not set(k) <= set(((entry or {}).get("shapes", {}).get(s.key) or {}).get("kernels", {}))}
    if missing and kind != here:
        listed = ", ".join(s.key for s in missing)
        raise ConfigError(f"calibration_device: {path} has no calibration for {listed} on {kind!r}; run "
                          f"`python -m jaxalign.calibrate` with the run's overrides on a {kind} (this process "
                          f"runs on {here!r}), or leave calibration_device unset to price on this device")
    if entry is None:
        import jax

        dtypes = {probe_dtype(s.dtype, jax.default_backend()) for s in needs}
        entry = {"device": current_device(dtypes).to_json(), "shapes": {}}
        data["devices"][kind] = entry
    dev = Device.from_json(entry["device"])
    for shape, kinds in missing.items():
        old = entry["shapes"].get(shape.key, {}) if not force else {}
        want = set(kinds) | (set() if force else set(old.get("kernels", {})))
        log.warning("no calibration for %s (%s) on %s: measuring it now, once (cached in %s)",
                    shape.key, ", ".join(sorted(kinds)), kind, path)
        record = measure(shape, want, dev)
        log.info("calibrated %s in %.0f s", shape.key, record.get("seconds", 0))
        entry["shapes"][shape.key] = record
        write_json(path, data)  # after each shape: an interrupted calibration keeps what it measured
    return Calibration(dev, entry["shapes"], path, tuple(s.key for s in missing))


# ----------------------------------------------------------------------------- command line
def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Calibrates the shapes of the run that OVERRIDEs describe (the same overrides as jaxalign.run)."""
    ap = argparse.ArgumentParser(prog="python -m jaxalign.calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", default=None, help=f"the calibration file (default ${ENV} or ~/.cache/jaxalign/...)")
    ap.add_argument("--force", action="store_true", help="measure again even if the file has this device and shape")
    ap.add_argument("overrides", nargs="*",
                    help="Hydra overrides naming the run, e.g. student=qwen3-0.6b teachers=paper8")
    named = ap.add_argument_group(
        "models by id, instead of overrides (no Hydra needed: a bare GPU machine)",
        "Hub ids (a published Qwen3 id needs no download) or model directories.")
    named.add_argument("--student", help="the model that samples and is scored (all kernels)")
    named.add_argument("--teacher", action="append", default=[], help="a model that is only scored (repeatable)")
    named.add_argument("--context", action="append", default=[],
                       help="a model that writes demonstrations or summaries (decode and prefill; repeatable)")
    named.add_argument("--dtype", default=None, choices=("bfloat16", "float32"), help="default bfloat16")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from jaxalign import cost

    if args.student or args.teacher or args.context or args.dtype:
        if args.overrides or not args.student:
            raise ConfigError("calibrate: name the models either by overrides or by --student (with any --teacher, "
                              "--context and --dtype), not both; --student is required with the others")
        dtype = args.dtype or "bfloat16"
        models = cost.RunModels(cost.model_shape(args.student, dtype),
                                tuple(cost.TeacherUse(m, cost.model_shape(m, dtype), 0) for m in args.teacher),
                                tuple(cost.ContextUse(cost.model_shape(m, dtype)) for m in args.context))
    else:
        models = cost.run_models(cost.compose(args.overrides))
    calibration = ensure(models.needs(), calibration_path(args.file), force=args.force)
    rows = []
    for use in [*models.distinct(), *(c.model for c in models.context)]:
        if use.id in {r["model"] for r in rows}:  # the student or a teacher that is also a context model
            continue
        kernels = calibration.shapes[use.shape.key]["kernels"]
        fitted = {kind: {"efficiency": round(k["efficiency"], 4), "roofline_fraction": round(k["roofline_fraction"], 4),
                         "overhead_s": k["overhead_s"]} for kind, k in kernels.items()}
        rows.append({"model": use.id, "shape": use.shape.key, **fitted})
        print(f"{use.id:<24} {use.shape.key}: " + ", ".join(
            f"{kind} {k['roofline_fraction']:.1%} of roofline" for kind, k in kernels.items()))
    out = {"device": calibration.device.kind, "peaks": calibration.device.peaks, "file": str(calibration.path),
           "measured_now": list(calibration.measured_now), "models": rows}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    run_cli(main, "calibration error")
