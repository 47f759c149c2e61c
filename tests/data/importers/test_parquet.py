"""The Parquet importer: columns chosen by name, flat or (time x channels) x, labels, bad rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.dataset import read_split, x_to_numpy
from pipeline.data.importers import import_dataset
from pipeline.data.importers.parquet import import_parquet
from pipeline.data.validate import DataValidationError, validate_dataset


def test_import_parquet_round_trip_with_string_labels_and_split_column(tmp_path):
    # Given a Parquet file with string labels, an id column and a split column
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((3 + i % 4, 2)).astype(np.float32) for i in range(12)]
    labels = ["cat", "dog", "ant"] * 4
    splits = ["train"] * 6 + ["valid"] * 3 + ["TEST"] * 3
    ids = [f"row-{i}" for i in range(12)]
    src = tmp_path / "animals.parquet"
    pq.write_table(pa.table({
        "key": ids,
        "seq": pa.array([x.tolist() for x in xs], pa.list_(pa.list_(pa.float64()))),
        "animal": labels,
        "part": splits,
    }), src)
    root = str(tmp_path / "ds")
    # When imported naming the columns
    m = import_parquet([str(src)], root, x_column="seq", y_column="animal", id_column="key",
                       split_column="part")
    # Then splits follow the column, labels are sorted, and every value comes back
    assert m.labels == ["ant", "cat", "dog"]
    assert {s: m.splits[s].rows for s in ("train", "val", "test")} == {
        "train": 6, "val": 3, "test": 3}
    assert m.feature.num_channels == 2
    for split, rows in (("train", range(6)), ("val", range(6, 9)), ("test", range(9, 12))):
        t = read_split(root, split)
        assert t.column("id").to_pylist() == [ids[i] for i in rows]
        assert [m.labels[y] for y in t.column("y").to_pylist()] == [labels[i] for i in rows]
        for got, i in zip(x_to_numpy(t.column("x")), rows):
            np.testing.assert_array_equal(got, xs[i])
    assert m.import_params["format"] == "parquet" and m.import_params["split_column"] == "part"
    assert validate_dataset(root).ok


def test_import_parquet_flat_x_integer_labels_generated_ids(tmp_path):
    # Given a folder of univariate files named by split, integer labels, no id column
    folder = tmp_path / "src"
    folder.mkdir()
    for split, n in (("train", 10), ("test", 4)):
        pq.write_table(pa.table({
            "x": pa.array([[float(i), float(i) + 0.5] for i in range(n)], pa.list_(pa.float32())),
            "y": pa.array([[2, 10][i % 2] for i in range(n)], pa.int64()),
        }), folder / f"s_{split}.parquet")
    root = str(tmp_path / "ds")
    m = import_dataset("parquet", [str(folder)], root)
    # Then labels are numeric-aware sorted strings and x is (T, 1)
    assert m.labels == ["2", "10"]
    assert m.feature.num_channels == 1
    assert m.splits["test"].rows == 4 and m.splits["train"].rows + m.splits["val"].rows == 10
    test = read_split(root, "test")
    assert test.column("id").to_pylist() == [f"s_test:{i}" for i in range(4)]
    assert test.column("x").to_pylist()[1] == [[1.0], [1.5]]
    assert test.column("y").to_pylist() == [0, 1, 0, 1]


def test_import_parquet_invalid_rows(tmp_path):
    src = tmp_path / "p_TRAIN.parquet"
    pq.write_table(pa.table({
        "id": ["a", "b", "c", "d", "a"],
        "x": pa.array([[[1.0, 2.0]], [[1.0, float("inf")]], [[1.0]], [], [[3.0, 4.0]]],
                      pa.list_(pa.list_(pa.float32()))),
        "y": ["u", "v", "u", "v", "u"],
    }), src)
    test = tmp_path / "p_TEST.parquet"
    pq.write_table(pa.table({"id": ["t"], "x": pa.array([[[0.0, 0.0]]]), "y": ["u"]}), test)
    with pytest.raises(DataValidationError) as e:
        import_parquet([str(src), str(test)], str(tmp_path / "ds"))
    assert [(p.row_id, p.column) for p in e.value.problems] == [
        ("b", "x"), ("c", "x"), ("d", "x"), ("a", "id")]
    assert e.value.problems[1].reason.startswith("wrong channel count: step 0 has 1 values")
    assert e.value.problems[0].source == str(src)


def test_import_parquet_missing_column_names_file(tmp_path):
    src = tmp_path / "q.parquet"
    pq.write_table(pa.table({"x": pa.array([[1.0]]), "label": ["a"]}), src)
    with pytest.raises(ValueError, match=r"q.parquet: no column\(s\) \['y'\]"):
        import_parquet([str(src)], str(tmp_path / "ds"))
