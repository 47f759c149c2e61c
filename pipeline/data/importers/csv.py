"""CSV time series -> forecast dataset: history/horizon windows, split by time.

A CSV file holds one (multichannel) time series: a header row, then one row per time step, with
an optional time column (numbers, ISO-8601 dates, quarters like `1970 Q1` or months like
`1991 Jul`, strictly increasing) and one column per channel (``value_columns``). Several files are
read in the given order as one series.

How the windows are built (``import_csv``):

1. The series (N steps) is cut by time into three contiguous segments: train first, then val,
   then test, with ``round(N * val_fraction)`` val and ``round(N * test_fraction)`` test steps.
   Nothing is shuffled; ``seed`` is only recorded.
2. Each segment is windowed on its own. A row is a history of ``window`` steps (``x``) and the
   ``horizon`` steps right after it (``y``), both (time x channels) in RAW units; consecutive
   rows start ``stride`` steps apart. Targets always lie inside their own segment, so no target
   crosses a split boundary. Train histories lie inside train too; val and test histories may
   reach back into the earlier segments (history only: at forecast time those values are
   known), which keeps a short series usable - a test segment of 30 yearly steps still gives
   ``30 - horizon + 1`` test windows instead of none. The first val/test window forecasts the
   segment's first step.
3. Row ids are the time column's text at the window's first forecast step (``"1950"``), or
   ``"t=<step index>"`` without a time column: stable and unique.
4. ``dataset.write_dataset`` fits the normalization on the train rows' ``x``, which covers
   train time only, so no val/test value leaks into the scaling.

Reading the series (bad input, gaps, missing values): csv_series.py.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pyarrow as pa

from pipeline.data.dataset import SPLITS, DatasetError, Manifest, write_dataset, x_array
from pipeline.data.importers.common import check_fractions, check_on_invalid, quarantine_table, stop_import
from pipeline.data.importers.csv_series import MISSING_POLICIES, fill_missing_cells, find_gaps, read_series
from pipeline.data.importers.sources import base_name, expand, source_files
from pipeline.data.validate import Problem

MAX_REASONS = 3  # bad steps named per quarantined window (then a count)
MAX_GAPS = 5  # gaps named in the error (then a count)


def segment_bounds(num_steps: int, val_fraction: float, test_fraction: float) -> dict[str, tuple[int, int]]:
    """[start, end) step range of each split: train, then val, then test, by time."""
    num_test = int(math.floor(num_steps * test_fraction + 0.5))
    num_val = int(math.floor(num_steps * val_fraction + 0.5))
    num_train = num_steps - num_val - num_test
    return {"train": (0, num_train), "val": (num_train, num_train + num_val),
            "test": (num_train + num_val, num_steps)}


def level_drift(train_NC: np.ndarray) -> list[float]:
    """Per column, |mean of the train segment's second half - mean of its first half| in units of
    the segment's std (finite values only): about 0 for a series that cycles or wanders around one
    level, 1 or more for one with a trend or a level shift (airline's passengers: 1.56)."""
    half = len(train_NC) // 2
    out = []
    for column in np.asarray(train_NC, dtype=np.float64).T:
        first, second = column[:half], column[half:]
        whole = column[np.isfinite(column)]
        first, second = first[np.isfinite(first)], second[np.isfinite(second)]
        std = float(whole.std()) if len(whole) > 1 else 0.0
        if not len(first) or not len(second) or std <= 0.0:
            out.append(0.0)
            continue
        out.append(round(abs(float(second.mean()) - float(first.mean())) / std, 4))
    return out


def window_starts(bounds: dict[str, tuple[int, int]], *, window: int, horizon: int,
                  stride: int) -> dict[str, list[int]]:
    """First forecast step of every window per split (history: the `window` steps before it).

    Train histories start inside train; val/test histories may reach back into earlier segments,
    targets [t, t + horizon) always lie inside the split's own segment.
    """
    out = {}
    for split, (lo, hi) in bounds.items():
        first = lo + window if split == "train" else max(lo, window)
        out[split] = list(range(first, hi - horizon + 1, stride))
    return out


def _check_sizes(bounds: dict[str, tuple[int, int]], num_steps: int, *, window: int, horizon: int,
                 val_fraction: float, test_fraction: float) -> None:
    sizes = {s: hi - lo for s, (lo, hi) in bounds.items()}
    need = {"train": window + horizon, "val": horizon, "test": horizon}
    short = [s for s in SPLITS if sizes[s] < need[s]]
    if short:
        raise DatasetError(
            f"the series has {num_steps} time steps, split by time into train {sizes['train']}, "
            f"val {sizes['val']}, test {sizes['test']} (val_fraction={val_fraction}, "
            f"test_fraction={test_fraction}); too short: {short}. Train needs at least window + "
            f"horizon = {window} + {horizon} = {need['train']} steps, val and test at least horizon = "
            f"{horizon} each: use a smaller window or horizon, other fractions, or a longer series"
        )


def import_csv(
    paths: list[str] | str,
    out: str,
    *,
    name: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    on_invalid: Literal["fail", "quarantine"] = "fail",
    time_column: str | None = None,
    value_columns: list[str] | tuple[str, ...] = (),
    window: int = 64,
    horizon: int = 12,
    stride: int = 1,
    seasonal_period: int = 1,
    gaps: Literal["error", "keep"] = "error",
    missing: Literal["error", "ffill", "interpolate"] = "error",
) -> Manifest:
    """Import a CSV time series as a forecast dataset at ``out`` (see the module docstring).

    ``window``/``horizon``: history and forecast steps per row; ``stride``: steps between
    consecutive rows of a split; ``seasonal_period``: the season length m of the seasonal-naive
    baseline (stored in ``task_params``; m = 1 is the naive last-value forecast), at most
    ``window`` so every history holds a full season. ``gaps``, ``missing``: see the module
    docstring.
    """
    value_columns = list(value_columns)
    if not value_columns:
        raise ValueError("value_columns: name at least one column holding the series' values")
    if len(set(value_columns)) != len(value_columns):
        raise ValueError(f"value_columns: {value_columns} names a column twice")
    if time_column is not None and time_column in value_columns:
        raise ValueError(f"time_column {time_column!r} is also one of value_columns")
    for key, value in (("window", window), ("horizon", horizon), ("stride", stride),
                       ("seasonal_period", seasonal_period)):
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    if seasonal_period > window:
        raise ValueError(f"seasonal_period {seasonal_period} is longer than window {window}: the "
                         "seasonal-naive baseline repeats the last season of each history")
    check_on_invalid(on_invalid)
    if gaps not in ("error", "keep"):
        raise ValueError(f"gaps must be 'error' or 'keep', got {gaps!r}")
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)} for a csv series, got "
                         f"{missing!r}" + (" (a 0 would read as a real value of the series)"
                                           if missing == "zero" else ""))
    check_fractions(val_fraction, test_fraction)
    if val_fraction <= 0 or test_fraction <= 0:
        raise ValueError(f"a forecast dataset needs val_fraction > 0 and test_fraction > 0 (the last "
                         f"parts of the series), got {val_fraction} and {test_fraction}")

    files = expand(paths, "csv")
    series = read_series(files, time_column=time_column, value_columns=value_columns)
    n = len(series)
    irregular, usual = find_gaps(series)
    if irregular and gaps == "error":
        named = "; ".join(f"{series.sources[s]}: time {series.times[s]!r} is {d} after the previous step "
                          f"{series.times[s - 1]!r}" for s, d in irregular[:MAX_GAPS])
        more = f"; and {len(irregular) - MAX_GAPS} more" if len(irregular) > MAX_GAPS else ""
        raise DatasetError(
            f"column {time_column!r}: {len(irregular)} time step(s) break the series' usual spacing of "
            f"{usual}: {named}{more}. Every row is one time step, so a window across a gap mixes "
            "spacings: add the missing rows with blank values (filled by data.source.missing: ffill or "
            "interpolate, else they fail or are quarantined with on_invalid=quarantine), or keep the "
            "series as it is with data.source.gaps: keep (--gaps keep)"
        )
    bounds = segment_bounds(n, val_fraction, test_fraction)
    _check_sizes(bounds, n, window=window, horizon=horizon, val_fraction=val_fraction,
                 test_fraction=test_fraction)
    starts = window_starts(bounds, window=window, horizon=horizon, stride=stride)
    filled = fill_missing_cells(series, missing, bounds)
    split_of_step = np.empty(n, dtype=object)
    for split, (lo, hi) in bounds.items():
        split_of_step[lo:hi] = split

    if series.bad and on_invalid == "fail":
        problems = [Problem(str(split_of_step[step]), series.times[step], column, reason,
                            source=series.sources[step])
                    for step, cells in sorted(series.bad.items()) for column, reason in cells]
        stop_import(out, problems, f"{len(series.bad)} of {n} time steps hold invalid values "
                                   f"({len(problems)} cells)",
                    ("blank/NaN cells: data.source.missing ffill or interpolate (--missing) fills them\n"
                     if missing == "error" and series.missing else "")
                    + "fix the cells, or pass on_invalid='quarantine' to set aside every window that "
                    "touches them")

    bad_steps = np.array(sorted(series.bad), dtype=np.int64)
    values = series.values_NC.astype(np.float32)
    tables: dict[str, pa.Table] = {}
    quarantined: dict[str, list] = {k: [] for k in ("id", "split", "reason", "source", "x", "y")}
    for split in SPLITS:
        ids, xs, ys = [], [], []
        for t in starts[split]:
            lo, hi = t - window, t + horizon
            history, target = values[lo:t], values[t:hi]
            touched = bad_steps[(bad_steps >= lo) & (bad_steps < hi)]
            if len(touched):
                reasons = [f"{series.sources[s]} (time {series.times[s]}) column {column!r}: {why}"
                           for s in touched[:MAX_REASONS] for column, why in series.bad[int(s)]]
                extra = len(touched) - MAX_REASONS
                more = f"; and {extra} more bad steps" if extra > 0 else ""
                for key, value in (("id", series.times[t]), ("split", split),
                                   ("reason", "window touches invalid steps: " + "; ".join(reasons) + more),
                                   ("source", series.sources[int(touched[0])]), ("x", history),
                                   ("y", target)):
                    quarantined[key].append(value)
                continue
            ids.append(series.times[t])
            xs.append(history)
            ys.append(target)
        if not ids:
            count = len(starts[split])
            raise DatasetError(
                f"split {split!r} would have no windows: {count} window(s) fit its segment "
                f"(steps {bounds[split][0]}..{bounds[split][1] - 1}), "
                f"{len([q for q in quarantined['split'] if q == split])} of them quarantined"
            )
        tables[split] = pa.Table.from_arrays(
            [pa.array(ids, pa.string()), x_array(xs), x_array(ys)], names=["id", "x", "y"])

    quarantine = None
    if quarantined["id"]:
        quarantine = quarantine_table(quarantined["id"], quarantined["split"], quarantined["reason"],
                                      quarantined["source"], x=x_array(quarantined["x"]),
                                      y=x_array(quarantined["y"]))

    segments = {split: {"steps": hi - lo, "first": series.times[lo], "last": series.times[hi - 1]}
                for split, (lo, hi) in bounds.items()}
    task_params = {
        "window": window, "horizon": horizon, "stride": stride, "seasonal_period": seasonal_period,
        "time_column": time_column, "value_columns": value_columns, "num_steps": n,
        "segments": segments, "gaps": len(irregular),
        # per column: how far the train segment's level moves (model.instance_norm auto reads it)
        "level_drift": level_drift(series.values_NC[slice(*bounds["train"])]),
        "filled": filled,  # blank/NaN cells filled per column (missing: ffill|interpolate)
        # val/test histories may start in the segment before (targets never do)
        "history_crosses_segments": True,
    }
    return write_dataset(
        out, tables, name=name or base_name(files[0][1]), task="forecast", labels=[],
        sources=source_files(files), quarantine=quarantine, task_params=task_params,
        import_params={
            "format": "csv", "time_column": time_column, "value_columns": value_columns,
            "window": window, "horizon": horizon, "stride": stride, "seasonal_period": seasonal_period,
            "gaps": gaps, "missing": missing, "val_fraction": val_fraction, "test_fraction": test_fraction,
            "seed": seed, "on_invalid": on_invalid,
        },
    )
