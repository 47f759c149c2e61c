"""`recur tune`: ingest -> validate -> Ray Tune study -> evaluate and register the best trial.

One MLflow parent run holds the study (its search space, the table of trials, the study plots,
and the best trial's model, which goes through the same registry gate as `recur run`); every
trial is a nested child run with its parameters, per-epoch curves and final status. A study's
folder (`<runs_dir>/tune/<study>`) holds Tune's state and `study.json` (the parent run id), so
`--resume` continues the newest study of the same name with the same parent run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import progress
from pipeline.config import RecurConfig
from pipeline.errors import Failure
from pipeline.tracking.run import STUDY_TAG, RunTracker
from pipeline.tracking.spool import SPOOL_DIR
from pipeline.workflow import steps
from pipeline.workflow.outcome import decision_lines, not_promoted_line, plot_names, steps_line

log = logging.getLogger(__name__)

STUDY_FILE = "study.json"


class StudyFailed(Failure, RuntimeError):
    """A study ended without running every trial to its end (tune.allow_partial is false), or
    with no trial to register: what happened to the trials, the first error, what to change."""


@dataclass
class StudySummary:
    study: str
    path: str
    parent_run_id: str
    trials: Any  # pandas DataFrame: one row per trial
    counts: dict[str, int]
    best_trial: str | None
    best_value: float | None
    best_params: dict[str, Any]
    concurrency: int = 1  # trials run at once (the resource plan)
    test_metrics: dict[str, float] = field(default_factory=dict)
    decision: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)  # artifact paths of the PNGs logged to the parent run
    steps: list[dict[str, Any]] = field(default_factory=list)  # step, status, seconds, key

    def counts_line(self) -> str:
        return ", ".join(f"{n} {k}" for k, n in self.counts.items() if n) or "no trials"

    def format(self, metric: str) -> str:
        lines = ["", f"recur tune finished: study {self.study}",
                 "  trials          " + self.counts_line(),
                 f"  best trial      {self.best_trial}  {metric} {self.best_value}",
                 "  best params     " + ", ".join(f"{k}={v}" for k, v in self.best_params.items())]
        lines += [f"  {name.replace('_', ' '):<15} {value:.4f}" for name, value in self.test_metrics.items()]
        d = self.decision
        if d is not None:
            lines += decision_lines(d)
        lines.append(f"  MLflow run      {self.parent_run_id} (one child run per trial)")
        if self.plots:
            lines.append(f"  plots           {plot_names(self.plots)}")
        lines.append(f"  study folder    {self.path}  (recur tune CONFIG --resume continues it)")
        if self.steps:
            lines.append(steps_line(self.steps))
        lines.append("  timings (s)     " + ", ".join(f"{k} {v:g}" for k, v in self.timings.items()))
        if d is not None and (alert := not_promoted_line(d)):
            lines.append(alert)
        return "\n".join(lines)


def study_root(cfg: RecurConfig) -> Path:
    return Path(cfg.tracking.runs_dir).resolve() / "tune"


def _newest_study(cfg: RecurConfig, name: str) -> Path | None:
    found = sorted(p for p in study_root(cfg).glob(f"{name}-*") if (p / STUDY_FILE).exists())
    return found[-1] if found else None


def check_study(cfg: RecurConfig) -> RecurConfig:
    """Every key and value of the search space, before anything starts. Returns the config the
    study runs: train.train_on_val auto is off (trials are ranked by val metrics, so the val rows
    stay out of training); true, or the key in the space, is refused."""
    from pipeline.tuning.space import SpaceError, check_space, parse_space
    from pipeline.tuning.tuner import check_search

    if not cfg.tune.space:
        raise SpaceError("tune.space is empty: name at least one config key to search, e.g. "
                         "tune.space: {train.lr: {loguniform: [1.0e-4, 1.0e-2]}}")
    if cfg.train.train_on_val is True or "train.train_on_val" in cfg.tune.space:
        raise SpaceError("train.train_on_val: a study ranks its trials by their val metrics, so the val "
                         "rows cannot be trained on; leave it auto or false (auto is off under tune)")
    parsed = parse_space(cfg.tune.space)
    check_space(cfg.model_dump(mode="json"), parsed)
    check_search(cfg, parsed)
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"train_on_val": False})})


def open_study(cfg: RecurConfig, tracking_uri: str, experiment_id: str, *, config_sources: list[str],
               resume: bool) -> tuple[Path, RunTracker, bool]:
    """The study's folder and its MLflow parent run: the newest study of this name and its run
    when resuming one that has a folder, else new ones. Returns (folder, tracker, resumed)."""
    name = cfg.tune.name or cfg.tracking.experiment
    path = _newest_study(cfg, name) if resume else None
    if resume and path is None:
        raise FileNotFoundError(f"no study named {name!r} to resume under {study_root(cfg)}; "
                                "run `recur tune CONFIG` without --resume first")
    resumed = path is not None
    if path is None:
        path = study_root(cfg) / f"{name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    state = json.loads((path / STUDY_FILE).read_text()) if resumed else {}
    tracker = RunTracker(cfg, tracking_uri, experiment_id)
    parent = tracker.start(config_sources=config_sources, resume_run_id=state.get("parent_run_id"),
                           tags={STUDY_TAG: path.name, "recur.kind": "study"})
    if not resumed:
        path.mkdir(parents=True, exist_ok=True)
        (path / STUDY_FILE).write_text(json.dumps({"parent_run_id": parent, "study": path.name}))
    return path, tracker, resumed


@dataclass
class SearchResult:
    summary: StudySummary
    best_config: dict[str, Any]  # the whole config of the best trial (its sampled values applied)
    checkpoint_dir: str  # a local copy of the best trial's best checkpoint
    best_epoch: int
    epochs_run: int


def plan_study(cfg: RecurConfig) -> Any:
    """How many trials run at once on the connected cluster; fails, naming the keys, when one
    trial cannot fit (before any MLflow run is created)."""
    import ray

    from pipeline.tuning.plan import plan_trials, study_size
    from pipeline.tuning.space import parse_space

    r = cfg.resources
    plan = plan_trials(num_workers=r.num_workers, cpus_per_worker=r.cpus_per_worker, use_gpu=r.use_gpu,
                       reserve_cpus_for_data=r.reserve_cpus_for_data, cluster=ray.cluster_resources(),
                       requested=cfg.tune.max_concurrent_trials,
                       num_trials=study_size(cfg.tune.num_samples, parse_space(cfg.tune.space)))
    if plan.warning:
        log.warning(plan.warning)
    return plan


def search(cfg: RecurConfig, manifest: Any, tracker: RunTracker, path: Path, *, plan: Any, resumed: bool,
           timings: dict[str, float], trial_base: RecurConfig | None = None) -> SearchResult:
    """The Ray Tune study itself (Ray connected): one nested MLflow run per trial, the table of
    trials and the study plots on the parent run, the best trial's best checkpoint copied out.

    `trial_base`: the config before its "auto" values and train.min_steps were resolved
    (default `cfg`): each trial resolves them for its own sampled values (a sampled conv
    front-end turns length bucketing off, a sampled batch size changes the epochs min_steps needs).
    """
    from ray import tune

    from pipeline.training.budget import resolve
    from pipeline.tuning.plan import trial_resources
    from pipeline.tuning.space import parse_space, to_tune, trial_config_dict
    from pipeline.tuning.study_progress import StudyProgress, study_interrupt
    from pipeline.tuning.tuner import (
        StudyContext,
        longest_trial,
        scheduler_for,
        search_for,
        trial_function,
    )

    base = (trial_base or cfg).model_dump(mode="json")
    parsed = parse_space(cfg.tune.space)
    metric, mode = cfg.tune_metric
    search_alg = search_for(cfg, parsed, max_concurrent=plan.concurrency)
    # The study is snapshotted every second or so (see _checkpoints_to_keep), on purpose; Tune
    # would warn about that on every short epoch.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(SNAPSHOT_PERIOD_S))
    study_name = path.name
    if not resumed:
        tracker.log_dataset(manifest, cfg.data.root)
        tracker.log_dict(cfg.tune.space, "tune/space.json")
        tracker.log_params({"tune.concurrency": plan.concurrency})
    context = StudyContext(base_config=base, manifest=manifest.model_dump(mode="json"),
                           tracking_uri=tracker.tracking_uri, experiment_id=tracker.experiment_id,
                           parent_run_id=tracker.run_id, study=study_name,
                           train_storage=_train_storage(cfg, path),
                           spool_dir=str(Path(cfg.tracking.runs_dir).resolve() / SPOOL_DIR),
                           progress_mode=progress.mode())
    r = cfg.resources
    trainable = tune.with_resources(tune.with_parameters(trial_function, study=context),
                                    trial_resources(num_workers=r.num_workers,
                                                    cpus_per_worker=r.cpus_per_worker, use_gpu=r.use_gpu))
    space = to_tune(parsed)
    verbose = 1 if cfg.train.ray_log_level != "WARNING" else 0
    # the table of trials; beside Tune's own (verbose) output only as plain lines
    table = StudyProgress(metric=metric, mode=mode, total_epochs=cfg.train.epochs,
                          display_mode="plain" if verbose and progress.mode() == "live" else None,
                          record_dir=str(path), time_budget_s=cfg.tune.time_budget_s)
    with steps.timed("tune", timings):
        if resumed and tune.Tuner.can_restore(str(path / "tuner")):
            tuner = tune.Tuner.restore(str(path / "tuner"), trainable, resume_unfinished=True,
                                       resume_errored=True, param_space=space)
        else:
            scheduler = scheduler_for(cfg, {k: v for k, v in space.items() if parsed[k][0] != "grid"},
                                      longest=longest_trial(base, parsed, manifest))
            tuner = tune.Tuner(
                trainable, param_space=space,
                tune_config=tune.TuneConfig(
                    # the concurrency limit is in search_alg (Tune ignores it here for one)
                    metric=metric, mode=mode, num_samples=cfg.tune.num_samples,
                    time_budget_s=cfg.tune.time_budget_s, scheduler=scheduler, search_alg=search_alg),
                run_config=tune.RunConfig(
                    name="tuner", storage_path=str(path),
                    verbose=verbose, callbacks=[table],
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=_checkpoints_to_keep(cfg), checkpoint_score_attribute=metric,
                        checkpoint_score_order=mode)),
            )
        with study_interrupt() as interrupted:
            results = tuner.fit()
    if not interrupted.is_set():
        _prune_checkpoints(results, metric=metric, mode=mode)
    summary = _record_trials(cfg, results, tracker, metric=metric, mode=mode, study=study_name,
                             path=path, parent=tracker.run_id, timings=timings, parsed=parsed)
    summary.concurrency = plan.concurrency
    _check_outcome(cfg, summary, interrupted=interrupted.is_set())
    try:
        best = results.get_best_result(metric=metric, mode=mode, scope="all", filter_nan_and_inf=True)
    except RuntimeError:  # no trial reported a number (tune.allow_partial, every trial failed)
        best = None
    best_checkpoint = best.get_best_checkpoint(metric=metric, mode=mode) if best else None
    if best_checkpoint is None:
        raise StudyFailed(f"no trial of study {study_name} reported a checkpoint ({summary.counts_line()}); "
                          f"see {path}")
    best_metrics = next((m for c, m in best.best_checkpoints if c.path == best_checkpoint.path), {})
    best_config = resolve(RecurConfig.model_validate(trial_config_dict(base, best.config)), manifest).cfg
    best_dir = best_checkpoint.to_directory(str(path / "best"))
    _, layers = steps.population_batch_norm(best_config, best_dir, best_dir)  # in place: a copy
    _, blend = steps.naive_blend(best_config, best_dir, best_dir)
    if layers or blend:
        tracker.log_or_keep({**steps.population_metric(layers), **steps.blend_metric(blend)})
    return SearchResult(summary=summary, best_config=best_config.model_dump(mode="json"),
                        checkpoint_dir=best_dir,
                        best_epoch=int(best_metrics.get("epoch", -1)),
                        epochs_run=int((best.metrics or {}).get("epoch", -1)) + 1)


SNAPSHOT_PERIOD_S = 1.0


def _train_storage(cfg: RecurConfig, path: Path) -> str:
    """Where the trials' Ray Train runs keep checkpoints: under `tracking.storage_path` (e.g.
    S3, which every node reaches) when it is set, else in the study's folder."""
    from pipeline import storage

    if cfg.tracking.storage_path:
        storage.check_bucket(cfg.tracking.storage_path, "write checkpoints (tracking.storage_path)")
        return storage.join(cfg.tracking.storage_path, "tune", path.name)
    return str(path / "train")


