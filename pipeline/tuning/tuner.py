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
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.train import UserCallback
from ray.tune import Callback
from ray.tune.schedulers import PopulationBasedTraining

from pipeline.config import RecurConfig
from pipeline.environ import temporary_environ
from pipeline.progress import TAG, Display, TrialRow, TrialTable
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

    from pipeline.data.contract import Manifest
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
    restored = ray.tune.get_checkpoint()
    initial = restored.to_directory() if restored is not None else None
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
        ray.tune.report({**metrics, "mlflow_run_id": run_id, "epochs_planned": epochs_planned},
                        checkpoint=checkpoint)
        acks.put(True)
    thread.join()
    if failure:
        if isinstance(failure[0], TrainingFailedError):  # what failed and what to change, in a line
            raise training_failure(failure[0], cfg, storage_join(study.train_storage, name)) from failure[0]
        raise failure[0]


OUTCOMES_FILE = "trial_outcomes.json"
# Set by `study_interrupt`'s Ctrl-C handler (a signal is the whole process's): the study's end
# is then an interruption, not its time budget.
INTERRUPTED = threading.Event()


def finished(result: dict[str, Any], total_epochs: int) -> bool:
    """The trial's last report says it trained every epoch it planned (`epochs_planned`, from
    train.epochs and train.min_steps) or stopped early by itself (train.early_stopping_patience)."""
    planned = int(result.get("epochs_planned") or total_epochs)
    return bool(result.get("early_stopped")) or int(result.get("epoch", -1)) + 1 >= planned


def trial_status(tune_status: str, result: dict[str, Any], *, total_epochs: int, started: bool,
                 returned: bool, stopped: bool, ended: str | None) -> str:
    """A trial's status in recur's words (pipeline.progress.TRIAL_STATUSES) from Tune's own state
    (PENDING, RUNNING, PAUSED, TERMINATED, ERROR) and what `StudyProgress` saw happen to it:
    `returned` (its function ended by itself), `stopped` (its scheduler stopped or removed it).
    `ended`: once the study is over, how it ended ("stopped by time budget" or "interrupted")
    for the trials it cut short; None while it runs."""
    if tune_status == "ERROR" or result.get("diverged"):
        return "failed"
    if tune_status in ("PENDING", "RUNNING", "PAUSED"):
        if ended is None:
            return tune_status.lower()
        return ended if started or result else "never started"
    if returned or (result and finished(result, total_epochs)):
        return "completed"
    if stopped:
        return "stopped by scheduler"
    if not started and not result:
        return "never started"
    return ended or "interrupted"


