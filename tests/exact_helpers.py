"""Builds enriched trees on ExactPolicy for the tests (a minimal Phase 1, not the planner)."""

import dataclasses
from typing import Optional

import jax
import numpy as np

from jaxalign.alignment import node_alignment
from jaxalign.exact import ExactPolicy
from jaxalign.tree import RolloutTree


@dataclasses.dataclass
class Built:
    tree: RolloutTree
    policy: ExactPolicy
    key: jax.Array
    path_rollouts: np.ndarray
    rollouts: int
    count_ancestors: bool = False


def initial_tree(policy: ExactPolicy, seed: int, n_initial: int = 2000, include_path_rollout: bool = False,
                 count_ancestors: bool = False) -> Built:
    """Initial rollouts from the root; 2 correct + 2 incorrect of them become the paths."""
    key = jax.random.key(seed)
    init = policy.sample(None, [np.zeros(0, np.int64)], n_initial, policy.max_len, 1.0, jax.random.fold_in(key, 0))
    ok = policy.grade((), init)
    chosen = np.concatenate([np.flatnonzero(ok)[:2], np.flatnonzero(~ok)[:2]])
    tree = RolloutTree.from_paths([init.tokens[i, : init.lengths[i]] for i in chosen], ok[chosen])
    exclude = np.zeros(n_initial, bool)
    if not include_path_rollout:
        exclude[chosen] = True
    tree.add_rollouts(init.tokens, init.lengths, ok, exclude=exclude)
    return Built(tree, policy, key, chosen, n_initial, count_ancestors)


def enrich(built: Built, n_min: int, tau: float = 0.02, round_: int = 0) -> Built:
    """Tops every skeleton (node, token) with p > tau up to n_min visits with targeted rollouts."""
    tree, policy = built.tree, built.policy
    for node in range(tree.num_nodes):
        prefix = tuple(int(t) for t in tree.prefix(node))
        for token in np.flatnonzero(policy.probs(prefix) > tau):
            edge = tree.edge(node, token)
            have = int(tree.edge_counts()["visits"][edge]) if edge is not None else 0
            if have >= n_min:
                continue
            start = prefix + (int(token),)
            key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(built.key, 1 + round_), node), int(token))
            batch = policy.sample(None, [np.array(start)], n_min - have, policy.max_len, 1.0, key)
            tree.add_rollouts(batch.tokens, batch.lengths, policy.grade(start, batch), start=(node, int(token)),
                              count_ancestors=built.count_ancestors)
            built.rollouts += n_min - have
    return built


def build_tree(policy: ExactPolicy, seed: int, n_initial: int = 2000, n_min: int = 100, tau: float = 0.02,
               **kwargs) -> Built:
    return enrich(initial_tree(policy, seed, n_initial, **kwargs), n_min, tau)


def alignment_at(built: Built, teacher, n_sig: int = 20, exact: bool = False,
                 nodes: Optional[np.ndarray] = None, in_s: Optional[np.ndarray] = None):
    """GKD alignment at ``nodes`` (default: the decision nodes): (cosine [N], valid [N], nodes, in_s).

    exact=True uses the exact P_succ instead of the tree's estimates, on the same S_u.
    """
    tree, policy = built.tree, built.policy
    nodes = tree.decision_nodes(n_sig) if nodes is None else nodes
    table = tree.node_table(nodes, n_sig)
    in_s = table.in_s if in_s is None else in_s
    prefixes = [tuple(int(t) for t in tree.prefix(u)) for u in nodes]
    safe = np.where(table.seen, table.tokens, 0)
    p = np.stack([policy.probs(pre)[row] for pre, row in zip(prefixes, safe)])
    q = np.stack([teacher.probs(pre)[row] for pre, row in zip(prefixes, safe)])
    s = table.s
    if exact:
        s = np.stack([policy.child_success_probs(pre)[row] for pre, row in zip(prefixes, safe)])
    out = node_alignment(p, q, s, in_s)
    return np.asarray(out["cosine"]), np.asarray(out["valid"]), nodes, in_s
