"""A study's artifacts from hand-built trial records: the table, CSV, best-so-far, summary and plots."""

import io
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from pipeline.tracking.plots import close
from pipeline.tuning import plots
from pipeline.tuning.report import TrialRecord, best_of, best_so_far, summarize, trials_csv, trials_table

PARAMS = ["model.bidirectional", "model.cell", "model.hidden_size", "train.lr"]  # sorted


def _records() -> list[TrialRecord]:
    def params(lr, cell, hidden, bidirectional):
        return {"train.lr": lr, "model.cell": cell, "model.hidden_size": hidden,
                "model.bidirectional": bidirectional}

    return [
        TrialRecord("t1", "completed", params(1e-3, "lstm", 64, True), "val_loss", best_value=0.5,
                    last_value=0.55, epochs=5, seconds=30.0, mlflow_run_id="run1"),
        TrialRecord("t2", "failed", params(1e-2, "gru", 32, False), "val_loss", epochs=0, seconds=2.5,
                    error="RuntimeError: boom"),
        TrialRecord("t3", "stopped by scheduler", params(1e-4, "gru", 128, False), "val_loss", best_value=0.8,
                    last_value=0.9, epochs=2, seconds=12.0, mlflow_run_id="run3"),
        TrialRecord("t4", "completed", params(5e-4, "lstm", 96, True), "val_loss", best_value=0.4,
                    last_value=0.42, epochs=5, seconds=31.0, mlflow_run_id="run4"),
    ]


def test_table_has_one_row_per_trial_in_order_with_fixed_columns_then_sorted_params():
    table = trials_table(_records(), metric="val_loss", mode="min")
    assert list(table.columns) == ["trial_id", "status", "epochs", "seconds", "best_val_loss",
                                   "last_val_loss", *PARAMS, "error", "mlflow_run_id"]
    assert table["trial_id"].tolist() == ["t1", "t2", "t3", "t4"]
    assert table["status"].tolist() == ["completed", "failed", "stopped by scheduler", "completed"]
    assert table["epochs"].tolist() == [5, 0, 2, 5]
    assert table["seconds"].tolist() == [30.0, 2.5, 12.0, 31.0]
    best = table["best_val_loss"].tolist()
    assert best[0] == 0.5 and math.isnan(best[1]) and best[2:] == [0.8, 0.4]
    assert table["last_val_loss"].tolist()[2] == 0.9
    assert table["train.lr"].tolist() == [1e-3, 1e-2, 1e-4, 5e-4]
    assert table["model.cell"].tolist() == ["lstm", "gru", "gru", "lstm"]
    assert table["model.bidirectional"].tolist() == [True, False, False, True]
    # missing strings are NA (pandas may hold them as None or NaN, per its version)
    assert table["error"].isna().tolist() == [True, False, True, True]
    assert table["error"][1] == "RuntimeError: boom"
    assert table["mlflow_run_id"].isna().tolist() == [False, True, False, False]
    assert table["mlflow_run_id"][[0, 2, 3]].tolist() == ["run1", "run3", "run4"]


def test_a_param_only_some_trials_have_is_empty_for_the_others():
    records = _records()[:2]
    records[1].params["train.weight_decay"] = 0.01
    table = trials_table(records, metric="acc", mode="max")
    assert "train.weight_decay" in table.columns and "best_acc" in table.columns
    assert pd.isna(table["train.weight_decay"][0]) and table["train.weight_decay"][1] == 0.01


def test_csv_parses_back_to_the_table():
    back = pd.read_csv(io.StringIO(trials_csv(_records(), metric="val_loss", mode="min")))
    assert list(back.columns) == list(trials_table(_records(), metric="val_loss", mode="min").columns)
    assert back["trial_id"].tolist() == ["t1", "t2", "t3", "t4"]
    assert back["status"].tolist() == ["completed", "failed", "stopped by scheduler", "completed"]
    assert back["train.lr"].tolist() == pytest.approx([1e-3, 1e-2, 1e-4, 5e-4])
    assert back["model.hidden_size"].tolist() == [64, 32, 128, 96]
    assert pd.isna(back["best_val_loss"][1]) and back["best_val_loss"][3] == 0.4
    assert back["error"][1] == "RuntimeError: boom" and pd.isna(back["error"][0])