class StudyProgress(Callback):
    """The driver's table of trials (`pipeline.progress.TrialTable`), from Tune's own trial states:
    status, sampled values, epochs done, the last and best value of the study's metric.

    It also keeps what Tune's states leave out, in `<study>/trial_outcomes.json` (so a resumed
    study knows it too): which trials started, which ended by themselves and which their
    scheduler stopped; at the end, every trial's status (`trial_status`).
    """

    def __init__(self, *, metric: str, mode: str, total_epochs: int, display_mode: str | None = None,
                 refresh_s: float = 0.5, record_dir: str | None = None,
                 time_budget_s: float | None = None) -> None:
        self.metric, self.mode, self.total_epochs = metric, mode, total_epochs
        self.display_mode, self.refresh_s = display_mode, refresh_s
        self.record_dir, self.time_budget_s = record_dir, time_budget_s
        self._table: TrialTable | None = None
        self._last = 0.0
        self._seen: dict[str, set[str]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune keeps its run config (callbacks included) with the study; a resumed study shows
        # its table in the mode of the process that resumes it, and reads what was seen from disk
        return {**self.__dict__, "_table": None, "_last": 0.0, "_seen": None}

    @property
    def table(self) -> TrialTable:
        if self._table is None:
            self._table = TrialTable(Display(self.display_mode), metric=self.metric, mode=self.mode)
        return self._table

    @property
    def seen(self) -> dict[str, set[str]]:
        """{"started" | "returned" | "stopped": trial ids}, as recorded so far."""
        if self._seen is None:
            self._seen = {k: set() for k in ("started", "returned", "stopped")}
            path = self._path()
            if path is not None and path.exists():
                for key, ids in json.loads(path.read_text()).get("seen", {}).items():
                    self._seen.setdefault(key, set()).update(ids)
        return self._seen

    def _path(self) -> Path | None:
        return Path(self.record_dir) / OUTCOMES_FILE if self.record_dir else None

    def _save(self, trials: dict[str, dict[str, str]] | None = None) -> None:
        path = self._path()
        if path is None:
            return
        record: dict[str, Any] = {"seen": {k: sorted(v) for k, v in self.seen.items()}}
        if trials is not None:
            record["trials"] = trials
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)  # a study killed mid-write keeps the previous record

    def _mark(self, key: str, trial: Any) -> None:
        if trial.trial_id not in self.seen[key]:
            self.seen[key].add(trial.trial_id)
            self._save()

    def status(self, trial: Any, ended: str | None = None) -> str:
        seen, tid = self.seen, trial.trial_id
        return trial_status(trial.status, trial.last_result or {}, total_epochs=self.total_epochs,
                            started=tid in seen["started"], returned=tid in seen["returned"],
                            stopped=tid in seen["stopped"], ended=ended)

    def row(self, trial: Any, ended: str | None = None) -> TrialRow:
        result = trial.last_result or {}
        analysis = (getattr(trial, "metric_analysis", None) or {}).get(self.metric, {})
        return TrialRow(trial_id=trial.trial_id, status=self.status(trial, ended),
                        params=dict(trial.config or {}),
                        epochs=int(result.get("training_iteration", 0) or 0),
                        last=result.get(self.metric), best=analysis.get(self.mode))

    def _update(self, trials: list[Any], started: Any = None, ended: str | None = None) -> None:
        self._last = time.monotonic()
        rows = [self.row(t, ended) for t in trials]
        for row in rows:  # Tune calls on_trial_start before it marks the trial RUNNING
            if started is not None and row.trial_id == started.trial_id:
                row.status = "running"
        self.table.update(rows)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._mark("started", trial)
        self._update(trials, started=trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        # Tune marks the result `done` when its scheduler (or a stopper) decided to stop the trial;
        # the trial's own reports never say done
        if result.get("done") and not finished(result, self.total_epochs):
            self._mark("stopped", trial)
        self._update(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Tune calls this (before it changes the status) when the trial's function returned, and
        # when its scheduler stops a running trial (seen above) or removes a pending or paused one
        if trial.status in ("PENDING", "PAUSED"):
            self._mark("stopped", trial)
        elif trial.trial_id not in self.seen["stopped"]:
            self._mark("returned", trial)
        self._update(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update(trials)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last >= self.refresh_s:  # new pending trials, paused ones
            self._update(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Trials still live now were cut short: by Ctrl-C, else by the time budget (Tune has
        # already marked them TERMINATED without telling any callback)
        ended = "interrupted" if INTERRUPTED.is_set() or not self.time_budget_s else "stopped by time budget"
        self._update(trials, ended=ended)
        self._save({t.trial_id: {"status": self.status(t, ended), "dir": Path(t.path).name}
                    for t in trials})
        self.table.close()


def read_outcomes(study_dir: str | Path) -> dict[str, dict[str, str]]:
    """Every trial of the study as its last run ended (`StudyProgress`), in the order Tune made
    them: trial id -> {"status": recur's status, "dir": the trial's folder name}."""
    path = Path(study_dir) / OUTCOMES_FILE
    return json.loads(path.read_text()).get("trials", {}) if path.exists() else {}


@contextlib.contextmanager
def study_interrupt() -> Any:
    """Ctrl-C during `Tuner.fit()` ends the study the way Tune ends one on its own signal: the
    running trials are stopped after a last snapshot of the study, so `recur tune --resume`
    continues it; a second Ctrl-C stops at once. The study's caller then sees `INTERRUPTED`
    set. Tune's own SIGINT handler would do the same but leave no trace that it did."""
    INTERRUPTED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield INTERRUPTED
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        tune_stop = signal.getsignal(signal.SIGUSR1)  # Tune's graceful stop, installed by fit()
        if INTERRUPTED.is_set() or not callable(tune_stop):
            raise KeyboardInterrupt
        INTERRUPTED.set()
        Display().line(f"{TAG} stopping the study after a last snapshot (Ctrl-C again stops at once)")
        tune_stop(signal.SIGUSR1, frame)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        # ours instead of Tune's own, which would leave no trace that it happened
        with temporary_environ({"TUNE_DISABLE_SIGINT_HANDLER": "1"}):
            yield INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous)


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
BUDGET_KEYS = ("train.epochs", "train.min_steps", "data.batch_size", "resources.num_workers")


def longest_trial(base: dict[str, Any], parsed: dict[str, tuple[str, list[Any]]], manifest: Any) -> int:
    """The most epochs a trial of the space trains: train.epochs, raised by train.min_steps for
    the trial's batch size and workers, over every combination of the budget keys' values (a
    range's bounds). ASHA stops every trial at max_t, so a max_t of plain train.epochs would
    stop the trials that train.min_steps makes longer as if their scheduler had judged them."""
    import itertools

    from pipeline.training.budget import resolve
    from pipeline.tuning.space import probe_values

    keys = [k for k in BUDGET_KEYS if k in parsed]
    return max(resolve(RecurConfig.model_validate(trial_config_dict(base, dict(zip(keys, values)))),
                       manifest).cfg.train.epochs
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
