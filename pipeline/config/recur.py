"""`RecurConfig`: every section together, and the checks that need more than one section."""

from __future__ import annotations

from pydantic import (
    model_validator,
)

from pipeline.config.base import FORMAT_TASKS, MAX_BATCH, MAX_WIDTH, Section
from pipeline.config.sections import (
    DataConfig,
    GenerateConfig,
    ModelConfig,
    RegistryConfig,
    ResourcesConfig,
    TrackingConfig,
    TrainConfig,
    TuneConfig,
)

# the tasks' metric names without a task (and torch): a bad config is refused at once
from pipeline.task_metrics import metric_names, task_metrics


class RecurConfig(Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    generate: GenerateConfig = GenerateConfig()
    tune: TuneConfig = TuneConfig()
    registry: RegistryConfig = RegistryConfig()
    resources: ResourcesConfig = ResourcesConfig()

    @property
    def tune_metric(self) -> tuple[str, str]:
        """(metric, mode) the study optimizes: `tune.metric`/`tune.mode`, else train.monitor's."""
        metric = self.tune.metric or self.train.monitor
        if self.tune.mode is not None:
            return metric, self.tune.mode
        name = metric.removeprefix("val_")
        return metric, "max" if task_metrics(self.data.task).higher_is_better.get(name, False) else "min"

    @property
    def gate_metric(self) -> str:
        """The registry gate's metric: `registry.metric`, else the task's default."""
        return self.registry.metric or task_metrics(self.data.task).default_gate_metric

    @model_validator(mode="after")
    def _check_monitor(self) -> RecurConfig:
        task = task_metrics(self.data.task)
        if self.registry.metric is not None and self.registry.metric not in task.gate_metrics:
            raise ValueError(f"registry.metric must be one of {list(task.gate_metrics)} for task "
                             f"{self.data.task}; got {self.registry.metric!r}")
        source = self.data.source
        if source is not None and self.data.task not in FORMAT_TASKS[source.format]:
            raise ValueError(f"data.source.format {source.format!r} imports {FORMAT_TASKS[source.format][0]} "
                             f"data, but data.task is {self.data.task!r}")
        model = self.model
        if self.data.task not in ("classify", "forecast"):
            defaults = (("frontend", "none"), ("patch", 1))
            set_here = [k for k, default in defaults if getattr(model, k) != default]
            if set_here:
                raise ValueError(f"model.{set_here[0]} applies to classify and forecast models, not "
                                 f"{self.data.task!r}")
        if isinstance(model.patch, int) and not 1 <= model.patch <= MAX_WIDTH:
            raise ValueError(f"model.patch must be 1..{MAX_WIDTH} or auto; got {model.patch}")
        if self.data.task not in ("classify", "forecast") and model.instance_norm is True:
            raise ValueError(f"model.instance_norm applies to classify and forecast models, not "
                             f"{self.data.task!r}")
        if self.data.task != "classify" and model.raw_view is True:
            raise ValueError(f"model.raw_view applies to classify models, not {self.data.task!r}")
        if model.branch_dropout != "auto":
            if not 0.0 <= model.branch_dropout < 1.0:
                raise ValueError(f"model.branch_dropout must be in [0, 1) or auto; "
                                 f"got {model.branch_dropout}")
            if model.branch_dropout and (self.data.task != "classify" or model.frontend == "none"):
                raise ValueError("model.branch_dropout drops the recurrent state beside a conv front-end's "
                                 "summary: it applies to classify with model.frontend conv, resnet or "
                                 f"auto, not {self.data.task!r} with frontend {model.frontend!r} "
                                 "(use model.dropout)")
        crop = self.train.random_crop
        if crop != "auto":
            if not 0.0 <= crop < 1.0:
                raise ValueError(f"train.random_crop must be in [0, 1) or auto; got {crop}")
            if crop and self.data.task != "classify":
                raise ValueError(f"train.random_crop cuts classification rows to random windows: it "
                                 f"applies to classify, not {self.data.task!r}")
        for key in ("difference", "seasonal_skip", "naive_blend"):
            if self.data.task != "forecast" and getattr(model, key):
                raise ValueError(f"model.{key} applies to forecast models, not {self.data.task!r}")
        if model.naive_blend and self.train.train_on_val is True:
            raise ValueError("model.naive_blend weighs the forecast against seasonal naive on the val "
                             "windows, which train.train_on_val trains on: set one of them false")
        if isinstance(self.data.batch_size, int) and not 1 <= self.data.batch_size <= MAX_BATCH:
            raise ValueError(f"data.batch_size must be 1..{MAX_BATCH} or auto; got {self.data.batch_size}")
        known = metric_names(self.data.task)
        if self.tune.metric is not None and self.tune.metric not in known:
            raise ValueError(f"tune.metric must be a metric that {self.data.task} runs log, one of "
                             f"{sorted(known)}; got {self.tune.metric!r}")
        if self.train.monitor not in known:
            raise ValueError(
                f"train.monitor must be a metric that {self.data.task} runs log, one of {sorted(known)}; "
                f"got {self.train.monitor!r}"
            )
        metric = self.train.monitor.removeprefix("val_")
        expected = "max" if task.higher_is_better.get(metric, False) else "min"
        if self.train.monitor_mode != expected:
            raise ValueError(
                f"train.monitor_mode must be {expected!r} for train.monitor={self.train.monitor}"
            )
        if self.train.train_on_val is True and self.data.task == "lm":
            raise ValueError("train.train_on_val applies to tasks whose splits hold rows, not 'lm' "
                             "(its train and val are token streams)")
        return self
