"""Phase 1's state, typed: what a question has done so far, and the plan of targeted rollouts.

:class:`Phase1State` is the only place that lists the checkpointed fields. ``to_checkpoint`` and
``from_checkpoint`` derive the orbax payload (a flat dict of numpy arrays plus JSON metadata) from
the dataclass fields, so a new field is saved and restored by declaring it once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxalign.tree import RolloutTree

STAGES = ("initial", "enrich", "done")


@dataclasses.dataclass
class Plan:
    """Targeted rollouts to run: ``count[i]`` completions of prefix(node[i]) + token[i].

    node, token, count: [n] int64, sorted by node within a window.
    """

    node: np.ndarray
    token: np.ndarray
    count: np.ndarray

    @classmethod
    def empty(cls) -> "Plan":
        return cls(*(np.zeros(0, np.int64) for _ in range(3)))

    @classmethod
    def of(cls, triples) -> "Plan":
        """From (node, token, count) triples."""
        rows = np.asarray(list(triples), np.int64).reshape(-1, 3)
        return cls(rows[:, 0].copy(), rows[:, 1].copy(), rows[:, 2].copy())

    def __len__(self) -> int:
        return len(self.node)

    def __iter__(self):
        return iter(zip(self.node.tolist(), self.token.tolist(), self.count.tolist()))

    def __getitem__(self, index: slice) -> "Plan":
        return Plan(self.node[index], self.token[index], self.count[index])

    def capped(self, most: int) -> "Plan":
        """The same pairs with at most ``most`` rollouts each."""
        return Plan(self.node, self.token, np.minimum(self.count, most))


def _array(default_factory):
    return dataclasses.field(default_factory=default_factory, metadata={"kind": "array"})


def _meta(default=None, default_factory=None):
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata={"kind": "meta"})
    return dataclasses.field(default=default, metadata={"kind": "meta"})


@dataclasses.dataclass
class Phase1State:
    """Everything Phase 1 needs to resume a question bit for bit.

    init_tokens [G, width] int64 (-1 padded), init_lengths [G] int64, init_success [G] bool: the
    initial rollouts; path_rollouts [P] int64: which of them became the representative paths;
    window_pairs [n, 2] int64: the (node, token) pairs planned in the current window (adaptive
    rounds draw from them); plan: the rollouts still to run in this window, from ``plan_cursor``.
    """

    init_tokens: np.ndarray = _array(lambda: np.zeros((0, 0), np.int64))
    init_lengths: np.ndarray = _array(lambda: np.zeros(0, np.int64))
    init_success: np.ndarray = _array(lambda: np.zeros(0, bool))
    path_rollouts: np.ndarray = _array(lambda: np.zeros(0, np.int64))
    window_pairs: np.ndarray = _array(lambda: np.zeros((0, 2), np.int64))
    plan: Plan = dataclasses.field(default_factory=Plan.empty, metadata={"kind": "plan"})
    tree: Optional[RolloutTree] = dataclasses.field(default=None, metadata={"kind": "tree"})
    stage: str = _meta("initial")
    init_done: int = _meta(0)
    window: int = _meta(0)
    round: int = _meta(0)
    plan_cursor: int = _meta(0)
    budget: dict = _meta(default_factory=lambda: {"rollouts": 0, "tokens": 0, "prefills": 0, "per_window": []})
    skip_reason: Optional[str] = _meta(None)

    @classmethod
    def fresh(cls, num_initial: int, max_response_tokens: int) -> "Phase1State":
        return cls(init_tokens=np.full((num_initial, max_response_tokens), -1, np.int64),
                   init_lengths=np.zeros(num_initial, np.int64), init_success=np.zeros(num_initial, bool))

    def to_checkpoint(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, meta): a flat dict of numpy arrays and a JSON-able dict."""
        arrays, meta = {}, {"has_tree": self.tree is not None}
        for field in dataclasses.fields(self):
            value, kind = getattr(self, field.name), field.metadata["kind"]
            if kind == "array":
                arrays[field.name] = value
            elif kind == "plan":
                arrays.update({"plan/node": value.node, "plan/token": value.token, "plan/count": value.count})
            elif kind == "tree" and value is not None:
                arrays.update({"tree/" + k: v for k, v in value.to_pytree().items()})
            elif kind == "meta":
                meta[field.name] = value
        return arrays, meta

    @classmethod
    def from_checkpoint(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "Phase1State":
        values = {}
        for field in dataclasses.fields(cls):
            kind = field.metadata["kind"]
            if kind == "array":
                values[field.name] = arrays[field.name]
            elif kind == "plan":
                if "plan" in arrays:  # checkpoints written before Plan was typed: an [n, 3] array
                    values["plan"] = Plan.of(arrays["plan"].reshape(-1, 3))
                else:
                    values["plan"] = Plan(*(arrays[f"plan/{k}"].astype(np.int64) for k in ("node", "token", "count")))
            elif kind == "tree" and meta["has_tree"]:
                values["tree"] = RolloutTree.from_pytree({k[5:]: v for k, v in arrays.items() if k.startswith("tree/")})
            elif kind == "meta":
                values[field.name] = meta[field.name]
        state = cls(**values)
        state.init_success = state.init_success.astype(bool)
        state.window_pairs = state.window_pairs.reshape(-1, 2)
        return state
