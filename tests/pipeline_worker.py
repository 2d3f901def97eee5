"""A pipeline run on ExactPolicy, as a separate process (killed and restarted by the tests)."""

import sys

import numpy as np

from jaxalign.enrich import EnrichConfig
from jaxalign.exact import ExactPolicy
from jaxalign.pipeline import PipelineConfig, QuestionRun, Teacher

SMALL = PipelineConfig(num_initial=400, max_response_tokens=8, batch_rollouts=60,
                       enrich=EnrichConfig(top_k=30, top_r=30, n_min=60))


def exact_run(seed: int, run_dir, cfg: PipelineConfig = SMALL, stop=lambda: False) -> QuestionRun:
    policy = ExactPolicy(seed=seed)
    teachers = [Teacher("tilt", policy.tilted_teacher(3.0), None),
                Teacher("anti", policy.tilted_teacher(-3.0), None),
                Teacher("noise", policy.noise_teacher(1.0), None)]
    return QuestionRun(f"exact-{seed}", policy, np.zeros(1, np.int64), teachers, policy.is_success, cfg, run_dir,
                       stop=stop)


def exact_errors(run: QuestionRun, rows: list[dict], algorithm: str = "gkd",
                 convention: str = "renormalized") -> dict[str, list[float]]:
    """|cosine from the tree's estimates - cosine from exact P_succ| per teacher, on the same S_u.

    The exact cosine uses exact p, q and P_succ of the children (and, for the paper convention,
    the node's exact P_succ and full-vocabulary KL) in :func:`jaxalign.algorithms.alignments`.
    """
    from jaxalign.algorithms import alignments
    from jaxalign.alignment import NodeBatch

    policy, tree = run.student, run.tree
    teachers = {t.name: t.policy for t in run.teachers}
    errors: dict[str, list[float]] = {name: [] for name in teachers}
    for row in rows:
        if row["algorithm"] != algorithm or row.get("convention", "renormalized") != convention or not row["valid"]:
            continue
        table = tree.node_table([row["node"]], run.cfg.enrich.n_sig)
        prefix = tuple(int(t) for t in tree.prefix(row["node"]))
        tokens = np.where(table.seen, table.tokens, 0)[0]
        p_full, q_full = policy.probs(prefix), teachers[row["teacher"]].probs(prefix)
        ones = np.ones((1, len(tokens)))
        batch = NodeBatch(p=p_full[tokens][None], q=q_full[tokens][None],
                          s=policy.child_success_probs(prefix)[tokens][None], in_s=table.in_s, seen=table.seen,
                          kl_full=np.array([np.sum(p_full * (np.log(p_full) - np.log(q_full)))]),
                          onp_visits=ones, onp_successes=ones, baseline=np.array([0.5]),
                          node_success=np.array([policy.success_prob(prefix)]))
        exact = alignments(batch, (algorithm,), convention)[algorithm]
        if bool(exact["valid"][0]):
            errors[row["teacher"]].append(abs(row["cosine"] - float(exact["cosine"][0])))
    return errors


if __name__ == "__main__":
    exact_run(int(sys.argv[1]), sys.argv[2]).run()
    print("WORKER-DONE")
