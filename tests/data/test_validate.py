"""Tests for contract checks: every kind of bad row is reported with its row id and column."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.dataset import make_table, write_dataset
from pipeline.data.importers.ts import import_ts
from pipeline.data.validate import DataValidationError, Problem, check_rows, validate_dataset

GOOD = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)


def by_row(problems: list[Problem]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for p in problems:
        out.setdefault(p.row_id, []).append((p.column, p.reason))
    return out


def test_clean_table_has_no_problems():
    t = make_table(["a", "b"], [GOOD, GOOD[:1]], [0, 1])
    assert check_rows(t, split="train", num_channels=2, num_labels=2) == []


def test_each_kind_of_bad_row_is_reported_with_row_id_and_column():
    # Given one good row and one row per kind of contract violation
    nan = GOOD.copy()
    nan[1, 0] = np.nan
    inf = GOOD.copy()
    inf[0, 1] = np.inf
    t = make_table(
        ["good", "nan", "inf", "empty", "wide", "label", "good"],
        [GOOD, nan, inf, np.zeros((0, 2), np.float32), np.ones((2, 3), np.float32), GOOD, GOOD],
        [0, 1, 0, 1, 0, 5, 1],
    )
    # When checked
    problems = check_rows(t, split="val", num_channels=2, num_labels=2)
    rows = by_row(problems)
    # Then each bad row is reported once with the right column and reason
    assert set(rows) == {"nan", "inf", "empty", "wide", "label", "good"}
    assert rows["nan"] == [("x", "NaN in x at step 1, channel 0")]
    assert rows["inf"] == [("x", "inf in x at step 0, channel 1")]
    assert rows["empty"] == [("x", "empty sequence")]
    wide = "wrong channel count: step 0 has 3 values, expected 2 (2 steps in all)"
    assert rows["wide"] == [("x", wide)]
    assert rows["label"] == [("y", "unknown label index 5 (expected 0..1)")]
    # And only the second "good" is a duplicate
    assert rows["good"] == [("id", "duplicate id (first at row 0)")]
    assert all(p.split == "val" for p in problems)


def test_null_values_ids_and_labels():
    t = pa.table({
        "id": pa.array(["a", None, "", "d"], pa.string()),
        "x": pa.array([[[1.0]], [[1.0]], [[1.0]], None], pa.list_(pa.list_(pa.float32()))),
        "y": pa.array([None, 0, 0, 0], pa.int64()),
    })
    rows = by_row(check_rows(t, split="train", num_channels=1, num_labels=1))
    assert rows == {
        "a": [("y", "y is null")],
        "<row 1>": [("id", "id is null")],
        "<row 2>": [("id", "id is empty")],
        "d": [("x", "x is null")],
    }


def test_null_step_and_null_value_inside_x():
    t = pa.table({
        "id": ["s", "v"],
        "x": pa.array([[[1.0], None], [[None]]], pa.list_(pa.list_(pa.float32()))),
        "y": pa.array([0, 0], pa.int64()),
    })
    rows = by_row(check_rows(t, split="train", num_channels=1, num_labels=1))
    assert rows["s"] == [("x", "wrong channel count: step 1 has a null step, expected 1")]
    assert rows["v"] == [("x", "NaN in x at step 0, channel 0")]


def test_flat_x_column_is_checked_as_one_channel():
    t = pa.table({
        "id": ["a", "b"],
        "x": pa.array([[1.0, 2.0], [float("nan")]], pa.list_(pa.float32())),
        "y": pa.array([0, 0], pa.int64()),
    })
    assert check_rows(t, split="train", num_channels=1, num_labels=1) == [
        Problem("train", "b", "x", "NaN in x at step 0, channel 0")]
    assert by_row(check_rows(t, split="train", num_channels=2, num_labels=1))["a"][0][1].startswith(
        "wrong channel count")


def test_missing_column_is_reported():
    t = pa.table({"id": ["a"], "x": pa.array([[[1.0]]], pa.list_(pa.list_(pa.float32())))})
    assert check_rows(t, split="test", num_channels=1, num_labels=1) == [
        Problem("test", "*", "y", "column is missing")]


def test_data_validation_error_lists_up_to_20_problems():
    problems = [Problem("train", f"f:{i}", "x", "NaN in x", source=f"f.ts:{i + 5}")
                for i in range(25)]
    err = DataValidationError(problems)
    text = str(err)
    assert err.problems == problems
    assert "train row 'f:0' (f.ts:5) x: NaN in x" in text
    assert "f:19" in text and "f:20" not in text
    assert "... and 5 more" in text
    # And it survives pickling (Ray sends exceptions between processes)
    again = pickle.loads(pickle.dumps(err))
    assert again.problems == problems and str(again) == text


@pytest.fixture
def imported(tmp_path) -> str:
    root = str(tmp_path / "ds")
    import_ts(["builtin://JapaneseVowels/JapaneseVowels_TRAIN.ts",
               "builtin://JapaneseVowels/JapaneseVowels_TEST.ts"], root)
    return root


def test_validate_imported_dataset_is_ok(imported):
    report = validate_dataset(imported)
    assert report.ok, report.format()
    assert report.rows_checked == {"train": 216, "val": 54, "test": 370}
    assert report.hash_ok and report.actual_hash == report.expected_hash
    assert "OK" in report.format()


def test_tampered_value_breaks_the_hash(imported):
    # Given one value of the test split rewritten
    path = os.path.join(imported, "test", "part-00000.parquet")
    table = pq.read_table(path)
    x = table.column("x").to_pylist()
    x[3][2][5] += 0.25
    pq.write_table(table.set_column(1, "x", pa.array(x, table.schema.field("x").type)), path)
    # When validated
    report = validate_dataset(imported)
    # Then the rows are still valid but the hash no longer matches
    assert report.problems == []
    assert not report.hash_ok and not report.ok
    assert "data hash mismatch" in report.format()


def test_validate_reports_bad_rows_and_row_counts_with_file(tmp_path):
    # Given a dataset whose val file gets a NaN row appended after writing
    root = tmp_path / "ds"
    good = make_table(["a", "b"], [GOOD, GOOD], [0, 1])
    write_dataset(str(root), {"train": good, "val": good, "test": good}, name="t",
                  task="classify", labels=["p", "q"], sources=[], import_params={})
    bad = GOOD.copy()
    bad[0, 0] = np.nan
    path = root / "val" / "part-00000.parquet"
    pq.write_table(pa.concat_tables([good, make_table(["c"], [bad], [1])]), path)
    report = validate_dataset(str(root))
    assert not report.ok
    assert [(p.split, p.row_id, p.column) for p in report.problems] == [
        ("val", "c", "x"), ("val", "*", "rows")]
    assert report.problems[0].source == str(path)
    text = report.format()
    assert str(path) in text and "'c'" in text and "manifest says 2 rows" in text
