"""The .ts importer: canonical dataset, splits, labels, bad rows (the skeleton of common.py)."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest

from pipeline.data.dataset import DatasetError, read_manifest, read_quarantine, read_split, x_to_numpy
from pipeline.data.importers import import_dataset
from pipeline.data.importers.ts import import_ts
from pipeline.data.validate import DataValidationError, validate_dataset

JV = ["builtin://JapaneseVowels/JapaneseVowels_TRAIN.ts",
      "builtin://JapaneseVowels/JapaneseVowels_TEST.ts"]


def ts_file(tmp_path, name: str, cases: list[str], labels: str = "a b c") -> str:
    path = tmp_path / name
    path.write_text(
        "@problemName Toy\n@univariate true\n@equalLength false\n"
        f"@classLabel true {labels}\n@data\n" + "".join(c + "\n" for c in cases)
    )
    return str(path)


def labels_of(root: str, split: str, manifest) -> list[str]:
    return [manifest.labels[i] for i in read_split(root, split).column("y").to_pylist()]


# --------------------------------------------------------------------------------------------
# JapaneseVowels


@pytest.fixture(scope="module")
def jv(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("jv") / "ds")
    return root, import_ts(JV, root)


def test_japanese_vowels_manifest(jv):
    root, m = jv
    # Then labels, channels and split sizes follow the shipped files
    assert m.labels == [str(i) for i in range(1, 10)]
    assert m.feature.num_channels == 12
    assert m.name == "JapaneseVowels"
    assert m.splits["test"].rows == 370
    assert m.splits["train"].rows + m.splits["val"].rows == 270
    assert m.lengths["test"].max == 29 and m.lengths["train"].min >= 7
    assert m.quarantined == {}
    assert [s.path for s in m.sources] == JV
    assert all(s.size > 0 and len(s.sha256) == 64 for s in m.sources)
    assert m.import_params == {"format": "ts", "missing": "error", "val_fraction": 0.2,
                               "test_fraction": 0.2, "seed": 0, "on_invalid": "fail"}
    # And ids are "<stem>:<case index>", covering every case exactly once
    ids = set(read_split(root, "train").column("id").to_pylist()) | set(
        read_split(root, "val").column("id").to_pylist())
    assert ids == {f"JapaneseVowels_TRAIN:{i}" for i in range(270)}
    assert read_split(root, "test").column("id").to_pylist()[:2] == [
        "JapaneseVowels_TEST:0", "JapaneseVowels_TEST:1"]


def test_japanese_vowels_val_is_carved_from_train_stratified(jv):
    root, m = jv
    # 30 cases per class in the train file, 20% of each class goes to val
    assert Counter(labels_of(root, "val", m)) == {str(i): 6 for i in range(1, 10)}
    assert Counter(labels_of(root, "train", m)) == {str(i): 24 for i in range(1, 10)}


def test_japanese_vowels_first_case_values_and_label(jv):
    root, m = jv
    train, val = read_split(root, "train"), read_split(root, "val")
    both = {i: (x, y) for t in (train, val) for i, x, y in zip(
        t.column("id").to_pylist(), x_to_numpy(t.column("x")), t.column("y").to_pylist())}
    x, y = both["JapaneseVowels_TRAIN:0"]
    assert x.shape == (20, 12)
    assert x[0, 0] == pytest.approx(1.860936) and x[0, 1] == pytest.approx(-0.207383)
    assert m.labels[y] == "1"


def test_normalization_is_fit_on_train_only(jv):
    root, m = jv
    steps = np.concatenate(x_to_numpy(read_split(root, "train").column("x"))).astype(np.float64)
    np.testing.assert_allclose(m.normalization.mean, steps.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.normalization.std, steps.std(axis=0), rtol=1e-9)
    everything = np.concatenate([
        np.concatenate(x_to_numpy(read_split(root, s).column("x")))
        for s in ("train", "val", "test")
    ])
    assert not np.allclose(m.normalization.mean, everything.mean(axis=0), rtol=1e-6, atol=1e-9)


def test_import_is_deterministic(jv, tmp_path):
    root, m = jv
    # Given the same import into another folder, naming the builtin folder instead of the files
    other = str(tmp_path / "again")
    m2 = import_dataset("ts", ["builtin://JapaneseVowels"], other)
    # Then the data hash and the Parquet bytes are identical
    assert m2.data_hash == m.data_hash
    for split in ("train", "val", "test"):
        with open(os.path.join(root, split, "part-00000.parquet"), "rb") as a, \
                open(os.path.join(other, split, "part-00000.parquet"), "rb") as b:
            assert a.read() == b.read()
    # And another seed gives another val split (and so another hash)
    m3 = import_ts(JV, str(tmp_path / "seed1"), seed=1)
    assert m3.data_hash != m.data_hash
    assert m3.splits["val"].rows == 54


# --------------------------------------------------------------------------------------------
# Splits


def test_file_without_split_token_is_split_three_ways(tmp_path):
    # Given one file with 10 cases per class and no split token in its name
    cases = [f"{i},{i + 1},{i + 2}:{lab}" for lab in "abc" for i in range(10)]
    path = ts_file(tmp_path, "pool.ts", cases)
    root = str(tmp_path / "ds")
    # When imported with 20% val and 30% test
    m = import_ts([path], root, val_fraction=0.2, test_fraction=0.3, seed=3)
    # Then each class is split 5 / 2 / 3
    assert {s: m.splits[s].rows for s in ("train", "val", "test")} == {
        "train": 15, "val": 6, "test": 9}
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        assert Counter(labels_of(root, split, m)) == {"a": n, "b": n, "c": n}
    # And rows keep their source order within a split, and no row is lost or repeated
    ids = [read_split(root, s).column("id").to_pylist() for s in ("train", "val", "test")]
    for part in ids:
        assert part == sorted(part, key=lambda i: int(i.split(":")[1]))
    assert sorted((i for part in ids for i in part), key=lambda i: int(i.split(":")[1])) == [
        f"pool:{k}" for k in range(30)]
    assert m.name == "Toy"


def test_single_row_class_stays_in_train(tmp_path):
    train = ts_file(tmp_path, "toy_TRAIN.ts", ["1,2:a"] * 5 + ["3,4:b"])
    test = ts_file(tmp_path, "toy_TEST.ts", ["1,2:a", "3,4:b"])
    root = str(tmp_path / "ds")
    m = import_ts([train, test], root)
    assert Counter(labels_of(root, "train", m)) == {"a": 4, "b": 1}
    assert Counter(labels_of(root, "val", m)) == {"a": 1}


def test_explicit_val_file_is_used_as_is(tmp_path):
    train = ts_file(tmp_path, "toy_train.ts", ["1,2:a", "3,4:b"] * 3)
    val = ts_file(tmp_path, "toy-VALID.ts", ["1,2:a"])
    test = ts_file(tmp_path, "toy_Test.ts", ["3,4:b"])
    m = import_ts([train, val, test], str(tmp_path / "ds"))
    assert {s: m.splits[s].rows for s in ("train", "val", "test")} == {
        "train": 6, "val": 1, "test": 1}


def test_empty_split_is_a_clear_error(tmp_path):
    train = ts_file(tmp_path, "toy_TRAIN.ts", ["1,2:a", "3,4:b"] * 3)
    with pytest.raises(DatasetError, match=r"split\(s\) \['test'\] would be empty"):
        import_ts([train], str(tmp_path / "ds"))
    assert not os.path.exists(tmp_path / "ds" / "manifest.json")


def test_a_regression_file_is_refused_as_one_and_not_by_its_targets(tmp_path):
    # UEA's extrinsic regression sets (aeon's CardanoSentiment) end each case in a number; before,
    # each test target was reported as an unknown label, 28 of them
    path = tmp_path / "reg_TRAIN.ts"
    path.write_text("@problemName Reg\n@univariate true\n@targetLabel true\n@data\n"
                    "1,2,3:0.504\n4,5,6:-0.101\n")
    with pytest.raises(DatasetError, match=r"reg_TRAIN.ts: @targetLabel true: each case ends in a "
                                           r"numeric regression target"):
        import_ts([str(path)], str(tmp_path / "ds"))
    assert not os.path.exists(tmp_path / "ds")


# --------------------------------------------------------------------------------------------
# Invalid rows


def invalid_sources(tmp_path):
    """Train declares a, b; test declares a, b, c and has one 'c' row and one '?' row."""
    train = ts_file(tmp_path, "bad_TRAIN.ts", ["1,2,3:a", "4,5,6:b"] * 4, labels="a b")
    test = ts_file(tmp_path, "bad_TEST.ts",
                   ["1,2,3:a", "4,?,6:b", "7,8,9:c", "1,1,1:b"], labels="a b c")
    return train, test


def test_on_invalid_fail_lists_every_problem_and_writes_nothing(tmp_path):
    train, test = invalid_sources(tmp_path)
    out = tmp_path / "ds"
    with pytest.raises(DataValidationError) as e:
        import_ts([train, test], str(out))
    problems = e.value.problems
    assert [(p.split, p.row_id, p.column) for p in problems] == [
        ("test", "bad_TEST:1", "x"), ("test", "bad_TEST:2", "y")]
    assert problems[0].reason == "NaN in x at step 1, channel 0"
    assert problems[1].reason == "unknown label 'c' (known: a, b)"
    assert problems[0].source == f"{test}:7" and problems[1].source == f"{test}:8"
    text = str(e.value)
    assert "bad_TEST:1" in text and "bad_TEST:2" in text and "nothing was written" in text
    assert "missing='zero'" in text
    assert not out.exists()


def test_on_invalid_quarantine_keeps_good_rows_and_records_bad_ones(tmp_path):
    train, test = invalid_sources(tmp_path)
    root = str(tmp_path / "ds")
    m = import_ts([train, test], root, on_invalid="quarantine")
    # Then the bad rows are in the quarantine file with their reasons
    q = read_quarantine(root)
    assert q.column("id").to_pylist() == ["bad_TEST:1", "bad_TEST:2"]
    assert q.column("split").to_pylist() == ["test", "test"]
    reasons = q.column("reason").to_pylist()
    assert reasons[0] == "x: NaN in x at step 1, channel 0"
    assert reasons[1] == "y: unknown label 'c' (known: a, b)"
    assert q.column("label").to_pylist() == ["b", "c"]
    assert np.isnan(q.column("x").to_pylist()[0][1][0])
    # And the manifest counts them per split
    assert m.quarantined == {"test": 2}
    assert read_manifest(root).quarantined == {"test": 2}
    assert m.import_params["on_invalid"] == "quarantine"
    # And every good row is kept
    assert read_split(root, "test").column("id").to_pylist() == ["bad_TEST:0", "bad_TEST:3"]
    assert m.splits["train"].rows + m.splits["val"].rows == 8
    assert validate_dataset(root).ok


def test_missing_fill_policy_makes_the_nan_row_valid(tmp_path):
    train, test = invalid_sources(tmp_path)
    root = str(tmp_path / "ds")
    m = import_ts([train, test], root, missing="interpolate", on_invalid="quarantine")
    assert m.quarantined == {"test": 1}  # only the unknown label is left
    x = dict(zip(read_split(root, "test").column("id").to_pylist(),
                 x_to_numpy(read_split(root, "test").column("x"))))
    np.testing.assert_array_equal(x["bad_TEST:1"][:, 0], [4, 5, 6])


def test_undeclared_label_in_train_file_is_quarantined(tmp_path):
    train = ts_file(tmp_path, "u_TRAIN.ts", ["1:a", "2:b"] * 3 + ["9:zzz"], labels="a b")
    test = ts_file(tmp_path, "u_TEST.ts", ["1:a", "2:b"], labels="a b")
    root = str(tmp_path / "ds")
    m = import_ts([train, test], root, on_invalid="quarantine")
    assert m.labels == ["a", "b"]
    assert read_quarantine(root).column("id").to_pylist() == ["u_TRAIN:6"]
    assert m.quarantined == {"train": 1}


# --------------------------------------------------------------------------------------------
# Parameters


def test_unknown_format_and_bad_params(tmp_path):
    with pytest.raises(ValueError, match="unknown import format"):
        import_dataset("xlsx", JV, str(tmp_path / "a"))
    with pytest.raises(ValueError, match="sum to less than 1"):
        import_ts(JV, str(tmp_path / "b"), val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="missing must be one of"):
        import_ts(JV, str(tmp_path / "c"), missing="mean")
