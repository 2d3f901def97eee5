"""The planner's candidate pass: student and teacher probabilities at every skeleton node.

Each path is run once through the student and once through every teacher (for a self teacher,
the student's weights with the teacher's prompt); the chunks of positions are reduced on the
device to the tokens with P_θ > τ or some P_te > τ (:func:`jaxalign.engine.scoring.candidate_tokens`).
Only those reach the host: at most (T + 1) / τ per node, never a vocabulary-sized array. The
student's pass over a path is shared by every teacher.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from jaxalign.engine.scoring import candidate_tokens
from jaxalign.enrich import Candidates
from jaxalign.tree import RolloutTree


def skeleton_candidates(tree: RolloutTree, student, prompt: np.ndarray, teachers: Sequence, tau: float,
                        chunk: int) -> Candidates:
    """Candidates at every skeleton node; each shared-prefix node is scored once, on its first path.

    student: a Policy; teachers: objects with ``.policy`` and ``.prompt``. Returns
    :class:`Candidates` ordered by (node as first met along the paths, token).
    """
    node, token, p, q, kl, seen = [], [], [], [], [], set()
    for path in range(tree.num_paths):
        length = int(tree.path_length[path])
        path_nodes = tree.path_nodes[path, :length]
        fresh = np.array([d for d in range(length) if int(path_nodes[d]) not in seen], np.int64)
        if not len(fresh):
            continue
        seen.update(int(path_nodes[d]) for d in fresh)
        response = tree.path_tokens[path, :length]
        streams = [student.logprob_chunks(prompt, response, fresh, chunk)]
        streams += [t.policy.logprob_chunks(t.prompt, response, fresh, chunk) for t in teachers]
        for first, (logp, *logq) in zip(range(0, len(fresh), chunk), zip(*streams)):
            rows = min(chunk, len(fresh) - first)
            found = candidate_tokens(logp, jnp.stack(logq), tau)
            keep = found["keep"][:rows]
            at, col = np.nonzero(keep)
            node.append(path_nodes[fresh[first + at]].astype(np.int64))
            token.append(found["token"][:rows][at, col].astype(np.int64))
            p.append(found["p"][:rows][at, col])
            q.append(found["q"][:, :rows][:, at, col])
            kl.append(found["kl"][:, :rows][:, at])
    if not node:
        empty = np.zeros(0, np.int64)
        return Candidates(empty, empty, np.zeros(0), np.zeros((len(teachers), 0)), np.zeros((len(teachers), 0)))
    return Candidates(node=np.concatenate(node), token=np.concatenate(token),
                      p=np.concatenate(p).astype(np.float64), q=np.concatenate(q, axis=1).astype(np.float64),
                      kl=np.concatenate(kl, axis=1).astype(np.float64))
