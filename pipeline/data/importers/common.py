"""The skeleton every importer shares: source files -> rows (with file:line) -> splits -> bad
rows failed or quarantined with their reasons -> ``dataset.write_dataset``.

The pieces every format uses: ``check_fractions`` / ``check_on_invalid`` (the common keywords),
``assign_splits`` (file-named splits, else a seeded stratified split), ``stop_import`` (the
DataValidationError of ``on_invalid="fail"``), ``check_no_empty_split``, ``quarantine_table`` and
``reason_text``. Labelled cases (``ts``, ``ucr``, ``parquet``: classify) go all the way through
``finish``:

1. read every source file into ``Rows`` (id, x (T, C), raw label, source file:line);
2. assign each row a split: a file whose stem ends in ``_TRAIN``/``_TEST``/``_VAL``/``_VALID``
   (any case, ``-`` or ``.`` also work as separator) goes to that split; rows of files without a
   token are pooled and split train/val/test stratified by label; if there is still no val split,
   ``val_fraction`` of train is carved out as val, stratified by label. Splitting is seeded
   (``numpy.random.default_rng(seed)``) and keeps the source order within each split;
3. label list: the ``@classLabel`` order declared by the first (train) file that declares one,
   else the sorted unique labels of the train split (numeric-aware: "2" < "10");
4. a sequence longer than ``max_length`` time steps keeps its first ``max_length`` steps
   (``on_too_long="truncate"``, counted per split in ``import_params["truncated"]``) or is an
   invalid row (``"reject"``);
5. every row is checked against the contract (``validate.find_row_problems``) plus the label
   list; ``on_invalid="fail"`` raises DataValidationError with every problem and writes nothing,
   ``on_invalid="quarantine"`` writes the bad rows to ``<out>/quarantine/`` with a reason;
6. ``dataset.write_dataset``.

A source that cannot be read as its format (a corrupt or truncated Parquet file, mismatched
dimensions between files, a missing column) raises DatasetError naming the file.

Same inputs and parameters give byte-identical Parquet files and the same data hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import DEFAULT_MAX_LENGTH
from pipeline.data.dataset import ARROW_SCHEMA, SPLITS, DatasetError, Manifest, write_dataset, x_array
from pipeline.data.importers.sources import check_unique_stems, expand, source_files, split_of, stem
from pipeline.data.importers.ts_format import MISSING_POLICIES, fill_missing
from pipeline.data.validate import DataValidationError, Problem, find_row_problems

_COLUMN_ORDER = {"id": 0, "x": 1, "y": 2}


def label_sort_key(label: str) -> tuple:
    """Numeric-aware order: numbers first by value ("2" < "10"), then other strings."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
            "and sum to less than 1"
        )


def check_on_invalid(on_invalid: str) -> None:
    if on_invalid not in ("fail", "quarantine"):
        raise ValueError(f"on_invalid must be 'fail' or 'quarantine', got {on_invalid!r}")


# --------------------------------------------------------------------------------------------
# Splits


