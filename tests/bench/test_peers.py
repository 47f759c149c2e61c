"""The peers benchmark's pure parts (benchmarks/peers.py): the split and windows every tool gets,
the metric every tool is scored with, and the ratios against the best peer. Nothing here needs
neuralforecast or Darts; the one test that runs a peer skips without it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SEASON = 4


@pytest.fixture
def peers(monkeypatch):
    # benchmarks/ is not an installed package: import it from the checkout, as `python -m benchmarks` does
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import peers

    return peers


@pytest.fixture
def series_csv(tmp_path):
    """60 quarterly steps of two channels: a season of 4 on a trend, and a noisy level."""
    steps = np.arange(60)
    rng = np.random.default_rng(0)
    seasonal = 10 + 0.5 * steps + 3 * np.sin(2 * np.pi * steps / SEASON)
    level = 100 + rng.normal(0, 1, len(steps))
    path = tmp_path / "toy.csv"
    lines = ["t,sales,level"] + [f"{t},{a:.4f},{b:.4f}" for t, a, b in zip(steps, seasonal, level)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_peers_get_the_windows_recur_is_scored_on(peers, series_csv, tmp_path):
    # given a series imported by recur's importer with the panel's horizon/window rule
    from benchmarks.forecast_panel import horizon_window
    from pipeline.data.importers.csv import import_csv

    horizon, window = horizon_window(60, SEASON)
    dataset = tmp_path / "dataset"
    import_csv([str(series_csv)], str(dataset), time_column="t", value_columns=["sales", "level"],
               window=window, horizon=horizon, seasonal_period=SEASON, missing="interpolate")
    # when the benchmark cuts the same CSV for the peers
    values_NC = peers.read_values(series_csv, ["sales", "level"], time_column="t")
    split = peers.split_for_peers(values_NC, window=window, horizon=horizon)
    # then train and val are the first 60% and the next 20% of the steps, the test windows are the
    # importer's test rows, and the check against the dataset passes
    assert split["train_NC"].shape == (36, 2) and split["val_NC"].shape == (12, 2)
    np.testing.assert_array_equal(split["train_NC"], values_NC[:36])
    assert split["histories_NTC"].shape == (12 - horizon + 1, window, 2)
    assert split["actual_NHC"].shape == (12 - horizon + 1, horizon, 2)
    np.testing.assert_array_equal(split["actual_NHC"][-1], values_NC[-horizon:])
    peers.check_against_dataset(split, dataset)
    # and a split with another window is caught
    other = peers.split_for_peers(values_NC, window=window - 1, horizon=horizon)
    with pytest.raises(RuntimeError, match="not the one given to the peers"):
        peers.check_against_dataset(other, dataset)


def test_score_is_mase_against_seasonal_naive_on_the_same_windows(peers, series_csv):
    values_NC = peers.read_values(series_csv, ["sales", "level"], time_column="t")
    split = peers.split_for_peers(values_NC, window=8, horizon=SEASON)
    histories, actual = split["histories_NTC"], split["actual_NHC"]
    naive = histories[:, -SEASON:, :]  # the last season repeated: horizon == season here

    exact = peers.score(actual, histories, actual, SEASON)
    assert exact["test_mase"] == 0.0 and exact["test_mae"] == 0.0
    assert peers.score(naive, histories, actual, SEASON)["test_mase"] == pytest.approx(1.0)
    off_by_one = peers.score(actual + 1.0, histories, actual, SEASON)
    assert off_by_one["test_mae"] == pytest.approx(1.0)
    assert off_by_one["test_mase"] == pytest.approx(1.0 / exact["naive_mae"])
    with pytest.raises(ValueError, match="shape"):
        peers.score(actual[:, :-1], histories, actual, SEASON)
    with pytest.raises(ValueError, match="NaN"):
        peers.score(np.full_like(actual, np.nan), histories, actual, SEASON)


def test_ratios_compare_recur_with_the_best_peer_on_each_figure(peers):
    tools = {"recur": {"test_mase": 0.72, "fit_s": 60.0},
             "neuralforecast.LSTM": {"test_mase": 0.9, "fit_s": 40.0},
             "darts.RNNModel": {"test_mase": 0.8, "fit_s": 30.0},
             "neuralforecast.AutoLSTM": {"error": "exit 1: ..."}}  # a failed peer is left out
    out = peers.ratios(tools)
    assert out["best_peer_mase"] == "darts.RNNModel"
    assert out["recur_over_best_peer_mase"] == pytest.approx(0.9)
    assert out["fastest_peer_fit"] == "darts.RNNModel"
    assert out["recur_over_best_peer_fit_s"] == pytest.approx(2.0)
    failed_recur = peers.ratios({"recur": {"error": "x"}, "darts.RNNModel": {"test_mase": 0.8, "fit_s": 3.0}})
    assert failed_recur["recur_over_best_peer_mase"] is None
    assert failed_recur["best_peer_mase"] == "darts.RNNModel"
    assert peers.ratios({"recur": {"test_mase": 0.7}})["recur_over_best_peer_mase"] is None


def test_table_and_means_show_every_tool(peers):
    rows = [{"name": name, "tools": {"recur": {"test_mase": m, "fit_s": 10.0},
                                     "darts.RNNModel": {"error": "exit 1"}},
             "recur_over_best_peer_mase": None, "recur_over_best_peer_fit_s": None}
            for name, m in (("a", 0.5), ("b", 2.0))]
    text = peers.table(rows)
    assert "| a | recur | 0.500 |" in text and "| b | darts.RNNModel | FAILED |" in text
    assert peers.geometric_means(rows) == {"recur": pytest.approx(1.0), "darts.RNNModel": None}


def test_peers_get_as_many_threads_as_recurs_workers(peers):
    configs = [REPO / "configs" / "forecast.yaml"]
    assert peers.recur_threads(configs, []) == 2  # 2 workers x 1 thread on the default config
    assert peers.recur_threads(configs, ["resources.num_workers=0"]) == 1  # one rank in the driver
    assert peers.recur_threads(configs, ["resources.cpus_per_worker=2"]) == 4


@pytest.mark.slow
def test_darts_peer_forecasts_every_test_window_in_raw_units(peers, series_csv, tmp_path):
    pytest.importorskip("darts", reason="Darts is a peer in the optional bench extra "
                                        "(pip install -c constraints-cpu.txt -e '.[bench]')")
    values_NC = peers.read_values(series_csv, ["sales", "level"], time_column="t")
    split = peers.split_for_peers(values_NC, window=8, horizon=SEASON)
    request = tmp_path / "request.json"
    arrays = {k: split[k].tolist() for k in ("train_NC", "val_NC", "histories_NTC")}
    request.write_text(json.dumps({"horizon": SEASON, "window": 8, "threads": 1, "auto_samples": 0,
                                   "work_dir": str(tmp_path), **arrays}))
    # when Darts' RNNModel runs as the benchmark runs it (its own process, defaults)
    subprocess.run([sys.executable, "-m", "benchmarks.peer_tools", "darts.RNNModel", str(request),
                    str(tmp_path / "result.json")], cwd=REPO, check=True, capture_output=True)
    result = json.loads((tmp_path / "result.json").read_text())
    # then every test window gets a forecast in the series' units, scored like recur's
    forecast_NHC = np.asarray(result["forecast_NHC"])
    assert forecast_NHC.shape == split["actual_NHC"].shape
    assert 50 < forecast_NHC[..., 1].mean() < 150  # the level channel (about 100): scaled back
    scores = peers.score(forecast_NHC, split["histories_NTC"], split["actual_NHC"], SEASON)
    assert math.isfinite(scores["test_mase"]) and result["fit_s"] > 0
