"""Tests for the canonical dataset contract: schema, hash, statistics, manifest, read/write."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from pipeline.data.dataset import (
    ARROW_SCHEMA,
    SPLITS,
    DatasetError,
    Manifest,
    as_2d_x,
    compute_data_hash,
    fit_normalization,
    length_stats,
    make_table,
    read_manifest,
    read_quarantine,
    read_split,
    sources_for,
    split_dir,
    write_dataset,
    x_to_numpy,
)


def tiny_tables(channels: int = 2) -> dict[str, pa.Table]:
    rng = np.random.default_rng(1)

    def table(prefix: str, n: int) -> pa.Table:
        xs = [rng.standard_normal((3 + i, channels)).astype(np.float32) for i in range(n)]
        return make_table([f"{prefix}:{i}" for i in range(n)], xs, [i % 2 for i in range(n)])

    return {"train": table("tr", 4), "val": table("va", 2), "test": table("te", 3)}


def write_tiny(root, **kw) -> Manifest:
    args = {"name": "tiny", "task": "classify", "labels": ["a", "b"], "sources": [],
            "import_params": {"format": "test"}}
    args.update(kw)
    return write_dataset(str(root), tiny_tables(), **args)


def test_make_table_has_the_canonical_schema():
    # Given arrays of shape (T, C)
    xs = [np.arange(6, dtype=np.float32).reshape(3, 2), np.ones((1, 2), np.float32)]
    # When made into a table
    t = make_table(["a", "b"], xs, [0, 1])
    # Then the schema is id string, x list<list<float32>>, y int64, and values round-trip
    assert t.schema.equals(ARROW_SCHEMA)
    assert t.column("x").to_pylist()[0] == [[0, 1], [2, 3], [4, 5]]
    back = x_to_numpy(t.column("x"))
    np.testing.assert_array_equal(back[0], xs[0])
    assert back[1].shape == (1, 2)
    # And a 1-D array is one channel
    t1 = make_table(["u"], [np.array([1.0, 2.0], np.float32)], [0])
    assert t1.column("x").to_pylist() == [[[1.0], [2.0]]]


def test_x_as_flat_list_is_one_channel():
    # Given x stored as list<float32> (univariate, one level)
    flat = pa.table({
        "id": ["a", "b"],
        "x": pa.array([[1.0, 2.0, 3.0], [4.0]], pa.list_(pa.float32())),
        "y": pa.array([0, 1], pa.int64()),
    })
    nested = make_table(["a", "b"], [np.array([[1.0], [2.0], [3.0]], np.float32),
                                     np.array([[4.0]], np.float32)], [0, 1])
    # Then it reads as (T, 1)
    assert as_2d_x(flat.column("x")).to_pylist() == [[[1.0], [2.0], [3.0]], [[4.0]]]
    # And it hashes, measures and normalises exactly like the 2-level form
    assert compute_data_hash({"train": flat}) == compute_data_hash({"train": nested})
    assert length_stats(flat) == length_stats(nested)
    assert fit_normalization(flat) == fit_normalization(nested)


def test_flat_list_with_null_row_keeps_the_null():
    arr = pa.array([[1.0], None, [2.0, 3.0]], pa.list_(pa.float32()))
    assert as_2d_x(arr).to_pylist() == [[[1.0]], None, [[2.0], [3.0]]]
    # also when the array is a slice of a bigger one
    assert as_2d_x(arr.slice(1)).to_pylist() == [None, [[2.0], [3.0]]]


def test_data_hash_ignores_chunking_but_not_content():
    tables = tiny_tables()
    h = compute_data_hash(tables)
    # Same content in many small chunks -> same hash
    rechunked = {s: pa.Table.from_batches(t.to_batches(max_chunksize=1)) for s, t in tables.items()}
    assert compute_data_hash(rechunked) == h
    # A slice hashes like a fresh table holding the same rows
    fresh = make_table(tables["train"].column("id").to_pylist()[1:3],
                       x_to_numpy(tables["train"].column("x"))[1:3],
                       tables["train"].column("y").to_pylist()[1:3])
    assert compute_data_hash({"train": tables["train"].slice(1, 2)}) == compute_data_hash(
        {"train": fresh})
    # One value changed -> different hash
    xs = x_to_numpy(tables["val"].column("x"))
    xs[1][0, 0] += 1e-3
    changed = dict(tables, val=make_table(tables["val"].column("id").to_pylist(), xs,
                                          tables["val"].column("y").to_pylist()))
    assert compute_data_hash(changed) != h
    # An id changed, a label changed, or rows moved between splits -> different hash
    ids = tables["test"].column("id").to_pylist()
    ids[0] = "other"
    assert compute_data_hash(dict(tables, test=tables["test"].set_column(
        0, "id", pa.array(ids)))) != h
    ys = tables["test"].column("y").to_pylist()
    ys[0] = 1 - ys[0]
    assert compute_data_hash(dict(tables, test=tables["test"].set_column(
        2, "y", pa.array(ys, pa.int64())))) != h
    assert compute_data_hash({"train": tables["val"], "val": tables["train"],
                              "test": tables["test"]}) != h
    # The same values split between time and channels differently -> different hash
    a = make_table(["r"], [np.arange(4, dtype=np.float32).reshape(2, 2)], [0])
    b = make_table(["r"], [np.arange(4, dtype=np.float32).reshape(4, 1)], [0])
    assert compute_data_hash({"train": a}) != compute_data_hash({"train": b})


def test_fit_normalization_per_channel_with_std_floor():
    # Given channel 0 varying and channel 1 constant
    xs = [np.array([[1, 5], [3, 5]], np.float32), np.array([[5, 5]], np.float32)]
    norm = fit_normalization(make_table(["a", "b"], xs, [0, 0]))
    # Then mean/std are over every time step of every row, and a constant channel's std is floored
    assert norm.mean == pytest.approx([3.0, 5.0])
    assert norm.std[0] == pytest.approx(np.std([1, 3, 5]))
    assert norm.std[1] == pytest.approx(1e-6)


def test_length_stats():
    xs = [np.zeros((t, 1), np.float32) for t in (2, 4, 9)]
    stats = length_stats(make_table(["a", "b", "c"], xs, [0, 0, 0]))
    assert (stats.min, stats.max, stats.mean) == (2, 9, 5.0)


def test_write_and_read_round_trip(tmp_path):
    # Given a written dataset
    root = tmp_path / "ds"
    manifest = write_tiny(root)
    # Then the folder follows the contract layout
    for s in SPLITS:
        assert os.path.exists(root / s / "part-00000.parquet")
    assert not os.path.exists(root / "quarantine")
    # And the manifest read back equals the one returned
    again = read_manifest(str(root))
    assert again == manifest
    assert again.data_version == manifest.data_hash[:12]
    assert again.feature.num_channels == 2
    assert again.splits["train"].rows == 4
    assert again.splits["val"].files == ["val/part-00000.parquet"]
    assert again.lengths["test"].min == 3 and again.lengths["test"].max == 5
    assert again.quarantined == {}
    # And the split tables read back with the canonical schema and the same hash
    tables = {s: read_split(str(root), s) for s in SPLITS}
    assert all(t.schema.equals(ARROW_SCHEMA) for t in tables.values())
    assert compute_data_hash(tables) == manifest.data_hash
    assert split_dir(str(root), "val") == str(root / "val")
    # And normalization was fit on train only
    assert again.normalization == fit_normalization(tiny_tables()["train"])


def test_overwrite_removes_old_part_files_and_quarantine(tmp_path):
    root = tmp_path / "ds"
    q = pa.table({"id": ["bad:1"], "split": ["train"], "reason": ["x: NaN"]})
    write_tiny(root, quarantine=q)
    assert read_manifest(str(root)).quarantined == {"train": 1}
    assert read_quarantine(str(root)).column("id").to_pylist() == ["bad:1"]
    # Given a stray part file from an older write
    pq.write_table(tiny_tables()["train"], root / "train" / "part-00007.parquet")
    # When the dataset is written again without quarantine
    write_tiny(root)
    # Then only the new files remain
    assert sorted(os.listdir(root / "train")) == ["part-00000.parquet"]
    assert read_quarantine(str(root)) is None
    assert read_manifest(str(root)).quarantined == {}


def test_write_refuses_missing_or_empty_splits_and_writes_nothing(tmp_path):
    root = tmp_path / "ds"
    tables = tiny_tables()
    with pytest.raises(DatasetError, match="missing \\['test'\\]"):
        write_dataset(str(root), {"train": tables["train"], "val": tables["val"]}, name="t",
                      task="classify", labels=["a", "b"], sources=[], import_params={})
    with pytest.raises(DatasetError, match="would be empty"):
        write_dataset(str(root), dict(tables, val=tables["val"].slice(0, 0)), name="t",
                      task="classify", labels=["a", "b"], sources=[], import_params={})
    assert not os.path.exists(root / "manifest.json")


def test_read_manifest_missing_names_the_path(tmp_path):
    root = tmp_path / "nothing"
    with pytest.raises(DatasetError) as e:
        read_manifest(str(root))
    assert f"no manifest.json in {root}" in str(e.value)
    assert "recur data import" in str(e.value)


def test_read_manifest_invalid_names_the_path(tmp_path):
    root = tmp_path / "ds"
    write_tiny(root)
    path = root / "manifest.json"
    doc = json.loads(path.read_text())
    doc["unexpected"] = 1
    doc["data_hash"] = "not-a-hash"
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError) as e:
        read_manifest(str(root))
    assert f"invalid manifest {path}" in str(e.value)
    assert "data_hash" in str(e.value) and "unexpected" in str(e.value)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="invalid manifest"):
        read_manifest(str(root))


def test_manifest_is_frozen_and_strict(tmp_path):
    m = write_tiny(tmp_path / "ds")
    with pytest.raises(ValidationError, match="frozen"):
        m.name = "other"
    doc = m.model_dump()
    doc["splits"].pop("val")
    with pytest.raises(ValueError, match="splits must be exactly"):
        Manifest.model_validate(doc)


def test_read_split_without_files_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="no part-\\*.parquet files"):
        read_split(str(tmp_path), "train")
    with pytest.raises(DatasetError, match="unknown split"):
        split_dir(str(tmp_path), "training")


def test_sources_for_size_and_sha256(tmp_path):
    p = tmp_path / "f.txt"
    p.write_bytes(b"abc")
    (src,) = sources_for([str(p)])
    assert src.size == 3
    assert src.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_fit_normalization_keeps_how_far_apart_the_rows_own_scales_are():
    # given 10 rows per scale: std 0.01, 1 and 100 in channel 0; channel 1 always std 1
    rng = np.random.default_rng(0)
    xs = []
    for scale in (0.01, 1.0, 100.0):
        for _ in range(10):
            z = rng.normal(size=(50, 2))
            z = (z - z.mean(axis=0)) / z.std(axis=0)
            z[:, 0] *= scale
            xs.append(z.astype(np.float32))
    norm = fit_normalization(make_table([str(i) for i in range(30)], xs, [0] * 30))
    # then the 10th and 90th percentile of the rows' own std are kept per channel
    assert norm.row_std_p10[0] == pytest.approx(0.01, rel=1e-3)
    assert norm.row_std_p90[0] == pytest.approx(100.0, rel=1e-3)
    assert norm.row_std_p10[1] == pytest.approx(1.0, rel=1e-3) == norm.row_std_p90[1]
    # and a row holding NaN (unvalidated data) is left out rather than poisoning them
    xs[0][3, 0] = np.nan
    again = fit_normalization(make_table([str(i) for i in range(30)], xs, [0] * 30))
    assert again.row_std_p90 == pytest.approx(norm.row_std_p90, rel=1e-6)
    assert all(np.isfinite(again.row_std_p10 + again.row_std_p90))
