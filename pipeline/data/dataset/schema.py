"""The canonical dataset's layout and Arrow schema: the contract every importer writes to.

A dataset is a folder that every importer writes and every later step reads::

    <root>/manifest.json                 Manifest (manifest.py); written LAST, atomically
    <root>/train/part-00000.parquet      columns id, x, y (ARROW_SCHEMA)
    <root>/val/part-00000.parquet
    <root>/test/part-00000.parquet
    <root>/quarantine/part-00000.parquet optional: rows that broke the contract, with a reason

Columns:

* ``id``  string, a stable row id kept through every step.
* ``x``   float features (``feature.kind == "float"``): list<list<float32>>, shape (time, channels)
  per row; univariate data has 1 channel. Readers also accept list<float32> as (time, 1).
  Token features (``feature.kind == "token"``): list<int32>, ids into ``Manifest.vocab``.
* ``y``   depends on the task (``Y_TYPES``): int64 label index (classify); list<int64> label per
  step, as long as x (tag); list<list<float32>> horizon x channels in raw units (forecast);
  list<int32> ids into ``Manifest.target_vocab`` (seq2seq); absent (lm: the next token is the
  target).
* optional task columns (``EXTRA_COLUMNS``), e.g. ``chars`` list<list<int32>> for tag.

Token vocabularies start with the special tokens in ``SPECIALS`` (pad = 0, unk = 1, bos = 2,
eos = 3), so id 0 is always padding.

A dataset without ``manifest.json`` is incomplete by definition: writers remove the old manifest
first and write the new one last, so a crash half-way never leaves a readable, inconsistent
dataset behind (io.py). All file access goes through ``pipeline.storage.folder``, the same
operations on a local folder and on ``s3://bucket/prefix``.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from pipeline.errors import UserError

SPLITS: tuple[str, ...] = ("train", "val", "test")
QUARANTINE = "quarantine"
MANIFEST_FILE = "manifest.json"
PART_FILE = "part-00000.parquet"
FORMAT_VERSION = 1

X_TYPE = pa.list_(pa.list_(pa.float32()))
TOKEN_TYPE = pa.list_(pa.int32())
ARROW_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("x", X_TYPE),
        pa.field("y", pa.int64()),
    ]
)

TASK_NAMES: tuple[str, ...] = ("classify", "tag", "forecast", "lm", "seq2seq")
Y_TYPES: dict[str, pa.DataType | None] = {
    "classify": pa.int64(),
    "tag": pa.list_(pa.int64()),
    "forecast": X_TYPE,
    "lm": None,
    "seq2seq": TOKEN_TYPE,
}
EXTRA_COLUMNS: dict[str, dict[str, pa.DataType]] = {"tag": {"chars": pa.list_(pa.list_(pa.int32()))}}

# Special tokens at the start of every vocabulary, so the ids are the same in every dataset.
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS: tuple[str, ...] = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class DatasetError(UserError, ValueError):
    """A dataset folder is missing, incomplete or does not follow the contract."""


def schema_for(task: str, kind: str = "float", extra: Iterable[str] = ()) -> pa.Schema:
    """The canonical Arrow schema of a task's split tables (``kind``: the x feature kind)."""
    if task not in Y_TYPES:
        raise DatasetError(f"unknown task {task!r}; expected one of {list(TASK_NAMES)}")
    fields = [pa.field("id", pa.string()), pa.field("x", X_TYPE if kind == "float" else TOKEN_TYPE)]
    if Y_TYPES[task] is not None:
        fields.append(pa.field("y", Y_TYPES[task]))
    for name in extra:
        fields.append(pa.field(name, EXTRA_COLUMNS[task][name]))
    return pa.schema(fields)
