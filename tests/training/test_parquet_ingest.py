"""A split of many Parquet files read whole and in order through Ray Data, on a real local Ray.

Given a train split of 23 part files (and a non-Parquet marker file), when recur reads it, then
the footer-reader pool variable is set only while the read is planned, the marker is not counted,
and every row arrives once, in file order.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.loading import count_parquet_files, ray_dataset

VARIABLE = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"


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
