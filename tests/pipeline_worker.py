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


if __name__ == "__main__":
    exact_run(int(sys.argv[1]), sys.argv[2]).run()
    print("WORKER-DONE")
