"""recur's generic forecaster side by side with the tools users would pick instead.

    python -m benchmarks peers CSV[:SEASON] [CSV[:SEASON] ...] [--value-columns NAME=A,B ...]
                               [--auto-samples N] [--threads N] [--config OVERLAY ...]
                               [--set KEY=VALUE ...] [--work-dir DIR] [--tag TAG]

Per series, one after another, every tool on the same problem:

- recur: exactly the `forecast-panel` benchmark's run (`benchmarks.forecast_panel`: the same
  horizon/window rule from the season, `recur data import`, then `recur run configs/forecast.yaml`);
  its test MASE and MAE are read back from MLflow; fit seconds are the run's train step (Ray Train
  start, training, checkpoints), predict seconds its evaluate step (the test windows forecast and
  scored); the whole command's wall time is kept as `run_s`.
- neuralforecast's `LSTM`, Darts' `RNNModel(model="LSTM")`, and neuralforecast's `AutoLSTM` when
  `--auto-samples N` gives it a budget (N configurations of its default search space), each in
  its own process (`benchmarks.peer_tools`, which says what each is given beyond its defaults).

The split is recur's, built by recur's own functions (`pipeline.data.importers.csv`): the series is
read and its blanks interpolated as the importer does, cut by time into train/val/test (60/20/20);
peers fit on the train segment (AutoLSTM also searches on val), and every tool forecasts the same
test windows: the `window` steps before each test forecast origin, `horizon` steps ahead. The
windows are checked against the test split recur imported. Every peer's forecasts are scored by
recur's metric code on those windows: MASE is the model's MAE over the seasonal-naive MAE on the
same windows (< 1 beats seasonal naive), MAE in the series' units over every value.

Threads: peers run with `torch.set_num_threads(--threads)` (and OMP_NUM_THREADS), by default
the compute threads recur's config gives its Train workers together (num_workers x threads per
worker: 2 x 1 on the default config), at niceness 15, the niceness Ray gives those workers, so
other work on a busy machine slows every tool's compute alike. Peak memory (`peak_mib`) is the
summed PSS of the tool's whole process tree (recur: the `recur run` command with its Ray
processes), sampled every 0.2 s. `load_1m`, the machine's load average as each tool started,
says how busy it was.

Ratios per series: `recur_over_best_peer_mase` (recur's MASE / the lowest peer MASE: <= 1 means
recur is at least as accurate as every peer) and `recur_over_best_peer_fit_s` (recur's fit
seconds / the shortest peer fit). Writes benchmarks/results/peers.json (peers-TAG.json with
`--tag`) after every series (`complete` false until the last) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import write_results
from benchmarks.forecast_panel import (
    TEST_FRACTION,
    VAL_FRACTION,
    add_series_arguments,
    geometric_mean,
    plan_all,
    run_series,
)
from benchmarks.panel import REPO, TAIL_CHARS, fmt, markdown_table, run_each, run_measured, versions

RECUR = "recur"
PEERS = ("neuralforecast.LSTM", "darts.RNNModel")  # AutoLSTM joins with --auto-samples
AUTO = "neuralforecast.AutoLSTM"
RAY_WORKER_NICENESS = 15  # Ray's default for the worker processes that train recur's models


# ------------------------------------------------------------------ the shared split and metric


def read_values(path: Path, value_columns: list[str], *, time_column: str | None) -> np.ndarray:
    """(N, C) float32 values of a CSV series as recur's importer keeps them: blanks interpolated
    (`--missing interpolate`, each segment reading only itself and earlier ones)."""
    from pipeline.data.importers.csv import segment_bounds
    from pipeline.data.importers.csv_series import fill_missing_cells, read_series

    series = read_series([(str(path), str(path))], time_column=time_column, value_columns=value_columns)
    fill_missing_cells(series, "interpolate", segment_bounds(len(series), VAL_FRACTION, TEST_FRACTION))
    if series.bad:
        step, cells = next(iter(sorted(series.bad.items())))
        raise ValueError(f"{series.sources[step]}: {cells[0][0]!r}: {cells[0][1]}")
    return series.values_NC.astype(np.float32)  # the importer stores float32


def split_for_peers(values_NC: np.ndarray, *, window: int, horizon: int) -> dict[str, np.ndarray]:
    """What every tool gets from one series: the train and val segments (steps x channels) and
    the test windows, histories (N, window, C) and actual values (N, horizon, C), cut by recur's
    `segment_bounds` and `window_starts` (stride 1), so they are the windows recur is scored on."""
    from pipeline.data.importers.csv import segment_bounds, window_starts

    bounds = segment_bounds(len(values_NC), VAL_FRACTION, TEST_FRACTION)
    starts = window_starts(bounds, window=window, horizon=horizon, stride=1)["test"]
    (t0, t1), (v0, v1) = bounds["train"], bounds["val"]
    return {"train_NC": values_NC[t0:t1], "val_NC": values_NC[v0:v1],
            "histories_NTC": np.stack([values_NC[t - window:t] for t in starts]),
            "actual_NHC": np.stack([values_NC[t:t + horizon] for t in starts])}


def check_against_dataset(split: dict[str, np.ndarray], dataset: Path) -> None:
    """Raise when the test windows differ from the test split recur imported into `dataset`."""
    import pyarrow.parquet as pq

    from pipeline.data.preprocess import arrow_steps

    table = pq.read_table(dataset / "test")
    histories_NTC, actual_NHC = split["histories_NTC"], split["actual_NHC"]
    x_NC, _ = arrow_steps(table.column("x"))
    y_NC, _ = arrow_steps(table.column("y"))
    same = (x_NC.size == histories_NTC.size and y_NC.size == actual_NHC.size
            and np.array_equal(x_NC.reshape(histories_NTC.shape), histories_NTC)
            and np.array_equal(y_NC.reshape(actual_NHC.shape), actual_NHC))
    if not same:
        n = len(actual_NHC)
        raise RuntimeError(f"{dataset}: the test split recur imported ({table.num_rows} windows) is not the "
                           f"one given to the peers ({n} windows)")


def score(forecast_NHC: np.ndarray, histories_NTC: np.ndarray, actual_NHC: np.ndarray,
          season: int) -> dict[str, float]:
    """recur's test metrics of forecasts (N, H, C) in raw units: mase (against seasonal naive with
    period `season` on the same histories), mae, rmse, smape and the baseline's naive_mae."""
    import torch

    from pipeline.tasks.forecast import error_sums, scores_from_sums, seasonal_naive

    forecast_NHC = np.asarray(forecast_NHC, dtype=np.float64)
    if forecast_NHC.shape != actual_NHC.shape:
        raise ValueError(f"forecasts have shape {forecast_NHC.shape}, the test windows {actual_NHC.shape}")
    if not np.isfinite(forecast_NHC).all():
        raise ValueError("forecasts hold NaN or inf")
    n, window, channels = histories_NTC.shape
    naive_NHC = seasonal_naive(histories_NTC.reshape(n * window, channels), np.full(n, window),
                               horizon=actual_NHC.shape[1], period=season)
    sums = error_sums(*(torch.from_numpy(np.asarray(a, dtype=np.float64))
                        for a in (forecast_NHC, actual_NHC, naive_NHC)))
    scores = scores_from_sums(sums)
    return {"test_mase": scores["mase"], "test_mae": scores["mae"], "test_rmse": scores["rmse"],
            "test_smape": scores["smape"], "naive_mae": scores["baseline_mae"]}


