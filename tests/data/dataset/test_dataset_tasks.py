"""The dataset contract beyond classify: token features, list-typed targets, vocabularies.

Given small tables in each task's schema, when they are written, then the manifest records what
later steps need (vocabularies, no normalization for tokens), the data hash covers every column,
and validation names the row, the column and what was expected.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import ValidationError

from pipeline.data.dataset import (
    SPECIALS,
    DatasetError,
    Manifest,
    compute_data_hash,
    read_manifest,
    schema_for,
    write_dataset,
)
from pipeline.data.validate import find_row_problems, validate_dataset

VOCAB = [*SPECIALS, "a", "b", "c"]


def _tokens(rows: list[list[int]]) -> pa.Array:
    return pa.array(rows, pa.list_(pa.int32()))


def _seq2seq_tables() -> dict[str, pa.Table]:
    def table(prefix: str, xs, ys):
        return pa.table({"id": [f"{prefix}{i}" for i in range(len(xs))], "x": _tokens(xs), "y": _tokens(ys)})

    return {
        "train": table("t", [[4, 5], [6, 4, 5]], [[4], [5, 6]]),
        "val": table("v", [[5]], [[6]]),
        "test": table("s", [[4, 6]], [[4, 6]]),
    }


def _write(root, tables, **kw):
    return write_dataset(str(root), tables, name="toy", task=kw.pop("task", "seq2seq"), labels=[],
                         sources=[], import_params={}, feature_kind="token", vocab=VOCAB,
                         target_vocab=kw.pop("target_vocab", VOCAB), **kw)


def test_token_dataset_round_trips_with_vocabularies_and_no_normalization(tmp_path):
    manifest = _write(tmp_path / "d", _seq2seq_tables())
    assert manifest.feature.kind == "token" and manifest.normalization is None
    assert read_manifest(str(tmp_path / "d")) == manifest
    assert manifest.lengths["train"].max == 3 and manifest.vocab[:4] == list(SPECIALS)
    report = validate_dataset(str(tmp_path / "d"))
    assert report.ok, report.format()


def test_data_hash_covers_token_targets():
    tables = _seq2seq_tables()
    changed = dict(tables)
    changed["test"] = tables["test"].set_column(2, "y", _tokens([[4, 5]]))
    assert compute_data_hash(tables) == compute_data_hash(_seq2seq_tables())
    assert compute_data_hash(tables) != compute_data_hash(changed)


def test_vocabularies_must_start_with_the_special_tokens(tmp_path):
    with pytest.raises(ValidationError, match="must start with"):
        _write(tmp_path / "d", _seq2seq_tables(), target_vocab=["a", "b"])


def test_a_token_task_without_vocab_is_refused():
    with pytest.raises(ValidationError, match="need a vocab"):
        Manifest.model_validate({
            "name": "x", "task": "lm", "feature": {"kind": "token", "num_channels": 1}, "labels": [],
            "splits": {s: {"rows": 1, "files": []} for s in ("train", "val", "test")},
            "normalization": None, "lengths": {}, "data_hash": "0" * 64, "sources": [],
            "quarantined": {}, "import_params": {}, "created_at": "now",
        })


def test_missing_target_column_names_it(tmp_path):
    tables = {s: t.drop_columns(["y"]) for s, t in _seq2seq_tables().items()}
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['y'\]"):
        _write(tmp_path / "d", tables)


def test_token_ids_outside_the_vocabulary_are_reported_per_row():
    table = pa.table({"id": ["r0", "r1", "r2"], "x": _tokens([[4], [9], []]), "y": _tokens([[4], [4], [4]])})
    problems = [p for _, p in find_row_problems(table, split="train", num_channels=1, num_labels=None,
                                                task="seq2seq", feature_kind="token", vocab_size=7,
                                                target_vocab_size=7)]
    assert [(p.row_id, p.column) for p in problems] == [("r1", "x"), ("r2", "x")]
    assert "token id 9 outside the vocabulary (expected 0..6)" in problems[0].reason
    assert problems[1].reason == "empty sequence"


def test_tag_targets_need_one_label_per_step():
    table = pa.table({"id": ["r0", "r1"], "x": _tokens([[4, 5], [4, 5]]),
                      "y": pa.array([[0, 1], [0]], pa.list_(pa.int64()))})
    problems = [p for _, p in find_row_problems(table, split="val", num_channels=1, num_labels=2,
                                                task="tag", feature_kind="token", vocab_size=7)]
    assert [(p.row_id, p.reason) for p in problems] == [
        ("r1", "1 tags for 2 steps of x (expected one tag per step)")]


def test_forecast_targets_need_the_horizon_and_finite_values():
    y_type = schema_for("forecast").field("y").type
    table = pa.table({
        "id": ["r0", "r1", "r2"],
        "x": pa.array([[[1.0]], [[2.0]], [[3.0]]], schema_for("forecast").field("x").type),
        "y": pa.array([[[1.0], [2.0]], [[1.0]], [[1.0], [float("nan")]]], y_type),
    })
    problems = [p for _, p in find_row_problems(table, split="test", num_channels=1, num_labels=None,
                                                task="forecast", horizon=2)]
    assert [(p.row_id, p.reason) for p in problems] == [
        ("r1", "1 horizon steps, expected 2"), ("r2", "NaN or inf in y")]
