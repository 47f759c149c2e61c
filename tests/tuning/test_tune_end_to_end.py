"""A tiny study end to end on a local 2-CPU Ray and a real `mlflow server`.

Given the toy dataset, when `recur tune` searches 3 trials of 2 epochs with ASHA, then the study
finishes, MLflow holds one parent run with one nested child run per trial (with params, per-epoch
curves and a final status), the study artifacts are on the parent, and the best trial's model is
registered through the same gate as `recur run`. A resource plan that cannot fit fails at once.
A forecast study over the shipped `configs/forecast.yaml` blends its best trial with seasonal naive
on the val windows before the test and the gate, as `recur run` does.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.tracking.store import use_tracking_uri
from pipeline.training.checkpoint import model_from_checkpoint

pytestmark = pytest.mark.slow

MODEL = "tune-toy"
FORECAST_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "forecast.yaml"


def _config(tmp_path, dataset, uri, space="    model.cell: {choice: [gru, lstm]}\n"):
    config = tmp_path / "tune.yaml"
    config.write_text(
        "model: {cell: gru, hidden_size: 8}\n"
        "train: {epochs: 2, early_stopping_patience: 0, monitor: val_accuracy, monitor_mode: max}\n"
        "data: {batch_size: 16}\n"
        # one rank in each trial's own actor (pipeline.training.local), no worker group; the
        # documented study (test_tune_readme.py) and the resumed one run trials with workers
        "resources: {num_workers: 0}\n"
        f"registry: {{model_name: {MODEL}}}\n"
        "tracking: {experiment: tune-e2e}\n"
        "tune:\n"
        "  num_samples: 3\n"
        "  scheduler: {name: asha, grace_period: 1, reduction_factor: 2}\n"
        "  space:\n"
        "    train.lr: {loguniform: [1.0e-3, 3.0e-2]}\n" + space
    )
    return ["tune", str(config), "--set", f"data.root={dataset}", "--set", f"tracking.tracking_uri={uri}",
            "--set", f"tracking.runs_dir={tmp_path / 'runs'}"]


def test_tiny_study_nests_trials_and_registers_the_best(ray_local, mlflow_server, toy_dataset, tmp_path,
                                                         capsys):
    # every trial with the conv front-end, whose batch norms the best checkpoint gets new statistics for
    args = _config(tmp_path, toy_dataset, mlflow_server) + ["--set", "model.frontend=conv"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "recur tune finished" in out and "became @champion" in out
    # the table of trials on a stderr that is not a terminal: a plain line per status change
    # (with the sampled values), and the counts with the best trial at the end
    shown = [line for line in err.splitlines() if line.startswith("[recur]")]
    assert "\r" not in err and not any("\x1b" in line for line in shown)
    running = [line for line in shown if line.startswith("[recur] trial ") and " running  " in line]
    assert len(running) == 3 and all("model.cell=" in line and "train.lr=" in line for line in running)
    ended = [line for line in shown if " after " in line and "val_accuracy last " in line]
    assert len(ended) == 3
    assert all(" completed " in line or " stopped by scheduler " in line for line in ended), ended
    assert shown[-1].startswith("[recur] trials: completed ") and " best " in shown[-1], shown

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("tune-e2e")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("recur.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and len(runs) == 4
    for child in children:
        assert child.data.tags["recur.trial_status"] in ("completed", "stopped by scheduler")
        assert child.info.status == "FINISHED"
        assert "sampled.train.lr" in child.data.params and child.data.params["sampled.model.cell"] in (
            "gru", "lstm")
        epochs = [m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")]
        assert epochs == list(range(len(epochs))) and 1 <= len(epochs) <= 2
    # ASHA with reduction factor 2 and grace period 1 stops some trials after their first epoch
    statuses = [c.data.tags["recur.trial_status"] for c in children]
    assert statuses.count("completed") >= 1

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "tune")}
    assert {"tune/trials.csv", "tune/summary.json", "tune/space.json"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/tune_best_so_far.png", "plots/tune_parallel_coordinates.png"} <= plots
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "tune/trials.csv", str(tmp_path)))
    assert len(table) == 3 and {"train.lr", "model.cell", "best_val_accuracy"} <= set(table.columns)

    version = client.get_model_version_by_alias(MODEL, "champion")
    assert version.run_id == parent.info.run_id
    assert "test_accuracy" in parent.data.metrics
    # the best trial's checkpoint had its 3 batch norms set to the train split's statistics
    assert parent.data.metrics["population_batch_norm_layers"] == 3

    # the study is the workflow's tune step: the same config again reuses every recorded step
    assert "steps           ingest succeeded" in out and ", tune succeeded " in out
    assert main(args) == 0
    again = capsys.readouterr().out
    assert ("steps           ingest skipped, validate skipped, tune skipped, evaluate skipped, "
            "register skipped, promote skipped") in again and parent.info.run_id in again
    assert len(client.search_runs([experiment.experiment_id])) == 4
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1
    assert main(["runs", "show", parent.info.run_id, "--tracking-uri", mlflow_server]) == 0
    shown = capsys.readouterr().out
    assert all(f"  {step} " in shown for step in ("ingest", "validate", "tune", "evaluate", "promote"))
    assert "  train " not in shown


def test_a_trial_that_cannot_fit_fails_before_the_study(ray_local, mlflow_server, toy_dataset, tmp_path,
                                                        capsys):
    args = _config(tmp_path, toy_dataset, mlflow_server) + ["--set", "resources.num_workers=4",
                                                             "--set", "resources.cpus_per_worker=1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "one trial needs 4 CPUs" in err and "resources.num_workers=4" in err


def test_a_trial_that_cannot_get_resources_fails_the_study_within_the_timeout(
        ray_local, mlflow_server, toy_dataset, tmp_path, capsys):
    """Given a placement group that holds 1.5 of the cluster's 2 CPUs (as one a crashed run leaves
    behind), when a study's trial needs a whole free CPU to read its data, then the trial fails
    after resources.start_timeout_s saying what is free and what holds the rest, the study exits 1
    naming the failed trial, and nothing is registered; it does not wait forever."""
    import time

    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from pipeline.tuning.study_progress import read_outcomes

    held = placement_group([{"CPU": 1.5}])
    ray.get(held.ready(), timeout=60)
    try:
        started = time.monotonic()
        code = main(_config(tmp_path, toy_dataset, mlflow_server, space="") + [
            "--set", "tune.num_samples=1", "--set", "resources.start_timeout_s=3",
            "--set", "resources.num_workers=2",
            "--set", "tracking.experiment=tune-starved"])
        seconds = time.monotonic() - started
    finally:
        remove_placement_group(held)
    err = capsys.readouterr().err
    assert code == 1, err
    assert seconds < 120, seconds  # the trial's own start, 3 s of waiting, the study's records
    line = next(line for line in err.splitlines() if line.startswith("recur: study "))
    assert "did not run every trial to its end (1 failed)" in line and "Nothing was registered" in line
    assert ("ResourceError: reading " in line and "needs 1 CPU free" in line
            and "only 0.5 of the cluster's 2 CPUs were free for resources.start_timeout_s = 3 s" in line
            and "1 placement group(s) hold 1.5 CPUs" in line), line
    (study,) = (tmp_path / "runs" / "tune").iterdir()
    assert [o["status"] for o in read_outcomes(study).values()] == ["failed"]
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("tune-starved").experiment_id])
    (child,) = [r for r in runs if "recur.trial_id" in r.data.tags]
    assert child.data.tags["recur.trial_status"] == "failed" and child.info.status == "FAILED"
    (parent,) = [r for r in runs if r.data.tags.get("recur.kind") == "study"]
    assert parent.info.status == "FAILED" and parent.data.tags["recur.step.tune"] == "failed"


def test_pbt_over_architecture_keys_is_refused_before_any_trial(mlflow_server, toy_dataset, tmp_path, capsys):
    """PBT copies a checkpoint into a trial and then resamples its values: with model.cell in the
    space an LSTM's weights would be loaded into a GRU. The study is refused, exit 2, before Ray,
    MLflow or any trial."""
    args = _config(tmp_path, toy_dataset, mlflow_server) + [
        "--set", "tune.scheduler.name=pbt", "--set", "tracking.experiment=tune-pbt-refused"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "recur: error: tune.space.model.cell: tune.scheduler pbt copies one trial's checkpoint" in err
    assert not (tmp_path / "runs").exists()
    assert MlflowClient(mlflow_server).get_experiment_by_name("tune-pbt-refused") is None


def test_pbt_copies_the_better_trial_and_perturbs(ray_local, mlflow_server, toy_dataset, tmp_path, capsys):
    """Synchronous PBT with two trials: at epoch 2 both wait, then the worse one restarts from the
    better one's checkpoint with perturbed values; Tune's exploit log goes to the parent run, and
    no trial ends in error. (The asynchronous default exploits only when the better trial happens
    to reach an interval first, so a short test of it would depend on timing.)"""
    dropout = "    model.dropout: {uniform: [0.0, 0.3]}\n"  # PBT may change it: the weights still fit
    args = _config(tmp_path, toy_dataset, mlflow_server, space=dropout) + [
        "--set", "tune.num_samples=2", "--set", "train.epochs=3", "--set", "train.monitor=val_loss",
        "--set", "train.monitor_mode=min",
        "--set", "tune.scheduler.name=pbt", "--set", "tune.scheduler.perturbation_interval=2",
        "--set", "tune.scheduler.quantile_fraction=0.5", "--set", "tune.scheduler.synch=true",
        "--set", "registry.model_name=tune-pbt",
        "--set", "tracking.experiment=tune-pbt"]
    assert main(args) == 0, capsys.readouterr().err
    assert "recur tune finished" in capsys.readouterr().out

    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("tune-pbt").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("recur.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    exploits = pd.read_csv(client.download_artifacts(parent.info.run_id, "tune/pbt_exploits.csv",
                                                     str(tmp_path)))
    assert len(exploits) >= 1, "synchronous PBT copies a checkpoint at every interval"
    assert {c.data.tags["recur.trial_status"] for c in children} == {"completed"}  # none failed
    by_trial = {c.data.tags["recur.trial_id"]: c for c in children}
    for row in exploits.itertuples():
        assert row.trial_id in by_trial and row.source_trial_id in by_trial
        tags = by_trial[row.trial_id].data.tags
        assert any(k.startswith("recur.sampled.restart_") for k in tags)  # same run, restarted
    version = client.get_model_version_by_alias("tune-pbt", "champion")
    assert version.run_id == parent.info.run_id


def test_a_forecast_study_blends_its_best_trial_with_seasonal_naive(ray_local, mlflow_server, tmp_path,
                                                                    capsys):
    """`recur tune configs/forecast.yaml OVERLAY` on a CSV series: the best trial's checkpoint gets
    its naive-blend weights from the val windows (as `recur run`'s does) before the test and the
    gate, and the registered model serves that mix."""
    rng = np.random.default_rng(1)
    steps = np.arange(160)
    values = 50 + 0.1 * steps + 10 * np.sin(2 * np.pi * steps / 8) + rng.normal(0, 1.0, steps.size)
    source = tmp_path / "load.csv"
    source.write_text("day,load\n" + "".join(f"{d},{v:.3f}\n" for d, v in zip(steps, values)))
    overlay = tmp_path / "tune-forecast.yaml"
    overlay.write_text(
        "data:\n"
        f"  source: {{format: csv, paths: ['{source}'], time_column: day, value_columns: [load],\n"
        "           window: 16, horizon: 4, seasonal_period: 1}\n"
        "model: {hidden_size: 8}\n"
        "train: {epochs: 3, min_steps: 0, max_epochs: 3, early_stopping_patience: 0}\n"
        "resources: {num_workers: 0}\n"
        "registry: {model_name: tune-forecast}\n"
        "tracking: {experiment: tune-forecast}\n"
        "tune:\n"
        "  num_samples: 2\n"
        "  space:\n"
        "    train.lr: {loguniform: [3.0e-3, 3.0e-2]}\n"
    )
    assert main(["tune", str(FORECAST_CONFIG), str(overlay), "--set", f"data.root={tmp_path / 'dataset'}",
                 "--set", f"tracking.tracking_uri={mlflow_server}",
                 "--set", f"tracking.runs_dir={tmp_path / 'runs'}"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "recur tune finished" in out and "test mase" in out
    assert plt.get_fignums() == []  # the study's, the evaluation's and the gate's figures were closed

    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("tune-forecast").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("recur.kind") == "study"]
    assert len([r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]) == 2
    metrics = parent.data.metrics
    weight = metrics["naive_blend_weight"]
    assert 0 <= weight <= 1 and np.isfinite(metrics["test_mase"])
    artifacts = {f.path for d in ("plots", "eval") for f in client.list_artifacts(parent.info.run_id, d)}
    assert {"plots/naive_blend.png", "eval/naive_blend.json", "plots/forecast_vs_actual.png"} <= artifacts
    summary = Path(client.download_artifacts(parent.info.run_id, "eval/summary.txt", str(tmp_path)))
    assert "w fit on the val windows (model.naive_blend): load" in summary.read_text()

    # the study's model version, champion or not, is the blended checkpoint, gated on MASE
    (version,) = client.search_model_versions("name='tune-forecast'")
    assert version.run_id == parent.info.run_id and version.tags["recur.metric"] == "mase"
    assert float(version.tags["recur.test_mase"]) == pytest.approx(metrics["test_mase"], rel=1e-4)
    with use_tracking_uri(mlflow_server):  # models:/ downloads ask MLflow's current registry
        source = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/tune-forecast/{version.version}",
                                                     dst_path=str(tmp_path / "registered"))
    model, _ = model_from_checkpoint(str(next(Path(source).rglob("checkpoint.pt")).parent))
    assert model.naive_blend_C.tolist() == [pytest.approx(weight)]
