"""One CSV time series as read: steps, values, the time column, gaps and missing cells.

A CSV file holds one (multichannel) time series: a header row, then one row per time step, with
an optional time column (numbers, ISO-8601 dates, quarters like `1970 Q1` or months like
`1991 Jul`, strictly increasing) and one column per channel (``value_columns``). Several files are
read in the given order as one series (``read_series``); the forecast windows cut from it: csv.py.

Bad input: a missing column (the columns found are named), a time or value column named twice in
the header, a blank line between time steps, a file that is not UTF-8, a time value that is blank,
not a number/date or not after the previous one, and a line with the wrong number of fields
always fail (the series' order and spacing would be unknown). Numbers are read strictly: `1_303`
is not 1303, and a value beyond float32's range (`1e39`, stored as float32) is invalid like inf.
A gap - a step further from (or closer to) the previous one than the series' usual spacing, e.g.
a missing day - fails naming every such step (``gaps="error"``), or is kept and counted in
``task_params["gaps"]`` (``gaps="keep"``, for series that are irregular by nature such as
business days). Dates on one day of the month (or all month ends) are spaced in calendar months,
so monthly and yearly series are regular (quarters and months are read as their first day).
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
from typing import Any

import numpy as np

from pipeline.data.dataset import DatasetError
from pipeline.data.importers.sources import read_text_file
from pipeline.progress import source_read


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
# English month names, abbreviated or in full, any case ("Sept" as well as "Sep"): month number
_MONTH_NUMBER = {name: number for number, names in enumerate(
    [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",),
     ("jun", "june"), ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"),
     ("oct", "october"), ("nov", "november"), ("dec", "december")], start=1) for name in names}
_MONTH_NAME = "|".join(sorted(_MONTH_NUMBER, key=len, reverse=True))
# 1991 Jul, 1991-Jul, 1991Jul, 1991 July; Jul 1991, Jul-1991, July 1991 (ASCII only: no "ſep")
_YEAR_MONTH = re.compile(rf"^\s*(\d{{4}})\s*[-/ ]?\s*({_MONTH_NAME})\s*$", re.ASCII | re.IGNORECASE)
_MONTH_YEAR = re.compile(rf"^\s*({_MONTH_NAME})\s*[-/ ]?\s*(\d{{4}})\s*$", re.ASCII | re.IGNORECASE)
# the forms of a time cell, as the error for one that is none of them lists them
TIME_FORMS = "a number, an ISO-8601 date, a quarter (1970 Q1) or a month (1970 Jan)"


def unreadable_time(column: str) -> str:
    """The start of the error for a time cell of `column` that `_time_key` cannot read (the cell's
    text follows); benchmarks/forecast_panel.py looks for it in `recur data import`'s error."""
    return f"column {column!r}: expected {TIME_FORMS} as the time"


def _month(text: str) -> np.datetime64 | None:
    """The first day of the month of `1991 Jul`, `Jul 1991`, `1991-July`, ...; None for other text."""
    year_month = _YEAR_MONTH.match(text)
    if year_month is not None:
        year, name = year_month.groups()
    else:
        month_year = _MONTH_YEAR.match(text)
        if month_year is None:
            return None
        name, year = month_year.groups()
    return np.datetime64(f"{int(year):04d}-{_MONTH_NUMBER[name.lower()]:02d}-01", "ns")


def _time_key(text: str) -> tuple[str, float | np.datetime64] | None:
    """("number", value) or ("date", datetime64) for a time cell; None when it is neither.
    Dates are ISO 8601 (2020-03-01, 2020-03, 2020-03-01T12:00), quarters (`1970 Q1`, `1970-Q1`,
    `1970Q1`: the quarter's first day, so quarterly series are regular in calendar months) or
    months with English names (`1991 Jul`, `1991-Jul`, `1991Jul`, `Jul 1991`, `Jul-1991`,
    `July 1991`, `1991 July`, any case: the month's first day, so monthly series are regular)."""
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
    month = _month(text)
    if month is not None:
        return "date", month
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
                    raise DatasetError(f"{where}: {unreadable_time(time_column)}, got {text!r}")
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
