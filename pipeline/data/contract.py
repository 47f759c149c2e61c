"""The canonical dataset on disk: folder layout, Arrow schema, manifest, data hash.

A dataset is a folder that every importer writes and every later step reads::

    <root>/manifest.json                 Manifest (below); written LAST, atomically
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
dataset behind.

All filesystem access goes through :class:`_LocalStore` so that an S3 store can replace it later.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from pipeline import storage
from pipeline.errors import UserError

SPLITS: tuple[str, ...] = ("train", "val", "test")
QUARANTINE = "quarantine"
MANIFEST_FILE = "manifest.json"
PART_FILE = "part-00000.parquet"
FORMAT_VERSION = 1
# std below this is treated as this, so normalising a constant channel never divides by zero.
STD_FLOOR = 1e-6

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


class DatasetError(UserError, ValueError):
    """A dataset folder is missing, incomplete or does not follow the contract."""


# --------------------------------------------------------------------------------------------
# Manifest models


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeatureSpec(_Frozen):
    """What ``x`` holds: float features with ``num_channels`` values per time step, or token ids
    (``kind == "token"``, ``num_channels == 1``) into ``Manifest.vocab``."""

    kind: Literal["float", "token"] = "float"
    num_channels: int

    @field_validator("num_channels")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"num_channels must be >= 1, got {v}")
        return v


class SplitInfo(_Frozen):
    """Row count of one split and its Parquet files, relative to the dataset root."""

    rows: int
    files: list[str]

    @field_validator("files")
    @classmethod
    def _inside_the_dataset(cls, files: list[str]) -> list[str]:
        # A manifest names files in its own folder only: `../..` or an absolute path would make
        # a dataset read (or a copy of it trust) files elsewhere on the machine or the bucket.
        for f in files:
            parts = f.replace("\\", "/").split("/")
            if f.startswith(("/", "\\")) or "://" in f or ".." in parts or re.match(r"^[A-Za-z]:", f):
                raise ValueError(f"file {f!r} is outside the dataset folder; expected a path like "
                                 f"'train/{PART_FILE}' relative to the folder holding manifest.json")
        return files


class Normalization(_Frozen):
    """Per-channel mean and std of ``x``, fit on the TRAIN split over every finite time step.

    ``std`` is the population std (ddof=0), floored at ``STD_FLOOR``.
    Normalise with ``(x - mean) / std``.
    """

    mean: list[float]
    std: list[float]
    # How much the rows' own scale varies: per channel, the 10th and 90th percentile over train
    # rows of each row's std (its finite steps). None in manifests written before recur kept them.
    row_std_p10: list[float] | None = None
    row_std_p90: list[float] | None = None

    @model_validator(mode="after")
    def _same_length(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"normalization mean has {len(self.mean)} channels but std has {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError("normalization std must be > 0 for every channel")
        return self


class LengthStats(_Frozen):
    """Sequence lengths (time steps) of one split."""

    min: int
    max: int
    mean: float


class SourceFile(_Frozen):
    """A source file an import read: its path (as given), size in bytes and sha256 (hex); for
    an object read from S3 also its ETag and, on a versioned bucket, its version id."""

    path: str
    size: int
    sha256: str
    etag: str | None = None
    version_id: str | None = None


class Manifest(_Frozen):
    """``manifest.json``: everything a later step needs to know about a dataset."""

    format_version: int = FORMAT_VERSION
    name: str
    task: Literal["classify", "tag", "forecast", "lm", "seq2seq"]
    feature: FeatureSpec
    labels: list[str]  # classify: class names; tag: tag names
    splits: dict[str, SplitInfo]
    normalization: Normalization | None  # float features only
    lengths: dict[str, LengthStats]
    data_hash: str
    sources: list[SourceFile]
    quarantined: dict[str, int]
    import_params: dict[str, Any]
    created_at: str
    vocab: list[str] = []  # token features: id -> token (SPECIALS first)
    target_vocab: list[str] = []  # seq2seq: id -> target token (SPECIALS first)
    task_params: dict[str, Any] = {}  # e.g. forecast window/horizon/columns, lm level
    columns: list[str] = []  # optional task columns present (EXTRA_COLUMNS)

    @field_validator("data_hash")
    @classmethod
    def _hex_sha256(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("data_hash must be 64 lowercase hex characters (sha256)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version} is not supported (expected {FORMAT_VERSION})"
            )
        missing = [s for s in SPLITS if s not in self.splits]
        unknown = [s for s in self.splits if s not in SPLITS]
        if missing or unknown:
            raise ValueError(
                f"splits must be exactly {list(SPLITS)} (missing {missing}, unknown {unknown})"
            )
        if self.task in ("classify", "tag") and not self.labels:
            raise ValueError(f"a {self.task} dataset needs at least one label")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        for what, vocab in (("vocab", self.vocab), ("target_vocab", self.target_vocab)):
            if vocab and tuple(vocab[: len(SPECIALS)]) != SPECIALS:
                raise ValueError(f"{what} must start with {list(SPECIALS)}")
        if self.feature.kind == "token" and not self.vocab:
            raise ValueError("token features need a vocab")
        if self.task == "seq2seq" and not self.target_vocab:
            raise ValueError("a seq2seq dataset needs a target_vocab")
        n = self.feature.num_channels
        if self.feature.kind == "float":
            if self.normalization is None:
                raise ValueError("float features need normalization statistics")
            if len(self.normalization.mean) != n:
                raise ValueError(
                    f"normalization has {len(self.normalization.mean)} channels, feature has {n}"
                )
        return self

    @property
    def data_version(self) -> str:
        """Short data version: the first 12 hex characters of ``data_hash``."""
        return self.data_hash[:12]

    @property
    def num_labels(self) -> int:
        return len(self.labels)


# --------------------------------------------------------------------------------------------
# Storage: the one place that knows how dataset paths map to files.


# How recur writes its Parquet: zstd (compact, fast to decode), one row group (a deterministic
# layout), and a CRC32 checksum per page, which every read verifies (`page_checksum_verification`):
# flipped bytes in a stored dataset fail the read instead of training on changed values.
PARQUET_WRITE: dict[str, Any] = {"compression": "zstd", "write_page_checksum": True}


class _LocalStore:
    """Local-filesystem access for one dataset root."""

    def __init__(self, root: str) -> None:
        root = os.fspath(root)
        if root.startswith("file://"):
            root = root[len("file://") :]
        elif "://" in root:
            raise DatasetError(
                f"dataset root {root!r}: expected a local folder, file:// or s3://bucket/prefix"
            )
        self.root = os.path.abspath(os.path.expanduser(root))

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def exists(self, *parts: str) -> bool:
        return os.path.exists(self.path(*parts))

    def makedirs(self, *parts: str) -> None:
        os.makedirs(self.path(*parts), exist_ok=True)

    def parts(self, folder: str) -> list[str]:
        """Part files of ``folder`` relative to the root, in name order."""
        found = sorted(glob.glob(self.path(folder, "part-*.parquet")))
        return [os.path.relpath(p, self.root).replace(os.sep, "/") for p in found]

    def remove_parts(self, folder: str) -> None:
        for rel in self.parts(folder):
            os.remove(self.path(rel))

    def remove(self, *parts: str) -> None:
        p = self.path(*parts)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)

    def write_parquet(self, table: pa.Table, rel: str) -> None:
        # zstd: compact and fast to decode; one row group keeps the file layout deterministic.
        pq.write_table(table, self.path(rel), row_group_size=max(1, len(table)), **PARQUET_WRITE)

    def read_parquet(self, rel: str) -> pa.Table:
        try:
            return pq.read_table(self.path(rel), page_checksum_verification=True)
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(f"{self.path(rel)}: not a readable Parquet file, truncated or corrupt "
                               f"({exc}); import the dataset again") from None

    def write_text_atomic(self, rel: str, text: str) -> None:
        target = self.path(rel)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(target))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def read_text(self, rel: str) -> str:
        with open(self.path(rel), encoding="utf-8") as fh:
            return fh.read()


class _S3Store:
    """The same operations on `s3://bucket/prefix`, through pyarrow's S3 filesystem.

    A PUT replaces an object whole, so every write is atomic; manifest.json is still written
    last, after the part files, so a reader never sees a manifest without its data.
    """

    def __init__(self, root: str) -> None:
        self.root = os.fspath(root).rstrip("/")
        self.fs, self._base = storage.filesystem_for(self.root)

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    def _key(self, *parts: str) -> str:
        return "/".join([self._base, *[p.strip("/") for p in parts if p]])

    def _wrap(self, exc: BaseException, op: str, *parts: str) -> DatasetError:
        return DatasetError(str(storage.describe_error(exc, self.path(*parts), op)))

    def exists(self, *parts: str) -> bool:
        from pyarrow import fs

        try:
            return self.fs.get_file_info(self._key(*parts)).type != fs.FileType.NotFound
        except OSError as exc:
            raise self._wrap(exc, "stat", *parts) from exc

    def makedirs(self, *parts: str) -> None:
        """Object stores have no folders; nothing to make."""

    def parts(self, folder: str) -> list[str]:
        from pyarrow import fs

        try:
            infos = self.fs.get_file_info(fs.FileSelector(self._key(folder), allow_not_found=True))
        except OSError as exc:
            raise self._wrap(exc, "list", folder) from exc
        names = sorted(i.base_name for i in infos
                       if i.type == fs.FileType.File and fnmatch.fnmatch(i.base_name, "part-*.parquet"))
        return [f"{folder}/{n}" for n in names]

    def remove_parts(self, folder: str) -> None:
        for rel in self.parts(folder):
            self.fs.delete_file(self._key(rel))

    def remove(self, *parts: str) -> None:
        from pyarrow import fs

        info = self.fs.get_file_info(self._key(*parts))
        if info.type == fs.FileType.Directory:
            self.fs.delete_dir(self._key(*parts))
        elif info.type == fs.FileType.File:
            self.fs.delete_file(self._key(*parts))

    def write_parquet(self, table: pa.Table, rel: str) -> None:
        try:
            pq.write_table(table, self._key(rel), filesystem=self.fs, row_group_size=max(1, len(table)),
                           **PARQUET_WRITE)
        except OSError as exc:
            raise self._wrap(exc, "write", rel) from exc

    def read_parquet(self, rel: str) -> pa.Table:
        try:
            return pq.read_table(self._key(rel), filesystem=self.fs, page_checksum_verification=True)
        except OSError as exc:
            raise self._wrap(exc, "read", rel) from exc

    def write_text_atomic(self, rel: str, text: str) -> None:
        try:
            with self.fs.open_output_stream(self._key(rel)) as out:
                out.write(text.encode("utf-8"))
        except OSError as exc:
            raise self._wrap(exc, "write", rel) from exc

    def read_text(self, rel: str) -> str:
        try:
            with self.fs.open_input_stream(self._key(rel)) as src:
                return src.read().decode("utf-8")
        except OSError as exc:
            raise self._wrap(exc, "read", rel) from exc


def _store(root: str) -> _LocalStore | _S3Store:
    return _S3Store(root) if storage.is_s3(root) else _LocalStore(root)


def filesystem(root: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path on it) of a dataset root, for readers such as Ray Data."""
    return storage.filesystem_for(root)