def _checkpoints_to_keep(cfg: RecurConfig) -> int | None:
    """How many checkpoints per trial Tune keeps while the study runs (None: all of them).

    A resumed study restores each trial from the checkpoint named in the last snapshot of the
    study, so that checkpoint must still exist. Tune deletes a trial's older checkpoint as soon
    as a newer one is registered, before the next snapshot is written: a driver killed in that
    window leaves a snapshot that names a deleted checkpoint, and the trial cannot be restored
    (a CI run hit this). So Tune keeps every checkpoint while the study runs, the study is
    snapshotted every SNAPSHOT_PERIOD_S, and the checkpoints no result needs are deleted when the
    study has finished (`_prune_checkpoints`). PBT copies another trial's latest checkpoint
    while that trial goes on training and keeps a few (Tune warns below 3).
    """
    return 4 if cfg.tune.scheduler.name == "pbt" else None


def _prune_checkpoints(results: Any, *, metric: str, mode: str) -> None:
    """After a finished study: each trial keeps its latest checkpoint and its best by `metric`."""
    for result in results:
        keep = {c.path for c in (result.checkpoint,
                                 result.get_best_checkpoint(metric=metric, mode=mode)
                                 if result.best_checkpoints else None) if c is not None}
        for checkpoint, _ in result.best_checkpoints or []:
            if checkpoint.path not in keep and Path(checkpoint.path).is_dir():
                shutil.rmtree(checkpoint.path, ignore_errors=True)


