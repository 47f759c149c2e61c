"""Parquet splits read through Ray Data with a footer-reader pool sized to the files.

Given a split stored as one file or as many, when recur plans the read, then Ray Data is asked for
one footer-reading actor per 10 files (at least 1, at most Ray's 32) instead of its fixed 32, only
for that call, a value the user exported wins, and every row arrives in file order.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.loading import count_parquet_files, footer_readers, ray_dataset, with_footer_readers

VARIABLE = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"


def test_one_reader_per_ten_files_within_rays_bounds():
    assert [footer_readers(n) for n in (0, 1, 10, 11, 95, 320, 5000)] == [1, 1, 1, 2, 10, 32, 32]


def test_the_pool_size_is_set_for_the_call_only_and_a_users_value_wins(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert with_footer_readers(25, lambda: os.environ.get(VARIABLE)) == "3"
    assert VARIABLE not in os.environ
    monkeypatch.setenv(VARIABLE, "8")
    assert with_footer_readers(25, lambda: os.environ.get(VARIABLE)) == "8"
    assert os.environ[VARIABLE] == "8"


def test_a_split_of_many_files_is_read_whole_and_in_order(ray_local, tmp_path, monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    split = tmp_path / "data" / "train"
    split.mkdir(parents=True)
    for part in range(23):
        ids = [f"r{part:02d}-{i}" for i in range(4)]
        pq.write_table(pa.table({"id": ids, "y": [part] * 4}), split / f"part-{part:05d}.parquet")
    (split / "_SUCCESS").write_text("")  # not Parquet: not counted
    assert count_parquet_files(pa.fs.LocalFileSystem(), str(split)) == 23

    rows = ray_dataset(str(tmp_path / "data"), "train").take_all()
    assert [r["id"] for r in rows] == [f"r{p:02d}-{i}" for p in range(23) for i in range(4)]
    assert VARIABLE not in os.environ
