"""Tasks by name: the loop, the worker and evaluation look a task up here and never branch on it."""

from __future__ import annotations

from typing import Any

from pipeline.tasks.base import MetricState, Task
from pipeline.tasks.classify import ClassifyTask, classification_scores

TASKS: dict[str, type[Task]] = {"classify": ClassifyTask}


def build_task(cfg: Any, preprocessing: Any) -> Task:
    """The task for a config and the dataset's preprocessing (label names, statistics)."""
    name = cfg.data.task
    if name == "classify":
        return ClassifyTask(len(preprocessing.labels), label_smoothing=cfg.train.label_smoothing)
    raise ValueError(f"data.task: unknown task {name!r}; choose one of {sorted(TASKS)}")


def metric_names(task_name: str) -> set[str]:
    """Every per-epoch metric a run of this task logs (what train.monitor may name)."""
    task = TASKS[task_name]
    return {"train_loss"} | {f"val_{m}" for m in task.metrics}


__all__ = ["TASKS", "ClassifyTask", "MetricState", "Task", "build_task", "classification_scores",
           "metric_names"]
