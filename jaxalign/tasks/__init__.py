"""Datasets as tasks: questions with a user message and a ground-truth answer, and a grader."""

from jaxalign.tasks.base import Question, Task
from jaxalign.tasks.toy_arith import ToyArith

__all__ = ["Question", "Task", "ToyArith"]
