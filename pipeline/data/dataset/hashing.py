"""Fingerprints: the data hash of a dataset's content, a cheap fingerprint of its files as they
are on disk now, and the size and sha256 of the source files an import read."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage
from pipeline.data.dataset.arrays import XParts, is_token_x, list_lengths, null_mask
from pipeline.data.dataset.manifest import SourceFile
from pipeline.data.dataset.schema import MANIFEST_FILE, SPLITS, DatasetError


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
        lengths = np.where(null_mask(arr), -1, list_lengths(arr))
        h.update(b"L" + lengths.astype("<i8").tobytes())
        arr = arr.flatten()
    if pa.types.is_floating(arr.type):
        values = pc.fill_null(arr.cast(pa.float32()), float("nan")) if arr.null_count else arr
        h.update(b"F" + values.to_numpy(zero_copy_only=False).astype("<f4").tobytes())
    else:
        h.update(b"N" + null_mask(arr).astype(np.uint8).tobytes())
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
            if is_token_x(chunk.type):
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
            nulls = null_mask(chunk)
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
    store = storage.folder(root, DatasetError)
    rels = [MANIFEST_FILE, *(rel for split in SPLITS for rel in store.parts(split))]
    h = hashlib.sha256(b"recur-files-v1\0")
    if isinstance(store, storage.S3Folder):
        for rel in rels:
            info = store.file_info(rel)
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
