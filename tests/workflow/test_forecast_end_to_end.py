"""Forecast end to end against a real `mlflow server` and a real local Ray (2 workers).

Given a small seasonal CSV series, when `recur run` imports, trains and evaluates a forecaster,
then MLflow holds the model's and the seasonal-naive baseline's test metrics and both forecast
plots, the model is registered as version 1 @champion gated on MASE, and the registered pyfunc
forecasts raw histories of lengths it never saw in training.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.tracking.store import use_tracking_uri

pytestmark = pytest.mark.slow

MODEL = "e2e-forecast"
PERIOD = 8
# The baseline the gate asks the model to beat: the naive last value (m = 1). A seasonal naive of
# the series' own period (m = 8) repeats the last cycle of a near-perfect sine almost exactly, so
# no model trained for 4 epochs beats it, and the gate rightly refuses such a model.
BASELINE_PERIOD = 1


def _series_csv(path: Path, num_steps: int = 120) -> Path:
    """A sine of period 8 around 50 with a little noise, one row per day."""
    rng = np.random.default_rng(0)
    values = 50 + 10 * np.sin(2 * np.pi * np.arange(num_steps) / PERIOD) + rng.normal(0, 0.5, num_steps)
    days = pd.date_range("2024-01-01", periods=num_steps, freq="D").strftime("%Y-%m-%d")
    path.write_text("day,load\n" + "".join(f"{d},{v:.3f}\n" for d, v in zip(days, values)))
    return path


def test_forecast_run_tracks_registers_and_predicts(ray_local, mlflow_server, tmp_path, capsys):
    import mlflow

    source = _series_csv(tmp_path / "load.csv")
    config = tmp_path / "forecast.yaml"
    config.write_text(
        "data:\n"
        "  task: forecast\n"
        f"  source: {{format: csv, paths: ['{source}'], time_column: day, value_columns: [load],\n"
        f"           window: 16, horizon: 4, seasonal_period: {BASELINE_PERIOD}}}\n"
        "  batch_size: 8\n"
        "model: {cell: gru, hidden_size: 12, seasonal_skip: true, naive_blend: true}\n"  # as forecast.yaml
        "train: {epochs: 4, lr: 0.01, early_stopping_patience: 0}\n"
        f"registry: {{model_name: {MODEL}}}\n"
        "tracking: {experiment: e2e-forecast}\n"
        "resources: {num_workers: 2, cpus_per_worker: 0.5}\n"
    )
    dataset = tmp_path / "dataset"
    # when the pipeline runs (the registry metric is the task's default: mase)
    assert main(["run", str(config), "--set", f"data.root={dataset}",
                 "--set", f"tracking.tracking_uri={mlflow_server}",
                 "--set", f"tracking.runs_dir={tmp_path / 'runs'}"]) == 0
    out = capsys.readouterr().out
    assert "test mase" in out and "test baseline mae" in out and "became @champion" in out
    assert plt.get_fignums() == []  # every figure the run drew in this process was logged and closed

    # then the dataset was split by time: 120 days -> train 72, val 24, test 24 steps
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert {s: i["rows"] for s, i in manifest["splits"].items()} == {"train": 53, "val": 21, "test": 21}

    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("e2e-forecast").experiment_id])
    metrics = run.data.metrics
    assert run.data.params["model.seasonal_skip"] == "True"  # trained, gated and served with the skip
    # and with the blend weighed on the val windows after training, recorded and said
    assert run.data.params["model.naive_blend"] == "True" and 0 <= metrics["naive_blend_weight"] <= 1
    horizon_file = client.download_artifacts(run.info.run_id, "eval/error_by_horizon.json", str(tmp_path))
    weights = json.loads(Path(horizon_file).read_text())["naive_blend"]
    assert weights == {"load": metrics["naive_blend_weight"]}
    summary = Path(client.download_artifacts(run.info.run_id, "eval/summary.txt", str(tmp_path))).read_text()
    assert "w fit on the val windows (model.naive_blend): load" in summary
    for key in ("test_loss", "test_mae", "test_rmse", "test_smape", "test_mase",
                "test_baseline_mae", "test_baseline_rmse", "test_baseline_smape"):
        assert np.isfinite(metrics[key]), key
    # MASE is the model's MAE over the baseline's, on the same windows
    assert metrics["test_mase"] == pytest.approx(metrics["test_mae"] / metrics["test_baseline_mae"], rel=1e-6)
    for key in ("train_loss", "val_loss", "val_mase"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(range(4)), key
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert losses[-1] < losses[0]

    artifacts = {f.path for d in ("plots", "eval", "registry")
                 for f in client.list_artifacts(run.info.run_id, d)}
    assert {"plots/forecast_vs_actual.png", "plots/error_by_horizon.png", "plots/learning_curves.png",
            "eval/error_by_horizon.json", "eval/summary.txt", "registry/decision.json",
            "plots/naive_blend.png", "eval/naive_blend.json"} <= artifacts
    png = client.download_artifacts(run.info.run_id, "plots/forecast_vs_actual.png", str(tmp_path))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # version 1 is champion, gated on mase; the gate's score (raw histories through the pyfunc)
    # is the evaluation's test mase
    mv = client.get_model_version_by_alias(MODEL, "champion")
    assert mv.version == "1" and mv.run_id == run.info.run_id
    assert mv.tags["recur.metric"] == "mase"
    assert float(mv.tags["recur.test_mase"]) == pytest.approx(metrics["test_mase"], rel=1e-4)

    # the registered model forecasts raw histories (time x channels) of other lengths
    with use_tracking_uri(mlflow_server):
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    steps = np.arange(40)
    histories = [(50 + 10 * np.sin(2 * np.pi * steps[:n, None] / PERIOD)).tolist() for n in (5, 40)]
    predicted = model.predict(pd.DataFrame({"x": histories}))
    forecasts = [np.array([np.asarray(step, dtype=float) for step in f]) for f in predicted["forecast"]]
    assert [f.shape for f in forecasts] == [(4, 1), (4, 1)]
    assert all(np.isfinite(f).all() for f in forecasts)
    # forecasts are in raw units (the series lives around 50), not normalized ones
    assert 20 < float(np.mean(forecasts[1])) < 80
