"""CSV time series -> forecast dataset: history/horizon windows, split by time.

A CSV file holds one (multichannel) time series: a header row, then one row per time step, with
an optional time column (numbers, ISO-8601 dates or quarters like `1970 Q1`, strictly increasing)
and one column per channel (``value_columns``). Several files are read in the given order as one series.

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
4. ``contract.write_dataset`` fits the normalization on the train rows' ``x``, which covers
   train time only, so no val/test value leaks into the scaling.

Bad input: a missing column (the columns found are named), a time or value column named twice in
the header, a blank line between time steps, a file that is not UTF-8, a time value that is blank,
not a number/date or not after the previous one, and a line with the wrong number of fields
always fail (the series' order and spacing would be unknown). Numbers are read strictly: `1_303`
is not 1303, and a value beyond float32's range (`1e39`, stored as float32) is invalid like inf.
A gap - a step further from (or closer to) the previous one than the series' usual spacing, e.g.
a missing day - fails naming every such step (``gaps="error"``), or is kept and counted in
``task_params["gaps"]`` (``gaps="keep"``, for series that are irregular by nature such as
business days). Dates on one day of the month (or all month ends) are spaced in calendar months,
so monthly and yearly series are regular.
A blank, non-numeric, NaN or inf VALUE fails with every such cell listed (file, line, column,
text); with ``on_invalid="quarantine"`` the step stays in the series (a time step cannot be
dropped without breaking its contiguity) and every window whose history or horizon touches it
goes to ``<out>/quarantine/`` with the reasons.

Missing values (``missing``): a blank or NaN cell is a missing value. ``"error"`` treats it as
an invalid value (above). ``"ffill"`` fills it with the column's previous value (a leading blank
takes the next value); ``"interpolate"`` fills it linearly in time between the nearest values
before and after it (by the time column's values, else by step; a blank at either end holds the
nearest value). A fill only reads values of the cell's own split segment and the segments before
it, never a later one, so no val/test value leaks into train. Every filled cell is counted per
column in ``task_params["filled"]``. Non-numeric text and inf stay invalid under every policy, and
so does a blank in a column with no number at all up to the end of its segment. Missing ROWS (a
gap in the time column) are not filled: see ``gaps``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from pipeline.data.contract import (
    SPLITS,
    DatasetError,
    Manifest,
    read_text_file,
    sources_for,
    write_dataset,
    x_array,
)
from pipeline.data.importers import _base_name, _check_fractions, _expand
from pipeline.data.validate import DataValidationError, Problem
from pipeline.progress import source_read

MAX_REASONS = 3  # bad steps named per quarantined window (then a count)
MAX_GAPS = 5  # gaps named in the error (then a count)


@dataclass
class Series:
    """A CSV series as read: N steps of C channels, with where each step came from."""

    times: list[str]  # the time column's text per step, or "t=<index>" without one
    values_NC: np.ndarray  # float64; NaN where the cell was invalid (see `bad`)
    sources: list[str]  # "file:line" per step
    columns: list[str]  # value columns, in channel order
    bad: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # step -> [(column, reason)]
    missing: set[tuple[int, int]] = field(default_factory=set)  # (step, channel) of blank/NaN cells
    time_keys: list[tuple[str, Any]] = field(default_factory=list)  # _time_key per step (time column)

    def __len__(self) -> int:
        return len(self.times)


_QUARTER = re.compile(r"^\s*(\d{4})\s*[-/ ]?\s*[Qq]([1-4])\s*$")  # 1970 Q1, 1970-Q1, 1970Q1


def _time_key(text: str) -> tuple[str, float | np.datetime64] | None:
    """("number", value) or ("date", datetime64) for a time cell; None when it is neither.
    Dates are ISO 8601 (2020-03-01, 2020-03, 2020-03-01T12:00) or quarters (`1970 Q1`, `1970-Q1`,
    `1970Q1`: the quarter's first day, so quarterly series are regular in calendar months)."""
    try:
        if "_" in text:  # float() reads 1_303 as 1303
            raise ValueError(text)
        value = float(text)
    except ValueError:
        pass
    else:
        return ("number", value) if math.isfinite(value) else None
    quarter = _QUARTER.match(text)
    if quarter is not None:
        year, q = int(quarter.group(1)), int(quarter.group(2))
        return "date", np.datetime64(f"{year:04d}-{3 * q - 2:02d}-01", "ns")
    try:
        value = np.datetime64(text, "ns")
    except ValueError:
        return None
    return None if np.isnat(value) else ("date", value)  # "" and "NaT" parse as NaT: no time


FLOAT32_MAX = float(np.finfo(np.float32).max)  # values are stored as float32


def _value(text: str) -> tuple[float, str | None, bool]:
    """(value, None, False) for a finite number, else (NaN, why it is invalid, whether it is a
    missing value: blank or NaN, which ``missing="ffill"|"interpolate"`` may fill)."""
    if not text:
        return math.nan, "blank value (expected a number)", True
    try:
        if "_" in text:  # Python reads 1_303 as 1303; in a data file it is a typo or a separator
            raise ValueError(text)
        value = float(text)
    except ValueError:
        return math.nan, f"expected a number, got {text!r}", False
    if not math.isfinite(value):
        return math.nan, f"{text!r} is not a finite number (NaN and inf are not allowed)", math.isnan(value)
    if abs(value) > FLOAT32_MAX:
        return math.nan, (f"{text!r} is beyond the range of float32, which recur stores (+-3.4e38): it "
                          "would become inf"), False
    return value, None, False


def read_series(files: list[tuple[str, str]], *, time_column: str | None,
                value_columns: list[str]) -> Series:
    """Read (shown name, local path) CSV files, in order, as one series.

    Raises DatasetError naming the file and line for structural problems (missing column, wrong
    field count, bad or non-increasing time); invalid VALUES are recorded in ``Series.bad``.
    """
    times: list[str] = []
    rows: list[list[float]] = []
    sources: list[str] = []
    bad: dict[int, list[tuple[str, str]]] = {}
    missing: set[tuple[int, int]] = set()
    previous: tuple[str, Any, str] | None = None  # (kind, key, "file:line") of the last step
    keys: list[tuple[str, Any]] = []
    for index, (shown, local) in enumerate(files, start=1):
        before = len(rows)
        # strict UTF-8, a bad byte named with its line; csv reads the text (series fit in memory)
        reader = csv.reader(io.StringIO(read_text_file(local, shown), newline=""))
        header: list[str] | None = None
        blank_line: int | None = None  # a blank line after the header, until a row follows it
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                if header is not None and blank_line is None:
                    blank_line = line
                continue  # blank lines at the end of a file are allowed
            if blank_line is not None:
                raise DatasetError(
                    f"{shown}:{blank_line}: blank line between time steps; every line after the "
                    "header is one time step: delete it, or give its time with blank values "
                    "(--missing ffill or interpolate fills blank values)")
            if header is None:
                header = [c.strip() for c in cells]
                wanted = ([time_column] if time_column else []) + list(value_columns)
                twice = [c for c in wanted if header.count(c) > 1]
                if twice:
                    raise DatasetError(
                        f"{shown}:{line}: the header names column(s) {twice} more than once "
                        f"({header}); rename one so it is clear which to read")
                absent = [c for c in wanted if c not in header]
                if absent:
                    raise DatasetError(
                        f"{shown}:{line}: no column(s) {absent}; the header has {header} "
                        "(choose them with time_column / value_columns)"
                    )
                time_at = header.index(time_column) if time_column else None
                value_at = [header.index(c) for c in value_columns]
                continue
            where = f"{shown}:{line}"
            if len(cells) != len(header):
                raise DatasetError(f"{where}: {len(cells)} fields, but the header has {len(header)} "
                                   f"({header})")
            step = len(times)
            if time_at is None:
                times.append(f"t={step}")
            else:
                text = cells[time_at].strip()
                key = _time_key(text)
                if key is None:
                    raise DatasetError(f"{where}: column {time_column!r}: expected a number, an "
                                       f"ISO-8601 date or a quarter (1970 Q1) as the time, got {text!r}")
                if previous is not None and key[0] != previous[0]:
                    raise DatasetError(f"{where}: column {time_column!r}: time {text!r} is a {key[0]}, "
                                       f"but the time at {previous[2]} is a {previous[0]}")
                if previous is not None and not key[1] > previous[1]:
                    raise DatasetError(
                        f"{where}: column {time_column!r}: time {text!r} is not after the previous "
                        f"step's time {times[-1]!r} ({previous[2]}); rows must be in strictly "
                        "increasing time order"
                    )
                previous = (key[0], key[1], where)
                times.append(text)
                keys.append(key)
            row = []
            for channel, (column, at) in enumerate(zip(value_columns, value_at)):
                value, why, blank = _value(cells[at].strip())
                row.append(value)
                if why is not None:
                    bad.setdefault(step, []).append((column, why))
                if blank:
                    missing.add((step, channel))
            rows.append(row)
            sources.append(where)
        if header is None:
            raise DatasetError(f"{shown}: empty file (expected a header row, then one row per time step)")
        source_read(shown, len(rows) - before, index=index, files=len(files))
    values = np.array(rows, dtype=np.float64).reshape(len(rows), len(value_columns))
    return Series(times=times, values_NC=values, sources=sources, columns=list(value_columns), bad=bad,
                  missing=missing, time_keys=keys)


def _duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            return f"{seconds / size:g} {unit}(s)"
    return f"{seconds:g} second(s)"


def _spacing(keys: list[tuple[str, Any]]) -> tuple[np.ndarray, Callable[[float], str]]:
    """(N - 1,) distance from each step to the next, and how to write one: in the time column's
    units for numbers; in calendar months for dates at midnight on one day of the month (or all
    on month ends), so monthly and yearly series are regular; else in seconds."""
    if keys[0][0] == "number":
        return np.diff(np.array([k for _, k in keys], dtype=np.float64)), lambda d: f"{d:g}"
    dates = np.array([k for _, k in keys], dtype="datetime64[ns]")
    days, months = dates.astype("datetime64[D]"), dates.astype("datetime64[M]")
    day_of_month = days - months.astype("datetime64[D]")
    month_end = (days + 1).astype("datetime64[M]") != months
    if (dates == days).all() and (len(np.unique(day_of_month)) == 1 or month_end.all()):
        return np.diff(months.astype(np.int64)).astype(np.float64), lambda d: f"{d:g} month(s)"
    return np.diff(dates.astype(np.int64)) / 1e9, _duration


def find_gaps(series: Series) -> tuple[list[tuple[int, str]], str]:
    """Steps whose distance from the previous step is not the series' usual spacing (the most
    common one), as (step, distance written out), and the usual spacing written out."""
    if len(series.time_keys) < 3:
        return [], ""
    diffs, show = _spacing(series.time_keys)
    values, counts = np.unique(np.round(diffs, 9), return_counts=True)
    usual = values[np.argmax(counts)]  # ties: the smaller spacing
    off = np.flatnonzero(~np.isclose(diffs, usual, rtol=1e-6, atol=0.0))
    gaps = [(int(i) + 1, show(diffs[i])) for i in off]
    return gaps, f"{show(usual)} ({counts.max()} of {len(diffs)} steps)"


MISSING_POLICIES = ("error", "ffill", "interpolate")  # "zero" is refused: 0 is a real reading


def _positions(series: Series) -> np.ndarray:
    """(N,) where each step lies in time: the time column's units (calendar months for monthly
    dates, else seconds, as in ``_spacing``) from the first step; the step index without one."""
    if len(series.time_keys) < 2:
        return np.arange(len(series), dtype=np.float64)
    diffs, _ = _spacing(series.time_keys)
    return np.concatenate([[0.0], np.cumsum(diffs)])


def fill_missing_cells(series: Series, policy: str,
                       bounds: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Fill the blank/NaN cells (``series.missing``) of ``series.values_NC`` in place and drop
    their entries from ``series.bad``; return the number of filled cells per column.

    ``"ffill"``: the column's last value at or before the step, else (a leading blank) its next
    one. ``"interpolate"``: linear in time (``_positions``) between the nearest values before and
    after, holding the nearest value at either end. A cell of segment [lo, hi) (``bounds``) only
    reads values of steps < hi: a fill never sees a later split. A column with no value before hi
    leaves its blanks as invalid cells. ``"error"`` fills nothing.
    """
    filled = {column: 0 for column in series.columns}
    if policy == "error" or not series.missing:
        return filled
    values = series.values_NC
    original = values.copy()  # fills read real values only, never an earlier fill
    known = np.isfinite(original)
    blank = np.zeros(values.shape, dtype=bool)
    for step, channel in series.missing:
        blank[step, channel] = True
    positions = _positions(series) if policy == "interpolate" else None
    for lo, hi in bounds.values():
        for c in np.flatnonzero(blank[lo:hi].any(axis=0)):
            have = np.flatnonzero(known[:hi, c])
            if not len(have):
                continue
            targets = lo + np.flatnonzero(blank[lo:hi, c])
            if positions is None:
                source = np.maximum(np.searchsorted(have, targets, side="right") - 1, 0)
                values[targets, c] = original[have[source], c]
            else:
                values[targets, c] = np.interp(positions[targets], positions[have], original[have, c])
            column = series.columns[c]
            filled[column] += len(targets)
            for t in targets.tolist():
                series.bad[t] = [(col, why) for col, why in series.bad[t] if col != column]
                if not series.bad[t]:
                    del series.bad[t]
    return filled


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
    if on_invalid not in ("fail", "quarantine"):
        raise ValueError(f"on_invalid must be 'fail' or 'quarantine', got {on_invalid!r}")
    if gaps not in ("error", "keep"):
        raise ValueError(f"gaps must be 'error' or 'keep', got {gaps!r}")
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)} for a csv series, got "
                         f"{missing!r}" + (" (a 0 would read as a real value of the series)"
                                           if missing == "zero" else ""))
    _check_fractions(val_fraction, test_fraction)
    if val_fraction <= 0 or test_fraction <= 0:
        raise ValueError(f"a forecast dataset needs val_fraction > 0 and test_fraction > 0 (the last "
                         f"parts of the series), got {val_fraction} and {test_fraction}")

    files = _expand(paths, "csv")
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
        raise DataValidationError(
            problems,
            header=f"import into {out} stopped: {len(series.bad)} of {n} time steps hold invalid values "
                   f"({len(problems)} cells); nothing was written",
            hint=("blank/NaN cells: data.source.missing ffill or interpolate (--missing) fills them\n"
                  if missing == "error" and series.missing else "")
                 + "fix the cells, or pass on_invalid='quarantine' to set aside every window that "
                 "touches them",
        )

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
        quarantine = pa.table({
            "id": pa.array(quarantined["id"], pa.string()),
            "split": pa.array(quarantined["split"], pa.string()),
            "reason": pa.array(quarantined["reason"], pa.string()),
            "source": pa.array(quarantined["source"], pa.string()),
            "x": x_array(quarantined["x"]),
            "y": x_array(quarantined["y"]),
        })

    sources = [s.model_copy(update={"path": shown})
               for s, (shown, _) in zip(sources_for([f for _, f in files]), files)]
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
        out, tables, name=name or _base_name(files[0][1]), task="forecast", labels=[],
        sources=sources, quarantine=quarantine, task_params=task_params,
        import_params={
            "format": "csv", "time_column": time_column, "value_columns": value_columns,
            "window": window, "horizon": horizon, "stride": stride, "seasonal_period": seasonal_period,
            "gaps": gaps, "missing": missing, "val_fraction": val_fraction, "test_fraction": test_fraction,
            "seed": seed, "on_invalid": on_invalid,
        },
    )
