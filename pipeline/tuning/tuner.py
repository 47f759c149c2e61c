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
import uuid
from dataclasses import dataclass
from typing import Any

from ray.train import UserCallback
from ray.tune.schedulers import PopulationBasedTraining

from pipeline.config import RecurConfig
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
        import ray.exceptions

        if metrics:
            where = (checkpoint.path, checkpoint.filesystem) if checkpoint is not None else None
            # the queues die with the trial when its scheduler stops it: this controller goes next,
            # with nothing to hand over and no traceback to print
            with contextlib.suppress(ray.exceptions.RayActorError):
                self.items.put((dict(metrics[0]), where))
                self.acks.get()


def trial_function(sampled: dict[str, Any], study: StudyContext) -> None:
    """One trial: the base config with the sampled values, trained by `build_trainer`."""
    import ray.exceptions
    import ray.tune
    from ray.train import TrainingFailedError
    from ray.util.queue import Queue

    from pipeline.data.dataset import Manifest
    from pipeline.storage import join as storage_join
    from pipeline.tracking.run import EpochLogger, open_trial_run
    from pipeline.training.budget import resolve
    from pipeline.training.trainer import build_trainer, training_failure

    cfg = RecurConfig.model_validate(trial_config_dict(study.base_config, sampled))
    manifest = Manifest.model_validate(study.manifest)
    # the epochs this trial trains when nothing stops it (train.min_steps and the sampled batch
    # size may add some): a trial that reports its last one completed, whatever its scheduler said
    epochs_planned = resolve(cfg, manifest).cfg.train.epochs
    trial_id = ray.tune.get_context().get_trial_id()
    run_id = open_trial_run(study.tracking_uri, study.experiment_id, parent_run_id=study.parent_run_id,
                            study=study.study, trial_id=trial_id, cfg=cfg, sampled=sampled)
    # handed to the workers as it is (a path and its filesystem): they read it in place, or
    # download it to a temporary folder that goes when they have loaded it (Checkpoint.as_directory)
    restored = ray.tune.get_checkpoint()
    if restored is not None:  # resumed, restored after a failure, or exploited by PBT
        from mlflow import MlflowClient

        from pipeline.tracking.redact import redact_text

        MlflowClient(study.tracking_uri).set_tag(run_id, "recur.restored_from", redact_text(restored.path))

    items = Queue(maxsize=1, actor_options={"num_cpus": 0})
    acks = Queue(maxsize=1, actor_options={"num_cpus": 0})
    name = f"{study.study}-{trial_id}-{uuid.uuid4().hex[:6]}"
    trainer = build_trainer(
        cfg, manifest, storage_path=study.train_storage,
        # a fresh Train run each time the trial starts: it resumes from `initial`, not by name
        name=name,
        mlflow_run_id=run_id,
        # the driver's live table shows every trial's epochs; plain logs get a line per epoch too
        callbacks=[EpochLogger(study.tracking_uri, run_id, epochs_planned, prefix=f"trial {trial_id}",
                               spool=os.path.join(study.spool_dir, f"{run_id}.jsonl"),
                               echo=study.progress_mode == "plain"),
                   _HandToTrial(items, acks)],
        initial_checkpoint=restored,
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
        ray.tune.report({**metrics, "mlflow_run_id": run_id, "epochs_planned": epochs_planned},
                        checkpoint=checkpoint)
        acks.put(True)
    thread.join()
    if failure:
        if isinstance(failure[0], TrainingFailedError):  # what failed and what to change, in a line
            raise training_failure(failure[0], cfg, storage_join(study.train_storage, name)) from failure[0]
        raise failure[0]


def scheduler_for(cfg: RecurConfig, space: dict[str, Any], *, longest: int | None = None) -> Any:
    """The Tune scheduler of `tune.scheduler`; time is counted in epochs (training iterations).
    `longest`: the most epochs a trial of the space trains (`longest_trial`), ASHA's and
    HyperBand's max_t unless tune.scheduler.max_t says otherwise."""
    from ray.tune.schedulers import (
        ASHAScheduler,
        FIFOScheduler,
        HyperBandScheduler,
    )

    s = cfg.tune.scheduler
    max_t = s.max_t or longest or cfg.train.epochs
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


# Keys that decide how many epochs a trial trains (pipeline.training.budget.resolve)
BUDGET_KEYS = ("train.epochs", "train.max_epochs", "train.min_steps", "data.batch_size",
               "resources.num_workers")


def longest_trial(base: dict[str, Any], parsed: dict[str, tuple[str, list[Any]]], manifest: Any) -> int:
    """The most epochs a trial of the space trains: train.epochs, raised by train.min_steps for
    the trial's batch size and workers (train.max_epochs when set), over every combination of
    the budget keys' values (a range's bounds). ASHA stops every trial at max_t, so a max_t of
    plain train.epochs would stop the trials that train.min_steps makes longer (or that restart
    their schedule) as if their scheduler had judged them."""
    import itertools

    from pipeline.training.budget import resolve
    from pipeline.tuning.space import probe_values

    keys = [k for k in BUDGET_KEYS if k in parsed]

    def most(train: Any) -> int:  # restarts of an unfit run's schedule go on to train.max_epochs
        return train.max_epochs or train.epochs

    return max(most(resolve(RecurConfig.model_validate(trial_config_dict(base, dict(zip(keys, values)))),
                            manifest).cfg.train)
               for values in itertools.product(*(probe_values(*parsed[k]) for k in keys)))


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


# Model keys a PBT exploit may change: the weights it copies from another trial still fit.
PBT_MODEL_KEYS = ("model.dropout", "model.teacher_forcing", "model.beam_size", "model.max_decode_length")


def check_search(cfg: RecurConfig, parsed: dict[str, tuple[str, list[Any]]]) -> None:
    """`tune.search` and the space's kinds must fit: optuna samples every key, grid none; PBT
    changes no key of the architecture."""
    kinds = {k: kind for k, (kind, _) in parsed.items()}
    if cfg.tune.scheduler.name == "pbt":
        # An exploit copies another trial's checkpoint, then resamples or perturbs the sampled
        # values: a GRU trial would load an LSTM's weights and fail. A grid value is not
        # perturbed: the exploit copies it along with the checkpoint.
        arch = [k for k, kind in kinds.items()
                if k.startswith("model.") and k not in PBT_MODEL_KEYS and kind != "grid"]
        if arch:
            raise SpaceError(
                f"tune.space.{arch[0]}: tune.scheduler pbt copies one trial's checkpoint into another "
                "and then changes its sampled values, and the weights of one architecture do not load "
                f"into another ({', '.join(arch)} would change it). Search it with asha, hyperband or "
                "fifo, give it as grid (each trial keeps its value), or set it in the config; PBT may "
                f"change {', '.join(PBT_MODEL_KEYS)} and any train.* or data.* key")
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
