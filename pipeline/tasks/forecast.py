"""Multi-step forecasting: history window -> the next `horizon` values of every channel.

The model sees and predicts NORMALIZED values (the train split's per-channel mean/std, from the
manifest); the loss is the MSE on that scale. With `model.instance_norm` (auto: on when the train
level drifts, `pipeline.training.budget`) the model also centres and scales each history window
by its own statistics inside itself and undoes that on its forecast (`pipeline.models.forecaster`),
so test windows far above the train split's level (a trending series) still look familiar to it.
Every metric is in RAW units, de-normalized:

* mae, rmse: over every forecast value (window x horizon step x channel);
* smape: symmetric MAPE in percent, mean of 200 |f - a| / (|f| + |a|) (0 where both are 0);
* mase: the model's MAE divided by the seasonal-naive baseline's MAE on the SAME windows
  (< 1: the model beats the baseline). The baseline repeats the history's last season:
  for horizon step h (0-based) it forecasts history[T - m + (h mod m)], m = seasonal_period
  (m = 1 is the naive last value; a history shorter than m uses m = T).

Metric state holds float64 sums, so workers can all-reduce them. The baseline's own MAE, RMSE
and sMAPE are logged next to the model's (`test_baseline_*`), with a forecast-vs-actual plot and
the error per horizon step.

Shape suffixes: B batch, T history steps, H horizon steps, C channels, N windows.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch.nn import functional as F

from pipeline.data.preprocess import arrow_steps, pad_steps, python_steps
from pipeline.task_metrics import TASK_METRICS
from pipeline.tasks.base import Batch, MetricState, Report, Task

PREDICT_BATCH = 256  # histories per forward pass in predict
PLOT_EXAMPLES = 4  # test windows drawn in the forecast-vs-actual plot
_SUMS = ("values", "abs", "sq", "smape", "naive_abs", "naive_sq", "naive_smape")


# ------------------------------------------------------------------------------ metric helpers


def seasonal_naive(steps_NC: np.ndarray, lengths_B: np.ndarray, *, horizon: int, period: int) -> np.ndarray:
    """Seasonal-naive forecasts (B, H, C) of concatenated histories (raw or normalized alike).

    Step h repeats the history's value at T - m + (h mod m), m = min(period, T): the last
    observed season, continued. period 1 gives the last value at every step.
    """
    lengths_B = np.asarray(lengths_B, dtype=np.int64)
    ends_B = np.cumsum(lengths_B)
    m_B = np.minimum(period, lengths_B)
    index_BH = (ends_B - m_B)[:, None] + np.arange(horizon)[None, :] % m_B[:, None]
    return steps_NC[index_BH]


# the naive blend's candidate weights on the model: 0, 0.05, ..., 1
BLEND_GRID = np.linspace(0.0, 1.0, 21).round(2)


def blend_weights(forecast_NHC: np.ndarray, naive_NHC: np.ndarray,
                  actual_NHC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The naive blend's weights (`model.naive_blend`): per channel, the w of BLEND_GRID whose
    w * forecast + (1 - w) * naive has the lowest MAE on these windows (the larger w on a tie,
    so a model no worse than naive keeps its own forecast). Returns weights_C and the MAE of
    every candidate, mae_GC (G = len(BLEND_GRID))."""
    if forecast_NHC.shape != naive_NHC.shape or forecast_NHC.shape != actual_NHC.shape:
        raise ValueError(f"forecasts {forecast_NHC.shape}, naive {naive_NHC.shape} and actual "
                         f"{actual_NHC.shape} need one shape")
    if forecast_NHC.shape[0] == 0:
        raise ValueError("the naive blend needs at least one window to weigh the forecasts on")
    w_G111 = BLEND_GRID[:, None, None, None]
    mixed_GNHC = naive_NHC[None] + w_G111 * (forecast_NHC - naive_NHC)[None]  # exact where they agree
    mae_GC = np.abs(mixed_GNHC - actual_NHC[None]).mean(axis=(1, 2))
    best_C = len(BLEND_GRID) - 1 - np.argmin(mae_GC[::-1], axis=0)  # the last of equal minima
    return BLEND_GRID[best_C], mae_GC


