"""What a run ends with: the test evaluation logged with the model, registration and the gate's
promotion, and the summary `recur run` prints (`RunSummary`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import RecurConfig
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
    steps: list[dict[str, Any]] = field(default_factory=list)  # step, status, seconds, key
    plots: list[str] = field(default_factory=list)  # artifact paths of the PNGs logged to the run

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
        trained = _row(self.steps, "train") or _row(self.steps, "tune")
        reused = trained is not None and trained["status"] == "skipped"
        nothing_ran = bool(self.steps) and all(r["status"] == "skipped" for r in self.steps)
        lines = ["", "recur run finished" + (": nothing ran (every step matches a finished record)"
                                             if nothing_ran else " (training reused)" if reused else "")]
        if reused:  # a rerun reads as what it is: an earlier run's results, not a new model
            when = _when(trained["started_at"])
            lines.append(f"  results of      MLflow run {self.run_id}, trained {when} "
                         "(reused, not trained again)")
        lines += [f"  {name.replace('_', ' '):<15} {value:.4f}" for name, value in self.test_metrics.items()]
        lines += [
            f"  epochs          {self.epochs_run} (best epoch {self.best_epoch + 1})",
            f"  MLflow run      {self.run_id}",
            f"  MLflow UI       {self.ui_address(port)}",
            f"  run page        {self.run_url(port)}",
        ]
        if self.plots:
            lines.append(f"  plots           {plot_names(self.plots)}")
        d = self.decision
        if d is not None:
            gated = _row(self.steps, "promote")
            reused_gate = gated is not None and gated["status"] == "skipped"
            lines += decision_lines(d, decided_at=gated["started_at"] if reused_gate else None)
        if self.steps:
            lines.append(steps_line(self.steps))
        lines.append("  timings (s)     " + (", ".join(f"{k} {v:g}" for k, v in self.timings.items())
                                             or "none (nothing ran)"))
        if nothing_ran:
            lines.append("  to compare      `--force` (or a changed config) trains again, and the gate "
                         "compares the new model with @champion")
        if d is not None and (alert := not_promoted_line(d)):
            lines.append(alert)  # last, where the eye lands
        return "\n".join(lines)


def _row(rows: list[dict[str, Any]], step: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["step"] == step), None)


def _when(started_at: str) -> str:
    """A record's ISO time (2026-12-02T10:40:43+00:00) as the summary shows it."""
    return started_at.replace("T", " ").replace("+00:00", " UTC")


def decision_lines(d: dict[str, Any], decided_at: str | None = None) -> list[str]:
    """The summary's lines of a gate decision (`registry.Decision.to_dict()`): the verdict, and
    the candidate's test score beside the champion's and the trivial baseline's. Decisions
    recorded before the baseline gate (no `decision` key) read as before. `decided_at`: the
    recorded gate's time, when this run reused its decision instead of gating again."""
    if d.get("decision") == "rejected":
        verdict = "NOT promoted (registered without an alias)"
    else:
        verdict = "became @champion" if d["promoted"] else "kept as @challenger"
    champion = "none" if d["champion_score"] is None else (
        f"v{d['champion_version']} {d['champion_score']:.4f}")
    baseline = ("" if d.get("baseline_score") is None
                else f", {d['baseline_name']} baseline {d['baseline_score']:.4f}")
    if decided_at:
        verdict += f" (decided {_when(decided_at)}, not gated again)"
    return [f"  model           {d['model_name']} version {d['version']}: {verdict}",
            f"  gate            test {d['metric']} {d['candidate_score']:.4f} vs champion {champion}"
            f"{baseline}: {d['reason']}"]


def not_promoted_line(d: dict[str, Any]) -> str | None:
    """One line no reader misses when the version did not beat its trivial baseline; else None."""
    if d.get("decision") != "rejected":
        return None
    return (f"  !! NOT PROMOTED  {d['reason']}: {d['model_name']} version {d['version']} has no alias "
            "(a model that does not beat the trivial baseline never becomes @champion)")


def steps_line(rows: list[dict[str, Any]]) -> str:
    """The summary's line of workflow steps: each step's status, and its seconds when it ran."""
    return "  steps           " + ", ".join(
        f"{r['step']} {r['status']}" + (f" {r['seconds']:g}s" if r["status"] != "skipped" else "")
        for r in rows)


def plot_names(paths: list[str]) -> str:
    """The summary's list of logged pictures: `plots/` left out, each name once, in logging order."""
    return ", ".join(dict.fromkeys(p.removeprefix("plots/") for p in paths))


