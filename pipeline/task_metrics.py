"""Each task's metric names, without the task: what config validation needs, with no torch import.

It sits below `pipeline.config`, which validates metric names with it. The task classes
(`pipeline.tasks.classify`, ...) take their `metrics`, `higher_is_better`,
`gate_metrics` and `default_gate_metric` from here, so there is one list of each. Importing a
task module imports torch (seconds); `recur run bad.yaml` must be refused before that.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskMetrics:
    metrics: tuple[str, ...]  # what `Task.compute` returns, "loss" first (val_<name> per epoch)
    higher_is_better: dict[str, bool]  # every name in `metrics` and `gate_metrics`
    gate_metrics: tuple[str, ...]  # what registry.metric may name
    default_gate_metric: str


TASK_METRICS: dict[str, TaskMetrics] = {
    "classify": TaskMetrics(
        metrics=("loss", "accuracy", "macro_f1"),
        higher_is_better={"loss": False, "accuracy": True, "macro_f1": True},
        gate_metrics=("accuracy", "macro_f1"), default_gate_metric="accuracy"),
    "forecast": TaskMetrics(
        metrics=("loss", "mae", "rmse", "smape", "mase"),
        higher_is_better=dict.fromkeys(("loss", "mae", "rmse", "smape", "mase"), False),
        gate_metrics=("mae", "rmse", "smape", "mase"), default_gate_metric="mase"),
    # perplexity compares models of the same vocabulary on any level; bits_per_char also compares
    # char and word models (set registry.metric: bits_per_char for that).
    "lm": TaskMetrics(
        metrics=("loss", "perplexity", "bits_per_char"),
        higher_is_better={"loss": False, "perplexity": False, "bits_per_char": False},
        gate_metrics=("perplexity", "bits_per_char"), default_gate_metric="perplexity"),
    # BLEU: the usual yardstick of seq2seq, and it credits partly right outputs, so it still tells
    # two models apart when neither gets many sequences exactly right. Tasks where only a perfect
    # output counts (dates) set registry.metric: exact_match.
    "seq2seq": TaskMetrics(
        metrics=("loss", "token_accuracy", "exact_match", "bleu", "chrf"),
        higher_is_better={"loss": False, "token_accuracy": True, "exact_match": True, "bleu": True,
                          "chrf": True},
        gate_metrics=("bleu", "chrf", "exact_match"), default_gate_metric="bleu"),
    "tag": TaskMetrics(
        metrics=("loss", "token_accuracy", "precision", "recall", "f1"),
        higher_is_better={"loss": False, "token_accuracy": True, "precision": True, "recall": True,
                          "f1": True},
        gate_metrics=("f1", "token_accuracy"), default_gate_metric="f1"),
}


def task_metrics(name: str) -> TaskMetrics:
    if name not in TASK_METRICS:
        raise ValueError(f"data.task: unknown task {name!r}; choose one of {sorted(TASK_METRICS)}")
    return TASK_METRICS[name]


def metric_names(task_name: str) -> set[str]:
    """Every per-epoch metric a run of this task logs (what train.monitor may name)."""
    return {"train_loss"} | {f"val_{m}" for m in task_metrics(task_name).metrics}
