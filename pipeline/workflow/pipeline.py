"""`recur run`: ingest -> validate -> train -> evaluate -> register -> promote, one MLflow run."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import RecurConfig
from pipeline.tracking import store
from pipeline.tracking.run import RunTracker
from pipeline.workflow import steps

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    run_id: str
    experiment_id: str
    tracking_uri: str
    test_metrics: dict[str, float]
    epochs_run: int
    best_epoch: int
    checkpoint_dir: str
    decision: dict[str, Any] | None
    timings: dict[str, float] = field(default_factory=dict)

    def ui_address(self, port: int = 5000) -> str:
        if self.tracking_uri.startswith(("http://", "https://")):
            base = self.tracking_uri.rstrip("/")
        else:
            base = f"http://127.0.0.1:{port} (start it with `recur ui`)"
        return base

    def run_url(self, port: int = 5000) -> str:
        base = self.ui_address(port).split(" ")[0]
        return f"{base}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def format(self, port: int = 5000) -> str:
        lines = ["", "recur run finished"]
        lines += [f"  {name.replace('_', ' '):<15} {value:.4f}" for name, value in self.test_metrics.items()]
        lines += [
            f"  epochs          {self.epochs_run} (best epoch {self.best_epoch + 1})",
            f"  MLflow run      {self.run_id}",
            f"  MLflow UI       {self.ui_address(port)}",
            f"  run page        {self.run_url(port)}",
        ]
        d = self.decision
        if d is not None:
            verdict = "became @champion" if d["promoted"] else "kept as @challenger"
            lines.append(f"  model           {d['model_name']} version {d['version']}: {verdict}")
            champion = "none" if d["champion_score"] is None else (
                f"v{d['champion_version']} {d['champion_score']:.4f}")
            lines.append(f"  gate            test {d['metric']} {d['candidate_score']:.4f} vs champion "
                         f"{champion}: {d['reason']}")
        lines.append("  timings (s)     " + ", ".join(f"{k} {v:g}" for k, v in self.timings.items()))
        return "\n".join(lines)


def run_pipeline(cfg: RecurConfig, *, config_sources: list[str] | None = None,
                 connect: Callable[[], str] | None = None) -> RunSummary:
    """The whole pipeline for one config.

    `connect` (from the entry point, which owns `ray.init`) is called once the cheap checks have
    passed: tracking server reachable, dataset imported and valid. Without it Ray must be connected.
    """
    timings: dict[str, float] = {}
    tracking_uri, manifest = prepare(cfg, connect, timings)
    experiment_id = store.ensure_experiment(cfg, tracking_uri)
    with store.use_tracking_uri(tracking_uri):
        run_id, trained, evaluation, decision = _tracked_run(cfg, manifest, tracking_uri, experiment_id,
                                                             config_sources or [], timings)
    return RunSummary(
        run_id=run_id, experiment_id=experiment_id, tracking_uri=tracking_uri,
        test_metrics=evaluation.metrics, epochs_run=trained.epochs_run, best_epoch=trained.best_epoch,
        checkpoint_dir=trained.checkpoint_dir, decision=decision, timings=timings,
    )


def prepare(cfg: RecurConfig, connect: Callable[[], str] | None,
            timings: dict[str, float]) -> tuple[str, Any]:
    """The cheap checks first, then Ray: tracking server reachable, dataset imported and valid,
    then `connect()`. Returns the tracking URI and the dataset's manifest."""
    tracking_uri = store.resolve_tracking_uri(cfg)
    store.check_reachable(tracking_uri)  # before any work, so a dead server costs nothing
    with steps.timed("ingest", timings):
        manifest = steps.ingest(cfg)
        steps.validate(cfg)
    if connect is not None:
        with steps.timed("ray_start", timings):
            log.info("using %s", connect())
    return tracking_uri, manifest


def _tracked_run(cfg: RecurConfig, manifest: Any, tracking_uri: str, experiment_id: str,
                 config_sources: list[str], timings: dict[str, float]):
    """Train, evaluate, log and gate inside one MLflow run; returns what the summary needs."""
    tracker = RunTracker(cfg, tracking_uri, experiment_id)
    run_id = tracker.start(config_sources=config_sources)
    try:
        tracker.log_dataset(manifest, cfg.data.root)
        name = f"{cfg.tracking.experiment}-{dt.datetime.now():%Y%m%d-%H%M%S}-{run_id[:8]}"
        with steps.timed("train", timings):
            trained = steps.train(cfg, manifest, tracker=tracker, name=name)
        evaluation, decision = evaluate_and_register(cfg, tracker, manifest, trained.checkpoint_dir,
                                                     timings, curve_metric=True)
        tracker.log_metrics({"best_epoch": trained.best_epoch, "epochs_run": trained.epochs_run})
        tracker.log_dict(timings, "timings.json")
        tracker.finish("FINISHED")
    except BaseException:
        tracker.finish("FAILED")
        raise
    return run_id, trained, evaluation, decision


def evaluate_and_register(cfg: RecurConfig, tracker: RunTracker, manifest: Any, checkpoint_dir: str,
                          timings: dict[str, float], *, curve_metric: bool) -> tuple[Any, dict | None]:
    """Test-split evaluation, its pictures, the MLflow model and the registry gate, in the tracker's
    run. `recur run` and `recur tune` (for the best trial) both end here.

    `curve_metric`: also draw the run's learning curves (a study's parent run has none).
    """
    with steps.timed("evaluate", timings):
        evaluation = steps.evaluate(cfg, checkpoint_dir)
    with steps.timed("log", timings):
        tracker.log_metrics(evaluation.metrics)
        task, inputs, truth = steps.gate_data(cfg, checkpoint_dir)
        if curve_metric:
            curve = f"val_{cfg.gate_metric}" if cfg.gate_metric in task.metrics else cfg.train.monitor
            tracker.log_learning_curves(curve)
        tracker.log_report(evaluation.report)
        model_info = tracker.log_model(steps.checkpoint_file(checkpoint_dir), inputs.head(2))

    decision = None
    if cfg.registry.enabled:
        from pipeline.tracking.registry import register_and_gate

        with steps.timed("registry", timings):
            result = register_and_gate(
                tracking_uri=tracker.tracking_uri, model_name=cfg.registry.model_name,
                model_uri=model_info.model_uri, run_id=tracker.run_id, metric=cfg.gate_metric,
                higher_is_better=task.higher_is_better[cfg.gate_metric],
                min_improvement=cfg.registry.min_improvement, inputs=inputs,
                score=lambda outputs: task.score(outputs, truth),
                data_hash=manifest.data_hash,
            )
            decision = result.to_dict()
            tracker.log_dict(decision, "registry/decision.json")
            tracker.log_metrics({"gate_candidate_score": result.candidate_score})
    return evaluation, decision