def split_dir(root: str, split: str) -> str:
    """Folder holding the Parquet part files of ``split`` (one of SPLITS, or 'quarantine')."""
    if split not in SPLITS and split != QUARANTINE:
        raise DatasetError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return _store(root).path(split)


# --------------------------------------------------------------------------------------------
# Arrow helpers


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


def _as_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def as_2d_x(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Return ``col`` as list<list<float32>>; list<number> becomes (T, 1) per row.

    Accepts list / large_list of numbers (one channel) or of lists of numbers.
    """
    arr = _as_array(col)
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
    np.cumsum(_lengths(arr), out=offsets[1:])
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
        col = _as_array(table.column(f.name))
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
        self.row_null = _null_mask(arr)
        self.row_steps = _lengths(arr)
        steps = arr.flatten()  # skips null rows and honours slicing
        self.step_null = _null_mask(steps)
        self.step_widths = _lengths(steps)
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


def _null_mask(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.zeros(len(arr), dtype=bool)
    return arr.is_null().to_numpy(zero_copy_only=False)


def _lengths(arr: pa.Array) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------
# Hash and statistics


def _string_stream(arr: pa.Array, lengths: hashlib._Hash, data: hashlib._Hash) -> None:
    """Feed one string chunk: utf-8 byte lengths (int64 LE, null = -1) and the bytes."""
    if len(arr) == 0:
        return
    # large_string: one offset width (int64) whatever the input (string, large_string, ids
    # stored as numbers).
    if not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_string())
    n = pc.binary_length(arr)
    if n.null_count:
        n = pc.fill_null(n, -1)
        arr = pc.fill_null(arr, "")
    lengths.update(n.to_numpy(zero_copy_only=False).astype("<i8").tobytes())
    offsets = np.frombuffer(arr.buffers()[1], dtype="<i8")[arr.offset : arr.offset + len(arr) + 1]
    buf = arr.buffers()[2]
    if buf is not None and offsets[-1] > offsets[0]:
        data.update(memoryview(buf)[int(offsets[0]) : int(offsets[-1])])


_HASH_STREAMS = ("idlen", "id", "steps", "widths", "x", "y", "ynull")


def _nested_stream(arr: pa.Array, h: hashlib._Hash) -> None:
    """Feed any (nested) list-of-numbers chunk: per level the lengths (-1 for null), then the
    values as little-endian float32 (floats) or int64 (integers)."""
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        lengths = np.where(_null_mask(arr), -1, _lengths(arr))
        h.update(b"L" + lengths.astype("<i8").tobytes())
        arr = arr.flatten()
    if pa.types.is_floating(arr.type):
        values = pc.fill_null(arr.cast(pa.float32()), float("nan")) if arr.null_count else arr
        h.update(b"F" + values.to_numpy(zero_copy_only=False).astype("<f4").tobytes())
    else:
        h.update(b"N" + _null_mask(arr).astype(np.uint8).tobytes())
        values = pc.fill_null(arr, 0) if arr.null_count else arr
        h.update(b"I" + values.to_numpy(zero_copy_only=False).astype("<i8").tobytes())


def compute_data_hash(tables: Mapping[str, pa.Table]) -> str:
    """sha256 (hex) of the dataset content, independent of Parquet encoding and row groups.

    For each split in SPLITS order (splits absent from ``tables`` are skipped), rows in stored
    order: the split name and row count, then separate sha256 streams of the ids (utf-8 lengths
    and bytes), the x shapes (steps per row, values per step), the x values as float32 little
    endian, and y (int64 little endian plus a null mask). Each stream is fed chunk by chunk, so
    the result does not depend on how the table is chunked. list<float> x hashes like (T, 1).
    Token x, list-typed y and task columns (``EXTRA_COLUMNS``) hash through ``_nested_stream``.
    """
    outer = hashlib.sha256(b"recur-data-hash-v1\0")
    for split in SPLITS:
        if split not in tables:
            continue
        table = tables[split]
        streams = {k: hashlib.sha256() for k in _HASH_STREAMS}
        for chunk in table.column("id").chunks:
            _string_stream(chunk, streams["idlen"], streams["id"])
        for chunk in table.column("x").chunks:
            if _is_token_x(chunk.type):
                _nested_stream(chunk, streams["x"])
                continue
            parts = XParts(chunk)
            steps = np.where(parts.row_null, -1, parts.row_steps)
            widths = np.where(parts.step_null, -1, parts.step_widths)
            streams["steps"].update(steps.astype("<i8").tobytes())
            streams["widths"].update(widths.astype("<i8").tobytes())
            streams["x"].update(parts.values.astype("<f4", copy=False).tobytes())
        for chunk in table.column("y").chunks if "y" in table.column_names else []:
            if pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type):
                _nested_stream(chunk, streams["y"])
                continue
            chunk = chunk.cast(pa.int64())
            nulls = _null_mask(chunk)
            if chunk.null_count:
                chunk = pc.fill_null(chunk, 0)
            streams["y"].update(chunk.to_numpy(zero_copy_only=False).astype("<i8").tobytes())
            streams["ynull"].update(nulls.astype(np.uint8).tobytes())
        outer.update(f"{split}\0{table.num_rows}\0".encode())
        for k in _HASH_STREAMS:
            outer.update(streams[k].digest())
        for name in sorted(set(table.column_names) - {"id", "x", "y"}):
            extra = hashlib.sha256()
            for chunk in table.column(name).chunks:
                _nested_stream(chunk, extra)
            outer.update(name.encode() + b"\0" + extra.digest())
    return outer.hexdigest()


def _is_token_x(t: pa.DataType) -> bool:
    """x of token ids: list<integer> (float x is list<list<number>> or list<float>)."""
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(t.value_type)


def fit_normalization(train_table: pa.Table) -> Normalization:
    """Per-channel mean/std over every finite value of every time step of the train split.

    All time steps must have the same channel count C. Accumulates in float64. A channel with no
    finite value gets mean 0, std 1; std is floored at STD_FLOOR.
    """
    parts = XParts(train_table.column("x"))
    widths = parts.step_widths[~parts.step_null]
    if len(widths) == 0:
        raise DatasetError("cannot fit normalization: the train split has no time steps")
    c = int(widths[0])
    if (widths != c).any() or parts.step_null.any() or c == 0:
        raise DatasetError("cannot fit normalization: time steps have different channel counts")
    vals = parts.values.reshape(-1, c)
    total = np.zeros(c, np.float64)
    count = np.zeros(c, np.int64)
    # Blocks of steps, so 100k x 100 x 12 values never need a full float64 copy; non-finite
    # values (only present in unvalidated data) are left out of the statistics.
    block = 1 << 18
    all_finite = bool(np.isfinite(vals).all())
    for start in range(0, len(vals), block):
        v = vals[start : start + block].astype(np.float64)
        if all_finite:
            total += v.sum(axis=0)
            count += len(v)
        else:
            ok = np.isfinite(v)
            total += np.where(ok, v, 0.0).sum(axis=0)
            count += ok.sum(axis=0)
    mean = np.divide(total, count, out=np.zeros(c), where=count > 0)
    sq = np.zeros(c, np.float64)
    for start in range(0, len(vals), block):
        v = vals[start : start + block].astype(np.float64)
        v -= mean
        v *= v
        sq += v.sum(axis=0) if all_finite else np.where(np.isfinite(v), v, 0.0).sum(axis=0)
    var = np.divide(sq, count, out=np.ones(c), where=count > 0)
    std = np.maximum(np.sqrt(var), STD_FLOOR)
    p10, p90 = row_std_quantiles(vals, parts.row_steps)
    return Normalization(mean=[float(m) for m in mean], std=[float(s) for s in std],
                         row_std_p10=p10, row_std_p90=p90)


def row_std_quantiles(vals_NC: np.ndarray, row_steps: np.ndarray) -> tuple[list[float], list[float]]:
    """Per channel, the 10th and 90th percentile over rows of each row's own std (population,
    over its steps; rows with a non-finite value or no step are left out). Rows are taken in
    blocks of about 2**18 steps, so no float64 copy of the whole split is made."""
    c = vals_NC.shape[1]
    ends = np.cumsum(row_steps)
    starts = ends - row_steps
    stds: list[np.ndarray] = []
    block, first = 1 << 18, 0
    while first < len(row_steps):
        last = int(np.searchsorted(ends, starts[first] + block, side="right"))
        last = max(last, first + 1)
        rows = slice(first, last)
        keep = row_steps[rows] > 0
        lo, hi = int(starts[first]), int(ends[last - 1])
        seg = vals_NC[lo:hi].astype(np.float64)
        local = (starts[rows] - lo)[keep]
        if len(local):
            n = row_steps[rows][keep][:, None].astype(np.float64)
            finite = np.add.reduceat(np.isfinite(seg).all(axis=1).astype(np.int64), local)[:, None] == n
            seg = np.where(np.isfinite(seg), seg, 0.0)
            mean = np.add.reduceat(seg, local, axis=0) / n
            var = np.maximum(np.add.reduceat(seg * seg, local, axis=0) / n - mean * mean, 0.0)
            stds.append(np.sqrt(var)[finite[:, 0]])
        first = last
    every = np.concatenate(stds) if stds else np.zeros((0, c))
    if not len(every):
        return [1.0] * c, [1.0] * c
    p10, p90 = np.quantile(every, [0.1, 0.9], axis=0)
    return [float(v) for v in p10], [float(v) for v in p90]


def length_stats(table: pa.Table) -> LengthStats:
    """Min, max and mean number of time steps over the non-null rows (0s for an empty table)."""
    x = _as_array(table.column("x")) if table.num_rows else None
    if x is not None and _is_token_x(x.type):
        steps = _lengths(x)[~_null_mask(x)]
    else:
        parts = XParts(table.column("x"))
        steps = parts.row_steps[~parts.row_null]
    if len(steps) == 0:
        return LengthStats(min=0, max=0, mean=0.0)
    return LengthStats(min=int(steps.min()), max=int(steps.max()), mean=float(steps.mean()))


def _num_channels(table: pa.Table) -> int:
    parts = XParts(table.column("x"))
    widths = parts.step_widths[~parts.step_null]
    if len(widths) == 0:
        raise DatasetError("cannot tell the channel count: the train split has no time steps")
    return int(widths[0])


def read_text_file(path: str, shown: str | None = None) -> str:
    """A source file's text as strict UTF-8 (a leading byte-order mark dropped); DatasetError naming
    the file (`shown`, default the path), line and byte offset of the first undecodable byte."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatasetError(
            f"{shown or path}: not valid UTF-8 at byte offset {e.start} (line {line}, byte {column} of "
            f"the line): {e.reason} (byte 0x{data[e.start]:02x}); convert the file to UTF-8, e.g. "
            "`iconv -f latin1 -t utf-8`"
        ) from None


