"""`recur run` as recorded steps: ingest -> validate -> train -> evaluate -> register -> promote;
`recur tune` (or `recur run` with `tune.enabled`) runs a `tune` step in place of `train`.

Each step takes the config and earlier steps' outputs, and leaves a record (step, config hash,
input hashes, data hash, status, timing, outputs; see `records.py`). Running the same config again
skips every step whose record matches and reuses its outputs, so a crashed run continues from its
last finished step and an unchanged one costs nothing. `--from STEP` re-runs STEP and the steps
after it; `--force` re-runs all. The steps share one MLflow run, opened by `train` (by `tune`: the
study's parent run) and reopened by later steps that run in a new process; each step's status is
a `recur.step.<name>` tag on it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, RecurConfig
from pipeline.data.dataset import Manifest, files_fingerprint, read_manifest
from pipeline.tracking import store
from pipeline.tracking.policy import CallPolicy
from pipeline.tracking.redact import redact_text
from pipeline.tracking.run import RunTracker
from pipeline.workflow import steps
from pipeline.workflow.outcome import RunSummary, promote, record_test_evaluation, register
from pipeline.workflow.records import (
    STORE_STEPS,
    SUCCEEDED,
    StepRecord,
    hash_json,
    store_hash,
    workflow_steps,
)
from pipeline.workflow.step_book import StepBook, dataset_is, holds_run, holds_version, manifest_outputs
from pipeline.workflow.tune import StudySummary

log = logging.getLogger(__name__)


class Workflow:
    def __init__(self, cfg: RecurConfig, *, config_sources: list[str], connect: Callable[[], str] | None,
                 from_step: str | None = None, force: bool = False,
                 fine_tune: steps.FineTune | None = None, tune: bool = False, resume: bool = False) -> None:
        self.tune, self.resume = tune or cfg.tune.enabled, resume
        self.steps = workflow_steps(self.tune)
        if from_step is not None and from_step not in self.steps:
            what = "a search (tune.enabled or recur tune)" if self.tune else "no search"
            raise ConfigError(f"--from {from_step}: not a step of this workflow, which has {what}; "
                              f"its steps are {', '.join(self.steps)}")
        if fine_tune is not None and self.tune:
            raise ConfigError("recur retrain fine-tunes one training: set tune.enabled=false")
        self.cfg, self.config_sources, self.connect = cfg, config_sources, connect
        self.config = cfg.model_dump(mode="json")
        self.fine_tune = fine_tune
        if fine_tune is not None:  # a fine-tune is a different training from a fresh one
            self.config = {**self.config, "train": {**self.config["train"], "fine_tune": fine_tune.source}}
        rerun_from = 0 if force else (self.steps.index(from_step) if from_step else len(self.steps))
        self.book = StepBook(self.steps, self.config, cfg.tracking.runs_dir, rerun_from=rerun_from)
        self.timings: dict[str, float] = {}
        self.tracker: RunTracker | None = None
        self.budget: dict[str, Any] = {}  # budget.* params (pipeline.training.budget)
        self.policy = CallPolicy.from_config(cfg.tracking)  # how MLflow is called (tracking.retries, ...)

    # ---------------------------------------------------------------------------------- steps

    def _step(self, name: str, inputs: dict[str, str], data_hash: str,
              run: Callable[[], dict[str, Any]], *, still_valid: Callable[[dict], bool] = lambda o: True,
              ) -> StepRecord:
        if name in STORE_STEPS:  # keyed by where its results live: another server runs it again
            inputs = {**inputs, "store": self.where}
        # a server that died during training: stop now, not per call
        before = (lambda: self._check_server(name)) if name in AFTER_TRAINING else None
        return self.book.step(name, inputs, data_hash, run, still_valid=still_valid, before=before)

    def run(self) -> RunSummary | Any:
        """The workflow's steps; a RunSummary, or with a search a StudySummary."""
        cfg = self.cfg
        if self.tune:
            from pipeline.workflow.tune import check_study

            # every key and value of the space, before anything starts; no training on val rows
            self.cfg = cfg = check_study(cfg)
        tracking_uri = store.resolve_tracking_uri(cfg)
        storage = steps.storage_path(cfg)
        self.tracking_uri, self.where = tracking_uri, store_hash(
            tracking_uri=tracking_uri, registry_uri=store.resolve_registry_uri(tracking_uri),
            storage_path=storage if "://" in storage else os.path.abspath(storage))
        # every MLflow request of the run, here and in the Train controller: bounded retries,
        # timeouts and a deadline (tracking.retries, request_timeout_s, deadline_s)
        with self.policy.applied():
            self._check_server()  # before any work, so a dead server costs nothing
            experiment_id = store.ensure_experiment(cfg, tracking_uri)
            with store.use_tracking_uri(tracking_uri):
                try:
                    return self._run(tracking_uri, experiment_id)
                except BaseException as exc:
                    gone = isinstance(exc, Exception) and not store.reachable(tracking_uri, self.policy)
                    self._close("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED",
                                server_gone=gone)
                    self._say_what_is_kept(tracking_uri)
                    if gone and not isinstance(exc, store.TrackingUnavailable):
                        raise store.TrackingUnavailable(
                            f"MLflow tracking server {tracking_uri} stopped answering "
                            f"({_first_line(exc)})") from exc
                    raise

    def _say_what_is_kept(self, tracking_uri: str) -> None:
        """After a failure past training: where the trained model and unsent metrics are."""
        from pipeline.tracking.spool import spool_path

        trained = next((r for r, _ in self.book.done if r.step == "train" and r.status == SUCCEEDED), None)
        if trained is None:
            return
        out = trained.outputs
        kept = spool_path(self.cfg.tracking.runs_dir, out["run_id"])
        print(f"recur: the trained model is not lost: its checkpoint is {out['checkpoint_dir']}"
              + (f"; epoch metrics MLflow at {tracking_uri} did not take are kept in {kept}"
                 if kept.exists() else "")
              + ". When the tracking server answers again, `recur runs sync` writes what was kept and "
              "`recur run` with the same config continues after training.", file=sys.stderr, flush=True)

    def _run(self, tracking_uri: str, experiment_id: str) -> RunSummary:
        cfg = self.cfg
        # the checkpoint bucket too is checked before Ray starts, not when training would write to it
        steps.check_bucket(steps.storage_path(cfg), "write checkpoints (tracking.storage_path)")
        source = steps.source_fingerprint(cfg) if cfg.data.source is not None else None
        # A step is skipped only while the files are as it left them (files_fingerprint):
        # data changed in place keeps its manifest's hash, but not its fingerprint.
        ingest_inputs = {"sources": hash_json(source)} if source else {
            "dataset": read_manifest(cfg.data.root).data_hash,
            "files": files_fingerprint(cfg.data.root)}
        ingested = self._step(
            "ingest", ingest_inputs, ingest_inputs.get("dataset", ""),
            lambda: manifest_outputs(steps.ingest(cfg), cfg.data.root),
            still_valid=lambda o: dataset_is(cfg.data.root, o["data_hash"], o.get("files")))
        data_hash = ingested.outputs["data_hash"]
        manifest = read_manifest(cfg.data.root)
        self.given = cfg  # before "auto" is decided: each Tune trial decides it for its own values
        self.cfg = cfg = self._resolve(cfg, manifest)
        self._step("validate", {"data": data_hash, "files": files_fingerprint(cfg.data.root)},
                   data_hash, lambda: _validated(cfg))
        if self.fine_tune is not None:
            from pipeline.workflow.retrain import check_fine_tune

            check_fine_tune(cfg, self.fine_tune, manifest)  # before Ray starts

        if self.tune:
            trained = self._step("tune", {"data": data_hash}, data_hash,
                                 lambda: self._search(tracking_uri, experiment_id, manifest),
                                 still_valid=self._trained_is_there)
            eval_cfg = RecurConfig.model_validate(trained.outputs["best_config"])
        else:
            trained = self._step("train", {"data": data_hash}, data_hash,
                                 lambda: self._train(tracking_uri, experiment_id, manifest),
                                 still_valid=self._trained_is_there)
            eval_cfg = cfg
        out = trained.outputs
        checkpoint = out["checkpoint_dir"]

        def evaluate_step() -> dict[str, Any]:
            tracker = self._open_run(tracking_uri, experiment_id, out["run_id"])
            logged = len(tracker.figures)
            evaluation, model_uri = record_test_evaluation(eval_cfg, tracker, checkpoint, self.timings,
                                                     curve_metric=not self.tune)
            return {"metrics": evaluation.metrics, "model_uri": model_uri,
                    "plots": tracker.figures[logged:]}

        evaluated = self._step("evaluate", {trained.step: trained.output_hash}, data_hash, evaluate_step,
                               still_valid=lambda o: holds_run(tracking_uri, out["run_id"]))
        decision = None
        if cfg.registry.enabled:
            name = cfg.registry.model_name

            def do_register() -> dict[str, Any]:
                tracker = self._open_run(tracking_uri, experiment_id, out["run_id"])
                version = register(cfg, tracker, evaluated.outputs["model_uri"], self.timings,
                                   checkpoint_dir=checkpoint)
                return {"model_name": name, "version": version}

            registered = self._step("register", {"evaluate": evaluated.output_hash}, data_hash, do_register,
                                    still_valid=lambda o: holds_version(tracking_uri, name, o["version"],
                                                                        out["run_id"]))

            def do_promote() -> dict[str, Any]:
                tracker = self._open_run(tracking_uri, experiment_id, out["run_id"])
                logged = len(tracker.figures)
                decision = promote(eval_cfg, tracker, checkpoint, registered.outputs["version"], data_hash,
                                   self.timings)
                return {**decision, "plots": tracker.figures[logged:]}

            promoted = self._step("promote", {"register": registered.output_hash}, data_hash, do_promote,
                                  still_valid=lambda o: holds_version(tracking_uri, name, o["version"],
                                                                      out["run_id"], decided=True)).outputs
            decision = {k: v for k, v in promoted.items() if k != "plots"}
        self._close("FINISHED")
        if self.tune:
            return self._study_summary(out, evaluated.outputs["metrics"], decision)
        return RunSummary(
            run_id=out["run_id"], experiment_id=experiment_id, tracking_uri=tracking_uri,
            test_metrics=evaluated.outputs["metrics"], epochs_run=out["epochs_run"],
            best_epoch=out["best_epoch"], checkpoint_dir=checkpoint, decision=decision,
            timings=self.timings, steps=self.book.rows(), plots=self.book.plots(),
        )

    # ------------------------------------------------------- is a record's result in the store?

    def _trained_is_there(self, outputs: dict[str, Any]) -> bool:
        return Path(outputs["checkpoint_dir"]).is_dir() and holds_run(self.tracking_uri, outputs["run_id"])

    def _resolve(self, cfg: RecurConfig, manifest: Manifest) -> RecurConfig:
        """The config with its "auto" values decided from the manifest (and epochs raised to reach
        train.min_steps) and the embedding as wide as `model.embeddings`' vectors, said once; the
        MLflow run logs the resolved config and `budget.*`."""
        from pipeline.progress import Display, tag
        from pipeline.training.budget import budget_params, resolve

        resolved = resolve(cfg, manifest)
        self.budget = budget_params(resolved)
        display = Display()
        if resolved.decisions:
            lengths = manifest.lengths.get("train")
            if not display.quiet:
                display.line(f"{tag()} from the dataset ({manifest.splits['train'].rows} train rows"
                             + (f", mean length {lengths.mean:.0f}" if lengths else "") + "): "
                             + ", ".join(resolved.lines()))
        cfg = resolved.cfg
        if cfg.model.embeddings:  # the vectors' width is the embedding's, for training and a fine-tune
            from pipeline.data.embeddings import vector_width

            width = vector_width(cfg.model.embeddings)
            if cfg.model.embedding_size != width:
                if cfg.model.embedding_size is not None and not display.quiet:
                    display.line(f"{tag()} model.embedding_size {cfg.model.embedding_size} -> {width}: the "
                                 f"width of the vectors in {cfg.model.embeddings} (model.embeddings)")
                cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"embedding_size": width})})
        return cfg

    def _train(self, tracking_uri: str, experiment_id: str, manifest: Manifest) -> dict[str, Any]:
        cfg = self.cfg
        self._connect()
        tracker = self._open_run(tracking_uri, experiment_id, None)
        tracker.log_params(self.budget)
        tracker.log_dataset(manifest, cfg.data.root)
        name = f"{cfg.tracking.experiment}-{dt.datetime.now():%Y%m%d-%H%M%S}-{tracker.run_id[:8]}"
        with steps.timed("train", self.timings):
            trained = steps.train(cfg, manifest, tracker=tracker, name=name, fine_tune=self.fine_tune)
        tracker.flush_spool()
        tracker.log_or_keep({"best_epoch": trained.best_epoch, "epochs_run": trained.epochs_run,
                             **steps.population_metric(trained.batch_norm_layers),
                             **steps.blend_metric(trained.naive_blend)})
        return {"run_id": tracker.run_id, "checkpoint_dir": trained.checkpoint_dir,
                "storage_dir": trained.storage_dir, "epochs_run": trained.epochs_run,
                "best_epoch": trained.best_epoch}

    def _search(self, tracking_uri: str, experiment_id: str, manifest: Manifest) -> dict[str, Any]:
        """The tune step: a Ray Tune study in the study's MLflow parent run (resumed with
        `--resume`); its outputs are the best trial's config and checkpoint, and the study's table."""
        from pipeline.workflow.tune import open_study, plan_study, search

        self._connect()
        plan = plan_study(self.cfg)
        path, self.tracker, resumed = open_study(self.cfg, tracking_uri, experiment_id,
                                                 config_sources=self.config_sources, resume=self.resume)
        logged = len(self.tracker.figures)
        found = search(self.cfg, manifest, self.tracker, path, plan=plan, resumed=resumed,
                       timings=self.timings, trial_base=self.given)
        study = found.summary
        return {"run_id": self.tracker.run_id, "study": study.study, "path": study.path,
                "checkpoint_dir": found.checkpoint_dir, "best_config": found.best_config,
                "epochs_run": found.epochs_run, "best_epoch": found.best_epoch,
                "best_trial": study.best_trial, "best_value": study.best_value,
                "best_params": study.best_params, "counts": study.counts, "concurrency": study.concurrency,
                "trials": study.trials.to_dict(orient="records"), "plots": self.tracker.figures[logged:]}

    def _study_summary(self, out: dict[str, Any], metrics: dict[str, float],
                       decision: dict[str, Any] | None) -> Any:
        import pandas as pd

        return StudySummary(
            study=out["study"], path=out["path"], parent_run_id=out["run_id"],
            trials=pd.DataFrame(out["trials"]), counts=out["counts"], best_trial=out["best_trial"],
            best_value=out["best_value"], best_params=out["best_params"], concurrency=out["concurrency"],
            test_metrics=metrics, decision=decision, timings=self.timings, plots=self.book.plots(),
            steps=self.book.rows())

    def _connect(self) -> None:
        if self.connect is not None:
            with steps.timed("ray_start", self.timings):
                log.info("using %s", self.connect())

    # ----------------------------------------------------------------------------- MLflow run

    def _open_run(self, tracking_uri: str, experiment_id: str, run_id: str | None) -> RunTracker:
        """The workflow's MLflow run: created by train, reopened by a later step in a new process."""
        if self.tracker is None:
            self.tracker = RunTracker(self.cfg, tracking_uri, experiment_id)
            self.tracker.start(config_sources=self.config_sources, resume_run_id=run_id,
                               tags={"recur.kind": "run"} if run_id is None else None)
        return self.tracker

    def _check_server(self, step: str | None = None) -> None:
        """TrackingUnavailable (naming the step, if any) when the tracking server does not answer,
        tried as the call policy says: a busy server is not a dead one."""
        uri = store.resolve_tracking_uri(self.cfg)

        def check() -> None:  # credentials refused are not tried again; the retries stay quiet
            self.policy.call(lambda: store.check_reachable(uri, self.policy.request_timeout_s),
                             f"checking MLflow at {redact_text(uri)}", log_level=logging.DEBUG,
                             retry_if=lambda exc: not isinstance(exc, store.TrackingRefused))

        if step is None:
            check()
            return
        try:
            check()
        except store.TrackingRefused:
            raise
        except store.TrackingUnavailable as exc:
            raise store.TrackingUnavailable(f"MLflow tracking server {uri} stopped answering before the "
                                            f"{step} step ({_first_line(exc.__cause__ or exc)})") from exc

    def _close(self, status: str, *, server_gone: bool = False) -> None:
        if self.tracker is None or self.tracker.run_id is None:
            return
        if server_gone:  # `recur runs sync` closes the run once the server is back
            from pipeline.tracking import spool

            spool.append_status(self.tracker.spool_path, status)
            self.tracker.finish(status, tell_server=False)
            return
        try:
            self._tag_steps()
        except Exception as exc:  # e.g. the tracking server went away: the records keep the truth
            log.warning("could not record the steps on MLflow run %s: %s", self.tracker.run_id, exc)
        try:
            self.tracker.finish(status)  # leaves the fluent API's run even when the server is gone
        except Exception as exc:
            log.warning("could not mark MLflow run %s %s: %s", self.tracker.run_id, status, exc)

    def _tag_steps(self) -> None:
        assert self.tracker is not None and self.tracker.run_id is not None
        self.book.tag(self.tracker.tracking_uri, self.tracker.run_id)
        if self.timings:
            self.tracker.log_dict(self.timings, "timings.json")
        self.tracker.log_dict({"steps": self.book.rows()}, "workflow/steps.json")


