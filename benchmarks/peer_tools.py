"""The peers of `python -m benchmarks peers`, one per process: fit on a series, forecast windows.

    python -m benchmarks.peer_tools TOOL REQUEST.json RESULT.json

`benchmarks.peers` writes REQUEST (the train segment, the val segment, the test histories, window,
horizon, threads), runs this module as its own process (so its memory is measured alone and its
imports do not leak into the next tool) and reads RESULT: the forecasts (N, H, C) in raw units,
the fit and predict wall seconds, and what the tool ran with. Scoring is the driver's, the same
function for every tool.

Each tool runs with its documented defaults. What is set, and why:
- the shared problem: horizon, history window (`input_size` / `input_chunk_length`), CPU threads;
- quiet output (no progress bars, loggers or model summaries): no effect on what is learned;
- Darts' RNNModel: `Scaler()` (min-max, fit on train) around it, as every Darts RNN example does
  (the model itself has no scaling; neuralforecast's LSTM scales each window by default);
  `training_length` stays 24 unless the window is longer (Darts requires >= input_chunk_length);
  `random_state=0` (its default None draws a new seed each run);
- neuralforecast's AutoLSTM: its default search space and search algorithm, with `input_size`
  fixed to the shared window instead of its multiples of the horizon, `num_samples` the budget.

Shape suffixes: N windows (or steps), T history steps, H horizon steps, C channels.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DARTS_TRAINING_LENGTH = 24  # RNNModel's default; it must be >= input_chunk_length
RAY_START_TRIES = 3  # AutoLSTM's local Ray
QUIET = {"enable_progress_bar": False, "logger": False, "enable_model_summary": False}


def _num_parameters(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _retry(start: Any, tries: int = RAY_START_TRIES) -> Any:
    """`start()`, again after a failure: Ray gives its raylet a fixed 30 s to register, which a
    machine busy with other work can miss."""
    import ray

    for attempt in range(1, tries + 1):
        try:
            return start()
        except Exception as error:  # Ray raises a bare Exception for this
            if attempt == tries or "timed out during startup" not in str(error):
                raise
            print(f"Ray did not start ({error}); again ({attempt + 1} of {tries})", file=sys.stderr,
                  flush=True)
            ray.shutdown()


def _long_frame(values_by_id: dict[str, np.ndarray]) -> Any:
    """neuralforecast's long format: one row per (unique_id, ds) with integer time steps."""
    import pandas as pd

    return pd.concat([pd.DataFrame({"unique_id": uid, "ds": np.arange(len(v)), "y": v.astype(np.float64)})
                      for uid, v in values_by_id.items()], ignore_index=True)