def ratios(tools: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """recur against its best peer on each figure: `recur_over_best_peer_mase` (recur's test MASE
    over the lowest peer test MASE, `best_peer_mase` names that peer) and
    `recur_over_best_peer_fit_s` (recur's fit seconds over the shortest peer fit,
    `fastest_peer_fit`). A ratio is None when recur or every peer lacks the figure."""
    out: dict[str, Any] = {}
    recur = tools.get(RECUR, {})
    for figure, ratio, best in (("test_mase", "recur_over_best_peer_mase", "best_peer_mase"),
                                ("fit_s", "recur_over_best_peer_fit_s", "fastest_peer_fit")):
        peers = {name: t[figure] for name, t in tools.items() if name != RECUR and t.get(figure) is not None}
        winner = min(peers, key=peers.__getitem__) if peers else None
        out[best] = winner
        mine = recur.get(figure)
        out[ratio] = (mine / peers[winner] if winner is not None and mine is not None and peers[winner] > 0
                      else None)
    return out


def recur_threads(configs: list[Path], overrides: list[str]) -> int:
    """Compute threads recur's Train workers use together: workers (1 with num_workers 0) x each
    worker's torch threads (`floor(cpus_per_worker)`, at least 1, as `training.trainer` sets)."""
    from pipeline.config import load_config

    resources = load_config(configs, overrides).resources
    return max(1, resources.num_workers) * max(1, math.floor(resources.cpus_per_worker))


# ------------------------------------------------------------------ running the tools


def run_peer(tool: str, split: dict[str, np.ndarray], plan: dict[str, Any], args: argparse.Namespace,
             work: Path) -> dict[str, Any]:
    """One peer in its own process (`benchmarks.peer_tools`); its figures, or `error`."""
    folder = work / "peers" / f"{plan['slug']}-{tool}"
    folder.mkdir(parents=True, exist_ok=True)
    request = {"horizon": plan["horizon"], "window": plan["window"], "threads": args.threads,
               "auto_samples": args.auto_samples, "work_dir": str(folder),
               **{k: split[k].tolist() for k in ("train_NC", "val_NC", "histories_NTC")}}
    (folder / "request.json").write_text(json.dumps(request))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # AutoLSTM starts its own Ray
    env.update({name: str(args.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    load = os.getloadavg()[0]
    print(f"[{plan['name']}] {tool}", flush=True)
    # at the niceness Ray gives recur's Train workers, so a busy machine slows every tool's compute alike
    command = [sys.executable, "-m", "benchmarks.peer_tools", tool, str(folder / "request.json"),
               str(folder / "result.json")]
    done = run_measured(["nice", "-n", str(RAY_WORKER_NICENESS), *command], cwd=REPO, env=env)
    row: dict[str, Any] = {"wall_s": round(done.seconds, 1), "peak_mib": done.peak_mib, "load_1m": load}
    if done.returncode != 0:
        row["error"] = f"exit {done.returncode}: {done.stderr[-TAIL_CHARS:]}"
        print(f"[{plan['name']}] {tool} FAILED: {row['error']}", flush=True)
        return row
    result = json.loads((folder / "result.json").read_text())
    row.update(score(np.asarray(result["forecast_NHC"]), split["histories_NTC"], split["actual_NHC"],
                     plan["season"]))
    row.update(fit_s=round(result["fit_s"], 2), predict_s=round(result["predict_s"], 3),
               settings=result["settings"], details=result["details"])
    return row


def run_recur(plan: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The forecast-panel run of one series; recur's figures in the peers' names."""
    load = os.getloadavg()[0]
    row = run_series({k: v for k, v in plan.items() if k != "slug"}, args, work)
    steps_s = row.get("steps_s") or {}
    figures = {"test_mase": row.get("test_mase"), "test_mae": row.get("test_mae"),
               "test_rmse": row.get("test_rmse"), "test_smape": row.get("test_smape"),
               "naive_mae": row.get("naive_mae"), "fit_s": steps_s.get("train"),
               "predict_s": steps_s.get("evaluate"), "run_s": row.get("wall_s"),
               "peak_mib": row.get("peak_mib"), "load_1m": load, "steps_done": row.get("steps_done"),
               "epochs": row.get("epochs"), "run_id": row.get("run_id"),
               "time_column": row.get("time_column", plan["time_column_in_file"]),
               "windows": row.get("windows")}
    if "error" in row:
        figures["error"] = row["error"]
    return figures


def run_one(plan: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every tool on one planned series: the row of the results for it."""
    tools = {RECUR: run_recur(plan, args, work)}
    # the time column recur's import read (None when it fell back to file order): interpolation
    # of blanks is by time, so it must be the same
    values_NC = read_values(Path(plan["file"]), plan["value_columns"],
                            time_column=tools[RECUR]["time_column"])
    split = split_for_peers(values_NC, window=plan["window"], horizon=plan["horizon"])
    dataset = work / "datasets" / plan["slug"]
    if (dataset / "test").is_dir():
        check_against_dataset(split, dataset)
    naive = score(split["actual_NHC"], split["histories_NTC"], split["actual_NHC"], plan["season"])
    for tool in args.tools:
        tools[tool] = run_peer(tool, split, plan, args, work)
    row = {k: plan[k] for k in ("name", "file", "steps", "channels", "value_columns", "season", "horizon",
                                "window")}
    row.update(train_steps=len(split["train_NC"]), val_steps=len(split["val_NC"]),
               test_windows=len(split["actual_NHC"]), naive_mae=naive["naive_mae"], tools=tools,
               **ratios(tools))
    return row


# ------------------------------------------------------------------ the table


def table(rows: list[dict[str, Any]]) -> str:
    header = ["series", "tool", "test MASE", "MAE", "fit s", "predict s", "peak MiB",
              "recur / best peer MASE", "recur / fastest peer fit"]
    body = []
    for r in rows:
        for tool, t in r["tools"].items():
            mine = tool == RECUR
            body.append([r["name"], tool, t.get("test_mase") if "error" not in t else "FAILED",
                         fmt(t.get("test_mae"), 2), fmt(t.get("fit_s"), 1), fmt(t.get("predict_s"), 2),
                         fmt(t.get("peak_mib"), 0),
                         fmt(r["recur_over_best_peer_mase"], 3) if mine else "",
                         fmt(r["recur_over_best_peer_fit_s"], 2) if mine else ""])
    return markdown_table(header, body)


def geometric_means(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Per tool, the geometric mean test MASE over the series it scored (MASE is a ratio)."""
    out: dict[str, float | None] = {}
    for tool in dict.fromkeys(t for r in rows for t in r["tools"]):
        out[tool] = geometric_mean([r["tools"][tool]["test_mase"] for r in rows
                                    if (r["tools"].get(tool) or {}).get("test_mase") is not None])
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks peers",
        description="recur's generic forecaster against neuralforecast's LSTM/AutoLSTM and Darts' RNNModel")
    add_series_arguments(parser)
    parser.add_argument("--auto-samples", type=int, default=0, metavar="N",
                        help="also run neuralforecast's AutoLSTM, N configurations of its default search "
                             "space (default 0: not run)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of every peer (default: those of recur's Train workers together)")
    args = parser.parse_args(argv)
    if args.auto_samples < 0:
        parser.error("--auto-samples must be >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    plans = plan_all(parser, args)
    args.threads = args.threads or recur_threads(args.configs, args.overrides)
    args.tools = [*PEERS, *([AUTO] if args.auto_samples else [])]
    for plan in plans:  # the folder names forecast_panel.run_series gives the series' dataset
        plan["slug"] = re.sub(r"[^a-z0-9]+", "-", plan["name"].lower()).strip("-") or "series"

    settings = {"configs": [str(c) for c in args.configs], "overrides": args.overrides,
                "value_columns": args.value_columns, "threads": args.threads,
                "auto_samples": args.auto_samples, "tools": [RECUR, *args.tools],
                "split": f"train/val/test by time, val {VAL_FRACTION}, test {TEST_FRACTION}; test windows "
                         "stride 1, histories may reach back into val",
                "fit_s": "recur: the train step of recur run; peers: their fit call",
                "predict_s": "recur: the evaluate step of recur run; peers: their predict call over the "
                             "test windows",
                "peak_mib": "summed PSS of the tool's process tree, sampled every 0.2 s",
                "niceness": f"peers run at {RAY_WORKER_NICENESS}, Ray's niceness for recur's Train workers"}
    tools_versions = versions("recur", "torch", "ray", "mlflow", "numpy", "pandas", "neuralforecast", "darts",
                              "pytorch-lightning")
    rows: list[dict[str, Any]] = []

    def save() -> None:
        # after every series, so a long run that is stopped keeps what it measured
        write_results("peers", tag=args.tag, settings=settings, complete=len(rows) == len(plans),
                      geometric_mean_mase=geometric_means(rows), versions=tools_versions, series=rows)

    def run_and_save(plan: dict[str, Any], work: Path) -> dict[str, Any]:
        rows.append(run_one(plan, args, work))
        save()
        return rows[-1]

    run_each(plans, run_and_save, args.work_dir, "recur-peers-")
    print()
    print(table(rows))
    geo = geometric_means(rows)
    print("\ngeometric mean test MASE: " + ", ".join(f"{k} {fmt(v)}" for k, v in geo.items()))
    return 1 if any("error" in t for r in rows for t in r["tools"].values()) else 0