def test_best_so_far_per_mode_keeps_the_previous_best_over_a_trial_without_value():
    records = _records()  # best values 0.5, None, 0.8, 0.4
    assert best_so_far(records, mode="min") == [0.5, 0.5, 0.5, 0.4]
    assert best_so_far(records, mode="max") == [0.5, 0.5, 0.8, 0.8]
    failed_first = [records[1], records[0], records[2]]
    assert best_so_far(failed_first, mode="min") == [None, 0.5, 0.5]
    records[2].best_value = float("nan")  # a diverged trial is never the best
    assert best_so_far(records, mode="max") == [0.5, 0.5, 0.5, 0.5]
    assert best_so_far([], mode="min") == []


def test_best_of_a_trials_epochs_ignores_missing_values():
    assert best_of([0.9, None, 0.3, float("nan"), 0.7], mode="min") == 0.3
    assert best_of([0.9, None, 0.3, float("nan"), 0.7], mode="max") == 0.9
    assert best_of([None, float("nan")], mode="min") is None


def test_summary_counts_statuses_and_epochs_and_names_the_best_trial():
    records = _records()
    summary = summarize(records, metric="val_loss", mode="min")
    assert summary["status_counts"] == {"completed": 2, "stopped by scheduler": 1, "failed": 1,
                                        "stopped by time budget": 0, "interrupted": 0, "never started": 0,
                                        "running": 0}
    assert summary["trials"] == 4 and summary["trial_epochs"] == 12
    assert summary["best_trial_id"] == "t4" and summary["best_value"] == 0.4
    assert summary["best_params"] == records[3].params
    maximized = summarize(records, metric="val_loss", mode="max")
    assert maximized["best_trial_id"] == "t3" and maximized["best_value"] == 0.8


def test_summary_ties_go_to_the_earlier_trial_and_no_values_mean_no_best():
    records = _records()
    records[3].best_value = 0.5  # ties t1
    assert summarize(records, metric="val_loss", mode="min")["best_trial_id"] == "t1"
    empty = summarize([records[1]], metric="val_loss", mode="min")
    assert empty["best_trial_id"] is None and empty["best_params"] is None and empty["best_value"] is None
    assert empty["status_counts"]["failed"] == 1


def test_a_bad_mode_or_status_is_refused():
    records = _records()
    for call in (lambda: trials_table(records, metric="val_loss", mode="minimize"),
                 lambda: trials_csv(records, metric="val_loss", mode="up"),
                 lambda: best_so_far(records, mode="MIN"),
                 lambda: summarize(records, metric="val_loss", mode=""),
                 lambda: best_of([1.0], mode="best"),
                 lambda: plots.best_metric_so_far([1.0], metric="val_loss", mode="lowest"),
                 lambda: plots.parallel_coordinates(trials_table(records, metric="val_loss", mode="min"),
                                                    params=PARAMS, metric="val_loss", mode="maximum")):
        with pytest.raises(ValueError, match=r"tune\.mode must be 'min' or 'max'"):
            call()
    with pytest.raises(ValueError, match="status must be one of"):
        TrialRecord("t9", "done", {}, "val_loss")


def test_best_so_far_plot_steps_over_trial_numbers_with_each_trials_best_as_points():
    records = _records()
    fig = plots.best_metric_so_far(best_so_far(records, mode="min"), metric="val_loss", mode="min",
                                   trial_values=[r.best_value for r in records])
    try:
        (ax,) = fig.axes
        points, step = ax.lines
        assert step.get_drawstyle() == "steps-post"
        assert step.get_xdata().tolist() == [1, 2, 3, 4]
        assert step.get_ydata().tolist() == [0.5, 0.5, 0.5, 0.4]
        ys = points.get_ydata()
        assert ys[0] == 0.5 and np.isnan(ys[1]) and ys[2:].tolist() == [0.8, 0.4]
        assert ax.get_ylabel() == "val_loss" and ax.get_xlabel() == "trial"
    finally:
        close(fig)
    fig = plots.best_metric_so_far([None, 0.5], metric="acc", mode="max")
    try:
        assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 1
    finally:
        close(fig)
    with pytest.raises(ValueError, match="one trial value per trial"):
        plots.best_metric_so_far([0.5, 0.5], metric="acc", mode="max", trial_values=[0.5])


