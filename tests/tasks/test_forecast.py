"""Forecast task: seasonal-naive baseline, metrics by hand, model shapes, predict/score vs compute."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from pipeline.config import RecurConfig
from pipeline.data.dataset import x_array
from pipeline.data.importers.csv import segment_bounds, window_starts
from pipeline.data.preprocess import Preprocessing
from pipeline.models import model_from_args
from pipeline.models.forecaster import Forecaster
from pipeline.tasks import build_task
from pipeline.tasks.forecast import BLEND_GRID, blend_weights, error_sums, scores_from_sums, seasonal_naive
from pipeline.training.loop import train_epoch
from pipeline.training.optimizer import make_optimizer


def test_seasonal_naive_repeats_the_last_season():
    # Given two histories, concatenated: [1..5] and [7, 8]
    steps_NC = np.array([[1], [2], [3], [4], [5], [7], [8]], dtype=np.float32)
    lengths_B = np.array([5, 2])
    # m = 2: the last season of [1..5] is (4, 5), repeated; of [7, 8] it is (7, 8)
    naive = seasonal_naive(steps_NC, lengths_B, horizon=3, period=2)
    assert naive[:, :, 0].tolist() == [[4, 5, 4], [7, 8, 7]]
    # m = 1: the last value
    last = seasonal_naive(steps_NC, lengths_B, horizon=3, period=1)
    assert last[:, :, 0].tolist() == [[5, 5, 5], [8, 8, 8]]
    # m = 3 with a history of 2 steps uses m = 2
    assert seasonal_naive(steps_NC, lengths_B, horizon=2, period=3)[:, :, 0].tolist() == [[3, 4], [7, 8]]


def test_seasonal_naive_keeps_channels_apart():
    steps_NC = np.array([[1, 10], [2, 20], [3, 30]], dtype=np.float32)
    naive = seasonal_naive(steps_NC, np.array([3]), horizon=2, period=2)
    assert naive.tolist() == [[[2, 20], [3, 30]]]


def test_metrics_by_hand():
    # forecast (1, 2), actual (2, 2), naive (0, 4): one window, horizon 2, one channel
    forecast, actual, naive = (torch.tensor(v, dtype=torch.float32).view(1, 2, 1)
                               for v in ([1.0, 2.0], [2.0, 2.0], [0.0, 4.0]))
    scores = scores_from_sums(error_sums(forecast, actual, naive))
    # model |errors| 1, 0; baseline |errors| 2, 2
    assert scores["mae"] == pytest.approx(0.5)
    assert scores["rmse"] == pytest.approx(math.sqrt(0.5))
    assert scores["smape"] == pytest.approx((200 * 1 / 3 + 0) / 2)  # 33.33 %
    assert scores["mase"] == pytest.approx(0.25)
    assert scores["baseline_mae"] == pytest.approx(2.0) and scores["baseline_rmse"] == pytest.approx(2.0)
    assert scores["baseline_smape"] == pytest.approx((200 * 2 / 2 + 200 * 2 / 6) / 2)  # 133.33 %


def test_smape_is_zero_where_forecast_and_actual_are_both_zero():
    zeros = torch.zeros(1, 2, 1)
    scores = scores_from_sums(error_sums(zeros, zeros, torch.ones(1, 2, 1)))
    assert scores["smape"] == 0.0 and scores["mase"] == 0.0 and scores["baseline_smape"] == 200.0


def test_sums_add_up_across_batches():
    rng = np.random.default_rng(0)
    f, a, n = (torch.from_numpy(rng.normal(size=(6, 3, 2))) for _ in range(3))
    whole = error_sums(f, a, n)
    parts = [error_sums(f[i : i + 2], a[i : i + 2], n[i : i + 2]) for i in (0, 2, 4)]
    for key in whole:
        assert torch.allclose(whole[key], sum(p[key] for p in parts))
    assert whole["abs_H"].shape == (3,) and whole["abs_H"].sum() == pytest.approx(float(whole["abs"]))


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_forecaster_shapes_and_rebuild(pooling):
    torch.manual_seed(0)
    model = Forecaster(input_size=2, horizon=3, hidden_size=8, cell="gru", pooling=pooling)
    x_BTC = torch.randn(4, 6, 2)
    lengths_B = torch.tensor([6, 3, 1, 5])
    y_BHC = model(x_BTC, lengths_B)
    assert y_BHC.shape == (4, 3, 2)
    rebuilt = model_from_args(model.model_args, "Forecaster")
    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    rebuilt.eval()
    assert torch.equal(rebuilt(x_BTC, lengths_B), model(x_BTC, lengths_B))
    # padding never leaks: the 3-step history forecasts the same alone
    assert torch.allclose(model(x_BTC[1:2, :3], lengths_B[1:2]), model(x_BTC, lengths_B)[1:2], atol=1e-6)


def _pre(mean=(10.0, -5.0), std=(2.0, 4.0)) -> Preprocessing:
    return Preprocessing(mean=list(mean), std=list(std), task="forecast",
                         task_params={"window": 4, "horizon": 2, "stride": 1, "seasonal_period": 2,
                                      "value_columns": ["a", "b"]})


def _table(num_rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    xs = [rng.normal(10, 3, size=(4, 2)).astype(np.float32) for _ in range(num_rows)]
    ys = [rng.normal(10, 3, size=(2, 2)).astype(np.float32) for _ in range(num_rows)]
    return pa.Table.from_arrays([pa.array([f"t={i}" for i in range(num_rows)]), x_array(xs), x_array(ys)],
                                names=["id", "x", "y"])


def test_collate_normalizes_x_and_y_with_the_train_statistics():
    task = build_task(None, _pre())
    table = _table(3)
    batch = task.collate(table)
    x_raw = np.stack([np.asarray(r, dtype=np.float32) for r in table.column("x").to_pylist()])
    y_raw = np.stack([np.asarray(r, dtype=np.float32) for r in table.column("y").to_pylist()])
    mean, std = np.array([10.0, -5.0], np.float32), np.array([2.0, 4.0], np.float32)
    assert np.allclose(batch["x"].numpy(), (x_raw - mean) / std, atol=1e-6)
    assert np.allclose(batch["y"].numpy(), (y_raw - mean) / std, atol=1e-6)
    assert np.array_equal(batch["y_raw"].numpy(), y_raw)
    # the baseline is in raw units: steps 2, 3 of each history (m = 2)
    assert np.array_equal(batch["naive"].numpy(), x_raw[:, 2:4])
    assert task.loss_weight(batch) == 3


def test_compute_matches_predict_and_score_in_raw_units():
    # Given a model and a table, the loop's metrics (normalized outputs, de-normalized) and the
    # gate's (raw histories through predict, scored) agree
    task = build_task(None, _pre())
    torch.manual_seed(0)
    from pipeline.config import RecurConfig

    task.cfg = RecurConfig(data={"task": "forecast"}, model={"hidden_size": 8})
    model = task.build_model().eval()
    table = _table(7, seed=1)
    state = task.new_state()
    with torch.no_grad():
        for batch in task.table_batches(table, batch_size=3):
            task.update(state, task.forward(model, batch, train=False), batch)
    computed = task.compute(state)
    inputs, truth = task.gate_data(table)
    outputs = task.predict(model, inputs, {})
    scored = task.score(outputs, truth)
    for metric in ("mae", "rmse", "smape", "mase"):
        assert scored[metric] == pytest.approx(computed[metric], rel=1e-5), metric
    assert np.asarray(outputs["forecast"][0]).shape == (2, 2)
    # the report logs the baseline numbers and both plots
    report = task.report(model, table, state)
    assert set(report.metrics) == {"baseline_mae", "baseline_rmse", "baseline_smape"}
    assert report.metrics["baseline_mae"] == pytest.approx(computed["mae"] / computed["mase"])
    assert {"plots/forecast_vs_actual.png", "plots/error_by_horizon.png"} <= set(report.figures)


def test_predict_takes_flat_and_long_histories():
    pre = Preprocessing(mean=[1.0], std=[2.0], task="forecast",
                        task_params={"window": 4, "horizon": 3, "seasonal_period": 1})
    task = build_task(None, pre)
    torch.manual_seed(0)
    model = Forecaster(input_size=1, horizon=3, hidden_size=8).eval()
    long_history = list(np.linspace(0, 1, 20))
    frame = pd.DataFrame({"x": [[0.5], long_history, [[v] for v in long_history[-4:]]]})
    out = task.predict(model, frame, {})
    forecasts = [np.asarray(f) for f in out["forecast"]]
    assert [f.shape for f in forecasts] == [(3, 1)] * 3
    # only the last `window` steps count: a long history forecasts like its last 4 steps
    assert np.allclose(forecasts[1], forecasts[2])
    with pytest.raises(ValueError, match="history 0: empty"):
        task.predict(model, pd.DataFrame({"x": [[]]}), {})


def test_baseline_is_the_seasonal_naive_forecast_scored_like_the_gate():
    # Given two windows of one channel, m = 1: the naive forecasts are (3, 3) and (6, 6)
    pre = Preprocessing(mean=[0.0], std=[1.0], task="forecast",
                        task_params={"window": 3, "horizon": 2, "seasonal_period": 1})
    task = build_task(None, pre)
    test = pa.Table.from_arrays([pa.array(["t=0", "t=1"]),
                                 x_array([np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])]),
                                 x_array([np.array([3.0, 5.0]), np.array([6.0, 6.0])])],
                                names=["id", "x", "y"])

    scores = task.baseline(test.slice(0, 0), test)  # nothing is fit: train is never read

    # then |errors| 0, 2, 0, 0: MAE 2/4, RMSE sqrt(4/4), sMAPE (200 * 2 / 8) / 4, MASE 1 by definition
    assert scores == pytest.approx({"mae": 0.5, "rmse": 1.0, "smape": 12.5, "mase": 1.0})
    inputs, truth = task.gate_data(test)
    naive = pd.DataFrame({"forecast": [f.tolist() for f in truth["naive"]]})
    assert scores == pytest.approx(task.score(naive, truth))


def test_baseline_mase_is_zero_when_the_naive_forecasts_are_exact():
    pre = Preprocessing(mean=[0.0], std=[1.0], task="forecast",
                        task_params={"window": 2, "horizon": 2, "seasonal_period": 1})
    test = pa.Table.from_arrays([pa.array(["t=0"]), x_array([np.array([1.0, 2.0])]),
                                 x_array([np.array([2.0, 2.0])])], names=["id", "x", "y"])
    scores = build_task(None, pre).baseline(test, test)
    assert scores == {"mae": 0.0, "rmse": 0.0, "smape": 0.0, "mase": 0.0}  # no model can beat it


@pytest.mark.parametrize("model_cfg,instance_norm,difference", [
    ({}, True, False),  # auto, unresolved: on for forecast
    ({"instance_norm": True, "difference": True}, True, True),
    ({"instance_norm": False}, False, False),
])
def test_build_model_passes_instance_norm_and_difference(model_cfg, instance_norm, difference):
    task = build_task(RecurConfig(data={"task": "forecast"}, model={"hidden_size": 8, **model_cfg}), _pre())
    model = task.build_model()
    assert (model.instance_norm, model.difference) == (instance_norm, difference)
    assert model.model_args["instance_norm"] is instance_norm


@pytest.mark.parametrize("on", [False, True])
@pytest.mark.parametrize("key,season_attr,weights_attr", [("seasonal_skip", "season", "skip_HC"),
                                                          ("naive_blend", "blend_season", "naive_blend_C")])
def test_build_model_gives_the_skip_and_the_blend_the_datasets_season(key, season_attr, weights_attr, on):
    pre = _pre()
    task = build_task(RecurConfig(data={"task": "forecast"}, model={"hidden_size": 8, key: on}), pre)
    model = task.build_model()
    assert getattr(model, season_attr) == (pre.task_params["seasonal_period"] if on else 0)
    assert (getattr(model, weights_attr) is not None) is on


def test_the_naive_blend_is_refused_for_other_tasks_and_with_val_rows_trained_on():
    with pytest.raises(ValueError, match="model.naive_blend applies to forecast models, not 'tag'"):
        RecurConfig(data={"task": "tag"}, model={"naive_blend": True})
    with pytest.raises(ValueError, match="model.naive_blend weighs .* train.train_on_val trains on"):
        RecurConfig(data={"task": "forecast"}, model={"naive_blend": True}, train={"train_on_val": True},
                    registry={"metric": "mase"})


def test_blend_weights_by_hand():
    rng = np.random.default_rng(0)
    actual = rng.normal(size=(6, 3, 3))
    off = np.abs(rng.normal(size=(6, 3, 3))) + 0.5
    # channel 0: the model exact, naive off -> 1; channel 1: naive exact -> 0; channel 2: the model
    # above by `off`, naive below by 3 x `off` -> 0.75 hits every value
    forecast = np.stack([actual[..., 0], actual[..., 1] + off[..., 1], actual[..., 2] + off[..., 2]], -1)
    naive = np.stack([actual[..., 0] + off[..., 0], actual[..., 1], actual[..., 2] - 3 * off[..., 2]], -1)
    weights, mae = blend_weights(forecast, naive, actual)
    assert weights.tolist() == [1.0, 0.0, 0.75]
    assert mae.shape == (len(BLEND_GRID), 3) and mae[15, 2] < 1e-12
    # a tie keeps the model's own forecast: identical forecasts score the same at every weight
    assert blend_weights(naive, naive, actual)[0].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="at least one window"):
        blend_weights(*(np.zeros((0, 3, 1)),) * 3)
    with pytest.raises(ValueError, match="need one shape"):
        blend_weights(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)), np.zeros((2, 2, 1)))


def test_the_seasonal_skip_is_refused_for_other_tasks():
    with pytest.raises(ValueError, match="model.seasonal_skip applies to forecast models, not 'classify'"):
        RecurConfig(data={"task": "classify"}, model={"seasonal_skip": True})


# ------------------------------------------------------------------ a trending series, trained

TREND_WINDOW, TREND_HORIZON, TREND_PERIOD = 48, 12, 12


def _trending_split() -> tuple[dict[str, pa.Table], Preprocessing]:
    """400 steps of 0.25 * t + 5 sin(2 pi t / 12) + N(0, 1), cut like the CSV importer cuts a
    series (train 60 %, val 20 %, test 20 % by time; windows of 48 steps, horizon 12); the
    normalization statistics come from the train segment, so test values sit 3-4 train stds above
    its mean."""
    rng = np.random.default_rng(0)
    t = np.arange(400)
    values = (0.25 * t + 5 * np.sin(2 * np.pi * t / TREND_PERIOD) + rng.normal(0, 1, 400)).astype(np.float32)
    bounds = segment_bounds(len(values), 0.2, 0.2)
    tables = {}
    for split, starts in window_starts(bounds, window=TREND_WINDOW, horizon=TREND_HORIZON, stride=1).items():
        xs = [values[i - TREND_WINDOW : i, None] for i in starts]
        ys = [values[i : i + TREND_HORIZON, None] for i in starts]
        tables[split] = pa.Table.from_arrays([pa.array([f"t={i}" for i in starts]), x_array(xs), x_array(ys)],
                                             names=["id", "x", "y"])
    train = values[slice(*bounds["train"])]
    pre = Preprocessing(mean=[float(train.mean())], std=[float(train.std())], task="forecast",
                        task_params={"window": TREND_WINDOW, "horizon": TREND_HORIZON, "stride": 1,
                                     "seasonal_period": TREND_PERIOD})
    return tables, pre


def _train_and_score(instance_norm: bool, difference: bool, *, steps: int = 300, season: int = 0) -> float:
    """Test MASE (vs seasonal naive, m = 12) of a GRU trained `steps` Adam steps by the plain loop."""
    model, task, tables = _trained(instance_norm, difference, steps=steps, season=season)
    return _test_mase(model, task, tables)


def _test_mase(model: Forecaster, task, tables: dict[str, pa.Table]) -> float:
    model.eval()
    batch = task.collate(tables["test"])
    with torch.no_grad():
        forecast_BHC = task.denormalize(model(batch["x"], batch["lengths"]))
    return scores_from_sums(error_sums(forecast_BHC, batch["y_raw"], batch["naive"]))["mase"]


def _trained(instance_norm: bool, difference: bool, *, steps: int = 300, season: int = 0,
             blend_season: int = 0) -> tuple[Forecaster, object, dict[str, pa.Table]]:
    """A GRU trained `steps` Adam steps by the plain loop on the trending split's train windows."""
    tables, pre = _trending_split()
    task = build_task(None, pre)
    torch.manual_seed(0)
    model = Forecaster(input_size=1, horizon=TREND_HORIZON, hidden_size=32, cell="gru",
                       instance_norm=instance_norm, difference=difference, season=season,
                       blend_season=blend_season)
    optimizer = make_optimizer("adam", model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    train, done = tables["train"], 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray worker runs; a 32-unit GRU only loses to thread hand-offs
    try:
        while done < steps:
            order = rng.permutation(train.num_rows)
            batches = [task.collate(train.take(pa.array(order[i : i + 32])))
                       for i in range(0, train.num_rows, 32)]
            done += train_epoch(model, batches, optimizer, task, grad_clip=1.0).num_steps
    finally:
        torch.set_num_threads(threads)
    return model, task, tables


def test_instance_norm_beats_seasonal_naive_on_a_trending_series():
    # Given test windows above anything in training, when the same GRU is trained with and without
    # instance normalization, then only the former beats seasonal naive (measured: 0.27 vs 7.6)
    with_norm = _train_and_score(instance_norm=True, difference=False)
    without = _train_and_score(instance_norm=False, difference=False)
    print(f"trending series, test MASE: instance_norm {with_norm:.3f}, plain {without:.3f}")
    assert with_norm < 0.5
    assert without > 1.0


def test_the_seasonal_skip_beats_seasonal_naive_on_a_trending_series():
    # configs/forecast.yaml's model: instance norm (the series drifts) with the seasonal skip
    mase = _train_and_score(instance_norm=True, difference=False, season=TREND_PERIOD)
    print(f"trending series, test MASE with instance_norm and the seasonal skip: {mase:.3f}")
    assert mase < 0.5


def test_the_naive_blend_shrinks_a_model_that_forecasts_val_worse_than_naive():
    # Given the trending series and the plain GRU that forecasts it worse than seasonal naive (its
    # test windows lie above anything it trained on), when its blend is weighed on the val windows
    bad, task, tables = _trained(instance_norm=False, difference=False, blend_season=TREND_PERIOD)
    alone = _test_mase(bad, task, tables)
    record = task.fit_naive_blend(bad, tables["val"])
    blended = _test_mase(bad, task, tables)
    print(f"trending series, plain GRU test MASE {alone:.3f}, blended {blended:.3f}: {record['weights']}")
    # then it leans on seasonal naive, and the test forecast is far better than the model's own
    assert alone > 1.0 and record["weights"]["channel 0"] <= 0.25 and blended < 0.5 * alone
    assert record["windows"] == tables["val"].num_rows and len(record["val_mase"]["channel 0"]) == 21
    assert record["val_mase"]["channel 0"][0] == pytest.approx(1.0)  # weight 0: naive itself
    # and a model that beats naive keeps most of its own forecast
    good, task, tables = _trained(instance_norm=True, difference=False, blend_season=TREND_PERIOD)
    record = task.fit_naive_blend(good, tables["val"])
    assert record["weights"]["channel 0"] >= 0.75 and _test_mase(good, task, tables) < 0.5


@pytest.mark.parametrize("instance_norm", [False, True])
def test_differencing_beats_seasonal_naive_on_a_trending_series(instance_norm):
    mase = _train_and_score(instance_norm=instance_norm, difference=True)
    print(f"trending series, test MASE with differencing (instance_norm={instance_norm}): {mase:.3f}")
    assert mase < 0.5
