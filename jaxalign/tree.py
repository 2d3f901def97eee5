"""The skeleton rollout trie: representative paths plus per-child visit counts at their nodes.

Only nodes on the representative paths are stored (docs/design.md, "The tree"). A node is a response
prefix; node ``d`` of a path is the prefix ``path[:d]`` and its children are next tokens. For every
node, an *edge* row counts the rollouts that took each child token there, with on-policy and
forced counts kept apart. Memory is O(paths x depth x children seen).

Named array fields (all numpy, so the tree checkpoints as a pytree, :meth:`RolloutTree.to_pytree`):
  nodes:  node_parent [M] int32 (-1 for the root), node_token [M] (token into the node, -1 root),
          node_depth [M]
  edges:  edge_node [E], edge_token [E], edge_child [E] (skeleton node below, -1 if off-skeleton),
          onp_visits / onp_successes / forced_visits / forced_successes [E] int64
  paths:  path_nodes [P, L] (-1 padded), path_tokens [P, L] (-1 padded), path_edges [P, L],
          path_length [P], path_correct [P] bool

Counting rules (each keeps P̂_succ unbiased; tests check them against exact truth):
* An initial rollout counts, on-policy, at every skeleton node it passes.
* A targeted rollout launched at (u, k) counts at u for child k as *forced*, and on-policy at every
  skeleton node it passes below. It does not count at u's ancestors, where its path was forced,
  unless ``count_ancestors=True`` (the paper's variant; biased, measured in docs/math.md).
* A path's own rollout is chosen by its outcome, so it is left out of the counts by passing it in
  ``exclude`` (the pipeline's ``include_path_rollout=False`` default).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from jaxalign.errors import JaxalignError

_EDGE_COUNTS = ("onp_visits", "onp_successes", "forced_visits", "forced_successes")
FIELDS = ("node_parent", "node_token", "node_depth", "edge_node", "edge_token", "edge_child", *_EDGE_COUNTS,
          "path_nodes", "path_tokens", "path_edges", "path_length", "path_correct")


def wilson_interval(successes, visits, z: float = 1.959964) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion; z=1.96 gives 95%, 2.5758 gives 99%.

    successes, visits: arrays of the same shape. Returns (low, high); [0, 1] where visits is 0.
    """
    n = np.asarray(visits, np.float64)
    safe_n = np.maximum(n, 1.0)
    phat = np.asarray(successes, np.float64) / safe_n
    denom = 1.0 + z * z / safe_n
    center = (phat + z * z / (2 * safe_n)) / denom
    half = z * np.sqrt(phat * (1 - phat) / safe_n + z * z / (4 * safe_n * safe_n)) / denom
    return np.where(n > 0, center - half, 0.0), np.where(n > 0, center + half, 1.0)


@dataclasses.dataclass
class NodeTable:
    """Children of N nodes padded to K columns, ready for the alignment kernel.

    nodes [N]; tokens [N, K] int64 (-1 pad); seen [N, K] bool; in_s [N, K] bool (visits >= N_sig);
    visits, successes, onp_visits, onp_successes [N, K] int64; s [N, K] float64 (P̂_succ, 0 at pad).
    """

    nodes: np.ndarray
    tokens: np.ndarray
    seen: np.ndarray
    in_s: np.ndarray
    visits: np.ndarray
    successes: np.ndarray
    onp_visits: np.ndarray
    onp_successes: np.ndarray
    s: np.ndarray