def _luminance(color) -> float:
    r, g, b = to_rgb(color)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_parallel_coordinates_one_axis_per_param_and_metric_one_line_per_trial():
    table = trials_table(_records(), metric="val_loss", mode="min")
    fig = plots.parallel_coordinates(table, params=PARAMS, metric="val_loss", mode="min")
    try:
        host, colorbar, *axes = fig.axes
        assert len(axes) == len(PARAMS) + 1  # plus the metric's axis
        assert colorbar.get_ylabel() == "best_val_loss"
        assert [t.get_text() for t in host.get_xticklabels()] == [*PARAMS, "best_val_loss"]
        bidirectional, cell, hidden, lr, metric = axes
        assert [t.get_text() for t in bidirectional.get_yticklabels()] == ["False", "True"]
        assert [t.get_text() for t in cell.get_yticklabels()] == ["gru", "lstm"]
        assert lr.get_yscale() == "log"  # 1e-4 .. 1e-2: a range of 100
        assert hidden.get_yscale() == "linear" and metric.get_yscale() == "linear"  # 32 .. 128: 4

        assert len(host.lines) == 4
        t1, t2, t3, t4 = host.lines
        # t1: True -> 1, lstm -> 1, 64 in 32..128 -> 1/3, 1e-3 in 1e-4..1e-2 (log) -> 1/2, 0.5 in 0.4..0.8
        assert t1.get_ydata() == pytest.approx([1.0, 1.0, 1 / 3, 0.5, 0.25])
        assert t4.get_ydata()[-1] == pytest.approx(0.0) and t3.get_ydata()[-1] == pytest.approx(1.0)
        # the failed trial: grey, dashed, no metric point; the others solid
        assert t2.get_linestyle() == "--" and to_rgb(t2.get_color()) == to_rgb("0.6")
        assert np.isnan(t2.get_ydata()[-1]) and t2.get_ydata()[2] == pytest.approx(0.0)
        assert all(line.get_linestyle() == "-" for line in (t1, t3, t4))
        # min: the lowest loss is brightest
        assert _luminance(t4.get_color()) > _luminance(t1.get_color()) > _luminance(t3.get_color())
    finally:
        close(fig)

    fig = plots.parallel_coordinates(table, params=["model.cell"], metric="val_loss", mode="max")
    try:
        host, _, cell, metric = fig.axes
        t1, _, t3, t4 = host.lines
        assert _luminance(t3.get_color()) > _luminance(t1.get_color()) > _luminance(t4.get_color())
    finally:
        close(fig)


def test_parallel_coordinates_without_any_metric_value_has_no_colorbar():
    records = [r for r in _records() if r.trial_id == "t2"] + [
        TrialRecord("t5", "running", {"train.lr": 0.01, "model.cell": "gru"}, "acc", epochs=0)]
    table = trials_table(records, metric="acc", mode="max")
    fig = plots.parallel_coordinates(table, params=["model.cell", "train.lr"], metric="acc", mode="max")
    try:
        assert len(fig.axes) == 1 + 3  # the lines and three vertical axes
        assert [line.get_linestyle() for line in fig.axes[0].lines] == ["--", "--"]
        # a constant numeric column sits in the middle
        assert [line.get_ydata()[1] for line in fig.axes[0].lines] == [0.5, 0.5]
    finally:
        close(fig)
    with pytest.raises(ValueError, match="no column"):
        plots.parallel_coordinates(table, params=["train.nope"], metric="acc", mode="max")
