"""Datasets as tasks: questions with a user message and a ground-truth answer, and a grader.

``get_task(name, **options)`` builds a task and reads nothing; rows are read the first time
questions are asked for. ``check_options`` runs the same validation for the config.
"""

from __future__ import annotations

from typing import Any, Mapping

from jaxalign.errors import ConfigError
from jaxalign.tasks.aime2025 import AIME2025
from jaxalign.tasks.base import PAPER_SYSTEM, Question, Task
from jaxalign.tasks.boolq import BoolQ
from jaxalign.tasks.mmlu import MMLU
from jaxalign.tasks.toy_arith import ToyArith

TASKS: Mapping[str, type] = {"toy_arith": ToyArith, "boolq": BoolQ, "mmlu": MMLU, "aime2025": AIME2025}


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def get_task(name: str, **options: Any) -> Task:
    """The task ``name`` with ``options`` (see each task's ``options``); raises ConfigError if either is bad."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    cls = TASKS[name]
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        raise ConfigError(f"{name} has no option {', '.join(map(repr, unknown))}; its options are "
                          f"{', '.join(cls.options)}")
    return cls(**options)


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Raises ConfigError for an unknown task, an unknown or ill-typed option, a missing local file or a hub
    id without the `datasets` package. Cheap: reads no data."""
    get_task(name, **dict(options))


__all__ = ["AIME2025", "BoolQ", "MMLU", "PAPER_SYSTEM", "Question", "TASKS", "Task", "ToyArith", "check_options",
           "get_task", "task_names"]
