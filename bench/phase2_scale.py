"""Memory and time of the planner's candidate pass and Phase 2 at Qwen3-0.6B's real widths.

    python bench/phase2_scale.py [--quick]

A random-weight Qwen3 with the real vocabulary and widths of Qwen3-0.6B (V = 151,936, d = 1024,
16 heads, 8 KV heads, head_dim 128, bf16 weights; 28 layers, 2 with --quick: memory is driven by
V x positions, not by depth) scores one path, by the student and by its teachers (a self
teacher: the student's weights with another prompt; in the full run also an external teacher with
weights of its own). Each (path, length) runs the planner's candidate pass over every position and
Phase 2 at 64 decision nodes, once on each of two paths:

* old: the code before issue #12, kept here as the baseline. Every model's [positions, V]
  log-probs come to the host (``response_logprobs``) and the candidates are thresholded there in
  float64 (``Candidates.from_distributions``).
* new: the pipeline's code (``skeleton_candidates``, ``score_paths``): a chunked prefill, and
  chunks of positions reduced on the device.

Each (path, length) runs in its own process. "Excess peak" is the process's peak resident memory
above what it held once the weights were loaded (Linux's VmHWM, reset through
/proc/self/clear_refs after loading). A process that passes --limit-gb is killed and reported as
"> limit" (its excess is then at least the limit minus the weights). The last line is JSON:
"ratio" = new excess / old excess at the longer length, "growth" = new excess at the longer length
/ at the shorter (goals: ratio <= 0.25, growth <= 1.5).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _common import parser, report  # noqa: E402

PROMPT_TOKENS = 64
DECISION_NODES = 64
TAU = 0.02


def _status_kb(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def qwen3_06b_config(layers: int):
    from jaxalign.models.config import Qwen3Config

    return Qwen3Config(vocab_size=151_936, hidden_size=1024, intermediate_size=3072, num_layers=layers,
                       num_heads=16, num_kv_heads=8, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6,
                       tie_word_embeddings=True, max_position_embeddings=40_960)


def _workload(length: int, teachers: int, layers: int):
    """(tree, student, prompt, teachers) for one path of ``length`` response tokens."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxalign.engine.policy import FlaxPolicy
    from jaxalign.models.init import init_params
    from jaxalign.pipeline import Teacher
    from jaxalign.tree import RolloutTree

    cfg = qwen3_06b_config(layers)
    params = init_params(cfg, jax.random.key(0), dtype=jnp.bfloat16, scale=0.1)  # peaked enough for candidates
    student = FlaxPolicy(params, cfg, (151_645, 151_643))
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 151_000, PROMPT_TOKENS)
    group = [Teacher("self", student, rng.integers(0, 151_000, 2 * PROMPT_TOKENS))]
    if teachers > 1:
        other = init_params(cfg, jax.random.key(1), dtype=jnp.bfloat16, scale=0.1)
        group.append(Teacher("external", FlaxPolicy(other, cfg, (151_645, 151_643)), prompt))
    path = rng.integers(0, 151_000, length)
    tree = RolloutTree.from_paths([path], [True])
    # decision nodes spread along the path: 3 children with N_sig forced visits and distinct outcomes
    empty = np.full((20, 1), -1)
    for depth in np.linspace(0, length - 1, DECISION_NODES).astype(int):
        node = int(tree.path_nodes[0, depth])
        for j, token in enumerate((int(path[depth]), 151_000 + depth % 7, 151_100 + depth % 7)):
            tree.add_rollouts(empty, np.zeros(20, np.int64), np.arange(20) < 5 + 5 * j, start=(node, token))
    return tree, student, prompt, group, params


def _old_candidates(tree, student, prompt, teachers):
    """The planner pass as it was: every skeleton node's full distributions on the host, in float64."""
    import numpy as np

    from jaxalign.enrich import Candidates

    length = int(tree.path_length[0])
    response = tree.path_tokens[0, :length]
    positions = np.arange(length)
    p_full = np.exp(student.next_token_logprobs(prompt, response, positions))
    q_full = np.stack([np.exp(t.policy.next_token_logprobs(t.prompt, response, positions)) for t in teachers])
    return Candidates.from_distributions(tree.path_nodes[0, :length], p_full, q_full, TAU)


