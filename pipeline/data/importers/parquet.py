"""Parquet tables -> a classify dataset (``--format parquet``).

One row per sequence: an x column (list<number>, one channel, or list<list<number>>, time x
channels), a label column, optionally an id and a split column. Splits, labels (sorted,
numeric-aware), ``max_length``, validation, quarantine and writing: ``common.finish``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.dataset import DatasetError, Manifest, XParts, as_2d_x
from pipeline.data.importers.common import Rows, check_fractions, finish
from pipeline.data.importers.sources import SPLIT_NAMES, base_name, check_unique_stems, expand, split_of, stem
from pipeline.progress import source_read


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
    check_fractions(val_fraction, test_fraction)
    files = expand(paths, "parquet")
    rows = Rows()
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
        file_stem = stem(local)
        if use_ids:
            rows.ids.extend(table.column(id_column).cast(pa.string()).to_pylist())
        else:
            generated_ids = True
            rows.ids.extend(f"{file_stem}:{k}" for k in range(m))
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
                          if v is None or str(v).strip().lower() not in SPLIT_NAMES})
            if bad:
                raise DatasetError(
                    f"{shown}: column {split_column!r} holds {bad[:10]}; expected train, val "
                    "(or valid, validation) or test"
                )
            rows.splits.extend(SPLIT_NAMES[str(v).strip().lower()] for v in values)
        else:
            rows.splits.extend([split_of(local)] * m)
        rows.sources.extend([shown] * m)
        rows.x.append(x)
        rows.x_raw.append(x)
        source_read(shown, m, index=index, files=len(files))
    if generated_ids:
        check_unique_stems(files, "generated row ids would collide (give them an id column)")

    return finish(
        rows, out,
        name=name or base_name(files[0][1]),
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

