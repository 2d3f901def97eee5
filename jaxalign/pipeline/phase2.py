"""Phase 2: every teacher scored against the one shared tree, and the row schema of the results.

For each path, the student and each teacher are run once over it; only the decision nodes'
positions are projected onto the vocabulary, a chunk at a time, and reduced on the device to the
[M, K] gathers at the nodes' children plus the per-node divergences (KL, JS, L2, cos)
(:func:`jaxalign.engine.scoring.compare`); with ``topk_gkd`` asked for, the same device call also
reduces each chunk to top-k GKD's bucket statistics (:func:`compare_topk`), the student's top-k
found once per chunk and shared by the teachers. :func:`jaxalign.algorithms.alignments` then gives one
row per (path, node, teacher, convention, algorithm). :data:`ROW_SCHEMA` is the one definition of those rows: the
Parquet writer and the report both read it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.algorithms import CONVENTIONS, DEFAULT as DEFAULT_ALGORITHMS, alignments
from jaxalign.config import TOPK_GKD_K
from jaxalign.alignment import NodeBatch, bucket_stats, node_alignment, student_topk
from jaxalign.engine.sampling import bucket
from jaxalign.engine.scoring import compare
from jaxalign.errors import ConfigError
from jaxalign.pipeline.minillm import minillm_inputs, reward_to_go, rollouts_through
from jaxalign.tree import RolloutTree

# column -> pyarrow type name; the order is the file's column order
ROW_SCHEMA = {
    "qid": "string", "path": "int64", "correct": "bool", "depth": "int64", "norm_depth": "float64",
    "token": "int64", "node": "int64", "teacher": "string", "algorithm": "string", "convention": "string",
    "s_u_size": "int64",
    "sr_range": "float64", "cosine": "float64", "valid": "bool", "advantage": "float64", "kl": "float64",
    "js": "float64", "l2": "float64", "cos_pq": "float64", "visits": "int64",
}

# questions/<qid>.children.parquet: one row per (path, decision node, teacher, child seen)
CHILD_SCHEMA = {
    "qid": "string", "path": "int64", "node": "int64", "depth": "int64", "teacher": "string", "token": "int64",
    "p": "float64", "q": "float64", "s": "float64", "visits": "int64", "successes": "int64", "in_s": "bool",
}


@dataclasses.dataclass(frozen=True)
class Rollouts:
    """Stored rollouts for MiniLLM: tokens [G, W] int (-1 padded), lengths [G], counted [G] bool."""

    tokens: np.ndarray
    lengths: np.ndarray
    counted: np.ndarray


def decision_depths(tree: RolloutTree, n_sig: int) -> list[list[int]]:
    """For each path, the depths along it whose node is a decision node."""
    decision = set(tree.decision_nodes(n_sig).tolist())
    return [[d for d in range(int(tree.path_length[path])) if int(tree.path_nodes[path, d]) in decision]
            for path in range(tree.num_paths)]


@jax.jit
def compare_topk(logp: jax.Array, logq: jax.Array, ids: jax.Array, top_ids: jax.Array,
                 top_mask: jax.Array) -> dict[str, jax.Array]:
    """:func:`jaxalign.engine.scoring.compare` plus top-k GKD's statistics, in one device call.

    logp, logq: [M, V] float32 log-softmax; ids: [M, K] int token ids to gather; top_ids [M, k] int32
    and top_mask [M, V] bool: the student's top-k (:func:`jaxalign.alignment.student_topk`).
    Returns compare's p_at, q_at [M, K] and kl, js, l2, cos [M], plus in_topk [M, K] bool (``ids``
    among the top-k), tail_log_ratio and kl_bucket [M] float32. Nothing of size V leaves the device.
    """
    out = compare(logp, logq, ids)
    out.update(bucket_stats(logp, logq, top_ids, top_mask))
    out["in_topk"] = jnp.take_along_axis(top_mask, jnp.maximum(ids, 0), axis=-1)
    return out


def _host(value) -> np.ndarray:
    """A device result on the host: bool stays bool, numbers become float64."""
    value = np.asarray(value)
    return value if value.dtype == bool else value.astype(np.float64)


def _gathers(student, prompt, teachers: Sequence, response: np.ndarray, depths: list[int], ids: np.ndarray,
             chunk: int, topk_k: Optional[int] = None) -> list[dict[str, np.ndarray]]:
    """Per teacher: p_at, q_at [M, K] and kl, js, l2, cos [M] at the M decision depths (float64).

    ids: [M, K] token ids to gather. The student's chunks are computed once and shared. With
    ``topk_k``, also in_topk [M, K] bool, tail_log_ratio and kl_bucket [M] (:func:`compare_topk`),
    the student's top-k computed once per chunk.
    """
    positions = np.asarray(depths, np.int64)
    streams = [student.logprob_chunks(prompt, response, positions, chunk)]
    streams += [t.policy.logprob_chunks(t.prompt, response, positions, chunk) for t in teachers]
    pieces: list[list[dict]] = [[] for _ in teachers]
    for first, (logp, *logqs) in zip(range(0, len(positions), chunk), zip(*streams)):
        rows = min(chunk, len(positions) - first)
        chunk_ids = np.zeros((chunk, ids.shape[1]), ids.dtype)
        chunk_ids[:rows] = ids[first: first + rows]
        top = None if topk_k is None else student_topk(logp, topk_k)
        for t, logq in enumerate(logqs):
            out = compare(logp, logq, chunk_ids) if top is None else compare_topk(logp, logq, chunk_ids, *top)
            pieces[t].append({k: _host(v)[:rows] for k, v in out.items()})
    return [{k: np.concatenate([piece[k] for piece in per]) for k in per[0]} for per in pieces]


def score_paths(qid: str, tree: RolloutTree, student, prompt: np.ndarray, teachers: Sequence, n_sig: int,
                pass_rate: float, chunk: int, algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
                conventions: Sequence[str] = CONVENTIONS, rollouts: Optional[Rollouts] = None,
                children: Optional[list] = None, topk_k: int = TOPK_GKD_K) -> list[dict]:
    """One row per (path, decision node, teacher, convention, algorithm), columns of :data:`ROW_SCHEMA`.

    ``children``, when given a list, receives one row per (path, decision node, teacher, child seen)
    with the columns of :data:`CHILD_SCHEMA` (P_θ, P_te, P̂_succ, counts): the per-token view's data.

    teachers: objects with ``.name``, ``.policy`` and ``.prompt``; pass_rate: the question's R̄
    (Dr. GRPO's group mean). ``rollouts`` (the stored initial rollouts) enables ``minillm_mc``.
    ``topk_k`` is top-k GKD's k (used only when ``topk_gkd`` is among ``algorithms``).
    Node batches are padded to [bucket(M), bucket(K)] so the jitted kernels compile per bucket,
    not per path.
    """
    names = tuple(algorithms)
    wants_topk = "topk_gkd" in names
    if wants_topk and topk_k < 1:
        raise ConfigError(f"topk_gkd_k: {topk_k} must be >= 1 (the student's top-k tokens of top-k GKD)")
    depths_per_path = decision_depths(tree, n_sig)
    wants_minillm = "minillm_mc" in names and rollouts is not None and len(teachers) > 0
    through, returns = {}, {}
    if wants_minillm:
        nodes_at = {int(tree.path_nodes[path, d]): (path, d)
                    for path, depths in enumerate(depths_per_path) for d in depths}
        through = rollouts_through(tree, nodes_at, rollouts.tokens, rollouts.lengths, rollouts.counted)
        rows_needed = sorted({r for found in through.values() for r in found})
        returns = reward_to_go(student, prompt, teachers, rows_needed, rollouts.tokens, rollouts.lengths)
    rows = []
    for path, depths in enumerate(depths_per_path):
        if not depths:
            continue
        count, length = len(depths), int(tree.path_length[path])
        padded = depths + [depths[-1]] * (bucket(count, 8) - count)  # padding rows repeat the last node
        nodes = tree.path_nodes[path, padded]
        response = tree.path_tokens[path, :length]
        widest = tree.node_table(nodes, n_sig).tokens.shape[1]
        table = tree.node_table(nodes, n_sig, columns=bucket(widest, 4))
        ids = np.where(table.seen, table.tokens, 0)
        onp_total = np.where(table.seen, table.onp_visits, 0).sum(1)
        node_success = np.where(onp_total > 0, np.where(table.seen, table.onp_successes, 0).sum(1)
                                / np.maximum(onp_total, 1), np.nan)  # no on-policy sample: paper rows invalid
        return_sum = visits = None
        if wants_minillm:
            return_sum, visits = minillm_inputs(tree, nodes, table.tokens, depths, path, through, returns,
                                                rollouts.tokens, len(teachers))
        gathered = _gathers(student, prompt, teachers, response, padded, ids, chunk, topk_k if wants_topk else None)
        for t, (teacher, cmp) in enumerate(zip(teachers, gathered)):
            batch = NodeBatch(p=cmp["p_at"], q=cmp["q_at"], s=table.s, in_s=table.in_s, seen=table.seen,
                              kl_full=cmp["kl"], onp_visits=table.onp_visits.astype(np.float64),
                              onp_successes=table.onp_successes.astype(np.float64),
                              baseline=np.full(len(nodes), pass_rate), node_success=node_success,
                              js=cmp["js"], l2=cmp["l2"], cos_pq=cmp["cos"],
                              return_sum=None if return_sum is None else return_sum[t], rollout_visits=visits,
                              in_topk=cmp["in_topk"] & table.seen if wants_topk else None,
                              tail_log_ratio=cmp.get("tail_log_ratio"), kl_bucket=cmp.get("kl_bucket"))
            # one transfer each: indexing a device array per row is an eager op per row and column
            node = jax.device_get(node_alignment(cmp["p_at"], cmp["q_at"], table.s, table.in_s))
            if children is not None:
                for i, d in enumerate(depths):
                    for c in np.flatnonzero(table.seen[i]):
                        children.append({
                            "qid": qid, "path": path, "node": int(nodes[i]), "depth": d, "teacher": teacher.name,
                            "token": int(table.tokens[i, c]), "p": float(cmp["p_at"][i, c]),
                            "q": float(cmp["q_at"][i, c]), "s": float(table.s[i, c]), "visits": int(table.visits[i, c]),
                            "successes": int(table.successes[i, c]), "in_s": bool(table.in_s[i, c])})
            results = jax.device_get({c: alignments(batch, names, c) for c in conventions})
            for i, d in enumerate(depths):  # the first `count` rows; the rest is padding
                shared = {
                    "qid": qid, "path": path, "correct": bool(tree.path_correct[path]),
                    "depth": d, "norm_depth": d / max(length - 1, 1), "token": int(response[d]),
                    "node": int(nodes[i]), "teacher": teacher.name, "s_u_size": int(table.in_s[i].sum()),
                    "sr_range": float(node["sr_range"][i]), "advantage": float(node["advantage"][i]),
                    "kl": float(cmp["kl"][i]), "js": float(cmp["js"][i]), "l2": float(cmp["l2"][i]),
                    "cos_pq": float(cmp["cos"][i]), "visits": int(table.visits[i].sum()),
                }
                for convention in conventions:
                    for algo in names:  # in the order asked for (a jitted dict comes back key-sorted)
                        r = results[convention].get(algo)
                        if r is not None:
                            rows.append({**shared, "convention": convention, "algorithm": algo,
                                         "cosine": float(r["cosine"][i]), "valid": bool(r["valid"][i])})
    return [{c: row[c] for c in ROW_SCHEMA} for row in rows]


def write_rows(rows: list[dict], path: Path, schema: dict = ROW_SCHEMA) -> None:
    """Writes rows as Parquet with exactly the columns and types of ``schema`` (:data:`ROW_SCHEMA`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.schema([(name, pa.bool_() if kind == "bool" else getattr(pa, kind)()) for name, kind in schema.items()])
    pq.write_table(pa.table({c: [r[c] for r in rows] for c in schema}, schema=arrow), path)