def sources_for(paths: Iterable[str]) -> list[SourceFile]:
    """Size (bytes) and sha256 of each local source file, in the given order; a file downloaded
    from S3 (`storage.download`) is named by its URI and carries its ETag and version id."""
    out = []
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        obj = storage.DOWNLOADED.get(str(p))
        out.append(SourceFile(path=obj.uri if obj else str(p), size=os.path.getsize(p), sha256=h.hexdigest(),
                              etag=obj.etag if obj else None, version_id=obj.version_id if obj else None))
    return out


# --------------------------------------------------------------------------------------------
# Write and read


def write_dataset(
    root: str,
    tables: Mapping[str, pa.Table],
    *,
    name: str,
    task: str,
    labels: list[str],
    sources: list[SourceFile],
    import_params: dict[str, Any],
    quarantine: pa.Table | None = None,
    feature_kind: Literal["float", "token"] = "float",
    vocab: list[str] | None = None,
    target_vocab: list[str] | None = None,
    task_params: dict[str, Any] | None = None,
) -> Manifest:
    """Write a canonical dataset to ``root`` and return its manifest.

    ``tables`` must hold every split in SPLITS, each non-empty, with the task's columns
    (``schema_for``; float x may be list<float>, it is stored as (T, 1)) and any of the task's
    optional columns (``EXTRA_COLUMNS``). ``quarantine`` needs columns id, split, reason; any
    other columns (raw x, label, source) are stored as they are.

    Order of writes: old manifest removed, old part files removed, new part files written,
    manifest.json written last via a temp file + os.replace, so a half-written dataset has no
    manifest. Normalization (float x) is fit on train only; the data hash covers train/val/test.
    """
    missing = [s for s in SPLITS if s not in tables]
    unknown = [s for s in tables if s not in SPLITS]
    if missing or unknown:
        raise DatasetError(f"write_dataset needs splits {list(SPLITS)}; missing {missing}, "
                           f"unknown {unknown}")
    extra = [c for c in EXTRA_COLUMNS.get(task, {}) if c in tables["train"].column_names]
    canon = {s: canonical_table(tables[s], task, feature_kind, extra).combine_chunks() for s in SPLITS}
    empty = [s for s in SPLITS if canon[s].num_rows == 0]
    if empty:
        raise DatasetError(f"split(s) {empty} would be empty; every split needs at least one row")
    if quarantine is not None:
        need = [c for c in ("id", "split", "reason") if c not in quarantine.column_names]
        if need:
            raise DatasetError(f"quarantine table is missing column(s) {need}")

    # Everything that can fail on content is computed before the first byte is written.
    if feature_kind == "float":
        num_channels = _num_channels(canon["train"])
        normalization: Normalization | None = fit_normalization(canon["train"])
    else:
        num_channels, normalization = 1, None
    lengths = {s: length_stats(canon[s]) for s in SPLITS}
    data_hash = compute_data_hash(canon)
    quarantined: dict[str, int] = {}
    if quarantine is not None and quarantine.num_rows:
        counts = pc.value_counts(_as_array(quarantine.column("split")).cast(pa.string()))
        for item in counts.to_pylist():
            quarantined[str(item["values"])] = int(item["counts"])
        quarantined = dict(sorted(quarantined.items()))

    store = _store(root)
    store.makedirs()
    store.remove(MANIFEST_FILE)  # from here on the folder is "not a dataset" until the end
    splits: dict[str, SplitInfo] = {}
    for s in SPLITS:
        store.makedirs(s)
        store.remove_parts(s)
        rel = f"{s}/{PART_FILE}"
        store.write_parquet(canon[s], rel)
        splits[s] = SplitInfo(rows=canon[s].num_rows, files=[rel])
    store.remove_parts(QUARANTINE)
    if quarantine is not None and quarantine.num_rows:
        store.makedirs(QUARANTINE)
        store.write_parquet(quarantine.combine_chunks(), f"{QUARANTINE}/{PART_FILE}")

    manifest = Manifest(
        name=name,
        task=task,  # type: ignore[arg-type]
        feature=FeatureSpec(kind=feature_kind, num_channels=num_channels),
        labels=list(labels),
        splits=splits,
        normalization=normalization,
        lengths=lengths,
        data_hash=data_hash,
        sources=list(sources),
        quarantined=quarantined,
        import_params=dict(import_params),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        vocab=list(vocab or []),
        target_vocab=list(target_vocab or []),
        task_params=dict(task_params or {}),
        columns=extra,
    )
    store.write_text_atomic(MANIFEST_FILE, manifest.model_dump_json(indent=2) + "\n")
    return manifest


