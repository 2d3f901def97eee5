"""Bias of the two counting-rule options on ExactPolicy (docs/design.md, "The tree": counting rules).

    python bench/counting_rules.py [--quick]

* count_ancestors: targeted rollouts also counted at their launch node's ancestors (the paper's
  wording). Reported: mean |P̂ - P| and 99%-interval coverage of the truth on edges with >= 100
  visits, and GKD-alignment error against exact alignment at decision nodes.
* include_path_rollout: a representative path's own rollout (chosen BY its outcome) counted at
  its own nodes. Reported: mean signed error of P̂ on path edges, for correct and incorrect paths.
Same seeds and rollouts for both settings of each option, so differences are the option's alone.
"""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _common import parser, report  # noqa: E402

from jaxalign.exact import ExactPolicy  # noqa: E402
from jaxalign.tree import wilson_interval  # noqa: E402
from tests.exact_helpers import alignment_at, build_tree  # noqa: E402


def edge_truth(tree, policy):
    return np.array([
        policy.success_prob(tuple(int(t) for t in tree.prefix(tree.edge_node[e])) + (int(tree.edge_token[e]),))
        for e in range(tree.num_edges)
    ])


def main():
    args = parser(__doc__).parse_args()
    seeds = range(4) if args.quick else range(16)
    rows = {"ancestors": {False: [], True: []}, "path": {False: [], True: []}}
    for seed in seeds:
        policy = ExactPolicy(seed=seed)
        teacher = policy.noise_teacher(1.0)
        for flag in (False, True):
            b = build_tree(policy, seed, n_initial=1000, n_min=100, count_ancestors=flag)
            c, truth = b.tree.edge_counts(), edge_truth(b.tree, policy)
            low, high = wilson_interval(c["successes"], c["visits"], 2.5758)
            enough = c["visits"] >= 100
            est, valid, nodes, in_s = alignment_at(b, teacher)
            exact, valid_exact, _, _ = alignment_at(b, teacher, nodes=nodes, in_s=in_s, exact=True)
            rows["ancestors"][flag].append((
                np.abs(c["p_succ"] - truth)[enough], ((truth >= low) & (truth <= high))[enough],
                np.abs(est - exact)[valid & valid_exact],
            ))
            # include_path_rollout: n_min = 0, so path edges keep their on-policy counts only
            b = build_tree(policy, seed, n_initial=200, n_min=0, include_path_rollout=flag)
            c, truth = b.tree.edge_counts(), edge_truth(b.tree, policy)
            tree = b.tree
            for p in range(tree.num_paths):
                edges = tree.path_edges[p, : tree.path_length[p]]
                visited = c["visits"][edges] >= 1
                rows["path"][flag].append((bool(tree.path_correct[p]), (c["p_succ"] - truth)[edges][visited]))
    figures = {"seeds": len(seeds)}
    for flag in (False, True):
        err, cover, align = (np.concatenate([r[i] for r in rows["ancestors"][flag]]) for i in range(3))
        figures[f"count_ancestors={flag}"] = {
            "edges": int(len(err)), "mean_abs_p_succ_error": float(err.mean()),
            "coverage_99": float(cover.mean()), "alignment_mae": float(align.mean()),
        }
        for correct in (True, False):
            signed = np.concatenate([e for c_, e in rows["path"][flag] if c_ == correct])
            figures[f"include_path_rollout={flag}"] = figures.get(f"include_path_rollout={flag}", {})
            figures[f"include_path_rollout={flag}"]["correct" if correct else "incorrect"] = {
                "path_edges": int(len(signed)), "mean_signed_p_succ_error": float(signed.mean()),
                "stderr": float(signed.std(ddof=1) / np.sqrt(len(signed))),
            }
    report("counting_rules", figures)


if __name__ == "__main__":
    main()
