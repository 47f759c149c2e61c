"""Contract checks on canonical tables, reported per row id.

``check_rows`` finds rows that break the dataset contract (see ``pipeline.data.dataset``):
null/empty/duplicate ids, null or empty ``x``, NaN or inf in ``x``, a time step whose width is not
the channel count, ``y`` null or outside ``[0, num_labels)``. ``validate_dataset`` (dataset.py) runs
it on every split of a dataset folder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.data.dataset import TOKEN_TYPE, Y_TYPES, DatasetError, XParts
from pipeline.errors import UserError

_COLUMN_ORDER = {"id": 0, "x": 1, "y": 2}


@dataclass(frozen=True)
class Problem:
    """One contract violation: which split, row id, column, and why.

    ``row_id`` is ``"<row N>"`` (0-based position) when the id itself is null or empty, and
    ``"*"`` for problems of a whole column or split. ``source`` is the file (and line) the row
    came from, where known.
    """

    split: str
    row_id: str
    column: str
    reason: str
    source: str | None = None

    def format(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"{self.split} row {self.row_id!r}{where} {self.column}: {self.reason}"


def _format_problems(problems: list[Problem], limit: int) -> list[str]:
    lines = [f"  {p.format()}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return lines


class DataValidationError(UserError, ValueError):
    """Rows break the dataset contract. ``.problems`` lists every one of them."""

    def __init__(self, problems: list[Problem], header: str | None = None, hint: str | None = None):
        self.problems = list(problems)
        self.header = header
        self.hint = hint
        super().__init__(self._message())

    def _message(self, limit: int = 20) -> str:
        n = len(self.problems)
        head = self.header or f"{n} invalid row{'s' if n != 1 else ''}"
        lines = [f"{head}:"] + _format_problems(self.problems, limit)
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self):
        # Keep .problems when the error crosses a process boundary (Ray pickles exceptions).
        return (type(self), (self.problems, self.header, self.hint))


def _id_strings(ids: pa.Array) -> list[str]:
    return ids.cast(pa.string()).to_pylist()


def find_row_problems(
    table: pa.Table,
    *,
    split: str,
    num_channels: int,
    num_labels: int | None,
    columns: tuple[str, ...] = ("id", "x", "y"),
    task: str = "classify",
    feature_kind: str = "float",
    vocab_size: int | None = None,
    target_vocab_size: int | None = None,
    horizon: int | None = None,
) -> list[tuple[int, Problem]]:
    """Like ``check_rows`` but returns ``(row index, Problem)`` pairs, ordered by row.

    ``columns`` limits which columns are checked; ``num_labels=None`` skips the y range check.
    Token x (``feature_kind="token"``) is checked against ``vocab_size``; list-typed y by task:
    tag (one label per step of x), forecast (``horizon`` steps of ``num_channels`` finite
    values), seq2seq (non-empty ids below ``target_vocab_size``); lm has no y.
    """
    found: list[tuple[int, int, Problem]] = []
    n = table.num_rows
    if task == "lm":  # the next token is the target: no y column
        columns = tuple(c for c in columns if c != "y")
    missing = [c for c in columns if c not in table.column_names]
    for c in missing:
        found.append((-1, _COLUMN_ORDER.get(c, 9), Problem(split, "*", c, "column is missing")))
    columns = tuple(c for c in columns if c not in missing)

    if "id" in table.column_names:
        id_col = table.column("id").combine_chunks() if n else pa.array([], pa.string())
        id_list = _id_strings(id_col)
    else:
        id_list = [None] * n
    labels = [i if i else f"<row {k}>" for k, i in enumerate(id_list)]

    def add(rows, column: str, reason_for) -> None:
        for r in rows:
            r = int(r)
            problem = Problem(split, labels[r], column, reason_for(r))
            found.append((r, _COLUMN_ORDER[column], problem))

    if "id" in columns:
        add([k for k, i in enumerate(id_list) if i is None], "id", lambda r: "id is null")
        add([k for k, i in enumerate(id_list) if i == ""], "id", lambda r: "id is empty")
        present = np.array([i for i in id_list if i], dtype=object)
        if len(present):
            uniq, counts = np.unique(present, return_counts=True)
            dups = set(uniq[counts > 1].tolist())
            if dups:
                first: dict[str, int] = {}
                for k, i in enumerate(id_list):
                    if i in dups:
                        if i in first:
                            found.append((k, 0, Problem(
                                split, i, "id", f"duplicate id (first at row {first[i]})")))
                        else:
                            first[i] = k

    if "x" in columns and feature_kind == "token":
        _token_problems(table.column("x").combine_chunks() if n else pa.array([], TOKEN_TYPE),
                        vocab_size, "x", add)
    elif "x" in columns:
        try:
            parts = XParts(table.column("x"))
        except DatasetError as e:
            found.append((-1, 1, Problem(split, "*", "x", str(e))))
        else:
            _x_problems(parts, num_channels, add)

    if "y" in columns and task != "classify":
        y = table.column("y").combine_chunks() if n else pa.array([], Y_TYPES[task])
        _list_y_problems(task, y, table, num_labels=num_labels, num_channels=num_channels,
                         target_vocab_size=target_vocab_size, horizon=horizon, add=add)
    elif "y" in columns:
        y = table.column("y").combine_chunks() if n else pa.array([], pa.int64())
        if not (pa.types.is_integer(y.type)):
            reason = f"y must be int64 label indices, got {y.type}"
            found.append((-1, 2, Problem(split, "*", "y", reason)))
        else:
            nulls = (y.is_null().to_numpy(zero_copy_only=False) if y.null_count
                     else np.zeros(n, bool))
            add(np.flatnonzero(nulls), "y", lambda r: "y is null")
            if num_labels is not None:
                vals = pc.fill_null(y, 0).to_numpy(zero_copy_only=False).astype(np.int64)
                bad = np.flatnonzero(~nulls & ((vals < 0) | (vals >= num_labels)))
                top = num_labels - 1
                add(bad, "y", lambda r: f"unknown label index {vals[r]} (expected 0..{top})")

    found.sort(key=lambda t: (t[0], t[1]))
    return [(r, p) for r, _, p in found]


def _token_problems(arr: pa.Array, vocab_size: int | None, column: str, add) -> None:
    """Token-id sequences: null, empty, not integers, or ids outside [0, vocab_size)."""
    if not ((pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type))
            and pa.types.is_integer(arr.type.value_type)):
        add(range(len(arr)), column, lambda r: f"{column} must be a list of token ids, got {arr.type}")
        return
    nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else np.zeros(len(arr), bool)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    add(np.flatnonzero(nulls), column, lambda r: f"{column} is null")
    add(np.flatnonzero(~nulls & (lengths == 0)), column, lambda r: "empty sequence")
    if vocab_size is None or not len(arr):
        return
    values = pc.fill_null(arr.flatten(), -1).to_numpy(zero_copy_only=False).astype(np.int64)
    row_of = np.repeat(np.arange(len(arr)), lengths)
    bad = (values < 0) | (values >= vocab_size)
    if bad.any():
        first = {}
        for i in np.flatnonzero(bad):
            first.setdefault(int(row_of[i]), int(values[i]))
        add(sorted(first), column,
            lambda r: f"token id {first[r]} outside the vocabulary (expected 0..{vocab_size - 1})")


def _list_y_problems(task: str, y: pa.Array, table: pa.Table, *, num_labels: int | None,
                     num_channels: int, target_vocab_size: int | None, horizon: int | None,
                     add) -> None:
    """y of the list-typed tasks (tag, forecast, seq2seq)."""
    if task == "seq2seq":
        _token_problems(y, target_vocab_size, "y", add)
        return
    if not (pa.types.is_list(y.type) or pa.types.is_large_list(y.type)):
        add(range(len(y)), "y", lambda r: f"y must be a list per row for {task}, got {y.type}")
        return
    nulls = y.is_null().to_numpy(zero_copy_only=False) if y.null_count else np.zeros(len(y), bool)
    add(np.flatnonzero(nulls), "y", lambda r: "y is null")
    lengths = pc.fill_null(pc.list_value_length(y), 0).to_numpy(zero_copy_only=False)
    if task == "tag":
        x = table.column("x").combine_chunks()
        x_len = pc.fill_null(pc.list_value_length(x), 0).to_numpy(zero_copy_only=False)
        add(np.flatnonzero(~nulls & (lengths != x_len)), "y",
            lambda r: f"{lengths[r]} tags for {x_len[r]} steps of x (expected one tag per step)")
        values = pc.fill_null(y.flatten(), -1).to_numpy(zero_copy_only=False).astype(np.int64)
        row_of = np.repeat(np.arange(len(y)), lengths)
        if num_labels is not None:
            bad = (values < 0) | (values >= num_labels)
            first = {}
            for i in np.flatnonzero(bad):
                first.setdefault(int(row_of[i]), int(values[i]))
            add(sorted(first), "y",
                lambda r: f"unknown tag index {first[r]} (expected 0..{num_labels - 1})")
        return
    # forecast: horizon x channels of finite numbers
    try:
        parts = XParts(y)
    except DatasetError as e:
        message = str(e)
        add(range(len(y)), "y", lambda r: message)
        return
    expect = horizon
    if expect is not None:
        add(np.flatnonzero(~nulls & (parts.row_steps != expect)), "y",
            lambda r: f"{parts.row_steps[r]} horizon steps, expected {expect}")
    rows = len(parts.row_steps)
    step_row = np.repeat(np.arange(rows), parts.row_steps)
    bad_steps = parts.step_null | (parts.step_widths != num_channels)
    add(np.unique(step_row[bad_steps]), "y", lambda r: f"horizon steps must have {num_channels} values")
    value_row = np.repeat(step_row, parts.step_widths)
    add(np.unique(value_row[~np.isfinite(parts.values)]), "y", lambda r: "NaN or inf in y")


def _x_problems(parts: XParts, num_channels: int, add) -> None:
    """Vectorised x checks; calls ``add(rows, "x", reason_for_row)`` per kind of problem."""
    rows = len(parts.row_steps)
    add(np.flatnonzero(parts.row_null), "x", lambda r: "x is null")
    add(np.flatnonzero(~parts.row_null & (parts.row_steps == 0)), "x", lambda r: "empty sequence")
    if rows == 0:
        return
    row_off = parts.row_offsets
    step_row = np.repeat(np.arange(rows), parts.row_steps)  # (steps,) row of each step

    bad_step = parts.step_null | (parts.step_widths != num_channels)
    if bad_step.any():
        idx = np.flatnonzero(bad_step)
        bad_rows, first = np.unique(step_row[idx], return_index=True)
        counts = np.bincount(step_row[idx], minlength=rows)
        first_bad = dict(zip(bad_rows.tolist(), idx[first].tolist()))

        def reason(r: int) -> str:
            s = first_bad[r]
            t = s - row_off[r]
            got = "a null step" if parts.step_null[s] else f"{parts.step_widths[s]} values"
            more = f" ({counts[r]} steps in all)" if counts[r] > 1 else ""
            return f"wrong channel count: step {t} has {got}, expected {num_channels}{more}"

        add(bad_rows, "x", reason)

    vals = parts.values
    finite = np.isfinite(vals)
    if finite.all():
        return
    step_off = parts.step_offsets
    value_step = np.repeat(np.arange(len(parts.step_widths)), parts.step_widths)
    for kind, mask in (("NaN", np.isnan(vals)), ("inf", np.isinf(vals))):
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        steps = value_step[idx]
        bad_rows, first = np.unique(step_row[steps], return_index=True)
        where = {
            r: (int(steps[f] - row_off[r]), int(idx[f] - step_off[steps[f]]))
            for r, f in zip(bad_rows.tolist(), first.tolist())
        }
        counts = np.bincount(step_row[steps], minlength=rows)
        add(bad_rows, "x", _value_reason(kind, where, counts))


def _value_reason(kind: str, where: dict[int, tuple[int, int]], counts: np.ndarray):
    """Reason text for a row with non-finite values: the first (step, channel) and the count."""

    def reason(r: int) -> str:
        more = f" ({counts[r]} values in all)" if counts[r] > 1 else ""
        return f"{kind} in x at step {where[r][0]}, channel {where[r][1]}{more}"

    return reason


def check_rows(
    table: pa.Table, *, split: str, num_channels: int, num_labels: int
) -> list[Problem]:
    """Every contract violation of ``table`` (columns id, x, y), ordered by row then column.

    Checks: id null, empty or duplicate; x null, empty, NaN, inf, or a time step whose width is
    not ``num_channels``; y null or outside ``[0, num_labels)``. Steps and channels in reasons
    are 0-based.
    """
    return [p for _, p in find_row_problems(
        table, split=split, num_channels=num_channels, num_labels=num_labels)]
