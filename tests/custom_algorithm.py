"""A user-registered algorithm, as in docs/math.md: GKD gated by the full-vocabulary KL.

Used as ``algorithms=[gkd,tests.custom_algorithm.kl_gated_gkd]``.
"""

import jax.numpy as jnp

from jaxalign.algorithms import gkd

KL_GATE = 0.05


def kl_gated_gkd(batch, convention):
    """GKD's gradient where KL(p‖q) over the vocabulary exceeds KL_GATE, zero elsewhere. [N, K]."""
    return jnp.where((batch.kl_full > KL_GATE)[:, None], gkd(batch, convention), 0.0)
