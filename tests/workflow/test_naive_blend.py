"""The workflow's naive-blend step (`model.naive_blend`): after training, a forecaster's weights
against seasonal naive are set from the val windows, in a copy of the checkpoint that also holds
the record; Ray Train's checkpoint is kept. No Ray here: the step reads the dataset folder and
the checkpoint file like the driver does (after `recur run`'s training and a study's best trial)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import RecurConfig
from pipeline.data.dataset import read_manifest, read_split
from pipeline.data.importers.csv import import_csv
from pipeline.data.preprocess import Preprocessing
from pipeline.tasks import build_task
from pipeline.training.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from pipeline.workflow.steps import NAIVE_BLEND_FILE, blend_metric, evaluate_test_split, naive_blend

PERIOD = 4


def _series(tmp_path: Path) -> str:
    """120 days: `season` repeats every 4 days exactly (seasonal naive is exact on it), `walk` is
    a random walk (no season to repeat)."""
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(0, 1, 120)) + 50
    pattern = [3.0, 7.0, 5.0, 1.0]
    lines = ["day,season,walk"] + [f"{d},{pattern[d % PERIOD]},{walk[d]:.4f}" for d in range(120)]
    path = tmp_path / "series.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _setup(tmp_path: Path, **model):
    dataset = str(tmp_path / "dataset")
    import_csv(_series(tmp_path), dataset, time_column="day", value_columns=["season", "walk"], window=12,
               horizon=4, seasonal_period=PERIOD)
    cfg = RecurConfig.model_validate({
        "data": {"root": dataset, "task": "forecast", "batch_size": 8},
        "model": {"cell": "gru", "hidden_size": 8, "instance_norm": False, "naive_blend": True, **model},
        "registry": {"metric": "mase"},
    })
    pre = Preprocessing.from_manifest(read_manifest(dataset))
    task = build_task(cfg, pre)
    torch.manual_seed(0)
    folder = tmp_path / "ray-checkpoint"
    folder.mkdir()
    save_checkpoint(str(folder), model=task.build_model(), preprocessing=pre)
    return cfg, task, folder


def test_the_checkpoint_to_register_holds_the_weights_of_the_val_windows(tmp_path, caplog):
    # given an untrained forecaster (its blend at 1, the model's own forecast)
    cfg, task, folder = _setup(tmp_path)
    out_dir = tmp_path / "registered"

    # when the step runs
    with caplog.at_level("INFO", logger="pipeline.workflow.steps"):
        out, record = naive_blend(cfg, str(folder), str(out_dir))

    # then the exactly periodic channel leans wholly on seasonal naive (its val MAE is 0 at w = 0)
    assert out == str(out_dir)
    assert record["weights"]["season"] == 0.0 and record["val_mase"]["season"][0] is None  # naive MAE 0
    walk = record["weights"]["walk"]
    assert walk in record["grid"] and record["val_mase"]["walk"][0] == 1.0  # w = 0: naive itself
    assert record["windows"] == read_split(cfg.data.root, "val").num_rows
    assert json.loads((out_dir / NAIVE_BLEND_FILE).read_text()) == record
    assert blend_metric(record) == {"naive_blend_weight": walk / 2}
    assert "season 0.00 (val MASE n/a, model alone n/a), walk " in caplog.text  # what the log says

    # the copy serves the mix; Ray Train's checkpoint still forecasts with the model alone
    blended, _ = model_from_checkpoint(out)
    assert blended.naive_blend_C.tolist() == [0.0, walk]
    assert load_checkpoint(str(folder))["state_dict"]["naive_blend_C"].tolist() == [1.0, 1.0]
    # and the record's MASE at w = 1 is the walk channel's val MASE of the model alone
    alone, _ = model_from_checkpoint(str(folder))
    batch = next(task.table_batches(read_split(cfg.data.root, "val"), 1000))
    with torch.no_grad():
        forecast = task.denormalize(alone(batch["x"], batch["lengths"]))
    actual, naive = batch["y_raw"][..., 1], batch["naive"][..., 1]
    mase = float((forecast[..., 1] - actual).abs().mean() / (naive - actual).abs().mean())
    assert record["val_mase"]["walk"][-1] == pytest.approx(mase, rel=1e-5)


def test_the_step_is_off_unless_asked_and_in_place_for_a_study(tmp_path):
    cfg, _, folder = _setup(tmp_path)
    off = cfg.model_copy(update={"model": cfg.model.model_copy(update={"naive_blend": False})})
    assert naive_blend(off, str(folder), str(tmp_path / "unused")) == (str(folder), None)
    assert not (tmp_path / "unused").exists() and blend_metric(None) == {}
    # a study's best trial is blended in its own local copy
    out, record = naive_blend(cfg, str(folder), str(folder))
    assert out == str(folder) and (folder / NAIVE_BLEND_FILE).exists()
    assert load_checkpoint(out)["state_dict"]["naive_blend_C"].tolist() == list(record["weights"].values())


def test_the_test_evaluation_shows_how_the_weights_were_chosen(tmp_path):
    cfg, _, folder = _setup(tmp_path)
    out, record = naive_blend(cfg, str(folder), str(tmp_path / "registered"))
    report = evaluate_test_split(cfg, out).report
    assert report.dicts["eval/naive_blend.json"] == record
    figure = report.figures["plots/naive_blend.png"]
    (ax,) = figure.axes
    labels = [line.get_label() for line in ax.get_lines()]
    assert "season: w = 0.00" in labels and f"walk: w = {record['weights']['walk']:.2f}" in labels
    season = next(line for line in ax.get_lines() if line.get_label() == "season: w = 0.00")
    assert np.isnan(season.get_ydata()).all()  # seasonal naive exact on val: no MASE to draw
    assert "plots/naive_blend.png" not in evaluate_test_split(cfg, str(folder)).report.figures  # unblended