AFTER_TRAINING = ("evaluate", "register", "promote")  # steps that open the trained run again


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _validated(cfg: RecurConfig) -> dict[str, Any]:
    steps.validate(cfg)
    root = cfg.data.root
    return {"root": root if "://" in root else str(Path(root).resolve())}


def run_pipeline(cfg: RecurConfig, *, config_sources: list[str] | None = None,
                 connect: Callable[[], str] | None = None, from_step: str | None = None,
                 force: bool = False, fine_tune: steps.FineTune | None = None) -> RunSummary:
    """The whole pipeline for one config, as recorded steps (see `pipeline.workflow.records`).

    `connect` (from the entry point, which owns `ray.init`) is called once the cheap checks have
    passed: tracking server reachable, dataset imported and valid. Without it Ray must be connected.
    A step whose config sections and inputs match a finished record is skipped and its outputs
    reused; `from_step` re-runs that step and every later one, `force` re-runs all of them.
    `fine_tune` starts training from a model's weights and preprocessing (`recur retrain`).
    """
    return Workflow(cfg, config_sources=config_sources or [], connect=connect, from_step=from_step,
                    force=force, fine_tune=fine_tune).run()


def run_study(cfg: RecurConfig, *, config_sources: list[str] | None = None,
              connect: Callable[[], str] | None = None, resume: bool = False,
              from_step: str | None = None, force: bool = False) -> StudySummary:
    """`recur tune`: the workflow with a `tune` step in place of `train` (see
    `Workflow`): search `tune.space` with Ray Tune, then evaluate, register and
    gate the best trial as recorded steps. An unchanged config and dataset skips the finished
    steps; `resume` continues an interrupted study instead of starting it again."""
    summary = Workflow(cfg, config_sources=config_sources or [], connect=connect, from_step=from_step,
                       force=force, tune=True, resume=resume).run()
    assert isinstance(summary, StudySummary)
    return summary
