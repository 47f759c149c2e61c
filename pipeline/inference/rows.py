"""One batch of batch inference: check every row, predict the valid ones, keep every row.

`BatchPredictor` turns a batch of dataset rows (the contract's Arrow columns `id`, `x`, ...,
plus `split`) into output rows: `id`, `split`, the model's prediction columns and `error`. A row
that breaks the contract (`pipeline.data.validate` row checks on `x`) or that the model cannot
predict keeps its place with null predictions and the reason in `error`; nothing is dropped.

No Ray import here: the Ray Data actor (`pipeline.inference.job`) wraps this class.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

log = logging.getLogger(__name__)

ERROR_COLUMN = "error"
SPLIT_COLUMN = "split"
ID_COLUMN = "id"
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class InputSpec:
    """How to check and read the dataset's rows (from its manifest and the model).

    `preprocessing` is the DATASET's `Preprocessing.to_dict()`: token ids index the dataset's
    vocabulary, so they are turned back into text with it; the model then applies its own.
    `num_channels` is the model's (the compatibility check makes it the dataset's too).
    """

    task: str
    preprocessing: dict[str, Any]
    num_channels: int
    feature_kind: str = "float"
    vocab_size: int | None = None

    @classmethod
    def from_manifest(cls, manifest: Any, num_channels: int | None = None) -> InputSpec:
        from pipeline.data.preprocess import Preprocessing

        return cls(task=manifest.task,
                   preprocessing=Preprocessing.from_manifest(manifest).to_dict(),
                   num_channels=num_channels or manifest.feature.num_channels,
                   feature_kind=manifest.feature.kind,
                   vocab_size=len(manifest.vocab) or None)

    def build_task(self) -> Any:
        from pipeline.data.preprocess import Preprocessing
        from pipeline.tasks import build_task

        return build_task(None, Preprocessing.from_dict(dict(self.preprocessing)))


def row_errors(table: pa.Table, spec: InputSpec) -> list[str | None]:
    """Per row: None when `x` passes the contract's row checks, else the reasons ("; "-joined).

    The checks are `pipeline.data.validate.find_row_problems` on `x`: null or empty sequences,
    NaN or inf, a step whose width is not the channel count, token ids outside the vocabulary.
    A problem of the whole column (not a list of numbers) is every row's error.
    """
    from pipeline.data.validate import find_row_problems

    errors: list[str | None] = [None] * table.num_rows
    problems = find_row_problems(table, split="", num_channels=spec.num_channels, num_labels=None,
                                 columns=("x",), task=spec.task, feature_kind=spec.feature_kind,
                                 vocab_size=spec.vocab_size)
    for row, problem in problems:
        for r in range(table.num_rows) if row < 0 else (row,):
            errors[r] = problem.reason if errors[r] is None else f"{errors[r]}; {problem.reason}"
    return errors


def describe_exception(exc: BaseException) -> str:
    """`prediction failed: ValueError: first line of the message` (short, one line)."""
    message = str(exc).strip().splitlines()
    text = f"prediction failed: {type(exc).__name__}" + (f": {message[0]}" if message else "")
    return text[:MAX_ERROR_CHARS]


def error_kind(reason: str) -> str:
    """What a failure reason is about, without row details, for counting failures by kind:
    "NaN in x at step 3, channel 0 (2 values in all)" -> "NaN in x"."""
    kinds = []
    for part in reason.split("; "):
        kind = re.split(r":| at step", part, maxsplit=1)[0]
        kind = re.sub(r"\s*\([^)]*\)", "", kind)
        kinds.append(re.sub(r"-?\d+", "N", kind).strip())
    return "; ".join(dict.fromkeys(kinds))


def scatter(column: pa.Array | pa.ChunkedArray, rows: Sequence[int], n: int) -> pa.Array:
    """Values for `rows` (in that order) placed at those positions of an `n`-row column; nulls
    elsewhere."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    position: list[int | None] = [None] * n
    for k, r in enumerate(rows):
        position[r] = k
    return column.take(pa.array(position, pa.int64()))


def _plain(t: pa.DataType) -> pa.DataType:
    """large_string -> string, large_list -> list, at every level (pandas may give either)."""
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_plain(t.value_type))
    return t


def output_schema(predictions: pd.DataFrame) -> pa.Schema:
    """The Arrow schema of the model's prediction columns, from one real prediction."""
    schema = pa.Table.from_pandas(predictions, preserve_index=False).schema.remove_metadata()
    schema = pa.schema([pa.field(f.name, _plain(f.type)) for f in schema])
    untyped = [f.name for f in schema if pa.types.is_null(f.type)]
    if untyped:
        raise ValueError(f"cannot tell the type of prediction column(s) {untyped}: every value is null")
    clash = [n for n in schema.names if n in (ID_COLUMN, SPLIT_COLUMN, ERROR_COLUMN)]
    if clash:
        raise ValueError(f"the model returns column(s) {clash}, which batch inference writes itself")
    return schema


class BatchPredictor:
    """Callable over Arrow batches; `model` is a loaded MLflow pyfunc (anything with
    `predict(DataFrame, params=...)`), `schema` its prediction columns (`output_schema`)."""

    def __init__(self, model: Any, spec: InputSpec, params: dict[str, Any], schema: pa.Schema) -> None:
        self.model = model
        self.spec = spec
        self.params = dict(params)
        self.schema = schema
        self.task = spec.build_task()  # the dataset's side: contract rows -> raw inputs

    def predict_rows(self, rows: pa.Table) -> pa.Table:
        """Predictions for every row of `rows` (raises when the model fails on any of them)."""
        inputs = self.task.raw_inputs(rows)
        out = self.model.predict(inputs, params=self.params or None)
        if not isinstance(out, pd.DataFrame):
            out = pd.DataFrame(out)
        if len(out) != rows.num_rows:
            raise ValueError(f"the model returned {len(out)} rows for {rows.num_rows} inputs")
        missing = [c for c in self.schema.names if c not in out.columns]
        if missing:
            raise ValueError(f"the model's output lacks column(s) {missing}")
        return pa.Table.from_pandas(out[self.schema.names].reset_index(drop=True), schema=self.schema,
                                    preserve_index=False)

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        errors = row_errors(batch, self.spec)
        valid = [i for i, e in enumerate(errors) if e is None]
        predictions = self.schema.empty_table()
        if valid:
            rows = batch if len(valid) == n else batch.take(pa.array(valid, pa.int64()))
            try:
                predictions = self.predict_rows(rows)
            except Exception as exc:  # find the rows it fails on: one at a time
                log.warning("batch of %d rows failed (%s); predicting them one by one", len(valid),
                            describe_exception(exc))
                valid, pieces = self._one_by_one(batch, valid, errors)
                if pieces:
                    predictions = pa.concat_tables(pieces)
        columns: dict[str, pa.Array] = {}
        for name in (ID_COLUMN, SPLIT_COLUMN):
            if name in batch.column_names:
                col = batch.column(name)
                columns[name] = col.cast(pa.string()) if col.type != pa.string() else col
        for name in self.schema.names:
            columns[name] = scatter(predictions.column(name), valid, n)
        columns[ERROR_COLUMN] = pa.array(errors, pa.string())
        return pa.table(columns)

    def _one_by_one(self, batch: pa.Table, valid: list[int],
                    errors: list[str | None]) -> tuple[list[int], list[pa.Table]]:
        done, pieces = [], []
        for i in valid:
            try:
                pieces.append(self.predict_rows(batch.slice(i, 1)))
                done.append(i)
            except Exception as exc:
                errors[i] = describe_exception(exc)
        return done, pieces