def record_test_evaluation(cfg: RecurConfig, tracker: RunTracker, checkpoint_dir: str,
                           timings: dict[str, float], *, curve_metric: bool) -> tuple[Any, str]:
    """Test-split evaluation, its pictures and the MLflow model, in the tracker's run.
    Returns the evaluation and the logged model's URI.

    `curve_metric`: also draw the run's learning curves (a study's parent run has none).
    """
    with steps.timed("evaluate", timings):
        steps.check_finite(checkpoint_dir)  # NaN weights: nothing to evaluate or log as a model
        evaluation = steps.evaluate_test_split(cfg, checkpoint_dir)
    with steps.timed("log", timings):
        tracker.log_metrics(evaluation.metrics)
        steps.check_finite(checkpoint_dir, evaluation.metrics)  # logged, then refused
        task, inputs, _truth = steps.gate_data(cfg, checkpoint_dir)
        if curve_metric:
            curve = f"val_{cfg.gate_metric}" if cfg.gate_metric in task.metrics else cfg.train.monitor
            history = tracker.log_learning_curves(curve)
            tracker.log_report(task.curves(history))
        tracker.log_report(evaluation.report)
        model_info = tracker.log_model(steps.checkpoint_file(checkpoint_dir), inputs.head(2))
    return evaluation, model_info.model_uri


def register(cfg: RecurConfig, tracker: RunTracker, model_uri: str, timings: dict[str, float],
             checkpoint_dir: str | None = None) -> str:
    """A new registry version of the logged model; returns its number."""
    from pipeline.tracking.registry import register_version

    with steps.timed("register", timings):
        if checkpoint_dir is not None:
            steps.check_finite(checkpoint_dir)  # a model with NaN or inf weights is never registered
        return register_version(model_uri, cfg.registry.model_name, run_id=tracker.run_id)


def promote(cfg: RecurConfig, tracker: RunTracker, checkpoint_dir: str, version: str, data_hash: str,
            timings: dict[str, float]) -> dict[str, Any]:
    """The registry gate: the new version against its task's trivial baseline and @champion on
    the test split; sets the alias (none when the baseline is not beaten). Logs the baseline's
    scores (`test_baseline_<name>`), the decision (`registry/decision.json`) and its picture
    (`plots/gate.png`) to the tracker's run."""
    from pipeline.data.dataset import read_split
    from pipeline.tracking import plots
    from pipeline.tracking.registry import gate

    with steps.timed("promote", timings):
        task, inputs, truth = steps.gate_data(cfg, checkpoint_dir)
        # the baseline is fit on train and scored on test exactly as the gate scores a model
        baseline = task.baseline(read_split(cfg.data.root, "train"),
                                 read_split(cfg.data.root, "test"))
        metric = cfg.gate_metric
        result = gate(tracking_uri=tracker.tracking_uri, model_name=cfg.registry.model_name,
                      version=version, run_id=tracker.run_id, metric=metric,
                      higher_is_better=task.higher_is_better[metric],
                      min_improvement=cfg.registry.min_improvement, inputs=inputs,
                      score=lambda outputs: task.score(outputs, truth), data_hash=data_hash,
                      baseline=baseline, baseline_name=task.baseline_name())
        decision = result.to_dict()
        tracker.log_dict(decision, "registry/decision.json")
        # forecast's evaluation already logs test_baseline_mae/rmse/smape: the same forecasts on
        # the same windows, so the same values
        tracker.log_metrics({"gate_candidate_score": result.candidate_score,
                             "gate_baseline_score": result.baseline_score,
                             **{f"test_baseline_{name}": value for name, value in baseline.items()}})
        tracker.log_figure(plots.gate_comparison(
            metric=result.metric, higher_is_better=task.higher_is_better[result.metric],
            candidate_version=result.version, candidate_score=result.candidate_score,
            champion_version=result.champion_version, champion_score=result.champion_score,
            min_improvement=result.min_improvement, promoted=result.promoted, reason=result.reason,
            baseline_name=result.baseline_name, baseline_score=result.baseline_score,
            references=reference_scores(baseline, metric, task.gate_metrics),
            rejected=result.decision == "rejected"),
            "plots/gate.png")
    return decision


def reference_scores(baseline: dict[str, float], metric: str,
                     gate_metrics: tuple[str, ...]) -> dict[str, float]:
    """The reference models among a task's baseline scores that measure `metric`, by label: names
    outside the gate metrics ending in `_<metric>` (nn1_euclidean_accuracy -> "nn1 euclidean
    reference")."""
    return {name.removesuffix(f"_{metric}").replace("_", " ") + "\nreference": value
            for name, value in baseline.items()
            if name not in gate_metrics and name.endswith(f"_{metric}")}
