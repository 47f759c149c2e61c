"""The UCR time-series archive's plain text formats -> a classify dataset (``--format ucr``).

Two variants, one series per line, the class label first, then the values:

* 2018 archive ``<Name>_TRAIN.tsv`` / ``<Name>_TEST.tsv``: tab-separated. Variable-length
  datasets are right-padded with ``NaN`` to the longest series of the file.
* 2015 archive ``<Name>_TRAIN`` / ``<Name>_TEST`` (often saved as ``.txt``): whitespace- or
  comma-separated, labels written as floats (``1.0000000e+00``).

A line is split on tabs when it holds one, else on commas when it holds one, else on runs of
whitespace. Labels that are integral numbers are written as integers (``1.0``, ``1e+00`` and
``1`` are class ``"1"``; ``-1`` stays ``"-1"``), any other label is kept as its text. Trailing
``NaN`` values are padding and are dropped, so each series keeps its own length; a ``NaN`` before
the last number is a missing value, handled by ``missing`` exactly like ``?`` in ``.ts`` files
(``error``: the row is invalid and reported or quarantined; ``zero``, ``ffill``,
``interpolate``: filled, counted in ``import_params["filled"]``). Univariate only: every series
has one channel.

Format errors raise DatasetError ``<file>:<line>: what is wrong; what was expected`` (1-based
lines): a file that is not UTF-8, an empty file, a blank or non-numeric value, a label that is
NaN. A line with a label but no values, or only NaN padding, is an invalid row (fail or
quarantine per ``on_invalid``). Splits, label order, ``max_length``, validation, quarantine and
writing are those of ``import_ts`` (``common.finish``): ``*_TRAIN`` / ``*_TEST`` files
go to those splits, val is carved from train, a TEST label unseen in TRAIN is an invalid row.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pipeline.data.dataset import DatasetError, Manifest
from pipeline.data.importers.common import Rows, add_cases, case_files, finish, ordered
from pipeline.data.importers.sources import base_name, read_text_file
from pipeline.progress import source_read

EXTENSIONS = ("tsv", "txt")  # what a folder source contributes; a file given by name may have any
_WHITESPACE = re.compile(r"\s+")


@dataclass
class UcrData:
    """One parsed file: per case a float32 (T, 1) array (NaN = missing value; padding removed),
    its normalized label, its 1-based line, and (case index, reason) of cases with no values."""

    series: list[np.ndarray] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    empty: list[tuple[int, str]] = field(default_factory=list)


def normalize_label(text: str, where: str) -> str:
    """``"1.0000000e+00"`` and ``"1.0"`` -> ``"1"``; a non-integral or non-numeric label as is."""
    try:
        value = float(text)
    except ValueError:
        return text
    if math.isnan(value) or math.isinf(value):
        raise DatasetError(f"{where}: the label (first field) is {text!r}; expected a class label such as "
                           "1, -1 or 1.0000000e+00")
    return str(int(value)) if value.is_integer() else text


def _fields(line: str) -> list[str]:
    if "\t" in line:
        return [f.strip() for f in line.split("\t")]
    if "," in line:
        return [f.strip() for f in line.split(",")]
    return _WHITESPACE.split(line)


def _numbers(tokens: list[str], where: str) -> np.ndarray:
    """The values of one line as float64 (T,); DatasetError naming the first bad one."""
    try:
        if any("_" in t for t in tokens):  # numpy and float() read 1_303 as 1303
            raise ValueError
        return np.array(tokens, dtype=np.float64)
    except ValueError:
        for i, token in enumerate(tokens, start=1):
            try:
                if "_" in token:
                    raise ValueError(token)
                float(token)
            except ValueError:
                got = "blank" if not token else f"{token!r}"
                raise DatasetError(f"{where}: value {i} (after the label) is {got}; expected a number "
                                   "(NaN for a missing value)") from None
        raise  # pragma: no cover - numpy and float() disagree


def parse_ucr(path: str, shown: str) -> UcrData:
    """Parse one UCR archive text file (see the module docstring); ``shown`` names it in errors."""
    text = read_text_file(path, shown).removeprefix("\ufeff")
    data = UcrData()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue  # a blank line (often the last) is not a case
        where = f"{shown}:{number}"
        label, *tokens = _fields(line)
        data.labels.append(normalize_label(label, where))
        data.line_numbers.append(number)
        if tokens and not tokens[-1]:
            tokens.pop()  # a trailing separator ends the line, it is not a blank value
        values = _numbers(tokens, where) if tokens else np.zeros(0)
        present = np.flatnonzero(~np.isnan(values))
        # Trailing NaNs pad a series to the file's longest; only NaNs before the last number are
        # missing values.
        length = int(present[-1]) + 1 if len(present) else 0
        if not length:
            what = (f"only NaN padding ({len(values)} values)" if len(values)
                    else f"no values after the label {label!r}")
            data.empty.append((len(data.series), f"{what}; expected the label, then at least one number"))
        data.series.append(values[:length].astype(np.float32).reshape(length, 1))
    if not data.series:
        raise DatasetError(f"{shown}: empty file; expected one series per line: the class label, then "
                           "the values (tab-, comma- or space-separated)")
    return data


def import_ucr(
    paths: list[str] | str,
    out: str,
    *,
    name: str | None = None,
    missing: str = "error",
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    on_invalid: Literal["fail", "quarantine"] = "fail",
    max_length: int | None = None,
    on_too_long: Literal["truncate", "reject"] = "truncate",
) -> Manifest:
    """Import UCR archive ``.tsv`` (2018) or ``.txt`` (2015) files, or folders of them, into ``out``
    as a univariate classify dataset (x: (T, 1) float32 per row, y: label index).

    Row ids are ``"<file stem>:<0-based case index>"``; ``missing`` is the ts_format policy for
    NaN inside a series (see the module docstring); the other keywords are ``import_ts``'s.
    """
    files = case_files(paths, EXTENSIONS, missing=missing, val_fraction=val_fraction,
                       test_fraction=test_fraction)

    rows = Rows()
    filled = 0
    for index, (shown, local) in enumerate(ordered(files), start=1):
        data = parse_ucr(local, shown)
        source_read(shown, len(data.series), index=index, files=len(files))
        base = len(rows)
        filled += add_cases(rows, data.series, data.labels, data.line_numbers, file=local, shown=shown,
                            missing=missing)
        rows.pre.extend((base + k, "x", reason) for k, reason in data.empty)

    return finish(
        rows, out,
        name=name or base_name(files[0][1]),
        task="classify",
        num_channels=1,
        declared_labels=None,
        files=files,
        import_params={
            "format": "ucr", "missing": missing, "val_fraction": val_fraction,
            "test_fraction": test_fraction, "seed": seed, "on_invalid": on_invalid,
            "filled": filled,  # missing values filled in the rows read (0 under missing='error')
        },
        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, on_invalid=on_invalid,
        max_length=max_length, on_too_long=on_too_long,
        hint="missing values (NaN before a series' last number): pass missing='zero', 'ffill' or "
             "'interpolate' to fill them",
    )