def stratified(
    idx: np.ndarray, labels: list[str | None], fractions: list[float], seed: int
) -> list[np.ndarray]:
    """Split row indices ``idx`` per label into len(fractions)+1 parts: one per fraction, then
    the rest. Per class, counts are round(n * fraction); at least one row stays in the rest, so
    a single-row class stays where it was. When that rounding leaves a part empty although its
    fraction asks for rows (many classes of 2-3 rows: round(2 * 0.2) is 0 for every class), the
    part gets round(total * fraction) rows instead, one each from the classes drawn by the seed
    among those that can spare one. Deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i in idx.tolist():
        by_label.setdefault(labels[i] if labels[i] is not None else "", []).append(i)
    classes = sorted(by_label, key=label_sort_key)
    sizes = [len(by_label[label]) for label in classes]
    counts = [[int(np.floor(n * f + 0.5)) for f in fractions] for n in sizes]
    for n, per_class in zip(sizes, counts):
        _keep_one(per_class, n)
    for k, fraction in enumerate(fractions):
        want = int(np.floor(sum(sizes) * fraction + 0.5))
        if fraction > 0 and want > 0 and not any(c[k] for c in counts):
            for j in rng.permutation(len(classes)).tolist():
                if want == 0:
                    break
                if sizes[j] - sum(counts[j]) > 1:  # the class keeps a row in the rest
                    counts[j][k] += 1
                    want -= 1
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for label, n, per_class in zip(classes, sizes, counts):
        perm = np.array(by_label[label])[rng.permutation(n)]
        start = 0
        for k, c in enumerate(per_class):
            parts[k].extend(perm[start : start + c].tolist())
            start += c
        parts[-1].extend(perm[start:].tolist())
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


def _keep_one(counts: list[int], n: int) -> None:
    """Lower the largest of `counts` until at least one of `n` rows is left for the rest."""
    while sum(counts) > n - 1:
        k = max(range(len(counts)), key=lambda j: (counts[j], -j))
        counts[k] -= 1


def assign_splits(file_splits: list[str | None], labels: list[str | None] | None, val_fraction: float,
                  test_fraction: float, seed: int) -> np.ndarray:
    """Split per row: the split its file names, else a seeded split of the pooled rows by the
    fractions, stratified by ``labels`` (None: one stratum, a plain random split); then, with no
    val rows yet, ``val_fraction`` of train carved out as val the same way."""
    split = np.array([s or "" for s in file_splits], dtype=object)
    labels = labels if labels is not None else [None] * len(split)
    pooled = np.flatnonzero(split == "")
    if len(pooled):
        test, val, train = stratified(pooled, labels, [test_fraction, val_fraction], seed)
        split[test], split[val], split[train] = "test", "val", "train"
    if not (split == "val").any():
        train = np.flatnonzero(split == "train")
        val, _ = stratified(train, labels, [val_fraction], seed)
        split[val] = "val"
    return split


# --------------------------------------------------------------------------------------------
# Bad rows: fail, or set aside in the quarantine


def stop_import(out: str, problems: list[Problem], what: str, hint: str) -> NoReturn:
    """``on_invalid="fail"``: every problem reported, nothing written. ``what``: how many of
    what broke what ("3 of 9 rows break the dataset contract (4 problems)")."""
    raise DataValidationError(
        problems, header=f"import into {out} stopped: {what}; nothing was written", hint=hint)


def check_no_empty_split(split: np.ndarray, bad: np.ndarray, *, unit: str = "rows",
                         names: str = "*_TRAIN / *_VAL / *_TEST") -> None:
    """DatasetError when a split would have no valid ``unit`` left, with the count per split."""
    counts = {s: int(((split == s) & ~bad).sum()) for s in SPLITS}
    empty = [s for s in SPLITS if not counts[s]]
    if empty:
        raise DatasetError(
            f"split(s) {empty} would be empty (valid {unit} per split: {counts}); name source files "
            f"{names}, or raise val_fraction / test_fraction, or add {unit}"
        )


def reason_text(reasons: list[tuple[str, str]]) -> str:
    """A quarantined row's reason: ``"column: why"`` per problem, joined by ``"; "``."""
    return "; ".join(f"{column}: {why}" for column, why in reasons)


def quarantine_table(ids: list[str | None], splits: list[str], reasons: list[str], sources: list[str],
                     **raw: pa.Array) -> pa.Table:
    """The quarantine's rows: id, split, reason, source, then the format's ``raw`` columns (the
    row as read) in the given order."""
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "split": pa.array(splits, pa.string()),
        "reason": pa.array(reasons, pa.string()),
        "source": pa.array(sources, pa.string()),
        **raw,
    })


# --------------------------------------------------------------------------------------------
# Labelled cases (classify): ts, ucr, parquet


@dataclass
class Rows:
    """Every source row, in source order, before validation."""

    ids: list[str | None] = field(default_factory=list)
    x: list[pa.Array] = field(default_factory=list)       # x to check and write, per file
    x_raw: list[pa.Array] = field(default_factory=list)   # x as read, for quarantine
    labels: list[str | None] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)      # "file:line" or "file"
    splits: list[str | None] = field(default_factory=list)  # None: pooled
    pre: list[tuple[int, str, str]] = field(default_factory=list)  # (row, column, reason)

    def __len__(self) -> int:
        return len(self.ids)


def case_files(paths: list[str] | str, ext: str | tuple[str, ...], *, missing: str, val_fraction: float,
               test_fraction: float) -> list[tuple[str, str]]:
    """The checks every importer of labelled cases (`add_cases`) makes before reading: the
    missing-value policy, the split fractions, and file stems unique (they make the row ids).
    Returns the (display name, local file) pairs of `expand`."""
    if missing not in MISSING_POLICIES or missing == "keep":
        raise ValueError(
            f"missing must be one of 'error', 'zero', 'ffill', 'interpolate', got {missing!r}"
        )
    check_fractions(val_fraction, test_fraction)
    files = expand(paths, ext)
    check_unique_stems(files)
    return files