def manifest_path(root: str) -> str:
    return _store(root).path(MANIFEST_FILE)


def read_manifest(root: str) -> Manifest:
    """Read and validate ``<root>/manifest.json``; DatasetError naming the path otherwise."""
    store = _store(root)
    path = store.path(MANIFEST_FILE)
    if not store.exists(MANIFEST_FILE):
        raise DatasetError(
            f"no manifest.json in {store.root} (looked for {path}): "
            "import the data first with `recur data import ...`"
        )
    try:
        return Manifest.model_validate_json(store.read_text(MANIFEST_FILE))
    except ValidationError as e:
        raise DatasetError(f"invalid manifest {path}: {e}") from e


FULL_HASH_BYTES = 64 * 2**20  # datasets up to this size are fingerprinted by their whole content
FOOTER_BYTES = 64 * 2**10  # else by each file's size, mtime and last bytes (the Parquet footer)


def files_fingerprint(root: str) -> str:
    """A cheap fingerprint of what is on disk now: manifest.json and every split's part files.

    A recorded step is skipped only while it matches (`pipeline.workflow`): a dataset changed in
    place after its import (one value rewritten, a file replaced) no longer matches even though
    its manifest still names the old data hash. Small datasets (up to FULL_HASH_BYTES) hash
    their whole content; larger ones each file's size, modification time and last FOOTER_BYTES
    (the Parquet footer: row counts, column statistics and page offsets). On S3: sizes and
    modification times (listing only)."""
    store = _store(root)
    rels = [MANIFEST_FILE, *(rel for split in SPLITS for rel in store.parts(split))]
    h = hashlib.sha256(b"recur-files-v1\0")
    if isinstance(store, _S3Store):
        for rel in rels:
            info = store.fs.get_file_info(store._key(rel))
            h.update(f"{rel}\0{info.size}\0{info.mtime_ns}\0".encode())
        return h.hexdigest()[:32]
    found = [(rel, store.path(rel)) for rel in rels if store.exists(rel)]
    whole = sum(os.path.getsize(path) for _, path in found) <= FULL_HASH_BYTES
    for rel, path in found:
        stat = os.stat(path)
        h.update(f"{rel}\0{stat.st_size}\0".encode())
        with open(path, "rb") as fh:
            if whole:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            else:
                h.update(f"{stat.st_mtime_ns}\0".encode())
                fh.seek(max(0, stat.st_size - FOOTER_BYTES))
                h.update(fh.read())
    return h.hexdigest()[:32]


def split_files(root: str, split: str) -> list[str]:
    """Absolute paths of the part files of ``split``, in name order."""
    split_dir(root, split)  # validates the split name
    store = _store(root)
    return [store.path(rel) for rel in store.parts(split)]


def read_split(root: str, split: str) -> pa.Table:
    """All part files of ``split`` concatenated, as stored (x may be list<float> in old data)."""
    split_dir(root, split)  # validates the split name
    store = _store(root)
    parts = store.parts(split)
    if not parts:
        raise DatasetError(
            f"no part-*.parquet files in {split_dir(root, split)}: the dataset is incomplete"
        )
    tables = [store.read_parquet(rel) for rel in parts]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")


def read_quarantine(root: str) -> pa.Table | None:
    """The quarantined rows (id, split, reason, ...), or None when nothing was quarantined."""
    store = _store(root)
    parts = store.parts(QUARANTINE)
    if not parts:
        return None
    return pa.concat_tables([store.read_parquet(rel) for rel in parts], promote_options="default")
