"""Write and read a dataset folder (layout: schema.py), local or on S3 (``pipeline.storage``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from pipeline import storage
from pipeline.data.dataset.arrays import as_array, canonical_table
from pipeline.data.dataset.hashing import compute_data_hash
from pipeline.data.dataset.manifest import FeatureSpec, Manifest, Normalization, SourceFile, SplitInfo
from pipeline.data.dataset.schema import (
    EXTRA_COLUMNS,
    MANIFEST_FILE,
    PART_FILE,
    QUARANTINE,
    SPLITS,
    DatasetError,
)
from pipeline.data.dataset.stats import fit_normalization, length_stats, num_channels


def folder(root: str) -> storage.LocalFolder | storage.S3Folder:
    """The files of the dataset at ``root``; every failure is a DatasetError."""
    return storage.folder(root, DatasetError)


def split_dir(root: str, split: str) -> str:
    """Folder holding the Parquet part files of ``split`` (one of SPLITS, or 'quarantine')."""
    if split not in SPLITS and split != QUARANTINE:
        raise DatasetError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return folder(root).path(split)


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
        channels = num_channels(canon["train"])
        normalization: Normalization | None = fit_normalization(canon["train"])
    else:
        channels, normalization = 1, None
    lengths = {s: length_stats(canon[s]) for s in SPLITS}
    data_hash = compute_data_hash(canon)
    quarantined: dict[str, int] = {}
    if quarantine is not None and quarantine.num_rows:
        counts = pc.value_counts(as_array(quarantine.column("split")).cast(pa.string()))
        for item in counts.to_pylist():
            quarantined[str(item["values"])] = int(item["counts"])
        quarantined = dict(sorted(quarantined.items()))

    store = folder(root)
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
        feature=FeatureSpec(kind=feature_kind, num_channels=channels),
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
    return folder(root).path(MANIFEST_FILE)


def read_manifest(root: str) -> Manifest:
    """Read and validate ``<root>/manifest.json``; DatasetError naming the path otherwise."""
    store = folder(root)
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


def split_files(root: str, split: str) -> list[str]:
    """Absolute paths of the part files of ``split``, in name order."""
    split_dir(root, split)  # validates the split name
    store = folder(root)
    return [store.path(rel) for rel in store.parts(split)]


def read_split_parts(root: str, split: str) -> list[pa.Table]:
    """The part files of ``split`` in name order, each as stored (pages checked against their CRC)."""
    split_dir(root, split)  # validates the split name
    store = folder(root)
    parts = store.parts(split)
    if not parts:
        raise DatasetError(
            f"no part-*.parquet files in {split_dir(root, split)}: the dataset is incomplete"
        )
    return [store.read_parquet(rel) for rel in parts]


def read_split(root: str, split: str) -> pa.Table:
    """All part files of ``split`` concatenated, as stored (x may be list<float> in old data)."""
    tables = read_split_parts(root, split)
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")


def read_quarantine(root: str) -> pa.Table | None:
    """The quarantined rows (id, split, reason, ...), or None when nothing was quarantined."""
    store = folder(root)
    parts = store.parts(QUARANTINE)
    if not parts:
        return None
    return pa.concat_tables([store.read_parquet(rel) for rel in parts], promote_options="default")