def ordered(files: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Train files first (their label declarations win), then the rest, each in given order."""
    return sorted(files, key=lambda f: 0 if split_of(f[1]) == "train" else 1)


def add_cases(rows: Rows, series: list[np.ndarray], labels: list[str], line_numbers: list[int], *,
              file: str, shown: str, missing: str) -> int:
    """Append one file's cases (float32 (T, C) arrays, NaN = missing value) to ``rows``.

    Ids are ``"<file stem>:<0-based case index>"``, sources ``"<shown>:<line>"``, the split is the
    file name's token. ``missing``: a ts_format policy; under ``"error"`` NaN stays in x, so the
    contract check reports the row (fail or quarantine); a case the policy cannot fill (a
    dimension with no value) is an invalid row with the reason. Returns the number of values
    filled.
    """
    file_stem, split = stem(file), split_of(file)
    base = len(rows)
    filled, count = [], 0
    for k, (x, line) in enumerate(zip(series, line_numbers)):
        try:
            filled.append(fill_missing(x, "keep" if missing == "error" else missing))
            if missing != "error":
                count += int(np.isnan(x).sum())
        except ValueError as e:
            rows.pre.append((base + k, "x", str(e)))
            filled.append(x)
        rows.ids.append(f"{file_stem}:{k}")
        rows.labels.append(labels[k])
        rows.sources.append(f"{shown}:{line}")
        rows.splits.append(split)
    rows.x.append(x_array(filled))
    rows.x_raw.append(x_array(series))
    return count


def finish(
    rows: Rows,
    out: str,
    *,
    name: str,
    task: str,
    num_channels: int,
    declared_labels: list[str] | None,
    files: list[tuple[str, str]],
    import_params: dict[str, Any],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    on_invalid: str,
    max_length: int | None = None,
    on_too_long: str = "truncate",
    hint: str | None = None,
) -> Manifest:
    """Split, validate, quarantine or fail, and write the dataset.

    ``max_length`` (time steps): a longer sequence keeps its first ``max_length`` steps
    (``on_too_long="truncate"``, counted per split in ``import_params["truncated"]``) or is an
    invalid row (``"reject"``: fail or quarantine per ``on_invalid``).
    """
    if task != "classify":
        raise ValueError(f"task {task!r} is not supported by this importer; expected 'classify'")
    check_on_invalid(on_invalid)
    if on_too_long not in ("truncate", "reject"):
        raise ValueError(f"on_too_long must be 'truncate' or 'reject', got {on_too_long!r}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 time step, got {max_length}")
    n = len(rows)
    if n == 0:
        raise DatasetError(f"no rows in {[f for f, _ in files]}: the source files hold no cases; a "
                           "dataset needs at least one row in each of train, val and test")
    split = assign_splits(rows.splits, rows.labels, val_fraction, test_fraction, seed)
    x = pa.concat_arrays(rows.x) if len(rows.x) > 1 else rows.x[0]
    x_raw = pa.concat_arrays(rows.x_raw) if len(rows.x_raw) > 1 else rows.x_raw[0]
    found: list[tuple[int, str, str]] = list(rows.pre)
    x, too_long = _limit_length(x, rows, found, max_length, on_too_long)

    # Contract checks on id and x, over all rows at once so duplicate ids across splits count.
    check = pa.Table.from_arrays([pa.array(rows.ids, pa.string()), x], names=["id", "x"])
    pre_x = {r for r, col, _ in rows.pre if col == "x"}
    for r, p in find_row_problems(check, split="", num_channels=num_channels, num_labels=None,
                                  columns=("id", "x")):
        if r >= 0 and not (p.column == "x" and r in pre_x):
            found.append((r, p.column, p.reason))

    # Labels: declared order, else the sorted labels of the train split (all its rows, so a
    # train row is never reported as having an unknown label of its own file).
    if declared_labels:
        labels = list(declared_labels)
    else:
        labels = sorted(
            {rows.labels[i] for i in np.flatnonzero(split == "train")
             if rows.labels[i] is not None},
            key=label_sort_key,
        )
    if not labels:
        raise DatasetError("no labels: the train split has no valid labelled rows")
    index = {label: i for i, label in enumerate(labels)}
    known = ", ".join(labels[:20]) + (f", ... ({len(labels)} in all)" if len(labels) > 20 else "")
    y = np.full(n, -1, dtype=np.int64)
    for i, label in enumerate(rows.labels):
        if label is None:
            found.append((i, "y", "label is null or NaN (expected a class label)"))
        elif label not in index:
            found.append((i, "y", f"unknown label {label!r} (known: {known})"))
        else:
            y[i] = index[label]

    found.sort(key=lambda t: (t[0], _COLUMN_ORDER.get(t[1], 9)))
    row_name = [i if i else f"<row {k}>" for k, i in enumerate(rows.ids)]
    problems = [Problem(str(split[r]), row_name[r], col, reason, rows.sources[r])
                for r, col, reason in found]
    bad = np.zeros(n, dtype=bool)
    bad[np.array([r for r, _, _ in found], dtype=np.int64)] = True

    if problems and on_invalid == "fail":
        stop_import(out, problems, f"{int(bad.sum())} of {n} rows break the dataset contract "
                                   f"({len(problems)} problems)",
                    (hint + "\n" if hint and any("NaN" in p.reason for p in problems) else "")
                    + "pass on_invalid='quarantine' to set these rows aside instead")

    check_no_empty_split(split, bad)
    tables = {}
    for s in SPLITS:
        take = np.flatnonzero((split == s) & ~bad)
        tables[s] = pa.Table.from_arrays(
            [pa.array([rows.ids[i] for i in take], pa.string()), x.take(pa.array(take)),
             pa.array(y[take], pa.int64())],
            schema=ARROW_SCHEMA,
        )

    quarantine = None
    if bad.any():
        q = np.flatnonzero(bad)
        reasons: dict[int, list[tuple[str, str]]] = {}
        for r, col, reason in found:
            reasons.setdefault(r, []).append((col, reason))
        quarantine = quarantine_table(
            [rows.ids[i] for i in q], [str(split[i]) for i in q], [reason_text(reasons[i]) for i in q],
            [rows.sources[i] for i in q], label=pa.array([rows.labels[i] for i in q], pa.string()),
            x=x_raw.take(pa.array(q)),
            y=pa.array([int(y[i]) if y[i] >= 0 else None for i in q], pa.int64()))

    if max_length is not None:
        import_params = {**import_params, "max_length": max_length, "on_too_long": on_too_long}
        if on_too_long == "truncate":
            import_params["truncated"] = {s: int(((split == s) & too_long & ~bad).sum()) for s in SPLITS}
    return write_dataset(
        out, tables, name=name, task=task, labels=labels, sources=source_files(files),
        import_params=import_params, quarantine=quarantine,
    )


def _limit_length(x: pa.Array, rows: Rows, found: list[tuple[int, str, str]], max_length: int | None,
                  on_too_long: str) -> tuple[pa.Array, np.ndarray]:
    """x with rows longer than ``max_length`` truncated (``on_too_long="truncate"``), or those rows
    added to ``found`` (``"reject"``); and which rows were too long. Without a ``max_length``,
    a row longer than the default limit fails the import."""
    too_long = np.zeros(len(rows), dtype=bool)
    if max_length is None:  # no limit asked for: the default one refuses, never truncates
        steps = pc.fill_null(pc.list_value_length(x), 0).to_numpy(zero_copy_only=False)
        if len(steps) and steps.max() > DEFAULT_MAX_LENGTH:
            r = int(np.argmax(steps))
            over = int((steps > DEFAULT_MAX_LENGTH).sum())
            raise DatasetError(
                f"row {rows.ids[r]!r} ({rows.sources[r]}) has {steps[r]} time steps, more than "
                f"data.max_length's default {DEFAULT_MAX_LENGTH} ({over} row(s) are): a sequence that "
                "long needs gigabytes to train. Set data.max_length (--max-length) to at least "
                f"{steps[r]} to keep such rows whole, or lower with data.on_too_long truncate or "
                "reject (--on-too-long)")
        return x, too_long
    steps = pc.fill_null(pc.list_value_length(x), 0).to_numpy(zero_copy_only=False)
    too_long = steps > max_length
    if on_too_long == "truncate":
        x = pc.list_slice(x, 0, max_length)  # the first max_length steps; x_raw keeps them all
    else:
        found += [(int(r), "x", f"{steps[r]} time steps, longer than max_length {max_length} "
                                f"(on_too_long='truncate' keeps the first {max_length})")
                  for r in np.flatnonzero(too_long)]
    return x, too_long
