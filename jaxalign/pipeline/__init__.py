"""The per-question pipeline: Phase 1 (the shared rollout tree) and Phase 2 (per-teacher rows).

Modules, in the order data flows:
  state.py       the typed Phase 1 state and the plan of targeted rollouts (what a checkpoint holds)
  candidates.py  the planner's candidate pass, reduced on the device
  question.py    :class:`QuestionRun`, the resumable state machine for one question
  minillm.py     the teacher reward-to-go of stored rollouts (MiniLLM's inputs)
  phase2.py      decision-node scoring and the row schema of ``questions/<qid>.parquet``
"""

from jaxalign.pipeline.phase2 import ROW_SCHEMA, Rollouts
from jaxalign.pipeline.question import PipelineConfig, Preempted, QuestionRun, Teacher, question_key
from jaxalign.pipeline.state import Phase1State, Plan

__all__ = ["PipelineConfig", "Phase1State", "Plan", "Preempted", "QuestionRun", "ROW_SCHEMA", "Rollouts",
           "Teacher", "question_key"]
