"""One MLflow run per training job, written from the driver (and the Train controller's callback).

Workers never talk to MLflow: they `ray.train.report` metrics, and `EpochLogger`, a Ray Train
callback running in the controller, writes them to the run the driver opened, by run id.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric, Param
from ray.train import UserCallback

from pipeline.config import RecurConfig, dump_yaml, flatten
from pipeline.progress import epoch_line
from pipeline.tracking import plots
from pipeline.tracking.policy import DEFAULT as DEFAULT_POLICY
from pipeline.tracking.policy import CallPolicy
from pipeline.tracking.redact import redact_mapping, redact_params, redact_text

log = logging.getLogger(__name__)

EPOCH_METRICS = (
    "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "grad_norm", "grad_norm_max",
    "epoch_seconds", "sequences_per_second", "data_wait_fraction", "worker_peak_rss_mib",
    "worker_peak_device_mib", "steps_done", "at_chance", "restarted",
)


class EpochLogger(UserCallback):
    """Logs each epoch's metrics (rank 0's report) to the MLflow run, with the epoch as step,
    and shows one progress line per epoch (through the driver's progress board when it has one).

    Every epoch is logged once: a run that continues from a checkpoint older than its last
    logged epoch (a resumed study, a restarted worker group) trains those epochs again, and
    they are not logged a second time (MLflow cannot delete a metric's history entries).
    A batch MLflow refuses after a few tries with backoff is kept in the run's spool file
    (`pipeline.tracking.spool`) and written, in order, as soon as the server answers again;
    training goes on meanwhile.
    """

    def __init__(self, tracking_uri: str, run_id: str, total_epochs: int, prefix: str = "",
                 spool: str | None = None, board: Any = None, echo: bool = True,
                 policy: CallPolicy = DEFAULT_POLICY) -> None:
        self.tracking_uri = tracking_uri
        self.policy = policy  # the run's MLflow call policy, also in this (the controller's) process
        self.run_id = run_id
        self.total_epochs = total_epochs
        self.prefix = prefix  # e.g. "trial 3f2a_00001": which run a progress line belongs to
        self.spool = spool  # where batches MLflow refused are kept (None: only warned about)
        # The driver's progress board (pipeline.training.step_board): the driver prints the epoch
        # lines; without one the line is printed here when `echo` (not in quiet mode, nor beside
        # a study's live table).
        self.board = board
        self.echo = echo
        self._logged_through: int | None = None  # the run's last logged epoch, read once

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if not metrics:
            return
        report = metrics[0]
        epoch = int(report["epoch"])
        now = int(time.time() * 1000)
        # Every task's val_<metric> (lm: val_perplexity, ...), not only classify's.
        keys = [k for k in report if k in EPOCH_METRICS or k.startswith("val_")]
        batch = [Metric(k, float(report[k]), now, epoch) for k in keys]
        self._log(epoch, batch)
        if self.board is not None:
            import ray

            try:  # waited for: the report is on the board before fit() returns
                ray.get(self.board.epoch.remote(_plain_numbers(report)), timeout=10)
                return
            except Exception as exc:
                log.debug("progress board did not take epoch %d: %s", epoch, exc)
        if self.echo:
            print(epoch_line(report, self.total_epochs, self.prefix), file=sys.stderr, flush=True)

    def _log(self, epoch: int, batch: list[Metric]) -> None:
        from pipeline.tracking import spool

        client = MlflowClient(self.tracking_uri)
        path = Path(self.spool) if self.spool else None

        def write() -> None:
            if self._logged_through is None:
                self._logged_through = spool.last_logged_epoch(client, self.run_id)
            if path is not None and path.exists():  # what MLflow refused before goes first
                _, self._logged_through = spool.flush(self.tracking_uri, self.run_id, path,
                                                      self._logged_through)
            if epoch > self._logged_through:
                client.log_batch(self.run_id, metrics=batch)
                self._logged_through = epoch

        try:
            self.policy.call(write, f"logging epoch {epoch} to MLflow at {self.tracking_uri}")
        except Exception as exc:  # a tracking outage must not kill hours of training
            if path is None:
                log.warning("could not log epoch %d metrics to MLflow: %s", epoch, exc)
                return
            spool.append(path, epoch, batch)
            log.warning("MLflow at %s did not take epoch %d (%s); kept in %s and written when it answers",
                        self.tracking_uri, epoch, str(exc).splitlines()[0][:200], path)


def _plain_numbers(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if isinstance(v, (int, float, str)) or v is None}


class _LineageDataset(MetaDataset):
    """MLflow's MetaDataset with recur's lineage as its profile (data hash, rows per split, and
    each source's URI, size, sha256, S3 ETag and version id), shown with the run's dataset."""

    lineage: dict[str, Any] = {}

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self.lineage)}


class RunTracker:
    """The driver's handle on one MLflow run."""

    def __init__(self, cfg: RecurConfig, tracking_uri: str, experiment_id: str) -> None:
        self.cfg = cfg
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.client = MlflowClient(tracking_uri)
        self.run_id: str | None = None
        self.figures: list[str] = []  # artifact paths of the PNGs this tracker logged, in order

    def start(self, *, config_sources: list[str], resume_run_id: str | None = None,
              tags: dict[str, str] | None = None) -> str:
        """Open the run (the fluent API must already point at `tracking_uri`: `use_tracking_uri`).

        `resume_run_id` reopens an existing run (an interrupted study) instead of creating one.
        """
        if resume_run_id is not None:
            self.run_id = mlflow.start_run(run_id=resume_run_id).info.run_id
            return self.run_id
        run_name = self.cfg.tracking.run_name
        run = mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name and redact_text(run_name),
                               tags=redact_params(tags) if tags else tags)
        self.run_id = run.info.run_id
        items = list(flatten(self.cfg).items())
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.log_params(dict(items[i : i + 100]))
        self.set_tags({"recur.task": self.cfg.data.task, "recur.config_files": ",".join(config_sources)})
        self.log_text(dump_yaml(redact_mapping(self.cfg.model_dump(mode="json"))), "config/resolved.yaml")
        return self.run_id

    def epoch_logger(self, board: Any = None, echo: bool = True) -> EpochLogger:
        assert self.run_id is not None
        return EpochLogger(self.tracking_uri, self.run_id, self.cfg.train.epochs, spool=str(self.spool_path),
                           board=board, echo=echo, policy=CallPolicy.from_config(self.cfg.tracking))

    @property
    def spool_path(self) -> Path:
        """Where this run's metrics wait while MLflow is unreachable (`pipeline.tracking.spool`)."""
        from pipeline.tracking.spool import spool_path

        assert self.run_id is not None
        return spool_path(self.cfg.tracking.runs_dir, self.run_id)

    def flush_spool(self) -> None:
        """Write what MLflow did not take during training; keep it (and say so) if it still cannot."""
        from pipeline.tracking import spool

        if not self.spool_path.exists():
            return
        try:
            with CallPolicy.from_config(self.cfg.tracking).applied(retries=0):  # one try: kept anyway
                uploaded, _ = spool.flush(self.tracking_uri, self.run_id, self.spool_path)
            log.info("wrote %d kept metric batch(es) to MLflow", uploaded)
        except Exception as exc:
            log.warning("MLflow at %s is unreachable (%s): metrics are kept in %s; `recur runs sync` "
                        "writes them when it answers", self.tracking_uri, str(exc).splitlines()[0][:200],
                        self.spool_path)

    def log_or_keep(self, metrics: dict[str, float]) -> None:
        """Run-level metrics that must not be lost: logged, or kept in the spool."""
        from pipeline.tracking import spool

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        try:
            client = MlflowClient(self.tracking_uri)
            policy = CallPolicy.from_config(self.cfg.tracking)
            policy.call(lambda: client.log_batch(self.run_id, metrics=batch),
                        f"logging {', '.join(metrics)} to MLflow")
        except Exception:
            spool.append(self.spool_path, None, batch)

    def log_dataset(self, manifest: Any, root: str) -> None:
        """The dataset as an MLflow input (its digest is the data hash) plus the manifest."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source

        with warnings.catch_warnings():
            # MLflow registers its local artifact source twice and warns that a path matches both.
            warnings.filterwarnings("ignore", message=".*interpreted in multiple ways.*")
            source = resolve_dataset_source(root if "://" in root else str(Path(root).resolve()))
        dataset = _LineageDataset(source=source, name=manifest.name, digest=manifest.data_hash[:32])
        dataset.lineage = redact_mapping({
            "data_hash": manifest.data_hash,
            "rows": {split: info.rows for split, info in manifest.splits.items()},
            "sources": [src.model_dump(exclude_none=True) for src in manifest.sources],
        })
        mlflow.log_input(dataset, context="training")
        self.set_tags({"recur.data_hash": manifest.data_hash, "recur.data_version": manifest.data_version})
        self.log_params({"data.rows." + split: info.rows for split, info in manifest.splits.items()})
        self.log_text(manifest.model_dump_json(indent=2), "data/manifest.json")

    # Params, tags, texts and dicts go through pipeline.tracking.redact: nothing secret is logged.
    def log_params(self, params: dict[str, Any]) -> None:
        mlflow.log_params(redact_params(params))

    def set_tags(self, tags: dict[str, Any]) -> None:
        mlflow.set_tags(redact_params(tags))

    def log_text(self, text: str, artifact_file: str) -> None:
        mlflow.log_text(redact_text(text), artifact_file)

    def log_dict(self, data: dict, artifact_file: str) -> None:
        mlflow.log_dict(redact_mapping(data), artifact_file)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_figure(self, fig: Any, artifact_file: str) -> None:
        """Log the figure as a PNG and close it, logged or not (pyplot keeps every open figure for
        the life of the process)."""
        try:
            mlflow.log_figure(fig, artifact_file)
        finally:
            plots.close(fig)
        self.figures.append(artifact_file)

    def history(self, keys: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
        """Per-epoch values as MLflow holds them (the source of truth after restarts)."""
        out = {}
        for key in keys:
            points = self.client.get_metric_history(self.run_id, key)
            out[key] = sorted((m.step, m.value) for m in points)
        return out

    def log_learning_curves(self, metric: str) -> dict[str, list[tuple[int, float]]]:
        """Draw and log the learning curves; returns the history they were drawn from."""
        history = self.history(("train_loss", "val_loss", metric))
        self.log_figure(plots.learning_curves(history, metric=metric), "plots/learning_curves.png")
        return history

    def log_model(self, checkpoint_file: str, example: Any):
        from pipeline.tracking.pyfunc import log_model

        return log_model(checkpoint_file, example=example)

    def log_report(self, report: Any) -> None:
        """A task's evaluation report: figures as PNG, texts and dicts as files, files as they are."""
        try:
            for path, figure in report.figures.items():
                self.log_figure(figure, path)
        finally:  # a failed upload leaves none of the report's figures open
            for figure in report.figures.values():
                plots.close(figure)
        for path, text in report.texts.items():
            self.log_text(text, path)
        for path, data in report.dicts.items():
            self.log_dict(data, path)
        for path, content in report.files.items():
            self.log_bytes(content, path)

    def log_bytes(self, content: bytes, artifact_file: str) -> None:
        """A binary artifact (a MIDI file) at `artifact_file` inside the run."""
        import tempfile

        folder, name = os.path.split(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, name)
            with open(local, "wb") as fh:
                fh.write(content)
            mlflow.log_artifact(local, artifact_path=folder or None)

    def finish(self, status: str = "FINISHED", *, tell_server: bool = True) -> None:
        """End the run; `tell_server=False` only leaves it in this process (the server is gone:
        `recur runs sync` sets the status later from the spool)."""
        if mlflow.active_run() is None:
            return
        if tell_server:
            mlflow.end_run(status=status)
            return
        from mlflow.tracking import fluent

        fluent._active_run_stack.get().pop()  # end_run's own bookkeeping, without its request
        os.environ.pop("MLFLOW_RUN_ID", None)


# ------------------------------------------------------------------------------ tuning studies
# A study is one parent run; each trial is a nested child run, opened by the trial itself (a Tune
# actor) by tag, so a restored or resumed trial reattaches to its run instead of starting another.

STUDY_TAG, TRIAL_TAG, TRIAL_STATUS_TAG = "recur.study", "recur.trial_id", "recur.trial_status"


def open_trial_run(tracking_uri: str, experiment_id: str, *, parent_run_id: str, study: str, trial_id: str,
                   cfg: RecurConfig, sampled: dict[str, Any]) -> str:
    """The trial's child run (created, or found by its trial id); returns its run id."""
    client = MlflowClient(tracking_uri)
    found = client.search_runs(
        [experiment_id],
        f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{STUDY_TAG}` = '{study}'",
        max_results=1,
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        # PBT may have changed the sampled values: keep the history, params are write-once.
        client.set_tag(run_id, f"recur.sampled.restart_{int(time.time())}",
                       redact_text(json.dumps(redact_mapping(sampled))))
        return run_id
    run = client.create_run(experiment_id, run_name=f"trial {trial_id}", tags={
        "mlflow.parentRunId": parent_run_id, STUDY_TAG: study, TRIAL_TAG: trial_id,
        "recur.task": cfg.data.task, TRIAL_STATUS_TAG: "running",
    })
    params = redact_params({**flatten(cfg), **{f"sampled.{k}": v for k, v in sampled.items()}})
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run.info.run_id, params=items[i : i + 100])
    return run.info.run_id


def find_trial_runs(tracking_uri: str, experiment_id: str, study: str) -> dict[str, str]:
    """trial id -> child run id, for every trial run of the study."""
    runs = MlflowClient(tracking_uri).search_runs([experiment_id], f"tags.`{STUDY_TAG}` = '{study}'",
                                                  max_results=10000)
    return {r.data.tags[TRIAL_TAG]: r.info.run_id for r in runs if TRIAL_TAG in r.data.tags}


def close_trial_run(tracking_uri: str, run_id: str, *, status: str, summary: dict[str, Any]) -> None:
    """Final status of a trial run (pipeline.progress.TRIAL_ENDS: completed, stopped by scheduler,
    failed, ...); MLflow's run status says FAILED for failed, KILLED for interrupted."""
    client = MlflowClient(tracking_uri)
    client.set_tag(run_id, TRIAL_STATUS_TAG, status)
    metrics = [Metric(k, float(v), int(time.time() * 1000), 0) for k, v in summary.items()
               if isinstance(v, (int, float)) and v is not None]
    if metrics:
        client.log_batch(run_id, metrics=metrics)
    client.set_terminated(run_id, {"failed": "FAILED", "interrupted": "KILLED"}.get(status, "FINISHED"))
