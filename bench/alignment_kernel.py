"""Throughput of the jit/vmap alignment kernel against a per-node NumPy loop.

    python bench/alignment_kernel.py [--quick]

Both compute, per node, the ideal and GKD (renormalize) gradients, their cosine, the teacher
advantage and the SR range, on the same random [N, K] batch. Reported: nodes/s for each, and
"ratio" = kernel / NumPy. Target: ratio >= 20 at N = 10,000, K = 16 on CPU.
"""

import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, parser, report  # noqa: E402

from jaxalign.alignment import node_alignment  # noqa: E402


def numpy_loop(p, q, s, mask):
    """The straightforward per-node NumPy version a user would write."""
    out = np.full(len(p), np.nan)
    for i in range(len(p)):
        m = mask[i]
        if m.sum() == 0:
            continue
        pt = p[i][m] / p[i][m].sum()
        qt = q[i][m] / q[i][m].sum()
        si = s[i][m]
        ideal = pt * (si - pt @ si)
        ell = np.log(pt) - np.log(qt)
        gkd = -pt * (ell - pt @ ell)
        norms = np.linalg.norm(ideal) * np.linalg.norm(gkd)
        _advantage = qt @ si - pt @ si
        _sr_range = si.max() - si.min()
        if norms > 0:
            out[i] = ideal @ gkd / norms
    return out


def main():
    args = parser(__doc__).parse_args()
    n, k = (2_000, 16) if args.quick else (10_000, 16)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(k + 4), size=n)[:, :k].astype(np.float32)
    q = rng.dirichlet(np.ones(k + 4), size=n)[:, :k].astype(np.float32)
    s = rng.uniform(size=(n, k)).astype(np.float32)
    mask = rng.uniform(size=(n, k)) < 0.6
    arrays = [jax.device_put(x) for x in (p, q, s, mask)]

    def kernel():
        jax.block_until_ready(node_alignment(*arrays))

    kernel()  # compile
    kernel_s = best_time(kernel, 20)
    reference = numpy_loop(p, q, s, mask)
    numpy_s = best_time(lambda: numpy_loop(p, q, s, mask), 1 if args.quick else 3)
    got = np.asarray(node_alignment(*arrays)["cosine"])
    both = ~np.isnan(reference)
    max_diff = float(np.abs(got[both] - reference[both]).max())
    report("alignment_kernel", {
        "nodes": n, "k_max": k, "kernel_nodes_per_s": n / kernel_s, "numpy_nodes_per_s": n / numpy_s,
        "kernel_ms": kernel_s * 1e3, "numpy_ms": numpy_s * 1e3, "ratio": numpy_s / kernel_s,
        "max_cosine_diff": max_diff,
    })


if __name__ == "__main__":
    main()
