"""Arrow <-> numpy for the ``x`` column: building it from (T, C) arrays, reading it back, and
casting a table to a task's canonical schema (``schema.schema_for``)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.data.dataset.schema import ARROW_SCHEMA, X_TYPE, DatasetError, schema_for


def x_array(xs: Iterable[np.ndarray]) -> pa.ListArray:
    """Build an ``x`` column (list<list<float32>>) from arrays of shape (T, C) (or (T,) = C 1).

    Rows may differ in T and even in C (invalid data still has to be representable for
    quarantine); every row is stored row-major, one inner list per time step.
    """
    arrays = []
    for a in xs:
        a = np.asarray(a, dtype=np.float32)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise DatasetError(f"x rows must have shape (time, channels), got {a.shape}")
        arrays.append(a)
    row_steps = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    widths = np.repeat(np.array([a.shape[1] for a in arrays], dtype=np.int64), row_steps)
    step_offsets = np.zeros(len(widths) + 1, dtype=np.int32)
    np.cumsum(widths, out=step_offsets[1:])
    row_offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(row_steps, out=row_offsets[1:])
    values = (
        np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, np.float32)
    )
    inner = pa.ListArray.from_arrays(pa.array(step_offsets), pa.array(values, pa.float32()))
    return pa.ListArray.from_arrays(pa.array(row_offsets), inner)


def make_table(ids: list[str], xs: list[np.ndarray], ys: list[int]) -> pa.Table:
    """Canonical table from row ids, arrays of shape (T, C) float32, and int label indices."""
    if not (len(ids) == len(xs) == len(ys)):
        raise DatasetError(
            f"ids, xs and ys must have the same length, got {len(ids)}, {len(xs)}, {len(ys)}"
        )
    return pa.Table.from_arrays(
        [pa.array(ids, pa.string()), x_array(xs), pa.array(ys, pa.int64())],
        schema=ARROW_SCHEMA,
    )


def as_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One array from a column: chunks combined only when there are several."""
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def as_2d_x(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Return ``col`` as list<list<float32>>; list<number> becomes (T, 1) per row.

    Accepts list / large_list of numbers (one channel) or of lists of numbers.
    """
    arr = as_array(col)
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        raise DatasetError(f"x must be a list column (time steps of numbers), got {t}")
    vt = t.value_type
    if pa.types.is_list(vt) or pa.types.is_large_list(vt):
        if not (pa.types.is_floating(vt.value_type) or pa.types.is_integer(vt.value_type)):
            raise DatasetError(f"x values must be numbers, got {t}")
        return arr if arr.type == X_TYPE else arr.cast(X_TYPE)
    if not (pa.types.is_floating(vt) or pa.types.is_integer(vt)):
        raise DatasetError(f"x values must be numbers, got {t}")
    arr = arr.cast(pa.list_(pa.float32()))
    # Fresh offsets from the lengths: flatten() drops null rows and honours slicing, so this
    # works for sliced arrays with nulls too (from_arrays rejects sliced offsets with a mask).
    values = arr.flatten()
    offsets = np.zeros(len(arr) + 1, dtype=np.int32)
    np.cumsum(list_lengths(arr), out=offsets[1:])
    inner = pa.ListArray.from_arrays(
        pa.array(np.arange(len(values) + 1, dtype=np.int32)), values
    )
    mask = arr.is_null() if arr.null_count else None
    return pa.ListArray.from_arrays(pa.array(offsets), inner, mask=mask)


def canonical_table(table: pa.Table, task: str = "classify", kind: str = "float",
                    extra: Iterable[str] = ()) -> pa.Table:
    """Select the task's columns and cast them to its schema (float x list<float> -> (T, 1))."""
    schema = schema_for(task, kind, extra)
    missing = [c for c in schema.names if c not in table.column_names]
    if missing:
        raise DatasetError(f"table is missing column(s) {missing}; expected {schema.names}")
    columns = []
    for f in schema:
        col = as_array(table.column(f.name))
        if f.name == "x" and kind == "float":
            columns.append(as_2d_x(col))
        else:
            try:
                columns.append(col if col.type == f.type else col.cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise DatasetError(f"column {f.name}: cannot read {col.type} as {f.type}: {e}") from e
    return pa.Table.from_arrays(columns, schema=schema)


class XParts:
    """Flattened view of one ``x`` array, for vectorised checks and statistics.

    Attributes (numpy):
      row_null     (rows,) bool     x is null
      row_steps    (rows,) int64    time steps per row (0 for null rows)
      step_null    (steps,) bool    a time step is null
      step_widths  (steps,) int64   values per time step (0 for null steps)
      values       (values,) float32, null values as NaN
    """

    def __init__(self, col: pa.Array | pa.ChunkedArray) -> None:
        arr = as_2d_x(col)
        self.row_null = null_mask(arr)
        self.row_steps = list_lengths(arr)
        steps = arr.flatten()  # skips null rows and honours slicing
        self.step_null = null_mask(steps)
        self.step_widths = list_lengths(steps)
        values = steps.flatten()
        if values.null_count:
            values = pc.fill_null(values, float("nan"))
        self.values = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)

    @property
    def step_offsets(self) -> np.ndarray:
        """(steps + 1,) start of each step in ``values``."""
        out = np.zeros(len(self.step_widths) + 1, dtype=np.int64)
        np.cumsum(self.step_widths, out=out[1:])
        return out

    @property
    def row_offsets(self) -> np.ndarray:
        """(rows + 1,) start of each row in the step arrays."""
        out = np.zeros(len(self.row_steps) + 1, dtype=np.int64)
        np.cumsum(self.row_steps, out=out[1:])
        return out


def null_mask(arr: pa.Array) -> np.ndarray:
    """(len(arr),) bool: which entries are null."""
    if arr.null_count == 0:
        return np.zeros(len(arr), dtype=bool)
    return arr.is_null().to_numpy(zero_copy_only=False)


def list_lengths(arr: pa.Array) -> np.ndarray:
    """(len(arr),) int64 length of each list, 0 for a null one."""
    lengths = pc.list_value_length(arr)
    if lengths.null_count:
        lengths = pc.fill_null(lengths, 0)
    return lengths.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def x_to_numpy(col: pa.Array | pa.ChunkedArray, *, copy: bool = True) -> list[np.ndarray]:
    """Rows of an ``x`` column as float32 arrays of shape (T, C). Every row must be rectangular.

    ``copy=False`` returns read-only views into the Arrow buffers (no copy of the values).
    """
    parts = XParts(col)
    out = []
    roff, soff = parts.row_offsets, parts.step_offsets
    for i in range(len(parts.row_steps)):
        s0, s1 = roff[i], roff[i + 1]
        w = parts.step_widths[s0:s1]
        if len(w) and (w != w[0]).any():
            raise DatasetError(f"row {i}: time steps have different channel counts")
        c = int(w[0]) if len(w) else 0
        row = parts.values[soff[s0] : soff[s1]].reshape(s1 - s0, c)
        out.append(row.copy() if copy else row)
    return out



def is_token_x(t: pa.DataType) -> bool:
    """x of token ids: list<integer> (float x is list<list<number>> or list<float>)."""
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(t.value_type)
