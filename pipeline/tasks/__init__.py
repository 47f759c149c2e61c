"""Tasks by name: the loop, the worker, evaluation and the registry look a task up here and never
branch on it. Each task lives in its own module, imported when first used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipeline.task_metrics import TASK_METRICS, metric_names, task_metrics

if TYPE_CHECKING:
    from pipeline.tasks.base import Batch, MetricState, Report, Task

TASKS: dict[str, str] = {
    "classify": "pipeline.tasks.classify:ClassifyTask",
    "tag": "pipeline.tasks.tag:TagTask",
    "forecast": "pipeline.tasks.forecast:ForecastTask",
    "lm": "pipeline.tasks.lm:LanguageModelTask",
    "seq2seq": "pipeline.tasks.seq2seq:Seq2SeqTask",
}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise ValueError(f"data.task: unknown task {name!r}; choose one of {sorted(TASKS)}")
    module, _, attr = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def build_task(cfg: Any, preprocessing: Any) -> Task:
    """The task for a dataset's preprocessing (its task, label names, vocabulary, statistics)
    and the run's config (training options); `cfg` may be None when only serving."""
    return task_class(preprocessing.task)(preprocessing, cfg)


def __getattr__(name: str) -> Any:
    # the base classes (and torch) only when used: config validation imports this package for
    # the metric names alone
    if name in ("Batch", "MetricState", "Report", "Task"):
        from pipeline.tasks import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TASKS", "TASK_METRICS", "Batch", "MetricState", "Report", "Task", "build_task", "metric_names",
           "task_class", "task_metrics"]
