"""Phase 1 (teacher-independent tree) and Phase 2 (per-teacher alignment) for one question.

Phase 1, a resumable state machine checkpointed after every rollout batch:
  initial     G rollouts from the prompt, ``batch_rollouts`` at a time
  paths       2 correct + 2 incorrect rollouts chosen (seeded); the skeleton tree is built
  enrich      per depth window: plan (node, token) pairs, then targeted rollouts batch by batch
Phase 2: student and teacher distributions at the decision nodes of every path, the alignment
kernel, and one row per (path, node, teacher, algorithm).

Every random key is ``fold_in`` of (seed, question, stage, counter), so a resumed run is bit for
bit the run that was never interrupted. Results are written once, atomically; a finished question
is never recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from jaxalign import algorithms as algos
from jaxalign.checkpoint import QuestionCheckpoints
from jaxalign.config import BudgetConf, TOPK_GKD_K
from jaxalign.engine.scoring import DEFAULT_SCORE_CHUNK
from jaxalign.enrich import Candidates, EnrichConfig, children_to_enrich, depth_windows, plan_window
from jaxalign.errors import ConfigError
from jaxalign.files import atomic_write, write_json
from jaxalign.integrity import QuestionLock, damage, manifest_path, write_manifest
from jaxalign.pipeline.candidates import skeleton_candidates
from jaxalign.pipeline.phase2 import CHILD_SCHEMA, Rollouts, score_paths, write_rows
from jaxalign.pipeline.state import Phase1State, Plan
from jaxalign.policy import Policy
from jaxalign.tree import RolloutTree

log = logging.getLogger(__name__)


class Preempted(Exception):
    """Raised at a safe point (after a checkpoint) when a stop was requested."""


_BUDGET = BudgetConf()  # the one place budget defaults live


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """One question's settings. Budget sizes default to :class:`jaxalign.config.BudgetConf`'s."""

    num_initial: int = _BUDGET.num_initial  # G
    paths_correct: int = 2
    paths_incorrect: int = 2
    max_response_tokens: int = _BUDGET.max_response_tokens
    batch_rollouts: int = _BUDGET.batch_rollouts
    temperature: float = 1.0  # the student's sampling temperature; the gradients assume 1
    include_path_rollout: bool = False
    count_ancestors: bool = False
    seed: int = 0
    score_chunk: int = DEFAULT_SCORE_CHUNK  # positions projected onto the vocabulary at a time
    algorithms: tuple[str, ...] = algos.DEFAULT  # built-in names or import paths (jaxalign.algorithms)
    conventions: tuple[str, ...] = algos.CONVENTIONS
    topk_gkd_k: int = TOPK_GKD_K  # top-k GKD's k (used only when topk_gkd is among the algorithms)
    enrich: EnrichConfig = EnrichConfig()

    def __post_init__(self):
        algos.check(self.algorithms, self.conventions)
        if self.temperature != 1.0:
            # P_succ, the on-policy counts and every gradient are those of the student at T = 1;
            # samples at T != 1 would estimate another policy's success behind each token
            raise ConfigError(f"temperature={self.temperature}: Phase 1 samples the student at temperature 1, "
                              "the policy whose gradients are compared; remove the setting")


@dataclasses.dataclass
class Teacher:
    """A teacher: a policy and the prompt it sees (self-distillation: the student with a context)."""

    name: str
    policy: Policy
    prompt: np.ndarray


def question_key(seed: int, qid: str, *path: int) -> jax.Array:
    """The PRNG key for (seed, question, stage, counter...): a fold_in chain, never a split stream."""
    key = jax.random.fold_in(jax.random.key(seed), int.from_bytes(hashlib.sha256(qid.encode()).digest()[:4], "little"))
    for p in path:
        key = jax.random.fold_in(key, p)
    return key


class QuestionRun:
    """Runs (or resumes) one question. ``grade(response_tokens) -> bool``; ``stop()`` -> bool asks
    for a clean stop at the next safe point; ``notes`` are added to the question's summary (e.g. the
    teachers excluded for it, and why)."""

    def __init__(self, qid: str, student: Policy, prompt: np.ndarray, teachers: Sequence[Teacher],
                 grade: Callable[[np.ndarray], bool], cfg: PipelineConfig, run_dir: str | Path,
                 stop: Callable[[], bool] = lambda: False, progress=None, notes: Optional[dict] = None):
        self.qid, self.student, self.prompt = qid, student, np.asarray(prompt)
        self.teachers, self.grade, self.cfg = list(teachers), grade, cfg
        self.run_dir = Path(run_dir)
        self.stop, self.progress = stop, progress
        self.ckpt: Optional[QuestionCheckpoints] = None  # opened by _compute, under the question's lock
        self.step = 0
        self.state = Phase1State.fresh(cfg.num_initial, cfg.max_response_tokens)
        self.timings: dict[str, float] = {}
        self.notes = dict(notes or {})

    @property
    def tree(self) -> Optional[RolloutTree]:
        return self.state.tree

    # --------------------------------------------------------------------------- state
    def _save(self) -> None:
        self.step += 1
        self.ckpt.save(self.step, *self.state.to_checkpoint())
        if self.stop():
            self.ckpt.wait()
            raise Preempted(f"{self.qid}: stopped after checkpoint {self.step}")

    def _restore(self) -> bool:
        found = self.ckpt.restore_latest()
        if found is None:
            return False
        self.step, arrays, meta = found
        self.state = Phase1State.from_checkpoint(arrays, meta)
        log.info("%s: resumed from checkpoint %d (stage %s)", self.qid, self.step, self.state.stage)
        return True

    # --------------------------------------------------------------------------- phase 1
    def _rollouts(self, prefixes: list[np.ndarray], counts: list[int], key) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples, truncates each row to the response limit, grades. Returns (tokens, lengths, success)."""
        out = self.student.sample(self.prompt, prefixes, counts, max(1, self.cfg.max_response_tokens - min(map(len, prefixes))),
                                  self.cfg.temperature, key)
        limits = np.array([self.cfg.max_response_tokens - len(prefixes[i]) for i in out.prefix_index])
        lengths = np.minimum(out.lengths, np.maximum(limits, 0))
        tokens = np.where(np.arange(out.tokens.shape[1]) < lengths[:, None], out.tokens, -1)
        success = np.array([self.grade(np.concatenate([prefixes[i], row[:n]]))
                            for i, row, n in zip(out.prefix_index, tokens, lengths)])
        budget = self.state.budget
        budget["rollouts"] += int(len(tokens))
        budget["tokens"] += int(lengths.sum())
        budget["prefills"] += len(prefixes)
        return tokens, lengths, success

    def _initial(self) -> None:
        st, g = self.state, self.cfg.num_initial
        while st.init_done < g:
            n = min(self.cfg.batch_rollouts, g - st.init_done)
            key = question_key(self.cfg.seed, self.qid, 0, st.init_done)
            tokens, lengths, success = self._rollouts([np.zeros(0, np.int64)], [n], key)
            sl = slice(st.init_done, st.init_done + n)
            width = min(tokens.shape[1], st.init_tokens.shape[1])
            st.init_tokens[sl, :width] = tokens[:, :width]
            st.init_lengths[sl], st.init_success[sl] = lengths, success
            st.init_done += n
            self._tick(n)
            self._save()
        self._choose_paths()
        if st.skip_reason is None:
            st.stage = "enrich"
        self._save()

    def _choose_paths(self) -> None:
        st = self.state
        ok = st.init_success
        order = np.asarray(jax.random.permutation(question_key(self.cfg.seed, self.qid, 1), len(ok)))
        correct = [i for i in order if ok[i]][: self.cfg.paths_correct]
        wrong = [i for i in order if not ok[i]][: self.cfg.paths_incorrect]
        if not correct or not wrong:
            st.skip_reason = f"all {len(ok)} initial rollouts are {'correct' if ok.all() else 'wrong'}"
            st.stage = "done"
            return
        chosen = np.array(correct + wrong, np.int64)
        st.path_rollouts = chosen
        paths = [st.init_tokens[i, : st.init_lengths[i]] for i in chosen]
        st.tree = RolloutTree.from_paths(paths, ok[chosen])
        exclude = np.zeros(len(ok), bool)
        if not self.cfg.include_path_rollout:
            exclude[chosen] = True
        st.tree.add_rollouts(st.init_tokens, st.init_lengths, ok, exclude=exclude)

    def _enrich(self) -> None:
        """Per depth window: plan, then targeted rollouts batch by batch; in adaptive mode, further
        rounds for pairs whose node's alignment sign is not settled yet."""
        st, ecfg = self.state, self.cfg.enrich
        windows = depth_windows(int(st.tree.path_length.max()), ecfg.first_window, ecfg.window_growth)
        cands = (skeleton_candidates(st.tree, self.student, self.prompt, self.teachers, ecfg.tau, self.cfg.score_chunk)
                 if self.teachers else None)
        while st.window < len(windows):
            if len(st.plan) == 0 and cands is not None:
                planned = Plan.of(plan_window(st.tree, cands, windows[st.window], ecfg))
                st.window_pairs = np.stack([planned.node, planned.token], axis=1)
                st.plan = planned.capped(ecfg.adaptive_step) if ecfg.adaptive else planned
                st.plan_cursor, st.round = 0, 0
                st.budget["per_window"].append({"window": list(windows[st.window]), "pairs": len(st.plan)})
            self._run_plan()
            following = self._next_round(cands) if ecfg.adaptive and len(st.plan) else Plan.empty()
            if len(following):
                st.plan, st.plan_cursor, st.round = following, 0, st.round + 1
                continue
            st.window, st.plan_cursor, st.plan = st.window + 1, 0, Plan.empty()
        st.stage = "done"
        self._save()

    def _run_plan(self) -> None:
        """Executes the plan from ``plan_cursor``, in batches of at most batch_rollouts rollouts."""
        st = self.state
        while st.plan_cursor < len(st.plan):
            end, total = st.plan_cursor, 0
            while end < len(st.plan) and (end == st.plan_cursor or total + st.plan.count[end] <= self.cfg.batch_rollouts):
                total += int(st.plan.count[end])
                end += 1
            batch = st.plan[st.plan_cursor: end]
            prefixes = [np.append(st.tree.prefix(u), k) for u, k, _ in batch]
            key = question_key(self.cfg.seed, self.qid, 2, st.window, st.round, st.plan_cursor)
            tokens, lengths, success = self._rollouts(prefixes, batch.count.tolist(), key)
            first = 0
            for u, k, n in batch:
                sl = slice(first, first + n)
                st.tree.add_rollouts(tokens[sl], lengths[sl], success[sl], start=(u, k),
                                     count_ancestors=self.cfg.count_ancestors)
                first += n
            st.plan_cursor = end
            st.budget["per_window"][-1]["rollouts"] = st.budget["per_window"][-1].get("rollouts", 0) + total
            self._tick(total)
            self._save()

    def _next_round(self, cands: Candidates) -> Plan:
        """Adaptive mode: the window's pairs that the adaptive rule (:func:`children_to_enrich`)
        still wants, below adaptive_max visits. A pair below N_sig is always wanted: its node's
        rule cannot see it yet."""
        st, ecfg = self.state, self.cfg.enrich
        counts = st.tree.edge_counts()
        wanted: set[tuple[int, int]] = set()
        for u in np.unique(st.window_pairs[:, 0]):
            at = np.flatnonzero(cands.node == u)
            tokens = cands.token[at]
            edges = st.tree.edges(np.full(len(at), u), tokens)
            in_s = (edges >= 0) & (counts["visits"][edges] >= ecfg.n_sig)
            if in_s.sum() < 2:
                more = np.ones(len(at), bool)
            else:
                e = edges[in_s]
                more = ~in_s
                more[in_s] = children_to_enrich(cands.p[at][in_s], cands.q[:, at][:, in_s], counts["successes"][e],
                                                counts["visits"][e], ecfg)
            wanted |= {(int(u), int(t)) for t in tokens[more]}
        have = st.tree.visits(st.window_pairs[:, 0], st.window_pairs[:, 1])
        return Plan.of((int(u), int(k), min(ecfg.adaptive_step, ecfg.adaptive_max - int(n)))
                       for (u, k), n in zip(st.window_pairs, have) if (int(u), int(k)) in wanted and n < ecfg.adaptive_max)

    def _stored_rollouts(self) -> Rollouts:
        """The initial rollouts as the counts saw them (the paths' own left out unless included)."""
        st = self.state
        counted = np.arange(len(st.init_lengths)) < st.init_done
        if not self.cfg.include_path_rollout:
            counted[st.path_rollouts] = False
        return Rollouts(st.init_tokens, st.init_lengths, counted)

    def _tick(self, n: int) -> None:
        if self.progress is not None:
            st = self.state
            phase = "initial" if st.stage == "initial" else f"enrich w{st.window} r{st.round}"
            self.progress.set_description(f"{self.qid} {phase}", refresh=False)
            self.progress.update(n)

    # --------------------------------------------------------------------------- entry point
    def result_paths(self) -> tuple[Path, Path, Path, Path]:
        """questions/<qid>.parquet, .json, .tree.npz and .children.parquet."""
        base = self.run_dir / "questions" / _safe(self.qid)
        return tuple(base.with_name(base.name + suffix)
                     for suffix in (".parquet", ".json", ".tree.npz", ".children.parquet"))

    def run(self) -> Optional[dict]:
        """Runs to completion (resuming if possible); returns the question summary.

        Returns None, having done nothing, when another process holds the question's lock. A
        question counts as finished only when its manifest and files check out
        (:mod:`jaxalign.integrity`); otherwise it is recomputed, from its checkpoints where they are.
        """
        parquet, summary_path, tree_path, children_path = self.result_paths()
        base = self.run_dir / "questions" / _safe(self.qid)
        lock = QuestionLock(base.with_name(base.name + ".lock"))
        if not lock.acquire():
            log.warning("%s: skipped here: another process is working on it (%s is locked)", self.qid, lock.path)
            return None
        with lock:
            problem = damage(base)
            if problem is None:
                return json.loads(summary_path.read_text())
            if any(p.exists() for p in (parquet, summary_path, tree_path, children_path, manifest_path(base))):
                log.warning("%s: %s; recomputing the question (from its checkpoints where they are)", self.qid, problem)
            return self._compute(base)

    def _compute(self, base: Path) -> dict:
        parquet, summary_path, tree_path, children_path = self.result_paths()
        start = time.time()
        # Opened only under the lock: orbax lists and stats the steps when it opens a directory, and a
        # process that holds the lock may be saving and pruning them (max_to_keep) meanwhile.
        self.ckpt = QuestionCheckpoints(self.run_dir / "ckpt" / _safe(self.qid))
        try:
            rows, children = self._phases(start)
        finally:
            self.ckpt.close()  # whatever stopped the work, no async save outlives the lock
        st = self.state
        for stale in (parquet, summary_path, tree_path, children_path, manifest_path(base)):
            stale.unlink(missing_ok=True)  # a damaged set is replaced whole; the manifest comes last
        atomic_write(parquet, lambda p: write_rows(rows, p))
        written = [parquet, summary_path]
        if children:
            atomic_write(children_path, lambda p: write_rows(children, p, CHILD_SCHEMA))
            written.append(children_path)
        if st.tree is not None:
            atomic_write(tree_path, lambda p: _write_npz(st.tree.to_pytree(), p))
            written.append(tree_path)
        decision_nodes = int(len(st.tree.decision_nodes(self.cfg.enrich.n_sig))) if st.tree else 0
        status = "skipped" if st.skip_reason else ("analysed" if decision_nodes else "no decision nodes")
        summary = {"qid": self.qid, "status": status, "skipped": st.skip_reason is not None,
                   "skip_reason": st.skip_reason, "pass_rate": float(st.init_success.mean()), "budget": st.budget,
                   "rows": len(rows), "decision_nodes": decision_nodes, "timings": self.timings, **self.notes}
        write_json(summary_path, summary)
        write_manifest(base, written)
        return summary

    def _phases(self, start: float) -> tuple[list[dict], list[dict]]:
        """Phase 1 (resumed from the newest checkpoint) and Phase 2: (rows, children)."""
        self._restore()
        st = self.state
        if st.stage == "initial":
            self._initial()
        self.timings["phase1_initial_s"] = round(time.time() - start, 3)
        if st.stage == "enrich":
            self._enrich()
        self.timings["phase1_s"] = round(time.time() - start, 3)
        children: list[dict] = []
        rows = [] if st.skip_reason else score_paths(
            self.qid, st.tree, self.student, self.prompt, self.teachers, self.cfg.enrich.n_sig,
            float(st.init_success.mean()), self.cfg.score_chunk, self.cfg.algorithms, self.cfg.conventions,
            self._stored_rollouts(), children, topk_k=self.cfg.topk_gkd_k)
        self.timings["total_s"] = round(time.time() - start, 3)
        return rows, children


def _write_npz(arrays: dict, path: Path) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a path
        np.savez(f, **arrays)


def _safe(qid: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in qid)