def neuralforecast_lstm(request: dict[str, Any], *, auto: bool) -> dict[str, Any]:
    """neuralforecast's LSTM (or AutoLSTM): a global model over the channels (one `unique_id`
    each); a test window's channels are forecast from their own `window`-step histories."""
    from neuralforecast import NeuralForecast
    from neuralforecast.auto import AutoLSTM, RayOptions
    from neuralforecast.models import LSTM

    horizon, window = request["horizon"], request["window"]
    train_NC, val_NC = np.asarray(request["train_NC"]), np.asarray(request["val_NC"])
    histories_NTC = np.asarray(request["histories_NTC"])
    channels = train_NC.shape[1]
    settings: dict[str, Any] = {"h": horizon, "input_size": window, **QUIET}
    if auto:
        from ray.tune import RunConfig

        from pipeline.workflow.session import start_local_ray

        # a Ray of this process alone, as recur starts one: Tune's own ray.init() would join any
        # other Ray running on the machine
        _retry(lambda: start_local_ray(num_cpus=request["threads"], include_dashboard=False))
        config = AutoLSTM.get_default_config(h=horizon, backend="ray")
        for key in ("input_size_multiplier", "inference_input_size_multiplier"):
            config.pop(key, None)
        config.update(input_size=window, inference_input_size=window, **QUIET)
        model = AutoLSTM(h=horizon, config=config, num_samples=request["auto_samples"],
                         ray_options=RayOptions(cpus=request["threads"], run_config=RunConfig(
                             storage_path=request["work_dir"], verbose=0)))
        settings.update(num_samples=request["auto_samples"], val_size=len(val_NC))
        # the search scores each config on the val segment, then refits the best on train + val
        # (AutoLSTM's default refit_with_val=False)
        series_NC, val_size = np.concatenate([train_NC, val_NC]), len(val_NC)
    else:
        model = LSTM(h=horizon, input_size=window, **QUIET)
        series_NC, val_size = train_NC, 0  # LSTM's defaults use no validation data
    train = _long_frame({f"c{c}": series_NC[:, c] for c in range(channels)})
    forecaster = NeuralForecast(models=[model], freq=1)
    start = time.perf_counter()
    forecaster.fit(train, val_size=val_size)
    fit_s = time.perf_counter() - start

    tests = _long_frame({f"w{i:05d}c{c}": histories_NTC[i, :, c]
                         for i in range(len(histories_NTC)) for c in range(channels)})
    start = time.perf_counter()
    predicted = forecaster.predict(df=tests)
    predict_s = time.perf_counter() - start
    column = next(c for c in predicted.columns if c not in ("unique_id", "ds"))
    predicted = predicted.sort_values(["unique_id", "ds"])
    by_id = {uid: group[column].to_numpy() for uid, group in predicted.groupby("unique_id")}
    forecast_NHC = np.stack([np.stack([by_id[f"w{i:05d}c{c}"] for c in range(channels)], axis=-1)
                             for i in range(len(histories_NTC))])
    fitted = forecaster.models[0]
    details: dict[str, Any] = {}
    if auto:
        best = fitted.results.get_best_result().config
        details["best_config"] = {k: v for k, v in best.items() if isinstance(v, (int, float, str))}
        fitted = fitted.model
    details.update(parameters=_num_parameters(fitted), max_steps=int(fitted.max_steps))
    return {"forecast_NHC": forecast_NHC.tolist(), "fit_s": fit_s, "predict_s": predict_s,
            "settings": settings, "details": details}


def darts_rnn(request: dict[str, Any]) -> dict[str, Any]:
    """Darts' RNNModel (LSTM) on the multichannel series, scaled by Darts' Scaler fit on train."""
    from darts import TimeSeries
    from darts.dataprocessing.transformers import Scaler
    from darts.models import RNNModel

    horizon, window = request["horizon"], request["window"]
    train_NC = np.asarray(request["train_NC"], dtype=np.float32)  # float32: Darts' torch models' dtype
    histories_NTC = np.asarray(request["histories_NTC"], dtype=np.float32)
    training_length = max(DARTS_TRAINING_LENGTH, window)
    settings = {"input_chunk_length": window, "model": "LSTM", "training_length": training_length,
                "random_state": 0, "scaler": "Scaler() fit on train", "pl_trainer_kwargs": QUIET}
    scaler = Scaler()
    train = scaler.fit_transform(TimeSeries.from_values(train_NC))
    model = RNNModel(input_chunk_length=window, model="LSTM", training_length=training_length,
                     random_state=0, pl_trainer_kwargs=QUIET)
    start = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - start
    # read before predict, which gives the model a new Lightning trainer
    details = {"parameters": _num_parameters(model.model), "epochs": int(model.epochs_trained),
               "steps": int(model.trainer.global_step)}

    # one at a time: a Scaler fit on one series transforms one series per call
    histories = [scaler.transform(TimeSeries.from_values(h)) for h in histories_NTC]
    start = time.perf_counter()
    predicted = model.predict(n=horizon, series=histories)
    predict_s = time.perf_counter() - start
    forecast_NHC = np.stack([scaler.inverse_transform(p).values() for p in predicted])
    return {"forecast_NHC": forecast_NHC.astype(np.float64).tolist(), "fit_s": fit_s,
            "predict_s": predict_s, "settings": settings, "details": details}


TOOLS = {
    "neuralforecast.LSTM": lambda request: neuralforecast_lstm(request, auto=False),
    "neuralforecast.AutoLSTM": lambda request: neuralforecast_lstm(request, auto=True),
    "darts.RNNModel": darts_rnn,
}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in TOOLS:
        print(f"usage: python -m benchmarks.peer_tools {{{','.join(TOOLS)}}} REQUEST.json RESULT.json",
              file=sys.stderr)
        return 2
    tool, request_path, result_path = argv
    request = json.loads(Path(request_path).read_text())
    import torch

    # the same number of compute threads as recur's Train workers use together
    torch.set_num_threads(request["threads"])
    result = TOOLS[tool](request)
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
