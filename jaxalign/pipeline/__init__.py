"""The per-question pipeline: Phase 1 (the shared rollout tree) and Phase 2 (per-teacher rows).

Modules, in the order data flows:
  state.py       the typed Phase 1 state and the plan of targeted rollouts (what a checkpoint holds)
  candidates.py  the planner's candidate pass, reduced on the device
  question.py    :class:`QuestionRun`, the resumable state machine for one question
  phase2.py      decision-node scoring and the row schema of ``questions/<qid>.parquet``
"""

from jaxalign.pipeline.phase2 import ROW_ALGORITHMS, ROW_SCHEMA
from jaxalign.pipeline.question import PipelineConfig, Preempted, QuestionRun, Teacher, question_key
from jaxalign.pipeline.state import Phase1State, Plan

__all__ = ["PipelineConfig", "Phase1State", "Plan", "Preempted", "QuestionRun", "ROW_ALGORITHMS", "ROW_SCHEMA",
           "Teacher", "question_key"]
