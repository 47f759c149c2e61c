"""What the importers share: split tokens in file names, label order, stratified splits
(common.py), and where sources come from (sources.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline.data.importers import resolve_source
from pipeline.data.importers.common import label_sort_key, stratified
from pipeline.data.importers.sources import split_of


@pytest.mark.parametrize("name, split", [
    ("X_TRAIN.ts", "train"), ("x_test.parquet", "test"), ("a-Val.ts", "val"),
    ("b_VALID.ts", "val"), ("c.validation.parquet", "val"), ("train.parquet", "train"),
    ("trainset.ts", None), ("mytest.ts", None), ("data.ts", None),
])
def test_split_tokens(name, split):
    assert split_of(f"/some/dir/{name}") == split


def test_numeric_aware_label_order():
    assert sorted(["10", "2", "b", "1", "a"], key=label_sort_key) == ["1", "2", "10", "a", "b"]


def test_resolve_source(tmp_path):
    path = resolve_source("builtin://JapaneseVowels/JapaneseVowels_TRAIN.ts")
    assert os.path.isfile(path) and path.endswith("JapaneseVowels_TRAIN.ts")
    with pytest.raises(FileNotFoundError) as e:
        resolve_source("builtin://Nope/x.ts")
    assert "builtin://Nope/x.ts" in str(e.value)
    assert "builtin://JapaneseVowels/JapaneseVowels_TEST.ts" in str(e.value)
    with pytest.raises(FileNotFoundError, match="source not found: .*missing.ts"):
        resolve_source(str(tmp_path / "missing.ts"))
    (tmp_path / "here.ts").write_text("")
    assert resolve_source(str(tmp_path / "here.ts")) == str(tmp_path / "here.ts")


def test_stratified_val_from_many_two_row_classes_is_not_empty():
    # given 52 classes of 2 rows (PigCVP's shape): rounding 2 x 0.2 per class gives 0 everywhere
    labels = [str(i // 2) for i in range(104)]
    val, train = stratified(np.arange(104), labels, [0.2], seed=0)
    # then val still gets round(104 x 0.2) rows, one from each of 21 classes, and every class keeps one
    assert len(val) == 21 and len(train) == 83
    assert len({labels[i] for i in val}) == 21
    assert {labels[i] for i in train} == set(labels)
    again, _ = stratified(np.arange(104), labels, [0.2], seed=0)
    assert again.tolist() == val.tolist()  # deterministic for a seed