def error_sums(forecast_BHC: torch.Tensor, actual_BHC: torch.Tensor,
               naive_BHC: torch.Tensor) -> dict[str, torch.Tensor]:
    """float64 sums the metrics are made of: counts, absolute/squared/sMAPE errors of the model
    and of the baseline, and the absolute errors per horizon step (abs_H, naive_abs_H)."""
    forecast, actual, naive = (t.detach().double() for t in (forecast_BHC, actual_BHC, naive_BHC))

    def smape(f: torch.Tensor) -> torch.Tensor:
        denominator = f.abs() + actual.abs()
        ratio = 200.0 * (f - actual).abs() / denominator.clamp_min(torch.finfo(torch.float64).tiny)
        return torch.where(denominator > 0, ratio, torch.zeros_like(ratio))

    error, naive_error = (forecast - actual).abs(), (naive - actual).abs()
    return {
        "values": torch.tensor(float(actual.numel()), dtype=torch.float64, device=actual.device),
        "abs": error.sum(), "sq": (error**2).sum(), "smape": smape(forecast).sum(),
        "naive_abs": naive_error.sum(), "naive_sq": (naive_error**2).sum(), "naive_smape": smape(naive).sum(),
        "abs_H": error.sum(dim=(0, 2)), "naive_abs_H": naive_error.sum(dim=(0, 2)),
    }


def scores_from_sums(sums: dict[str, Any]) -> dict[str, float]:
    """mae, rmse, smape (percent), mase and the baseline's mae/rmse/smape from `error_sums` sums."""
    n = max(float(sums["values"]), 1.0)
    model_abs, naive_abs = float(sums["abs"]), float(sums["naive_abs"])
    if naive_abs > 0:
        mase = model_abs / naive_abs
    else:  # the baseline is exact: any model error is infinitely worse
        mase = 0.0 if model_abs == 0 else float("inf")
    return {
        "mae": model_abs / n, "rmse": (float(sums["sq"]) / n) ** 0.5, "smape": float(sums["smape"]) / n,
        "mase": mase,
        "baseline_mae": naive_abs / n, "baseline_rmse": (float(sums["naive_sq"]) / n) ** 0.5,
        "baseline_smape": float(sums["naive_smape"]) / n,
    }


def _array_NHC(values: list[Any]) -> np.ndarray:
    """Forecasts or targets as nested lists / arrays (one per window) -> float64 (N, H, C)."""
    rows = []
    for value in values:
        arr = np.asarray([np.asarray(step, dtype=np.float64) for step in value], dtype=np.float64)
        rows.append(arr[:, None] if arr.ndim == 1 else arr)
    return np.stack(rows) if rows else np.zeros((0, 0, 0))


# ------------------------------------------------------------------------------------- the task