def _old_phase2(tree, student, prompt, teachers):
    """Phase 2's model work as it was: [M, V] log-probs at the decision depths, compared per teacher."""
    import numpy as np

    from jaxalign.engine.scoring import compare
    from jaxalign.pipeline.phase2 import decision_depths

    depths = decision_depths(tree, 20)[0]
    response = tree.path_tokens[0, : int(tree.path_length[0])]
    nodes = tree.path_nodes[0, depths]
    table = tree.node_table(nodes, 20)
    logp = student.next_token_logprobs(prompt, response, np.array(depths))
    return [{k: np.asarray(v) for k, v in compare(logp, t.policy.next_token_logprobs(t.prompt, response, np.array(depths)),
                                                  np.where(table.seen, table.tokens, 0)).items()} for t in teachers]


def child(mode: str, length: int, teachers: int, layers: int) -> dict:
    """Runs one (path, length) in this process and returns its figures."""
    import jax

    tree, student, prompt, group, params = _workload(length, teachers, layers)
    jax.block_until_ready(params)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # return the initialiser's freed temporaries to the OS
    weights_kb = _status_kb("self", "VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    start = time.perf_counter()
    if mode == "old":
        cands = _old_candidates(tree, student, prompt, group)
        _old_phase2(tree, student, prompt, group)
    else:
        from jaxalign.pipeline.candidates import skeleton_candidates
        from jaxalign.pipeline.phase2 import score_paths

        cands = skeleton_candidates(tree, student, prompt, group, TAU, chunk=64)
        rows = score_paths("bench", tree, student, prompt, group, 20, 0.5, chunk=64)
        assert len(rows) == DECISION_NODES * len(group) * 7, len(rows)  # 4 renormalised + 3 paper-convention rows
    seconds = time.perf_counter() - start
    peak_kb = _status_kb("self", "VmHWM")
    return {"mode": mode, "length": length, "seconds": round(seconds, 2), "candidates": int(len(cands.node)),
            "weights_mb": round(weights_kb / 1024, 1), "excess_peak_mb": round((peak_kb - weights_kb) / 1024, 1)}


def measure(mode: str, length: int, teachers: int, layers: int, limit_gb: float) -> dict:
    """Runs :func:`child` in a fresh process, killing it past ``limit_gb`` of resident memory."""
    cmd = [sys.executable, __file__, "--child", mode, str(length), str(teachers), str(layers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, _status_kb(proc.pid, "VmRSS"))
        except (FileNotFoundError, KeyError, ProcessLookupError):
            pass
        if peak > limit_gb * 2**20:
            proc.kill()
            proc.wait()
            return {"mode": mode, "length": length, "killed_at_gb": limit_gb,
                    "excess_peak_mb": None, "note": f"killed at {limit_gb} GB resident"}
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} at {length} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=4, metavar=("MODE", "LENGTH", "TEACHERS", "LAYERS"), help=argparse_hidden())
    ap.add_argument("--limit-gb", type=float, default=14.0, help="kill a process past this resident memory")
    args = ap.parse_args()
    if args.child:
        mode, length, teachers, layers = args.child
        print(json.dumps(child(mode, int(length), int(teachers), int(layers))))
        return
    lengths, teachers, layers = ((256, 1024), 1, 2) if args.quick else ((1024, 4096), 2, 28)
    results = []
    for length in lengths:
        for mode in ("old", "new"):
            results.append(measure(mode, length, teachers, layers, args.limit_gb))
            print(json.dumps(results[-1]), flush=True)
    by = {(r["mode"], r["length"]): r for r in results}
    short, long = lengths
    new_long, new_short = by[("new", long)]["excess_peak_mb"], by[("new", short)]["excess_peak_mb"]
    old_long = by[("old", long)]["excess_peak_mb"]
    if old_long is None:  # killed: its excess was at least the limit minus its weights
        old_long = args.limit_gb * 1024 - by[("new", long)]["weights_mb"]
        bound = "at most"
    else:
        bound = "exact"
    report("phase2_scale", {"quick": args.quick, "layers": layers, "teachers": teachers, "lengths": list(lengths),
                            "results": results, "ratio": round(new_long / old_long, 4), "ratio_is": bound,
                            "growth": round(new_long / new_short, 3)})


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
