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

from jaxalign.alignment import NodeBatch, algorithm_alignment, node_alignment
from jaxalign.checkpoint import QuestionCheckpoints
from jaxalign.engine.sampling import bucket
from jaxalign.engine.scoring import compare
from jaxalign.enrich import Candidates, EnrichConfig, children_to_enrich, depth_windows, plan_window
from jaxalign.files import atomic_write, write_json
from jaxalign.policy import Policy
from jaxalign.tree import RolloutTree

log = logging.getLogger(__name__)
ROW_ALGORITHMS = ("gkd", "gkd_full", "single_sample_mc", "drgrpo_mc")


class Preempted(Exception):
    """Raised at a safe point (after a checkpoint) when a stop was requested."""


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    num_initial: int = 200  # G
    paths_correct: int = 2
    paths_incorrect: int = 2
    max_response_tokens: int = 256
    batch_rollouts: int = 256
    temperature: float = 1.0
    include_path_rollout: bool = False
    count_ancestors: bool = False
    seed: int = 0
    enrich: EnrichConfig = EnrichConfig()


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
    for a clean stop at the next safe point."""

    def __init__(self, qid: str, student: Policy, prompt: np.ndarray, teachers: Sequence[Teacher],
                 grade: Callable[[np.ndarray], bool], cfg: PipelineConfig, run_dir: str | Path,
                 stop: Callable[[], bool] = lambda: False, progress=None):
        self.qid, self.student, self.prompt = qid, student, np.asarray(prompt)
        self.teachers, self.grade, self.cfg = list(teachers), grade, cfg
        self.run_dir = Path(run_dir)
        self.stop, self.progress = stop, progress
        self.ckpt = QuestionCheckpoints(self.run_dir / "ckpt" / _safe(qid))
        self.step = 0
        self.timings: dict[str, float] = {}

    # --------------------------------------------------------------------------- state
    def _fresh_state(self) -> None:
        g, width = self.cfg.num_initial, self.cfg.max_response_tokens
        self.stage = "initial"
        self.init_tokens = np.full((g, width), -1, np.int64)
        self.init_lengths = np.zeros(g, np.int64)
        self.init_success = np.zeros(g, bool)
        self.init_done = 0
        self.tree: Optional[RolloutTree] = None
        self.path_rollouts = np.zeros(0, np.int64)
        self.window, self.plan, self.plan_cursor, self.round = 0, np.zeros((0, 3), np.int64), 0, 0
        self.window_pairs = np.zeros((0, 2), np.int64)
        self.budget = {"rollouts": 0, "tokens": 0, "prefills": 0, "per_window": []}
        self.skip_reason: Optional[str] = None

    def _save(self) -> None:
        self.step += 1
        arrays = {"init_tokens": self.init_tokens, "init_lengths": self.init_lengths,
                  "init_success": self.init_success, "path_rollouts": self.path_rollouts, "plan": self.plan,
                  "window_pairs": self.window_pairs}
        if self.tree is not None:
            arrays.update({"tree/" + k: v for k, v in self.tree.to_pytree().items()})
        meta = {"stage": self.stage, "init_done": self.init_done, "window": self.window, "round": self.round,
                "plan_cursor": self.plan_cursor, "budget": self.budget, "skip_reason": self.skip_reason,
                "has_tree": self.tree is not None}
        self.ckpt.save(self.step, arrays, meta)
        if self.stop():
            self.ckpt.wait()
            raise Preempted(f"{self.qid}: stopped after checkpoint {self.step}")

    def _restore(self) -> bool:
        found = self.ckpt.restore_latest()
        if found is None:
            return False
        self.step, arrays, meta = found
        self.stage, self.init_done, self.window = meta["stage"], meta["init_done"], meta["window"]
        self.plan_cursor, self.budget, self.skip_reason = meta["plan_cursor"], meta["budget"], meta["skip_reason"]
        self.init_tokens, self.init_lengths = arrays["init_tokens"], arrays["init_lengths"]
        self.init_success, self.path_rollouts = arrays["init_success"].astype(bool), arrays["path_rollouts"]
        self.plan = arrays["plan"].reshape(-1, 3)
        self.window_pairs, self.round = arrays["window_pairs"].reshape(-1, 2), meta["round"]
        tree = {k[5:]: v for k, v in arrays.items() if k.startswith("tree/")}
        self.tree = RolloutTree.from_pytree(tree) if meta["has_tree"] else None
        log.info("%s: resumed from checkpoint %d (stage %s)", self.qid, self.step, self.stage)
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
        self.budget["rollouts"] += int(len(tokens))
        self.budget["tokens"] += int(lengths.sum())
        self.budget["prefills"] += len(prefixes)
        return tokens, lengths, success

    def _initial(self) -> None:
        g = self.cfg.num_initial
        while self.init_done < g:
            n = min(self.cfg.batch_rollouts, g - self.init_done)
            key = question_key(self.cfg.seed, self.qid, 0, self.init_done)
            tokens, lengths, success = self._rollouts([np.zeros(0, np.int64)], [n], key)
            sl = slice(self.init_done, self.init_done + n)
            width = min(tokens.shape[1], self.init_tokens.shape[1])
            self.init_tokens[sl, :width] = tokens[:, :width]
            self.init_lengths[sl], self.init_success[sl] = lengths, success
            self.init_done += n
            self._tick(n)
            self._save()
        self._choose_paths()
        if self.skip_reason is None:
            self.stage = "enrich"
        self._save()

    def _choose_paths(self) -> None:
        ok = self.init_success
        order = np.asarray(jax.random.permutation(question_key(self.cfg.seed, self.qid, 1), len(ok)))
        correct = [i for i in order if ok[i]][: self.cfg.paths_correct]
        wrong = [i for i in order if not ok[i]][: self.cfg.paths_incorrect]
        if not correct or not wrong:
            self.skip_reason = f"all {len(ok)} initial rollouts are {'correct' if ok.all() else 'wrong'}"
            self.stage = "done"
            return
        chosen = np.array(correct + wrong, np.int64)
        self.path_rollouts = chosen
        paths = [self.init_tokens[i, : self.init_lengths[i]] for i in chosen]
        self.tree = RolloutTree.from_paths(paths, ok[chosen])
        exclude = np.zeros(len(ok), bool)
        if not self.cfg.include_path_rollout:
            exclude[chosen] = True
        self.tree.add_rollouts(self.init_tokens, self.init_lengths, ok, exclude=exclude)

    def _candidates(self) -> Candidates:
        """Student and teacher distributions at every skeleton node (for ranking)."""
        tree = self.tree
        p_full, q_full, nodes, seen = [], [[] for _ in self.teachers], [], set()
        for path in range(tree.num_paths):  # each shared-prefix node is scored once, on its first path
            length = int(tree.a["path_length"][path])
            path_nodes = tree.a["path_nodes"][path, :length]
            fresh = [d for d in range(length) if int(path_nodes[d]) not in seen]
            if not fresh:
                continue
            response = tree.a["path_tokens"][path, :length]
            positions = np.array(fresh)
            nodes.extend(int(path_nodes[d]) for d in fresh)
            seen.update(nodes[-len(fresh):])
            p_full.append(np.exp(self.student.next_token_logprobs(self.prompt, response, positions)))
            for t, teacher in enumerate(self.teachers):
                q_full[t].append(np.exp(teacher.policy.next_token_logprobs(teacher.prompt, response, positions)))
        return Candidates.from_distributions(nodes, np.concatenate(p_full),
                                             np.stack([np.concatenate(q) for q in q_full]), self.cfg.enrich.tau)

    def _enrich(self) -> None:
        """Per depth window: plan, then targeted rollouts batch by batch; in adaptive mode, further
        rounds for pairs whose node's alignment sign is not settled yet."""
        ecfg = self.cfg.enrich
        windows = depth_windows(int(self.tree.a["path_length"].max()), ecfg.first_window, ecfg.window_growth)
        cands = self._candidates() if self.teachers else None
        while self.window < len(windows):
            if len(self.plan) == 0 and cands is not None:
                planned = plan_window(self.tree, cands, windows[self.window], ecfg)
                self.window_pairs = np.array([(u, k) for u, k, _ in planned], np.int64).reshape(-1, 2)
                if ecfg.adaptive:
                    planned = [(u, k, min(need, ecfg.adaptive_step)) for u, k, need in planned]
                self.plan, self.plan_cursor, self.round = np.array(planned, np.int64).reshape(-1, 3), 0, 0
                self.budget["per_window"].append({"window": list(windows[self.window]), "pairs": int(len(self.plan))})
            self._run_plan()
            following = self._next_round(cands) if ecfg.adaptive and len(self.plan) else np.zeros((0, 3), np.int64)
            if len(following):
                self.plan, self.plan_cursor, self.round = following, 0, self.round + 1
                continue
            self.window, self.plan_cursor, self.plan = self.window + 1, 0, np.zeros((0, 3), np.int64)
        self.stage = "done"
        self._save()

    def _run_plan(self) -> None:
        """Executes self.plan from self.plan_cursor, in batches of at most batch_rollouts rollouts."""
        while self.plan_cursor < len(self.plan):
            batch, total = [], 0
            while self.plan_cursor + len(batch) < len(self.plan) and (
                    not batch or total + self.plan[self.plan_cursor + len(batch), 2] <= self.cfg.batch_rollouts):
                batch.append(self.plan[self.plan_cursor + len(batch)])
                total += int(batch[-1][2])
            prefixes = [np.append(self.tree.prefix(u), k) for u, k, _ in batch]
            key = question_key(self.cfg.seed, self.qid, 2, self.window, self.round, self.plan_cursor)
            tokens, lengths, success = self._rollouts(prefixes, [int(n) for _, _, n in batch], key)
            first = 0
            for (u, k, n) in batch:
                sl = slice(first, first + int(n))
                self.tree.add_rollouts(tokens[sl], lengths[sl], success[sl], start=(int(u), int(k)),
                                       count_ancestors=self.cfg.count_ancestors)
                first += int(n)
            self.plan_cursor += len(batch)
            self.budget["per_window"][-1]["rollouts"] = self.budget["per_window"][-1].get("rollouts", 0) + total
            self._tick(total)
            self._save()

    def _next_round(self, cands: Candidates) -> np.ndarray:
        """Adaptive mode: (node, token, rollouts) for the window's pairs that the adaptive rule
        (:func:`children_to_enrich`) still wants, below adaptive_max visits. A pair below N_sig
        is always wanted: its node's rule cannot see it yet."""
        ecfg = self.cfg.enrich
        counts = self.tree.edge_counts()
        wanted: set[tuple[int, int]] = set()
        for u in np.unique(self.window_pairs[:, 0]):
            at = np.flatnonzero(cands.node == u)
            tokens = cands.token[at]
            edges = self.tree.edges(np.full(len(at), u), tokens)
            in_s = (edges >= 0) & (counts["visits"][edges] >= ecfg.n_sig)
            if in_s.sum() < 2:
                more = np.ones(len(at), bool)
            else:
                e = edges[in_s]
                more = ~in_s
                more[in_s] = children_to_enrich(cands.p[at][in_s], cands.q[:, at][:, in_s], counts["successes"][e],
                                                counts["visits"][e], ecfg)
            wanted |= {(int(u), int(t)) for t in tokens[more]}
        have = self.tree.visits(self.window_pairs[:, 0], self.window_pairs[:, 1])
        out = [(int(u), int(k), min(ecfg.adaptive_step, ecfg.adaptive_max - int(n)))
               for (u, k), n in zip(self.window_pairs, have) if (int(u), int(k)) in wanted and n < ecfg.adaptive_max]
        return np.array(out, np.int64).reshape(-1, 3)

    def _tick(self, n: int) -> None:
        if self.progress is not None:
            phase = "initial" if self.stage == "initial" else f"enrich w{self.window} r{self.round}"
            self.progress.set_description(f"{self.qid} {phase}", refresh=False)
            self.progress.update(n)

    # --------------------------------------------------------------------------- phase 2
    def _score(self) -> list[dict]:
        tree, ecfg = self.tree, self.cfg.enrich
        decision = set(tree.decision_nodes(ecfg.n_sig).tolist())
        rows = []
        pass_rate = float(self.init_success.mean())
        for path in range(tree.num_paths):
            length = int(tree.a["path_length"][path])
            depths = [d for d in range(length) if int(tree.a["path_nodes"][path, d]) in decision]
            if not depths:
                continue
            count = len(depths)
            # the jitted kernels see [bucket(M), bucket(K)] batches: padded rows repeat the last node
            # and are sliced off below, so compiles stay bounded across paths and questions
            positions = np.array(depths + [depths[-1]] * (bucket(count, 8) - count))
            nodes = tree.a["path_nodes"][path, positions]
            response = tree.a["path_tokens"][path, :length]
            widest = tree.node_table(nodes, ecfg.n_sig).tokens.shape[1]
            table = tree.node_table(nodes, ecfg.n_sig, columns=bucket(widest, 4))
            safe = np.where(table.seen, table.tokens, 0)
            logp = self.student.next_token_logprobs(self.prompt, response, positions)
            for teacher in self.teachers:
                logq = teacher.policy.next_token_logprobs(teacher.prompt, response, positions)
                cmp = {k: np.asarray(v, np.float64) for k, v in compare(logp, logq, safe).items()}
                p, q, kl = cmp["p_at"], cmp["q_at"], cmp["kl"]
                js, l2, cos_pq = cmp["js"], cmp["l2"], cmp["cos"]
                batch = NodeBatch(p=p, q=q, s=table.s, in_s=table.in_s, seen=table.seen, kl_full=kl,
                                  onp_visits=table.onp_visits.astype(np.float64),
                                  onp_successes=table.onp_successes.astype(np.float64),
                                  baseline=np.full(len(nodes), pass_rate))
                renorm = algorithm_alignment(batch, restrict="renormalize")
                full = node_alignment(p, q, table.s, table.in_s, restrict="full", kl_full=kl)
                results = {"gkd": renorm["gkd"], "gkd_full": full, "single_sample_mc": renorm["single_sample_mc"],
                           "drgrpo_mc": renorm["drgrpo_mc"]}
                node_stats = renorm["node"]
                for i, d in enumerate(depths):  # the first `count` rows; the rest is padding
                    for algo in ROW_ALGORITHMS:
                        r = results[algo]
                        rows.append({
                            "qid": self.qid, "path": path, "correct": bool(tree.a["path_correct"][path]),
                            "depth": d, "norm_depth": d / max(length - 1, 1), "token": int(response[d]),
                            "node": int(nodes[i]), "teacher": teacher.name, "algorithm": algo,
                            "s_u_size": int(table.in_s[i].sum()), "sr_range": float(node_stats["sr_range"][i]),
                            "cosine": float(r["cosine"][i]), "valid": bool(r["valid"][i]),
                            "advantage": float(node_stats["advantage"][i]), "kl": float(kl[i]), "js": float(js[i]),
                            "l2": float(l2[i]), "cos_pq": float(cos_pq[i]), "visits": int(table.visits[i].sum()),
                        })
        return rows

    # --------------------------------------------------------------------------- entry point
    def result_paths(self) -> tuple[Path, Path, Path]:
        base = self.run_dir / "questions" / _safe(self.qid)
        return base.with_suffix(".parquet"), base.with_suffix(".json"), base.with_suffix(".tree.npz")

    def run(self) -> dict:
        """Runs to completion (resuming if possible); returns the question summary."""
        parquet, summary_path, tree_path = self.result_paths()
        if summary_path.is_file():
            return json.loads(summary_path.read_text())
        start = time.time()
        if not self._restore():
            self._fresh_state()
        if self.stage == "initial":
            self._initial()
        self.timings["phase1_initial_s"] = round(time.time() - start, 3)
        if self.stage == "enrich":
            self._enrich()
        self.timings["phase1_s"] = round(time.time() - start, 3)
        rows = [] if self.skip_reason else self._score()
        self.timings["total_s"] = round(time.time() - start, 3)
        self.ckpt.close()
        atomic_write(parquet, lambda p: _write_parquet(rows, p))
        if self.tree is not None:
            atomic_write(tree_path, lambda p: _write_npz(self.tree.to_pytree(), p))
        summary = {"qid": self.qid, "skipped": self.skip_reason is not None, "skip_reason": self.skip_reason,
                   "pass_rate": float(self.init_success.mean()), "budget": self.budget, "rows": len(rows),
                   "decision_nodes": int(len(self.tree.decision_nodes(self.cfg.enrich.n_sig))) if self.tree else 0,
                   "timings": self.timings}
        write_json(summary_path, summary)
        return summary


def _write_npz(arrays: dict, path: Path) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a path
        np.savez(f, **arrays)


def _write_parquet(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ["qid", "path", "correct", "depth", "norm_depth", "token", "node", "teacher", "algorithm", "s_u_size",
               "sr_range", "cosine", "valid", "advantage", "kl", "js", "l2", "cos_pq", "visits"]
    table = pa.table({c: [r[c] for r in rows] for c in columns}) if rows else pa.table({c: [] for c in columns})
    pq.write_table(table, path)


def _safe(qid: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in qid)