class ForecastTask(Task):
    name = "forecast"
    # the names live in pipeline.task_metrics, which config validation reads without torch
    metrics: ClassVar[tuple[str, ...]] = TASK_METRICS["forecast"].metrics
    higher_is_better: ClassVar[dict[str, bool]] = TASK_METRICS["forecast"].higher_is_better
    gate_metrics: ClassVar[tuple[str, ...]] = TASK_METRICS["forecast"].gate_metrics
    default_gate_metric = TASK_METRICS["forecast"].default_gate_metric

    def __init__(self, pre: Any, cfg: Any = None) -> None:
        super().__init__(pre, cfg)
        params = pre.task_params
        self.window = int(params["window"])
        self.horizon = int(params["horizon"])
        self.period = int(params.get("seasonal_period", 1))
        self.channel_names = list(params.get("value_columns")
                                  or [f"channel {c}" for c in range(pre.num_channels)])
        self.mean_C = torch.tensor(pre.mean, dtype=torch.float32)
        self.std_C = torch.tensor(pre.std, dtype=torch.float32)

    def build_model(self) -> torch.nn.Module:
        from pipeline.models.forecaster import Forecaster

        model_cfg = self.cfg.model
        # "auto" is normally resolved before a model is built; on its own it means on for
        # forecasting (a trending series' test windows lie outside the train split's range).
        instance_norm = model_cfg.instance_norm in (True, "auto")
        return Forecaster(input_size=self.pre.num_channels, horizon=self.horizon,
                          **model_cfg.encoder_args(), pooling=model_cfg.pooling,
                          attention=model_cfg.attention, instance_norm=instance_norm,
                          difference=model_cfg.difference, **model_cfg.frontend_args(),
                          season=self.period if model_cfg.seasonal_skip else 0,
                          blend_season=self.period if model_cfg.naive_blend else 0)

    # ------------------------------------------------------------------ data
    def collate(self, table: pa.Table) -> Batch:
        """x normalized and padded; `naive` (B, H, C) the seasonal-naive forecast in raw units;
        with y: `y` normalized (the training target) and `y_raw` (B, H, C) raw (the metrics')."""
        steps_NC, lengths_B = arrow_steps(table.column("x"))
        x_BTC, lengths = pad_steps(steps_NC, lengths_B, self.pre)
        naive_BHC = seasonal_naive(steps_NC, lengths_B, horizon=self.horizon, period=self.period)
        out = {"x": x_BTC, "lengths": lengths, "naive": torch.from_numpy(np.ascontiguousarray(naive_BHC))}
        if "y" in table.column_names:
            y_steps_NC, y_lengths_B = arrow_steps(table.column("y"))
            if (y_lengths_B != self.horizon).any():
                raise ValueError(f"every y needs {self.horizon} horizon steps; got lengths "
                                 f"{sorted(set(y_lengths_B.tolist()))}")
            y_raw_BHC = torch.from_numpy(y_steps_NC.reshape(len(y_lengths_B), self.horizon, -1).copy())
            out["y_raw"] = y_raw_BHC
            out["y"] = (y_raw_BHC - self.mean_C) / self.std_C
        return out

    def denormalize(self, y_BHC: torch.Tensor) -> torch.Tensor:
        """Normalized values -> raw units (per channel)."""
        return y_BHC.float() * self.std_C.to(y_BHC.device) + self.mean_C.to(y_BHC.device)

    # ------------------------------------------------------------------ loop
    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean squared error on the normalized scale, over every forecast value."""
        return F.mse_loss(outputs.float(), batch["y"])

    def new_state(self, device: torch.device | str = "cpu") -> MetricState:
        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.float64, device=device)

        state = {"loss_sum": zeros(), "count": zeros()}  # normalized MSE per window; windows
        state.update({k: zeros() for k in _SUMS})
        state.update(abs_H=zeros(self.horizon), naive_abs_H=zeros(self.horizon))
        return state

    def update(self, state: MetricState, outputs: torch.Tensor, batch: Batch) -> None:
        per_window_B = F.mse_loss(outputs.float(), batch["y"], reduction="none").mean(dim=(1, 2))
        state["loss_sum"] += per_window_B.detach().double().sum()
        state["count"] += per_window_B.numel()
        sums = error_sums(self.denormalize(outputs), batch["y_raw"], batch["naive"])
        for key, value in sums.items():
            state[key] += value

    def compute(self, state: MetricState) -> dict[str, float]:
        scores = scores_from_sums(state)
        return {"loss": float(state["loss_sum"]) / max(float(state["count"]), 1.0),
                **{m: scores[m] for m in self.metrics if m != "loss"}}

    # ------------------------------------------------------------------ after training
    def fit_naive_blend(self, model: torch.nn.Module, table: pa.Table) -> dict[str, Any]:
        """Set the model's naive blend from the windows of `table` (the val split): its forecasts
        with the blend at 1, the seasonal-naive forecasts and the targets, all raw, weighed per
        channel by `blend_weights`. Returns the weights and each candidate's MASE by channel."""
        model.eval()
        model.set_naive_blend(torch.ones(self.pre.num_channels))
        forecasts, naives, actuals = [], [], []
        with torch.no_grad():
            for batch in self.table_batches(table, PREDICT_BATCH):
                forecasts.append(self.denormalize(model(batch["x"], batch["lengths"])).double().numpy())
                naives.append(batch["naive"].double().numpy())
                actuals.append(batch["y_raw"].double().numpy())
        forecast_NHC, naive_NHC, actual_NHC = (np.concatenate(a) for a in (forecasts, naives, actuals))
        weights_C, mae_GC = blend_weights(forecast_NHC, naive_NHC, actual_NHC)
        model.set_naive_blend(torch.from_numpy(weights_C))
        naive_mae_C = np.abs(naive_NHC - actual_NHC).mean(axis=(0, 1))
        mase_GC = mae_GC / np.where(naive_mae_C > 0, naive_mae_C, np.nan)
        return {"weights": dict(zip(self.channel_names, weights_C.tolist())),
                "grid": BLEND_GRID.tolist(), "windows": int(table.num_rows),
                "val_mase": {name: [None if np.isnan(v) else float(v) for v in mase_GC[:, c]]
                             for c, name in enumerate(self.channel_names)}}

    def report(self, model: torch.nn.Module, table: pa.Table, state: MetricState) -> Report:
        """Baseline metrics, the forecast-vs-actual plot of a few test windows (first channel)
        and the MAE per horizon step, model vs seasonal naive."""
        from pipeline.tasks.plots import error_by_horizon, forecast_vs_actual

        scores = scores_from_sums(state)
        per_step = max(float(state["count"]) * self.pre.num_channels, 1.0)  # values per horizon step
        model_mae_H = (state["abs_H"].cpu().numpy() / per_step).tolist()
        baseline_mae_H = (state["naive_abs_H"].cpu().numpy() / per_step).tolist()

        rows = np.unique(np.linspace(0, table.num_rows - 1, min(PLOT_EXAMPLES, table.num_rows)).astype(int))
        examples = table.take(pa.array(rows))
        batch = self.collate(examples)
        model.eval()
        with torch.no_grad():
            forecast_BHC = self.denormalize(model(batch["x"], batch["lengths"])).numpy()
        histories = arrow_steps(examples.column("x"))[0].reshape(len(rows), -1, self.pre.num_channels)
        channel = self.channel_names[0]
        pictures = [
            {"history": histories[i, :, 0], "actual": batch["y_raw"][i, :, 0].numpy(),
             "forecast": forecast_BHC[i, :, 0], "baseline": batch["naive"][i, :, 0].numpy(),
             "title": f"{row_id}: {channel}, forecast from {self.window} steps of history"}
            for i, row_id in enumerate(examples.column("id").to_pylist())
        ]
        figures = {"plots/forecast_vs_actual.png": forecast_vs_actual(pictures, channel_name=channel),
                   "plots/error_by_horizon.png": error_by_horizon(np.array(model_mae_H),
                                                                  np.array(baseline_mae_H))}
        verdict = "beats" if scores["mase"] < 1 else "does not beat"
        summary = (f"test MAE {scores['mae']:.4f} vs seasonal-naive (m={self.period}) "
                   f"{scores['baseline_mae']:.4f}: MASE {scores['mase']:.4f}, the model {verdict} "
                   "the baseline\n")
        blend_C = getattr(model, "naive_blend_C", None)
        blend = None if blend_C is None else dict(zip(self.channel_names, blend_C.tolist()))
        if blend is not None:
            summary += ("forecast = w x model + (1 - w) x seasonal naive, w fit on the val windows "
                        "(model.naive_blend): " + ", ".join(f"{k} {v:.2f}" for k, v in blend.items()) + "\n")
        return Report(
            metrics={k: scores[k] for k in ("baseline_mae", "baseline_rmse", "baseline_smape")},
            figures=figures,
            texts={"eval/summary.txt": summary},
            dicts={"eval/error_by_horizon.json": {
                "horizon_step": list(range(1, self.horizon + 1)), "model_mae": model_mae_H,
                "seasonal_naive_mae": baseline_mae_H, "seasonal_period": self.period,
                **({"naive_blend": blend} if blend is not None else {})}},
        )

    # ------------------------------------------------------------------ serving and gate
    def _histories(self, sequences: list[Any]) -> list[np.ndarray]:
        """Raw histories -> float32 (T, C) arrays, cut to the last `window` steps."""
        out = []
        for i, seq in enumerate(sequences):
            steps_NC, _ = python_steps([seq])
            if len(steps_NC) == 0:
                raise ValueError(f"history {i}: empty; a forecast needs at least one step")
            out.append(steps_NC[-self.window :])
        return out

    # Input: column `x`, each value one history in raw units: time x channels nested lists, any
    # length >= 1 (called directly, a flat list also works for one channel; the MLflow model's
    # signature asks for the nested form); only the last `window` steps are used (the history
    # length the model was trained on). Output: column `forecast`, horizon x channels nested
    # lists in raw units (nested for one channel too, so the schema never changes).
    def predict(self, model: torch.nn.Module, inputs: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        histories = self._histories(inputs["x"].tolist())
        forecasts = []
        model.eval()
        with torch.no_grad():
            for start in range(0, len(histories), PREDICT_BATCH):
                steps_NC, lengths_B = python_steps(histories[start : start + PREDICT_BATCH])
                x_BTC, lengths = pad_steps(steps_NC, lengths_B, self.pre)
                forecasts.append(self.denormalize(model(x_BTC, lengths)).numpy().astype(np.float64))
        forecast_NHC = np.concatenate(forecasts) if forecasts else np.zeros((0, self.horizon, 1))
        return pd.DataFrame({"forecast": [f.tolist() for f in forecast_NHC]})

    def gate_data(self, table: pa.Table) -> tuple[pd.DataFrame, Any]:
        """Raw test histories, and as truth the raw targets with the seasonal-naive forecasts of
        the same histories (MASE's denominator)."""
        steps_NC, lengths_B = arrow_steps(table.column("x"))
        naive_NHC = seasonal_naive(steps_NC, lengths_B, horizon=self.horizon, period=self.period)
        y_steps_NC, _ = arrow_steps(table.column("y"))
        truth = {"y": y_steps_NC.reshape(table.num_rows, self.horizon, -1).astype(np.float64),
                 "naive": naive_NHC.astype(np.float64)}
        return pd.DataFrame({"x": table.column("x").to_pylist()}), truth

    def score(self, outputs: pd.DataFrame, truth: Any) -> dict[str, float]:
        forecast_NHC = _array_NHC(outputs["forecast"].tolist())
        if forecast_NHC.shape != truth["y"].shape:
            raise ValueError(f"forecasts have shape {forecast_NHC.shape}, the targets {truth['y'].shape}")
        sums = error_sums(*(torch.from_numpy(a) for a in (forecast_NHC, truth["y"], truth["naive"])))
        scores = scores_from_sums(sums)
        return {m: scores[m] for m in self.gate_metrics}

    def baseline_name(self) -> str:
        return f"seasonal-naive (m={self.period})"

    def baseline(self, train: pa.Table, test: pa.Table) -> dict[str, float]:
        """The seasonal-naive forecasts of the test windows (`seasonal_naive`, the same forecasts
        MASE divides by), scored as `score` scores a model: mae, rmse and smape of the naive
        forecasts in raw units, and mase 1.0 (its own MAE over itself; 0.0 when the naive
        forecasts are exact, which no model can then beat). Nothing is fit: `train` is unused."""
        _, truth = self.gate_data(test)
        naive_NHC = torch.from_numpy(truth["naive"])
        scores = scores_from_sums(error_sums(naive_NHC, torch.from_numpy(truth["y"]), naive_NHC))
        return {m: scores[m] for m in self.gate_metrics}
