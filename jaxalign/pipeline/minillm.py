"""MiniLLM's inputs: the teacher reward-to-go of the stored rollouts through each decision node.

MiniLLM (2.10) weights each on-policy sample at node u by its reward-to-go from u,
Σ_{t' >= t} (log q(o_t') − log p(o_t')). That needs the student's and the teacher's log-prob of every
token of the rollout, so it costs a forward pass over every rollout for each model. The rollouts used are the
initial ones (sampled from the root, so on-policy at every node they pass), minus the paths' own
rollouts unless ``include_path_rollout``: the same rows the counting rules count. Targeted rollouts
are not stored, so deep nodes see fewer MiniLLM samples than the other estimators; ``rollout_visits``
says how many.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxalign.tree import RolloutTree


def rollouts_through(tree: RolloutTree, nodes_at: dict[int, tuple[int, int]], tokens: np.ndarray,
                     lengths: np.ndarray, counted: np.ndarray) -> dict[int, list[int]]:
    """For each node (id -> (path, depth)), the counted rollouts that pass it and take a next token.

    tokens: [G, W] int (-1 padded); lengths: [G]; counted: [G] bool. A rollout passes node u at
    depth d of path P when its first d tokens are P's and it has a token at d. Each rollout's
    agreement with each path is measured once, O(G x W) per path, whatever the number of nodes.
    """
    agree = {}  # path -> [G] length of each rollout's common prefix with the path
    for path in sorted({path for path, _ in nodes_at.values()}):
        width = min(tokens.shape[1], int(tree.path_length[path]))
        same = tokens[:, :width] == tree.path_tokens[path, :width]
        agree[path] = np.where(same.all(1), width, np.argmin(same, axis=1))
    return {node: np.flatnonzero((agree[path] >= depth) & (lengths > depth) & counted).tolist()
            for node, (path, depth) in nodes_at.items()}


def reward_to_go(student, prompt, teachers: Sequence, rows: Sequence[int], tokens: np.ndarray,
                 lengths: np.ndarray) -> dict[int, np.ndarray]:
    """{rollout: [T, L] float64}: Σ_{t' >= t} (log q_t − log p)(o_t') for each teacher, t < L = its length.

    tokens: [G, W] int (-1 padded); lengths: [G]. Each model scores all ``rows`` in batched calls
    (:meth:`~jaxalign.policy.Policy.token_logprobs`), sharing its prompt's KV across them.
    """
    rows = [int(r) for r in rows]
    sequences = [tokens[r, : lengths[r]] for r in rows]
    logp = student.token_logprobs(prompt, sequences)
    per_teacher = [t.policy.token_logprobs(t.prompt, sequences) for t in teachers]
    out = {}
    for i, r in enumerate(rows):
        ratios = np.stack([scored[i].astype(np.float64) - logp[i].astype(np.float64) for scored in per_teacher])
        out[r] = np.cumsum(ratios[:, ::-1], axis=1)[:, ::-1]
    return out


def minillm_inputs(tree: RolloutTree, table_nodes: np.ndarray, table_tokens: np.ndarray, depths: Sequence[int],
                   path: int, through: dict[int, list[int]], returns: dict[int, np.ndarray], tokens: np.ndarray,
                   teachers: int) -> tuple[np.ndarray, np.ndarray]:
    """(return_sum [T, N, K], rollout_visits [N, K]) for a node table of one path.

    table_nodes [N], table_tokens [N, K] (-1 pad): the decision nodes at ``depths`` of ``path`` and
    their children; through/returns: from :func:`rollouts_through` and :func:`reward_to_go`.
    """
    n, k = table_tokens.shape
    return_sum, visits = np.zeros((teachers, n, k)), np.zeros((n, k))
    for i, (node, depth) in enumerate(zip(table_nodes[: len(depths)], depths)):
        for r in through.get(int(node), []):
            column = np.flatnonzero(table_tokens[i] == tokens[r, depth])
            if len(column):
                visits[i, column[0]] += 1
                return_sum[:, i, column[0]] += returns[r][:, depth]
    return return_sum, visits