def _record_trials(cfg: RecurConfig, results: Any, tracker: RunTracker, *, metric: str, mode: str,
                   study: str, path: Path, parent: str, timings: dict[str, float],
                   parsed: dict[str, tuple[str, list[Any]]]) -> StudySummary:
    """Each trial's final status on its child run; the trials table and plots on the parent.

    A trial's status is what Tune did to it (`pipeline.tuning.study_progress.trial_status`,
    recorded by the study's callback); trials the study never made (it ended first) count as never
    started.
    """
    from pipeline.tracking.run import close_trial_run, find_trial_runs
    from pipeline.tuning import plots
    from pipeline.tuning.plan import study_size
    from pipeline.tuning.report import TrialRecord, best_of, best_so_far, summarize, trials_table
    from pipeline.tuning.study_progress import read_outcomes

    outcomes = read_outcomes(path)
    by_dir = {o["dir"]: trial_id for trial_id, o in outcomes.items()}
    order = {trial_id: i for i, trial_id in enumerate(outcomes)}
    runs = find_trial_runs(tracker.tracking_uri, tracker.experiment_id, study)
    records = []
    for result in results:
        last = result.metrics or {}
        trial_id = last.get("trial_id") or by_dir.get(Path(result.path).name, Path(result.path).name)
        history = result.metrics_dataframe
        values = history[metric].dropna().tolist() if history is not None and metric in history else []
        status = outcomes.get(trial_id, {}).get("status") or ("failed" if result.error else "interrupted")
        best = best_of(values, mode=mode)
        record = TrialRecord(
            trial_id=trial_id, status=status, params=dict(result.config or {}), metric=metric,
            best_value=best, last_value=values[-1] if values else None, epochs=len(values),
            seconds=float(last.get("time_total_s", 0.0)),
            error=_error_line(result.error) or (f"diverged: {last['diverged']}" if last.get("diverged")
                                                else None),
            mlflow_run_id=runs.get(trial_id),
        )
        records.append(record)
        if record.mlflow_run_id:
            close_trial_run(tracker.tracking_uri, record.mlflow_run_id, status=status,
                            summary={f"best_{metric}": best, "epochs": record.epochs})
    records.sort(key=lambda r: (order.get(r.trial_id, len(order)), r.trial_id))  # the order Tune made them
    table = trials_table(records, metric=metric, mode=mode)
    info = summarize(records, metric=metric, mode=mode)
    tracker.log_text(table.to_csv(index=False), "tune/trials.csv")
    tracker.log_dict(info, "tune/summary.json")
    exploits = _pbt_exploits(path / "tuner", sorted(cfg.tune.space))
    if exploits is not None:
        tracker.log_text(exploits.to_csv(index=False), "tune/pbt_exploits.csv")
    tracker.log_metrics({f"best_{metric}": info["best_value"]} if info["best_value"] is not None else {})
    params = sorted(cfg.tune.space)
    tracker.log_figure(plots.best_metric_so_far(best_so_far(records, mode=mode), metric=metric, mode=mode,
                                                trial_values=[r.best_value for r in records]),
                       "plots/tune_best_so_far.png")
    tracker.log_figure(plots.parallel_coordinates(table, params=params, metric=metric, mode=mode),
                       "plots/tune_parallel_coordinates.png")
    counts = dict(info["status_counts"])
    counts["never started"] += max(0, study_size(cfg.tune.num_samples, parsed) - len(records))
    return StudySummary(study=study, path=str(path), parent_run_id=parent, trials=table,
                        counts=counts, best_trial=info["best_trial_id"],
                        best_value=info["best_value"],
                        best_params=info["best_params"] or {}, timings=timings)


