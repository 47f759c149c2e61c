"""Ray Tune over the same trainer builder as `recur run`: every trial is a data-parallel Ray Train run.

Ray Train V2 does not run as a Tune trainable itself (`Tuner(trainer)` raises), so each trial is a
function trainable that builds a TorchTrainer with `build_trainer` and runs it. A Train callback
in the trainer's controller hands every epoch's metrics and checkpoint to the trial, which reports
them to Tune (`ray.tune.report`) so ASHA/HyperBand can stop the trial and PBT can copy its
checkpoint; a restored or exploited trial starts its trainer from `ray.tune.get_checkpoint()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ray.train import UserCallback
from ray.tune import Callback
from ray.tune.schedulers import PopulationBasedTraining

from pipeline.config import RecurConfig
from pipeline.progress import Display, TrialRow, TrialTable
from pipeline.tuning.space import SpaceError, trial_config_dict


@dataclass(frozen=True)
class StudyContext:
    """What every trial needs besides its sampled values (plain data: it crosses to Tune actors)."""

    base_config: dict[str, Any]  # RecurConfig as JSON
    manifest: dict[str, Any]
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    study: str
    train_storage: str  # Ray Train storage_path for the trials' own checkpoints
    spool_dir: str  # where a trial keeps epoch metrics MLflow refused (pipeline.tracking.spool)
    progress_mode: str = "plain"  # the driver's (pipeline.progress): trials print epoch lines in plain


class _HandToTrial(UserCallback):
    """Runs in the trainer's controller: passes each report to the trial and waits until the
    trial has handed it to Tune, so the checkpoint is still there when Tune copies it."""

    def __init__(self, items: Any, acks: Any) -> None:
        self.items, self.acks = items, acks

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if metrics:
            where = (checkpoint.path, checkpoint.filesystem) if checkpoint is not None else None
            self.items.put((dict(metrics[0]), where))
            self.acks.get()


def trial_function(sampled: dict[str, Any], study: StudyContext) -> None:
    """One trial: the base config with the sampled values, trained by `build_trainer`."""
    import ray.exceptions
    import ray.tune
    from ray.util.queue import Queue

    from pipeline.data.contract import Manifest
    from pipeline.tracking.run import EpochLogger, open_trial_run
    from pipeline.training.trainer import build_trainer

    cfg = RecurConfig.model_validate(trial_config_dict(study.base_config, sampled))
    manifest = Manifest.model_validate(study.manifest)
    trial_id = ray.tune.get_context().get_trial_id()
    run_id = open_trial_run(study.tracking_uri, study.experiment_id, parent_run_id=study.parent_run_id,
                            study=study.study, trial_id=trial_id, cfg=cfg, sampled=sampled)
    restored = ray.tune.get_checkpoint()
    initial = restored.to_directory() if restored is not None else None
    if restored is not None:  # resumed, restored after a failure, or exploited by PBT
        from mlflow import MlflowClient

        from pipeline.tracking.redact import redact_text

        MlflowClient(study.tracking_uri).set_tag(run_id, "recur.restored_from", redact_text(restored.path))

    items = Queue(maxsize=1, actor_options={"num_cpus": 0})
    acks = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = build_trainer(
        cfg, manifest, storage_path=study.train_storage,
        # a fresh Train run each time the trial starts: it resumes from `initial`, not by name
        name=f"{study.study}-{trial_id}-{uuid.uuid4().hex[:6]}",
        mlflow_run_id=run_id,
        # the driver's live table shows every trial's epochs; plain logs get a line per epoch too
        callbacks=[EpochLogger(study.tracking_uri, run_id, cfg.train.epochs, prefix=f"trial {trial_id}",
                               spool=os.path.join(study.spool_dir, f"{run_id}.jsonl"),
                               echo=study.progress_mode == "plain"),
                   _HandToTrial(items, acks)],
        initial_checkpoint=initial,
    )
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # handed to the trial's thread below
            failure.append(exc)
        finally:
            # when the scheduler stopped the trial, nobody is listening any more
            with contextlib.suppress(ray.exceptions.RayError):
                items.put(None)

    thread = threading.Thread(target=fit, name=f"fit-{trial_id}", daemon=True)
    thread.start()
    while (item := items.get()) is not None:
        metrics, where = item
        # a local folder, or a path on S3 (tracking.storage_path) with its filesystem
        checkpoint = ray.tune.Checkpoint(*where) if where else None
        ray.tune.report({**metrics, "mlflow_run_id": run_id}, checkpoint=checkpoint)
        acks.put(True)
    thread.join()
    if failure:
        raise failure[0]


class StudyProgress(Callback):
    """The driver's table of trials (`pipeline.progress.TrialTable`), from Tune's own trial states:
    status, sampled values, epochs done, the last and best value of the study's metric."""

    def __init__(self, *, metric: str, mode: str, total_epochs: int, display_mode: str | None = None,
                 refresh_s: float = 0.5) -> None:
        self.metric, self.mode, self.total_epochs = metric, mode, total_epochs
        self.display_mode, self.refresh_s = display_mode, refresh_s
        self._table: TrialTable | None = None
        self._last = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Tune keeps its run config (callbacks included) with the study; a resumed study shows
        # its table in the mode of the process that resumes it
        return {**self.__dict__, "_table": None, "_last": 0.0}

    @property
    def table(self) -> TrialTable:
        if self._table is None:
            self._table = TrialTable(Display(self.display_mode), metric=self.metric, mode=self.mode)
        return self._table

    def row(self, trial: Any) -> TrialRow:
        result = trial.last_result or {}
        status = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "paused",
                  "ERROR": "failed"}.get(trial.status)
        if status is None:  # TERMINATED: trained every epoch (or stopped early by itself), or stopped
            finished = (bool(result.get("early_stopped"))
                        or int(result.get("epoch", -1)) + 1 >= self.total_epochs)
            status = "completed" if finished else "stopped early"
        analysis = (getattr(trial, "metric_analysis", None) or {}).get(self.metric, {})
        return TrialRow(trial_id=trial.trial_id, status=status, params=dict(trial.config or {}),
                        epochs=int(result.get("training_iteration", 0) or 0),
                        last=result.get(self.metric), best=analysis.get(self.mode))

    def _update(self, trials: list[Any], started: Any = None) -> None:
        self._last = time.monotonic()
        rows = [self.row(t) for t in trials]
        for row in rows:  # Tune calls on_trial_start before it marks the trial RUNNING
            if started is not None and row.trial_id == started.trial_id:
                row.status = "running"
        self.table.update(rows)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update(trials, started=trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._update(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update(trials)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last >= self.refresh_s:  # new pending trials, paused ones
            self._update(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._update(trials)
        self.table.close()


def scheduler_for(cfg: RecurConfig, space: dict[str, Any]) -> Any:
    """The Tune scheduler of `tune.scheduler`; time is counted in epochs (training iterations)."""
    from ray.tune.schedulers import (
        ASHAScheduler,
        FIFOScheduler,
        HyperBandScheduler,
    )

    s = cfg.tune.scheduler
    max_t = s.max_t or cfg.train.epochs
    if s.name == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=s.grace_period,
                             reduction_factor=s.reduction_factor)
    if s.name == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", max_t=max_t,
                                  reduction_factor=s.reduction_factor)
    if s.name == "pbt":
        return RecordingPBT(time_attr="training_iteration", perturbation_interval=s.perturbation_interval,
                            quantile_fraction=s.quantile_fraction, synch=s.synch,
                            hyperparam_mutations=_mutations(space))
    return FIFOScheduler()


def _mutations(space: dict[str, Any]) -> dict[str, Any]:
    """PBT perturbs numeric domains by a factor; a choice becomes its list of values, which PBT
    resamples or shifts one place left or right."""
    from ray.tune.search.sample import Categorical

    return {k: list(d.categories) if isinstance(d, Categorical) else d for k, d in space.items()}


EXPLOITS_FILE = "pbt_exploits.jsonl"


class RecordingPBT(PopulationBasedTraining):
    """PBT that also writes each exploit by trial id (Tune's own log names trials by tag), one
    JSON line in the study's Tune folder: `recur tune` turns them into a table."""

    def _log_config_on_step(self, trial_state: Any, new_state: Any, trial: Any, trial_to_clone: Any,
                            new_config: dict) -> None:
        super()._log_config_on_step(trial_state, new_state, trial, trial_to_clone, new_config)
        record = {"trial_id": trial.trial_id, "source_trial_id": trial_to_clone.trial_id,
                  "epoch": trial.last_result.get("training_iteration", 0),
                  "source_epoch": trial_to_clone.last_result.get("training_iteration", 0),
                  "config": new_config}
        with open(os.path.join(trial.local_experiment_path, EXPLOITS_FILE), "a") as f:
            f.write(json.dumps(record, default=str) + "\n")


def check_search(cfg: RecurConfig, parsed: dict[str, tuple[str, list[Any]]]) -> None:
    """`tune.search` and the space's kinds must fit: optuna samples every key, grid none."""
    kinds = {k: kind for k, (kind, _) in parsed.items()}
    if cfg.tune.search == "optuna" and "grid" in kinds.values():
        key = next(k for k, kind in kinds.items() if kind == "grid")
        raise SpaceError(f"tune.search=optuna samples every key; tune.space.{key} uses grid "
                         "(use choice, or tune.search: grid)")
    if cfg.tune.search == "grid" and set(kinds.values()) != {"grid"}:
        key = next(k for k, kind in kinds.items() if kind != "grid")
        raise SpaceError(f"tune.search=grid needs every tune.space key as grid; tune.space.{key} is not")


def search_for(cfg: RecurConfig, parsed: dict[str, tuple[str, list[Any]]], *, max_concurrent: int) -> Any:
    """The search algorithm of `tune.search`, holding at most `max_concurrent` trials at once.

    The limit is set here: Tune does not apply `max_concurrent_trials` to a variant generator it
    is handed.
    """
    check_search(cfg, parsed)
    if cfg.tune.search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=cfg.tune.seed), max_concurrent=max_concurrent)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=cfg.tune.seed, max_concurrent=max_concurrent)
