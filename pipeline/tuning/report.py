"""A study's artifacts from its trials: the trials table (CSV), best-so-far, and a summary.

Pure functions over `TrialRecord`s, so they are tested without Ray: the study runner turns Tune's
results into records and logs what these return. A metric value of NaN (a diverged trial) counts
as no value: it is never the best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline.progress import TRIAL_ENDS

STATUSES = (*TRIAL_ENDS, "running")  # how a trial ended (pipeline.progress), or that it still runs
# A study with a trial that ended so did not do all it was asked (tune.allow_partial)
PARTIAL = ("failed", "stopped by time budget", "interrupted", "never started")
MODES = ("min", "max")


@dataclass
class TrialRecord:
    """One trial of a study, as it ended (or stands, while `running`)."""

    trial_id: str
    status: str  # one of STATUSES
    params: dict[str, Any]  # dotted config key -> sampled value
    metric: str  # the study's metric name
    best_value: float | None = None  # best of the metric over the reported epochs, per mode
    last_value: float | None = None  # the metric at the last reported epoch
    epochs: int = 0  # epochs reported
    seconds: float = 0.0  # trial wall time
    error: str | None = None
    mlflow_run_id: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"trial {self.trial_id}: status must be one of {STATUSES}, got {self.status!r}")


def check_mode(mode: str) -> None:
    """Fail on a mode other than min/max, naming the config key it comes from."""
    if mode not in MODES:
        raise ValueError(f"tune.mode must be 'min' or 'max', got {mode!r}")


def _value(x: float | None) -> float | None:
    """None for a missing or NaN value, else the value as a float."""
    if x is None or math.isnan(x):
        return None
    return float(x)


def _better(a: float, b: float, mode: str) -> bool:
    """Whether `a` is strictly better than `b`: ties keep the earlier trial."""
    return a < b if mode == "min" else a > b


def best_of(values: list[float | None], *, mode: str) -> float | None:
    """The best of a trial's per-epoch metric values (its `best_value`); None when none is a number."""
    check_mode(mode)
    best: float | None = None
    for x in values:
        v = _value(x)
        if v is not None and (best is None or _better(v, best, mode)):
            best = v
    return best


def trials_table(records: list[TrialRecord], *, metric: str, mode: str) -> pd.DataFrame:
    """One row per trial in the order given (start order): ids, status, cost, the metric, the params.

    Columns: trial_id, status, epochs, seconds, best_<metric>, last_<metric>, one column per
    param key (sorted, named by its dotted key; empty where a trial lacks it), error, mlflow_run_id.
    """
    check_mode(mode)
    param_keys = sorted({key for r in records for key in r.params})
    best_col, last_col = f"best_{metric}", f"last_{metric}"
    columns = ["trial_id", "status", "epochs", "seconds", best_col, last_col, *param_keys,
               "error", "mlflow_run_id"]
    rows = []
    for r in records:
        row = {"trial_id": r.trial_id, "status": r.status, "epochs": r.epochs, "seconds": r.seconds,
               best_col: _value(r.best_value), last_col: _value(r.last_value),
               "error": r.error, "mlflow_run_id": r.mlflow_run_id}
        row.update({key: r.params.get(key) for key in param_keys})
        rows.append(row)
    table = pd.DataFrame(rows, columns=columns)
    # Fixed dtypes, so an all-missing metric column is still float (NaN), not object (None).
    return table.astype({"epochs": int, "seconds": float, best_col: float, last_col: float})


def trials_csv(records: list[TrialRecord], *, metric: str, mode: str) -> str:
    """The trials table as CSV text (no index column)."""
    return trials_table(records, metric=metric, mode=mode).to_csv(index=False)


def best_so_far(records: list[TrialRecord], *, mode: str) -> list[float | None]:
    """For each trial in order, the best `best_value` of it and all trials before it.

    None until some trial has a value; a trial without one (failed, or NaN) keeps the previous best.
    """
    check_mode(mode)
    out: list[float | None] = []
    best: float | None = None
    for r in records:
        v = _value(r.best_value)
        if v is not None and (best is None or _better(v, best, mode)):
            best = v
        out.append(best)
    return out


def summarize(records: list[TrialRecord], *, metric: str, mode: str) -> dict[str, Any]:
    """The study in a few numbers: trials per status, trial-epochs spent, and the best trial.

    The best trial is the first with the best `best_value`; best_trial_id, best_params and
    best_value are None when no trial reported a value.
    """
    check_mode(mode)
    counts = {status: sum(r.status == status for r in records) for status in STATUSES}
    best: TrialRecord | None = None
    best_value: float | None = None
    for r in records:
        v = _value(r.best_value)
        if v is not None and (best_value is None or _better(v, best_value, mode)):
            best, best_value = r, v
    return {
        "metric": metric,
        "mode": mode,
        "trials": len(records),
        "status_counts": counts,
        "trial_epochs": sum(r.epochs for r in records),
        "best_trial_id": best.trial_id if best else None,
        "best_params": dict(best.params) if best else None,
        "best_value": best_value,
    }