def _error_line(error: BaseException | None) -> str | None:
    """A failed trial's error in one line: the exception the trial raised (Tune hands it back
    wrapped, its text a traceback), its last line of text."""
    if error is None:
        return None
    cause = getattr(error, "cause", None) or error
    lines = [line.strip() for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"[:1000]


def _check_outcome(cfg: RecurConfig, summary: StudySummary, *, interrupted: bool) -> None:
    """After the study: Ctrl-C ends the tune step as interrupted; a study that did not run every
    trial to its end fails it (exit 1) unless tune.allow_partial, saying what happened."""
    from pipeline.tuning.report import PARTIAL

    if interrupted:
        print(f"recur: study {summary.study} interrupted ({summary.counts_line()}); it is kept in "
              f"{summary.path}, and `recur tune CONFIG --resume` continues it", file=sys.stderr, flush=True)
        raise KeyboardInterrupt
    partial = {k: n for k, n in summary.counts.items() if k in PARTIAL and n}
    if not partial or cfg.tune.allow_partial:
        return
    errors = [e for e in summary.trials.get("error", []) if isinstance(e, str) and e]
    budget = cfg.tune.time_budget_s
    cut = budget and set(partial) & {"stopped by time budget", "never started"}
    raise StudyFailed(
        f"study {summary.study} did not run every trial to its end ({summary.counts_line()})"
        + (f"; first error: {errors[0]}" if errors else "")
        + (f"; the time budget (tune.time_budget_s = {budget:g} s) ran out first: raise it or lower "
           "tune.num_samples" if cut else "")
        + ". Nothing was registered."
        + (" `recur tune CONFIG --resume` runs the failed trials again." if "failed" in partial else "")
        + " tune.allow_partial=true registers the best of the trials that finished")


def _pbt_exploits(tuner_dir: Path, params: list[str]) -> Any:
    """PBT's exploits as a table (trial, the trial it copied, at which epochs, the new values),
    or None when the study did not use PBT."""
    import pandas as pd

    from pipeline.tuning.tuner import EXPLOITS_FILE

    if not (tuner_dir / EXPLOITS_FILE).exists():
        return None
    rows = []
    for line in (tuner_dir / EXPLOITS_FILE).read_text().splitlines():
        record = json.loads(line)
        config = record.pop("config")
        rows.append({**record, **{k: config.get(k) for k in params}})
    return pd.DataFrame(rows, columns=["trial_id", "source_trial_id", "epoch", "source_epoch", *params])
