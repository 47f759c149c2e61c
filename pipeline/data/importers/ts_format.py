"""Parser for the UCR/UEA ``.ts`` time-series format (sktime / timeseriesclassification.com).

A ``.ts`` file is a header of ``@tags`` ending in ``@data``, then one case per line::

    # comment
    @problemName JapaneseVowels
    @univariate false
    @dimensions 12
    @equalLength false
    @classLabel true 1 2 3
    @data
    1.0,2.0,3.0:0.5,?,0.7:2          <- dimension 1 : dimension 2 : class label

Supported: univariate and multivariate, equal and unequal length, ``?`` as a missing value,
``@classLabel true|false [labels]`` and ``@targetLabel true|false`` (a target after the last
``:``), case-insensitive tags, ``#`` comments and ``%`` ones (ARFF's, which the format grew from:
some archive files open with them, such as aeon's UnitTest). Not supported: ``@timeStamps true`` (the
``(t,v)`` tuple form), which raises TsFormatError.

Unequal dimensions within one case (a value lost from one dimension) are an error naming the
line and both dimensions, whatever the missing-value policy: padding the short one and filling
it would invent values. A missing value is written ``?``.

Missing values (``?``, and the literal ``nan`` which is read the same way) are handled per case,
per dimension, by the ``missing`` policy:

* ``"error"``       raise TsFormatError naming file, line and dimension (default)
* ``"zero"``        replace with 0
* ``"ffill"``       forward fill, then back fill a leading gap
* ``"interpolate"`` linear interpolation between neighbours, edges hold the nearest value
* ``"keep"``        leave NaN in place (for callers that validate rows themselves)

A dimension that is entirely missing cannot be filled by ``ffill`` or ``interpolate`` and is an
error. Every TsFormatError message reads ``<file>:<line>: what is wrong; what was expected``
with 1-based line numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.data.dataset import DatasetError
from pipeline.data.importers.sources import read_text_file
from pipeline.errors import UserError

MISSING_POLICIES = ("error", "zero", "ffill", "interpolate", "keep")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # values are stored as float32
COMMENTS = ("#", "%")  # a line starting with either is a comment: the format's own, and ARFF's

# Tag spellings as the format documents them; lookups are case-insensitive.
_BOOL_TAGS = {
    "timestamps": "timeStamps",
    "missing": "missing",
    "univariate": "univariate",
    "equallength": "equalLength",
    "targetlabel": "targetLabel",
}
_INT_TAGS = {"dimensions": "dimensions", "dimension": "dimensions", "serieslength": "seriesLength"}


class TsFormatError(UserError, ValueError):
    """A ``.ts`` file does not follow the format; the message starts with ``<file>:<line>:``."""


@dataclass
class TsData:
    """One parsed ``.ts`` file.

    series:        one float32 array of shape (T, C) per case, in file order
    labels:        the class label (or regression target) string of each case, None if the file
                   declares neither @classLabel true nor @targetLabel true
    class_labels:  the labels declared by ``@classLabel true ...`` in declared order, else None
    line_numbers:  1-based line of each case in the file
    """

    path: str
    problem_name: str | None
    header: dict[str, Any]
    series: list[np.ndarray] = field(default_factory=list)
    labels: list[str] | None = None
    class_labels: list[str] | None = None
    line_numbers: list[int] = field(default_factory=list)

    @property
    def num_channels(self) -> int | None:
        if self.series:
            return int(self.series[0].shape[1])
        return self.header.get("dimensions")


def fill_missing(x: np.ndarray, policy: str) -> np.ndarray:
    """Apply a missing-value policy to one case of shape (T, C); NaN marks a missing value.

    Returns a new float32 array (or ``x`` itself when nothing is missing). Raises ValueError
    with a reason (no file/line: the caller adds them) under ``"error"`` when a value is
    missing, and under ``"ffill"``/``"interpolate"`` when a whole dimension is missing.
    """
    if policy not in MISSING_POLICIES:
        raise ValueError(f"unknown missing policy {policy!r}; expected one of {MISSING_POLICIES}")
    nan = np.isnan(x)
    if policy == "keep" or not nan.any():
        return x
    if policy == "error":
        c = int(np.flatnonzero(nan.any(axis=0))[0])
        t = int(np.flatnonzero(nan[:, c])[0])
        raise ValueError(
            f"dimension {c + 1} has a missing value at value {t + 1} of {x.shape[0]}; expected a "
            "number (use missing='zero', 'ffill' or 'interpolate' to fill missing values)"
        )
    if policy == "zero":
        return np.where(nan, np.float32(0.0), x).astype(np.float32)
    empty = np.flatnonzero(nan.all(axis=0))
    if len(empty):
        raise ValueError(
            f"dimension {empty[0] + 1} has no values (all {x.shape[0]} missing); "
            f"expected at least one number to {policy} from"
        )
    out = x.astype(np.float32, copy=True)
    steps = np.arange(x.shape[0])
    if policy == "ffill":
        # index of the last valid step at or before t, per channel; leading gaps get index 0
        # (still NaN) and are then back-filled with the first valid value.
        last = np.maximum.accumulate(np.where(nan, 0, steps[:, None]), axis=0)
        out = np.take_along_axis(out, last, axis=0)
        first = np.argmax(~nan, axis=0)
        lead = steps[:, None] < first[None, :]
        out = np.where(lead, out[first, np.arange(x.shape[1])][None, :], out)
        return out.astype(np.float32)
    # interpolate: np.interp holds the edge values outside the known points.
    for c in np.flatnonzero(nan.any(axis=0)):
        ok = ~nan[:, c]
        out[:, c] = np.interp(steps, steps[ok], x[ok, c].astype(np.float64))
    return out


def _bool(value: list[str], where: str, tag: str) -> bool:
    v = value[0].lower() if value else ""
    if v not in ("true", "false"):
        raise TsFormatError(
            f"{where}: @{tag} must be followed by true or false, got {' '.join(value)!r}"
        )
    return v == "true"


def _parse_numbers(text: str, where: str, dim: int) -> np.ndarray:
    """Comma-separated numbers of one dimension -> float32 (T,); '?' -> NaN; '' -> 0 values."""
    if not text.strip():
        return np.zeros(0, np.float32)
    tokens = text.split(",")
    try:
        if "_" in text:  # numpy and float() read 1_303 as 1303
            raise ValueError
        # numpy converts the whole token list in one call; "?" is read as "nan" first.
        values = np.array(text.replace("?", "nan").split(","), dtype=np.float64)
    except ValueError:
        for i, tok in enumerate(tokens):
            try:
                if "_" in tok:
                    raise ValueError(tok)
                float(tok)
            except ValueError:
                if tok.strip() == "?":
                    continue
                shown = tok.strip()
                if shown.startswith("("):
                    raise TsFormatError(
                        f"{where}: dimension {dim} value {i + 1} is a (timestamp,value) tuple; "
                        "timestamped .ts files are not supported yet"
                    ) from None
                raise TsFormatError(
                    f"{where}: dimension {dim} value {i + 1} is {shown!r}; expected a number "
                    "or '?' for a missing value"
                ) from None
        raise  # pragma: no cover - numpy and float() disagree
    huge = np.flatnonzero(np.isfinite(values) & (np.abs(values) > FLOAT32_MAX))
    if len(huge):  # stored as float32, it would become inf
        raise TsFormatError(f"{where}: dimension {dim} value {huge[0] + 1} is {tokens[huge[0]].strip()!r}, "
                            "beyond the range of float32 (+-3.4e38) that recur stores; expected a "
                            "smaller number (rescale the data)")
    return values.astype(np.float32)


def parse_ts(path: str, *, missing: str = "error", check_labels: bool = True) -> TsData:
    """Parse a ``.ts`` file into float32 arrays of shape (T, C), one per case.

    ``missing``: see the module docstring. ``check_labels``: raise TsFormatError for a class label
    not declared in @classLabel; importers pass False and report such rows themselves (so they
    can be quarantined).
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"unknown missing policy {missing!r}; expected one of {MISSING_POLICIES}")
    path = os.fspath(path)
    try:
        lines = read_text_file(path).splitlines()
    except DatasetError as exc:  # not UTF-8: named with its line and byte offset
        raise TsFormatError(str(exc)) from None

    header: dict[str, Any] = {}
    class_labels: list[str] | None = None
    data_start = None
    for i, raw in enumerate(lines):
        ln = i + 1
        where = f"{path}:{ln}"
        line = raw.strip()
        if not line or line.startswith(COMMENTS):
            continue
        if not line.startswith("@"):
            raise TsFormatError(
                f"{where}: data before @data; expected header tags (@problemName, @dimensions, "
                "@classLabel, ...) ending with a line '@data'"
            )
        words = line.split()
        tag, rest = words[0][1:].lower(), words[1:]
        if tag == "data":
            data_start = i + 1
            break
        if tag == "problemname":
            header["problemName"] = " ".join(rest)
        elif tag in _BOOL_TAGS:
            header[_BOOL_TAGS[tag]] = _bool(rest, where, words[0][1:])
            if tag == "timestamps" and header["timeStamps"]:
                raise TsFormatError(
                    f"{where}: @timeStamps true: timestamped .ts files are not supported yet; "
                    "expected @timeStamps false"
                )
        elif tag in _INT_TAGS:
            try:
                n = int(rest[0])
                if n < 1:
                    raise ValueError
            except (IndexError, ValueError):
                raise TsFormatError(
                    f"{where}: {words[0]} must be followed by a positive integer, got "
                    f"{' '.join(rest)!r}"
                ) from None
            header[_INT_TAGS[tag]] = n
        elif tag == "classlabel":
            has = _bool(rest, where, words[0][1:])
            header["classLabel"] = has
            if has:
                declared = rest[1:]
                if len(set(declared)) != len(declared):
                    raise TsFormatError(f"{where}: @classLabel declares a label twice: {declared}")
                # "@classLabel true" without a list: labels are taken from the data as they come.
                class_labels = declared or None
        else:
            # Unknown tags are kept (the format grows); they do not change parsing.
            header[words[0][1:]] = " ".join(rest)
    if data_start is None:
        raise TsFormatError(
            f"{path}:{len(lines)}: no @data line; expected the header to end with a line '@data'"
        )
    if header.get("univariate") and header.get("dimensions", 1) != 1:
        raise TsFormatError(
            f"{path}: @univariate true contradicts @dimensions {header['dimensions']}"
        )

    has_label = bool(header.get("classLabel")) or bool(header.get("targetLabel"))
    num_dims: int | None = header.get("dimensions") or (1 if header.get("univariate") else None)
    if "dimensions" in header:
        dims_from: str | None = "@dimensions"
    else:
        dims_from = "@univariate true" if num_dims else None
    series: list[np.ndarray] = []
    labels: list[str] = []
    line_numbers: list[int] = []
    declared = set(class_labels) if class_labels else None

    for i in range(data_start, len(lines)):
        ln = i + 1
        where = f"{path}:{ln}"
        line = lines[i].strip()
        if not line or line.startswith(COMMENTS):
            continue
        if line.startswith("@"):
            raise TsFormatError(f"{where}: header tag {line.split()[0]} after @data; expected data")
        if "(" in line:
            raise TsFormatError(
                f"{where}: (timestamp,value) tuples: timestamped .ts files are not supported yet"
            )
        parts = line.split(":")
        if has_label:
            if len(parts) < 2:
                raise TsFormatError(
                    f"{where}: no label; expected '<dimension 1>:...:<dimension C>:<label>'"
                )
            label = parts.pop().strip()
            if not label:
                raise TsFormatError(f"{where}: empty label after the last ':'; expected a label")
            if check_labels and declared is not None and label not in declared:
                raise TsFormatError(
                    f"{where}: class label {label!r} is not declared in @classLabel; expected one "
                    f"of {', '.join(class_labels or [])}"
                )
            labels.append(label)
        if num_dims is None:
            num_dims, dims_from = len(parts), f"the first case (line {ln})"
        if len(parts) != num_dims:
            raise TsFormatError(
                f"{where}: case has {len(parts)} dimensions, expected {num_dims} (from {dims_from})"
            )
        dims = [_parse_numbers(p, where, d + 1) for d, p in enumerate(parts)]
        lengths = [len(d) for d in dims]
        t = max(lengths)
        x = np.full((t, num_dims), np.nan, dtype=np.float32)
        for d, v in enumerate(dims):
            x[: len(v), d] = v
        if min(lengths) < t:  # a value lost (or one too many): never padded and filled silently
            d = int(np.argmin(lengths))
            raise TsFormatError(
                f"{where}: dimension {d + 1} has {lengths[d]} values but dimension "
                f"{int(np.argmax(lengths)) + 1} has {t}; expected every dimension of a case to have "
                "the same length (write a missing value as '?', which --missing fills)"
            )
        try:
            x = fill_missing(x, missing)
        except ValueError as e:
            raise TsFormatError(f"{where}: {e}") from None
        series.append(x)
        line_numbers.append(ln)

    return TsData(
        path=path,
        problem_name=header.get("problemName"),
        header=header,
        series=series,
        labels=labels if has_label else None,
        class_labels=class_labels,
        line_numbers=line_numbers,
    )