class RolloutTree:
    """Skeleton trie over representative response paths (token arrays ending in EOS)."""

    node_parent: np.ndarray
    node_token: np.ndarray
    node_depth: np.ndarray
    edge_node: np.ndarray
    edge_token: np.ndarray
    edge_child: np.ndarray
    onp_visits: np.ndarray
    onp_successes: np.ndarray
    forced_visits: np.ndarray
    forced_successes: np.ndarray
    path_nodes: np.ndarray
    path_tokens: np.ndarray
    path_edges: np.ndarray
    path_length: np.ndarray
    path_correct: np.ndarray

    def __init__(self, arrays: dict[str, np.ndarray]):
        missing = sorted(set(FIELDS) - set(arrays))
        if missing:
            raise JaxalignError(f"a rollout tree needs the arrays {missing}")
        for name in FIELDS:
            setattr(self, name, arrays[name])
        self._edge_of = {
            (int(n), int(t)): i for i, (n, t) in enumerate(zip(arrays["edge_node"], arrays["edge_token"]))
        }
        self._num_edges = len(self._edge_of)

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_paths(cls, paths: Sequence[np.ndarray], correct: Sequence[bool]) -> "RolloutTree":
        """Builds the skeleton as the trie union of ``paths`` (1-D int token arrays, response only)."""
        if len(paths) == 0 or len(paths) != len(correct):
            raise JaxalignError(f"need >= 1 path and one outcome per path, got {len(paths)}/{len(correct)}")
        if any(len(p) == 0 for p in paths):
            raise JaxalignError("a representative path is empty; every response has at least EOS")
        parent, token, depth = [-1], [-1], [0]
        edges: dict[tuple[int, int], list[int]] = {}  # (node, token) -> [edge id, child]
        length = max(len(p) for p in paths)
        shape = (len(paths), length)
        path_nodes, path_edges = np.full(shape, -1, np.int32), np.full(shape, -1, np.int32)
        path_tokens = np.full(shape, -1, np.int64)
        for i, path in enumerate(paths):
            node = 0
            for d, tok in enumerate(int(t) for t in path):
                path_nodes[i, d], path_tokens[i, d] = node, tok
                edge = edges.setdefault((node, tok), [len(edges), -1])
                path_edges[i, d] = edge[0]
                if d + 1 < len(path):
                    if edge[1] < 0:
                        edge[1] = len(parent)
                        parent.append(node)
                        token.append(tok)
                        depth.append(d + 1)
                    node = edge[1]
        keys = sorted(edges, key=lambda k: edges[k][0])
        arrays = {
            "node_parent": np.array(parent, np.int32),
            "node_token": np.array(token, np.int64),
            "node_depth": np.array(depth, np.int32),
            "edge_node": np.array([k[0] for k in keys], np.int32),
            "edge_token": np.array([k[1] for k in keys], np.int64),
            "edge_child": np.array([edges[k][1] for k in keys], np.int32),
            "path_nodes": path_nodes,
            "path_tokens": path_tokens,
            "path_edges": path_edges,
            "path_length": np.array([len(p) for p in paths], np.int32),
            "path_correct": np.array(correct, bool),
        }
        for name in _EDGE_COUNTS:
            arrays[name] = np.zeros(len(keys), np.int64)
        return cls(arrays)

    def to_pytree(self) -> dict[str, np.ndarray]:
        """All state as a dict of numpy arrays (edge arrays trimmed to their used length)."""
        return {k: (v[: self._num_edges] if k.startswith(("edge_", *_EDGE_COUNTS)) else v).copy()
                for k, v in sorted((name, getattr(self, name)) for name in FIELDS)}  # sorted: one file layout

    @classmethod
    def from_pytree(cls, tree: dict[str, np.ndarray]) -> "RolloutTree":
        return cls({k: np.asarray(v) for k, v in tree.items()})

    # ----------------------------------------------------------------------------- properties
    @property
    def num_nodes(self) -> int:
        return len(self.node_parent)

    @property
    def num_edges(self) -> int:
        return self._num_edges

    @property
    def num_paths(self) -> int:
        return len(self.path_length)

    def prefix(self, node: int) -> np.ndarray:
        """The response tokens leading from the root to ``node``, [depth] int64."""
        out = []
        while node > 0:
            out.append(self.node_token[node])
            node = self.node_parent[node]
        return np.array(out[::-1], np.int64)

    def edge(self, node: int, token: int) -> Optional[int]:
        return self._edge_of.get((int(node), int(token)))

    def edges(self, nodes, tokens) -> np.ndarray:
        """Edge index of each (node, token) pair. nodes, tokens: [M] ints -> [M] int64, -1 where absent."""
        return np.array([self._edge_of.get((int(u), int(k)), -1) for u, k in zip(nodes, tokens)], np.int64)

    def visits(self, nodes, tokens) -> np.ndarray:
        """Visits (on-policy + forced) of each (node, token) edge. [M] ints -> [M] int64, 0 where absent."""
        edges = self.edges(nodes, tokens)
        return np.where(edges >= 0, self.edge_counts()["visits"][edges], 0) if len(edges) else np.zeros(0, np.int64)

    def _edge_or_new(self, node: int, token: int) -> int:
        key = (int(node), int(token))
        found = self._edge_of.get(key)
        if found is not None:
            return found
        idx = self._num_edges
        if idx == len(self.edge_node):  # grow all edge arrays by doubling
            for name in ("edge_node", "edge_token", "edge_child", *_EDGE_COUNTS):
                old = getattr(self, name)
                grown = np.full(max(2 * len(old), 16), -1 if name == "edge_child" else 0, old.dtype)
                grown[: len(old)] = old
                setattr(self, name, grown)
        self.edge_node[idx], self.edge_token[idx], self.edge_child[idx] = key[0], key[1], -1
        self._edge_of[key] = idx
        self._num_edges += 1
        return idx

    # ----------------------------------------------------------------------------- counting
    def add_rollouts(
        self,
        tokens: np.ndarray,
        lengths: np.ndarray,
        success: np.ndarray,
        *,
        start: tuple[int, int] | None = None,
        exclude: Optional[np.ndarray] = None,
        count_ancestors: bool = False,
    ) -> None:
        """Adds a batch of graded rollouts.

        tokens: [B, T] int, the sampled tokens (row b valid in [:lengths[b]]). success: [B] bool.
        start=None: initial rollouts from the root; ``tokens`` is the whole response.
        start=(u, k): targeted rollouts from prefix(u) + k; ``tokens`` is the continuation after k.
        exclude: [B] bool, rows not to count (a path's own rollout). count_ancestors: also count
        targeted rollouts, as forced, at u's ancestors (the paper's variant; biased).
        """
        tokens = np.asarray(tokens)
        lengths = np.asarray(lengths)
        success = np.asarray(success, bool)
        if tokens.ndim != 2 or len(lengths) != len(tokens) or len(success) != len(tokens):
            raise JaxalignError(f"tokens {tokens.shape}, lengths {lengths.shape}, success {success.shape} disagree")
        keep = np.ones(len(tokens), bool) if exclude is None else ~np.asarray(exclude, bool)
        tokens, lengths, success = tokens[keep], lengths[keep], success[keep]
        if len(tokens) == 0:
            return
        if start is None:
            self._walk(0, tokens, lengths, success)
            return
        node, forced = int(start[0]), int(start[1])
        if not 0 <= node < self.num_nodes:
            raise JaxalignError(f"start node {node} is not in the tree ({self.num_nodes} nodes)")
        edge = self._edge_or_new(node, forced)
        n, wins = len(tokens), int(success.sum())
        self.forced_visits[edge] += n
        self.forced_successes[edge] += wins
        if count_ancestors:
            child = node
            while child > 0:
                up = self.edge(self.node_parent[child], self.node_token[child])
                self.forced_visits[up] += n
                self.forced_successes[up] += wins
                child = self.node_parent[child]
        below = self.edge_child[edge]
        if below >= 0:
            self._walk(int(below), tokens, lengths, success)

    def _walk(self, node: int, tokens: np.ndarray, lengths: np.ndarray, success: np.ndarray) -> None:
        """Counts on-policy visits of rollouts sampled from ``node`` along the skeleton below it."""
        depth = int(self.node_depth[node])
        through = np.flatnonzero(self.path_nodes[:, depth] == node) if depth < self.path_nodes.shape[1] else []
        if len(through) == 0:
            raise JaxalignError(f"node {node} lies on no path")
        width = tokens.shape[1]
        pos = np.arange(width)
        best_len = np.full(len(tokens), -1)
        best_path = np.zeros(len(tokens), np.int64)
        for p in through:
            path_tok = self.path_tokens[p, depth: depth + width]
            remaining = int(self.path_length[p]) - depth
            equal = np.zeros_like(tokens, bool)
            equal[:, : len(path_tok)] = tokens[:, : len(path_tok)] == path_tok
            equal &= (pos < lengths[:, None]) & (pos < remaining)
            matched = np.where(equal.all(1), width, np.argmin(equal, axis=1))
            better = matched > best_len
            best_len = np.where(better, matched, best_len)
            best_path = np.where(better, p, best_path)
        # matched skeleton edges: path_edges[best_path, depth + j] for j < best_len
        rows, cols = np.nonzero(pos[None, :] < best_len[:, None])
        on_path = self.path_edges[best_path[rows], depth + cols]
        np.add.at(self.onp_visits, on_path, 1)
        np.add.at(self.onp_successes, on_path, success[rows].astype(np.int64))
        # the first token that leaves the skeleton, where there is one
        for b in np.flatnonzero(best_len < lengths):
            at_depth = depth + best_len[b]
            if at_depth >= self.path_length[best_path[b]]:
                continue  # the path was cut at the length limit; the rollout goes on past it
            edge = self._edge_or_new(int(self.path_nodes[best_path[b], at_depth]), int(tokens[b, best_len[b]]))
            self.onp_visits[edge] += 1
            self.onp_successes[edge] += int(success[b])

    # ----------------------------------------------------------------------------- estimates
    def edge_counts(self) -> dict[str, np.ndarray]:
        """visits, successes (on-policy + forced) and P̂_succ per edge, [E] each."""
        e = self._num_edges
        visits = self.onp_visits[:e] + self.forced_visits[:e]
        successes = self.onp_successes[:e] + self.forced_successes[:e]
        return {"visits": visits, "successes": successes, "p_succ": successes / np.maximum(visits, 1)}

    def success_interval(self, z: float = 1.959964) -> tuple[np.ndarray, np.ndarray]:
        """Wilson interval of P̂_succ per edge (95% by default). Returns (low [E], high [E])."""
        c = self.edge_counts()
        return wilson_interval(c["successes"], c["visits"], z)

    def node_table(self, nodes: Sequence[int], n_sig: int, columns: Optional[int] = None) -> NodeTable:
        """Children of ``nodes`` padded to ``columns`` (default: the most children of any of them)."""
        nodes = np.asarray(nodes, np.int64)
        e = self._num_edges
        counts = self.edge_counts()
        order = np.argsort(self.edge_node[:e], kind="stable")
        starts = np.searchsorted(self.edge_node[:e][order], nodes, "left")
        stops = np.searchsorted(self.edge_node[:e][order], nodes, "right")
        width = int((stops - starts).max(initial=1)) if columns is None else columns
        if columns is not None and (stops - starts).max(initial=0) > columns:
            raise JaxalignError(f"a node has {(stops - starts).max()} children, more than columns={columns}")
        idx = np.full((len(nodes), width), -1)
        for i, (a, b) in enumerate(zip(starts, stops)):
            idx[i, : b - a] = order[a:b]
        seen = idx >= 0
        safe = np.where(seen, idx, 0)

        def take(values):
            return np.where(seen, values[safe], 0)

        visits = take(counts["visits"])
        return NodeTable(
            nodes=nodes, tokens=np.where(seen, self.edge_token[safe], -1), seen=seen,
            in_s=seen & (visits >= n_sig), visits=visits, successes=take(counts["successes"]),
            onp_visits=take(self.onp_visits[:e]), onp_successes=take(self.onp_successes[:e]),
            s=np.where(seen, counts["p_succ"][safe], 0.0),
        )

    def decision_nodes(self, n_sig: int) -> np.ndarray:
        """Nodes with >= 2 children of >= n_sig visits and an SR range > 0 over them. [D] int64."""
        table = self.node_table(np.arange(self.num_nodes), n_sig)
        sr = np.where(table.in_s, table.s, -np.inf).max(1) - np.where(table.in_s, table.s, np.inf).min(1)
        return table.nodes[(table.in_s.sum(1) >= 2) & (sr > 0)]
