"""Synthetic result rows with planted statistics, shaped like the pipeline's (one row per path, node, teacher)."""

from __future__ import annotations

import numpy as np

from jaxalign.report.load import Rows

PATHS = 4  # paths 0, 1 correct; 2, 3 incorrect


def synthetic_rows(rng: np.random.Generator, *, questions: int = 30, gap: float = 0.0, mean: float = 0.1,
                   question_sd: float = 0.3, noise_sd: float = 0.5, nodes_per_path: int = 6,
                   teachers: tuple[str, ...] = ("A",), algorithm: str = "gkd") -> Rows:
    """Each question has 4 paths that share their root node (node 0, depth 0); each path then has
    ``nodes_per_path`` nodes of its own (node ids 1 + path * nodes_per_path + i, depth 1 + i).

    A node's cosine is clip(mean + b_q + o + noise, -1, 1) with b_q ~ N(0, question_sd) shared by
    the question's nodes, o = +gap/2 on a correct path's own node, -gap/2 on an incorrect one's and
    0 at the shared root. Rows repeat the root once per path with the same values, as the pipeline
    writes them. Every node is valid.
    """
    k = nodes_per_path
    q_nodes = np.concatenate([np.repeat(np.arange(questions), PATHS * k), np.arange(questions)])
    own_path = np.tile(np.repeat(np.arange(PATHS), k), questions)
    node_ids = np.concatenate([1 + own_path * k + np.tile(np.arange(k), questions * PATHS), np.zeros(questions, int)])
    depth = np.concatenate([1 + np.tile(np.arange(k), questions * PATHS), np.zeros(questions, int)])
    offset = np.concatenate([np.where(own_path < 2, gap / 2, -gap / 2), np.zeros(questions)])
    # rows: an own node once (its path), the root once per path
    row_node = np.concatenate([np.arange(len(own_path)), np.repeat(len(own_path) + np.arange(questions), PATHS)])
    row_path = np.concatenate([own_path, np.tile(np.arange(PATHS), questions)])
    effect = rng.normal(0.0, question_sd, questions)
    nodes, n = len(q_nodes), len(row_node)
    names = np.asarray([f"q{i:03d}" for i in range(questions)])
    blocks = []
    for teacher in teachers:
        cosine = np.clip(mean + effect[q_nodes] + offset + rng.normal(0.0, noise_sd, nodes), -1.0, 1.0)
        per_node = {"cosine": cosine, "token": rng.integers(0, 50, nodes), "s_u_size": rng.integers(2, 6, nodes),
                    "sr_range": rng.uniform(0.05, 1.0, nodes), "advantage": 0.1 * cosine + rng.normal(0, 0.01, nodes),
                    "kl": rng.gamma(2.0, 0.1, nodes), "js": rng.gamma(2.0, 0.02, nodes), "l2": rng.gamma(2.0, 0.1, nodes),
                    "cos_pq": rng.uniform(0.5, 1.0, nodes), "visits": rng.integers(20, 200, nodes)}
        blocks.append({
            "qid": names[q_nodes[row_node]], "path": row_path, "correct": row_path < 2, "depth": depth[row_node],
            "norm_depth": depth[row_node] / k, "node": node_ids[row_node], "teacher": np.full(n, teacher),
            "algorithm": np.full(n, algorithm), "convention": np.full(n, "renormalized"), "valid": np.ones(n, bool),
            **{key: value[row_node] for key, value in per_node.items()}})
    return Rows.from_columns({key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]})
