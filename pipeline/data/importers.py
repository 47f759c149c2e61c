"""Importers: real-world files -> the canonical dataset (see ``contract``).

Two source formats: UCR/UEA ``.ts`` files (``import_ts``) and Parquet tables
(``import_parquet``). Both go through the same steps:

1. read every source file into rows (id, x (T, C), raw label, source file:line);
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
6. ``contract.write_dataset``.

A source that cannot be read as its format (a corrupt or truncated Parquet file, mismatched
dimensions between files, a missing column) raises DatasetError naming the file.

Same inputs and parameters give byte-identical Parquet files and the same data hash.
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import BUILTIN_SCHEME, DEFAULT_MAX_LENGTH
from pipeline.data.contract import (
    ARROW_SCHEMA,
    SPLITS,
    DatasetError,
    Manifest,
    XParts,
    as_2d_x,
    sources_for,
    write_dataset,
    x_array,
)
from pipeline.data.ts_format import MISSING_POLICIES, fill_missing, parse_ts
from pipeline.data.validate import DataValidationError, Problem, find_row_problems
from pipeline.progress import source_read

_SPLIT_TOKEN = re.compile(r"(?:^|[_\-.])(train|test|val|valid|validation)$", re.IGNORECASE)
_SPLIT_NAMES = {"train": "train", "test": "test", "val": "val", "valid": "val",
                "validation": "val"}
_COLUMN_ORDER = {"id": 0, "x": 1, "y": 2}


# --------------------------------------------------------------------------------------------
# Sources


def _builtin_root():
    return resources.files("pipeline.data") / "builtin"


def builtin_datasets() -> dict[str, list[str]]:
    """Datasets shipped inside the package: folder name -> file names."""
    out = {}
    for d in sorted(_builtin_root().iterdir(), key=lambda p: p.name):
        if d.is_dir() and not d.name.startswith(("_", ".")):
            out[d.name] = sorted(f.name for f in d.iterdir() if f.is_file())
    return out


def resolve_source(path: str) -> str:
    """Local path of a source: ``builtin://<dataset>[/<file>]`` -> the file (or folder) shipped
    in ``pipeline/data/builtin``; ``s3://bucket/key`` -> a local copy of the object (or of every
    object under the prefix); ``file://p`` and plain paths -> absolute, ``~`` expanded.

    Raises FileNotFoundError naming the path (and the builtin datasets for ``builtin://``).
    """
    path = os.fspath(path)
    if path.startswith(BUILTIN_SCHEME):
        rel = path[len(BUILTIN_SCHEME):].strip("/")
        target = _builtin_root().joinpath(*[p for p in rel.split("/") if p]) if rel else None
        if target is None or not (target.is_file() or target.is_dir()):
            available = "; ".join(
                f"builtin://{d}/{f}" for d, files in builtin_datasets().items() for f in files
            )
            raise FileNotFoundError(
                f"no builtin source {path!r}; available: {available or '(none)'}"
            )
        # The package is installed from a directory, so the resource is a real path.
        return str(target)
    if path.startswith("s3://"):
        from pipeline import storage

        return storage.download(path)  # a file, or a folder for a prefix; DOWNLOADED knows its objects
    if path.startswith("file://"):
        path = path[len("file://"):]
    elif "://" in path:
        raise DatasetError(f"source {path!r}: expected a local path, file://, builtin:// or s3://")
    local = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(local):
        raise FileNotFoundError(f"source not found: {path} (looked at {local})")
    return local


def shown_name(shown: str, local: str) -> str:
    """How a source is named in the manifest: a file downloaded from S3 by its URI."""
    from pipeline import storage

    obj = storage.DOWNLOADED.get(local)
    return obj.uri if obj is not None else shown


def _expand(paths: list[str] | str, ext: str | tuple[str, ...]) -> list[tuple[str, str]]:
    """(display name, local file) for every source; folders give their ``*.ext`` files (any of
    the extensions when ``ext`` is a tuple)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [os.fspath(paths)]
    if not paths:
        raise ValueError("no source paths given")
    out: list[tuple[str, str]] = []
    for p in paths:
        p = os.fspath(p)
        local = resolve_source(p)
        if os.path.isdir(local):
            exts = (ext,) if isinstance(ext, str) else ext
            found = sorted(f for e in exts
                           for f in glob.glob(os.path.join(local, "**", f"*.{e}"), recursive=True))
            if not found:
                raise FileNotFoundError(f"no {' or '.join(f'*.{e}' for e in exts)} files in {p} ({local})")
            for f in found:
                rel = os.path.relpath(f, local).replace(os.sep, "/")
                shown = f"{p.rstrip('/')}/{rel}" if p.startswith((BUILTIN_SCHEME, "s3://")) else f
                out.append((shown, f))
        else:
            out.append((p if p.startswith((BUILTIN_SCHEME, "s3://")) else local, local))
    out = [(shown_name(shown, local), local) for shown, local in out]
    seen = Counter(local for _, local in out)
    twice = [f for f, n in seen.items() if n > 1]
    if twice:
        raise DatasetError(f"source file given more than once: {twice}")
    return out


def split_of(path: str) -> str | None:
    """Split named by a file's stem (``X_TRAIN.ts`` -> "train", ``x-valid`` -> "val"), or None."""
    stem = _stem(path)
    m = _SPLIT_TOKEN.search(stem)
    return _SPLIT_NAMES[m.group(1).lower()] if m else None


def _stem(path: str) -> str:
    base = os.path.basename(path.rstrip("/"))
    for ext in (".parquet", ".ts"):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return os.path.splitext(base)[0]


def _base_name(path: str) -> str:
    """Dataset name from a file: the stem without its split token."""
    stem = _stem(path)
    m = _SPLIT_TOKEN.search(stem)
    return (stem[: m.start()] if m else stem) or stem


def label_sort_key(label: str) -> tuple:
    """Numeric-aware order: numbers first by value ("2" < "10"), then other strings."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


# --------------------------------------------------------------------------------------------
# Rows shared by the importers


@dataclass
class _Rows:
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


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
            "and sum to less than 1"
        )


def _stratified(
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


def _assign_splits(rows: _Rows, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    split = np.array([s or "" for s in rows.splits], dtype=object)
    pooled = np.flatnonzero(split == "")
    if len(pooled):
        test, val, train = _stratified(pooled, rows.labels, [test_fraction, val_fraction], seed)
        split[test], split[val], split[train] = "test", "val", "train"
    if not (split == "val").any():
        train = np.flatnonzero(split == "train")
        val, _ = _stratified(train, rows.labels, [val_fraction], seed)
        split[val] = "val"
    return split


def _finish(
    rows: _Rows,
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
    if on_invalid not in ("fail", "quarantine"):
        raise ValueError(f"on_invalid must be 'fail' or 'quarantine', got {on_invalid!r}")
    if on_too_long not in ("truncate", "reject"):
        raise ValueError(f"on_too_long must be 'truncate' or 'reject', got {on_too_long!r}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 time step, got {max_length}")
    n = len(rows)
    if n == 0:
        raise DatasetError(f"no rows in {[f for f, _ in files]}: the source files hold no cases; a "
                           "dataset needs at least one row in each of train, val and test")
    split = _assign_splits(rows, val_fraction, test_fraction, seed)
    x = pa.concat_arrays(rows.x) if len(rows.x) > 1 else rows.x[0]
    x_raw = pa.concat_arrays(rows.x_raw) if len(rows.x_raw) > 1 else rows.x_raw[0]
    found: list[tuple[int, str, str]] = list(rows.pre)

    too_long = np.zeros(n, dtype=bool)
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
    if max_length is not None:
        steps = pc.fill_null(pc.list_value_length(x), 0).to_numpy(zero_copy_only=False)
        too_long = steps > max_length
        if on_too_long == "truncate":
            x = pc.list_slice(x, 0, max_length)  # the first max_length steps; x_raw keeps them all
        else:
            found += [(int(r), "x", f"{steps[r]} time steps, longer than max_length {max_length} "
                                    f"(on_too_long='truncate' keeps the first {max_length})")
                      for r in np.flatnonzero(too_long)]

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
        nbad = int(bad.sum())
        raise DataValidationError(
            problems,
            header=f"import into {out} stopped: {nbad} of {n} rows break the dataset contract "
                   f"({len(problems)} problems); nothing was written",
            hint=(hint + "\n" if hint and any("NaN" in p.reason for p in problems) else "")
                 + "pass on_invalid='quarantine' to set these rows aside instead",
        )

    tables = {}
    empty = []
    for s in SPLITS:
        take = np.flatnonzero((split == s) & ~bad)
        if not len(take):
            empty.append(s)
            continue
        tables[s] = pa.Table.from_arrays(
            [pa.array([rows.ids[i] for i in take], pa.string()), x.take(pa.array(take)),
             pa.array(y[take], pa.int64())],
            schema=ARROW_SCHEMA,
        )
    if empty:
        counts = {s: int(((split == s) & ~bad).sum()) for s in SPLITS}
        raise DatasetError(
            f"split(s) {empty} would be empty (valid rows per split: {counts}); name source files "
            "*_TRAIN / *_VAL / *_TEST, or raise val_fraction / test_fraction, or add rows"
        )

    quarantine = None
    if bad.any():
        q = np.flatnonzero(bad)
        reasons: dict[int, list[str]] = {}
        for r, col, reason in found:
            reasons.setdefault(r, []).append(f"{col}: {reason}")
        quarantine = pa.table({
            "id": pa.array([rows.ids[i] for i in q], pa.string()),
            "split": pa.array([str(split[i]) for i in q], pa.string()),
            "reason": pa.array(["; ".join(reasons[i]) for i in q], pa.string()),
            "source": pa.array([rows.sources[i] for i in q], pa.string()),
            "label": pa.array([rows.labels[i] for i in q], pa.string()),
            "x": x_raw.take(pa.array(q)),
            "y": pa.array([int(y[i]) if y[i] >= 0 else None for i in q], pa.int64()),
        })

    if max_length is not None:
        import_params = {**import_params, "max_length": max_length, "on_too_long": on_too_long}
        if on_too_long == "truncate":
            import_params["truncated"] = {s: int(((split == s) & too_long & ~bad).sum()) for s in SPLITS}
    sources = [s.model_copy(update={"path": shown})
               for s, (shown, _) in zip(sources_for([f for _, f in files]), files)]
    return write_dataset(
        out, tables, name=name, task=task, labels=labels, sources=sources,
        import_params=import_params, quarantine=quarantine,
    )


def _add_cases(rows: _Rows, series: list[np.ndarray], labels: list[str], line_numbers: list[int], *,
               file: str, shown: str, missing: str) -> int:
    """Append one file's cases (float32 (T, C) arrays, NaN = missing value) to ``rows``.

    Ids are ``"<file stem>:<0-based case index>"``, sources ``"<shown>:<line>"``, the split is the
    file name's token. ``missing``: a ts_format policy; under ``"error"`` NaN stays in x, so the
    contract check reports the row (fail or quarantine); a case the policy cannot fill (a
    dimension with no value) is an invalid row with the reason. Returns the number of values
    filled.
    """
    stem, split = _stem(file), split_of(file)
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
        rows.ids.append(f"{stem}:{k}")
        rows.labels.append(labels[k])
        rows.sources.append(f"{shown}:{line}")
        rows.splits.append(split)
    rows.x.append(x_array(filled))
    rows.x_raw.append(x_array(series))
    return count


def _case_files(paths: list[str] | str, ext: str | tuple[str, ...], *, missing: str, val_fraction: float,
                test_fraction: float) -> list[tuple[str, str]]:
    """The checks every importer of labelled cases (`_add_cases`) makes before reading: the
    missing-value policy, the split fractions, and file stems unique (they make the row ids).
    Returns the (display name, local file) pairs of `_expand`."""
    if missing not in MISSING_POLICIES or missing == "keep":
        raise ValueError(
            f"missing must be one of 'error', 'zero', 'ffill', 'interpolate', got {missing!r}"
        )
    _check_fractions(val_fraction, test_fraction)
    files = _expand(paths, ext)
    clash = [s for s, k in Counter(_stem(f) for _, f in files).items() if k > 1]
    if clash:
        raise DatasetError(f"two source files share the stem(s) {clash}; row ids would collide")
    return files


def _ordered(files: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Train files first (their label declarations win), then the rest, each in given order."""
    return sorted(files, key=lambda f: 0 if split_of(f[1]) == "train" else 1)


# --------------------------------------------------------------------------------------------
# .ts


def import_ts(
    paths: list[str] | str,
    out: str,
    *,
    task: str = "classify",
    name: str | None = None,
    missing: str = "error",
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    on_invalid: Literal["fail", "quarantine"] = "fail",
    max_length: int | None = None,
    on_too_long: Literal["truncate", "reject"] = "truncate",
) -> Manifest:
    """Import UCR/UEA ``.ts`` files (or folders of them, or ``builtin://...``) into ``out``.

    Row ids are ``"<file stem>:<0-based case index>"``. ``missing`` is the ts_format policy;
    with ``"error"`` rows holding missing values are invalid rows (fail or quarantine, per
    ``on_invalid``) rather than a parse error, so every such row is reported at once.
    Format errors (bad numbers, wrong dimension count, ...) raise TsFormatError.
    """
    files = _case_files(paths, "ts", missing=missing, val_fraction=val_fraction, test_fraction=test_fraction)

    rows = _Rows()
    declared: list[str] | None = None
    num_channels: int | None = None
    first_file = None
    problem_name = None
    for index, (shown, local) in enumerate(_ordered(files), start=1):
        data = parse_ts(local, missing="keep", check_labels=False)
        source_read(shown, len(data.series), index=index, files=len(files))
        if data.labels is None:
            raise DatasetError(
                f"{shown}: no class labels (@classLabel false); a classify dataset needs a "
                "label after the last ':' of every case"
            )
        c = data.num_channels
        if num_channels is None:
            num_channels, first_file = c, shown
        elif c is not None and c != num_channels:
            raise DatasetError(
                f"{shown}: {c} dimensions, but {first_file} has {num_channels}; all files of one "
                "dataset need the same dimensions"
            )
        if declared is None and data.class_labels:
            declared = data.class_labels
        problem_name = problem_name or data.problem_name
        _add_cases(rows, data.series, data.labels, data.line_numbers, file=local, shown=shown,
                   missing=missing)

    return _finish(
        rows, out,
        name=name or problem_name or _base_name(files[0][1]),
        task=task,
        num_channels=num_channels or 1,
        declared_labels=declared,
        files=files,
        import_params={
            "format": "ts", "missing": missing, "val_fraction": val_fraction,
            "test_fraction": test_fraction, "seed": seed, "on_invalid": on_invalid,
        },
        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, on_invalid=on_invalid,
        max_length=max_length, on_too_long=on_too_long,
        hint="missing values: pass missing='zero', 'ffill' or 'interpolate' to fill them",
    )


# --------------------------------------------------------------------------------------------
# Parquet


def import_parquet(
    paths: list[str] | str,
    out: str,
    *,
    task: str = "classify",
    x_column: str = "x",
    y_column: str = "y",
    id_column: str | None = "id",
    split_column: str | None = None,
    name: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    on_invalid: Literal["fail", "quarantine"] = "fail",
    max_length: int | None = None,
    on_too_long: Literal["truncate", "reject"] = "truncate",
) -> Manifest:
    """Import Parquet files (or folders of them) into ``out``.

    ``x_column``: list<number> (one channel) or list<list<number>> (time x channels).
    ``y_column``: class labels, strings or integers (label name = ``str(value)``).
    ``id_column``: row ids; when None or absent, ids are ``"<file stem>:<row index>"``.
    ``split_column``: per-row split ("train", "val"/"valid"/"validation", "test", any case);
    when None the split comes from the file name or the stratified split.
    """
    _check_fractions(val_fraction, test_fraction)
    files = _expand(paths, "parquet")
    rows = _Rows()
    generated_ids = False
    for index, (shown, local) in enumerate(files, start=1):
        try:
            schema = pq.read_schema(local)
        except (pa.ArrowException, OSError) as e:
            raise DatasetError(f"{shown}: not a readable Parquet file ({e}); expected a complete "
                               "Parquet file (a truncated or corrupt copy has no valid footer)") from None
        need = [c for c in (x_column, y_column, split_column) if c]
        absent = [c for c in need if c not in schema.names]
        if absent:
            raise DatasetError(
                f"{shown}: no column(s) {absent}; the file has {schema.names} "
                "(choose columns with x_column / y_column / split_column)"
            )
        use_ids = bool(id_column) and id_column in schema.names
        try:
            table = pq.read_table(local, columns=need + ([id_column] if use_ids else []))
        except (pa.ArrowException, OSError) as e:
            raise DatasetError(f"{shown}: cannot read the Parquet data ({e}); the file is corrupt") from None
        try:
            x = as_2d_x(table.column(x_column))
        except DatasetError as e:
            raise DatasetError(f"{shown}: column {x_column!r}: {e}") from None
        m = table.num_rows
        stem = _stem(local)
        if use_ids:
            rows.ids.extend(table.column(id_column).cast(pa.string()).to_pylist())
        else:
            generated_ids = True
            rows.ids.extend(f"{stem}:{k}" for k in range(m))
        yv = table.column(y_column)
        if not (pa.types.is_string(yv.type) or pa.types.is_large_string(yv.type)
                or pa.types.is_integer(yv.type) or pa.types.is_floating(yv.type)
                or pa.types.is_boolean(yv.type) or pa.types.is_dictionary(yv.type)):
            raise DatasetError(f"{shown}: column {y_column!r} has type {yv.type}; expected class "
                             "labels as strings or integers")
        # a float NaN label is a missing label (null), not a class named "nan"
        rows.labels.extend(None if v is None or (isinstance(v, float) and not math.isfinite(v))
                           else str(v) for v in yv.to_pylist())
        if split_column:
            values = table.column(split_column).to_pylist()
            bad = sorted({str(v) for v in values
                          if v is None or str(v).strip().lower() not in _SPLIT_NAMES})
            if bad:
                raise DatasetError(
                    f"{shown}: column {split_column!r} holds {bad[:10]}; expected train, val "
                    "(or valid, validation) or test"
                )
            rows.splits.extend(_SPLIT_NAMES[str(v).strip().lower()] for v in values)
        else:
            rows.splits.extend([split_of(local)] * m)
        rows.sources.extend([shown] * m)
        rows.x.append(x)
        rows.x_raw.append(x)
        source_read(shown, m, index=index, files=len(files))
    if generated_ids:
        stems = Counter(_stem(f) for _, f in files)
        clash = [s for s, k in stems.items() if k > 1]
        if clash:
            raise DatasetError(f"two source files share the stem(s) {clash}; generated row ids "
                             "would collide (give them an id column)")

    return _finish(
        rows, out,
        name=name or _base_name(files[0][1]),
        task=task,
        num_channels=_channel_mode(rows.x),
        declared_labels=None,
        files=files,
        import_params={
            "format": "parquet", "x_column": x_column, "y_column": y_column,
            "id_column": id_column, "split_column": split_column, "val_fraction": val_fraction,
            "test_fraction": test_fraction, "seed": seed, "on_invalid": on_invalid,
        },
        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, on_invalid=on_invalid,
        max_length=max_length, on_too_long=on_too_long,
    )


def _channel_mode(xs: list[pa.Array]) -> int:
    """The most common time-step width across all rows (ties: the smaller); 1 if no steps."""
    widths = np.concatenate([XParts(x).step_widths for x in xs]) if xs else np.zeros(0, np.int64)
    widths = widths[widths > 0]
    if not len(widths):
        return 1
    values, counts = np.unique(widths, return_counts=True)
    return int(values[np.argmax(counts)])


# Importers by format, imported when used. Every importer takes (paths, out) and the keywords
# name, val_fraction, test_fraction, seed, on_invalid plus its format's options
# (`pipeline.config.FORMAT_OPTIONS`), and returns the written dataset's Manifest. The formats of
# `pipeline.config.MAX_LENGTH_FORMATS` also take max_length and on_too_long.
IMPORTERS: dict[str, str] = {
    "ts": "pipeline.data.importers:import_ts",
    "ucr": "pipeline.data.ucr_format:import_ucr",
    "parquet": "pipeline.data.importers:import_parquet",
    "csv": "pipeline.data.csv_series:import_csv",
    "conll": "pipeline.data.conll:import_conll",
    "text": "pipeline.data.text_corpus:import_text",
    "tsv": "pipeline.data.pairs:import_pairs",
}


def check_output_folder(out: str) -> None:
    """A local dataset folder (`--out`, `data.root`) must be a folder or not exist yet, and its
    parent a folder: DatasetError naming the path before anything is read."""
    if "://" in out:
        return
    path = os.path.abspath(os.path.expanduser(out))
    if os.path.exists(path) and not os.path.isdir(path):
        raise DatasetError(f"{out}: is a file, not a folder; the dataset is written as a folder "
                           "(manifest.json and train/val/test): choose another --out / data.root")
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise DatasetError(f"{out}: {parent} is a file, not a folder; choose another --out / data.root")


def import_dataset(fmt: str, paths: list[str] | str, out: str, **kwargs: Any) -> Manifest:
    """Import `paths` in format `fmt` (a key of IMPORTERS) into the dataset folder `out`."""
    import importlib

    if fmt not in IMPORTERS:
        raise ValueError(f"unknown import format {fmt!r}; expected one of {sorted(IMPORTERS)}")
    check_output_folder(out)
    from pipeline.progress import importing

    module, _, attr = IMPORTERS[fmt].partition(":")
    with importing():  # the importer's `source_read` calls show files and rows as they are read
        return getattr(importlib.import_module(module), attr)(paths, out, **kwargs)
