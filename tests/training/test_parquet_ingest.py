"""A split of many Parquet files read whole and in order, on a real local Ray.

Given a train split of 23 part files (and a non-Parquet marker file), when recur reads it through
Ray Data's read tasks, then the footer-reader pool variable is set only while the read is planned,
the marker is not counted, and every row arrives once, in file order; when the split is small
enough for the driver to read, the same rows arrive in the same order, one block per part file,
and a flipped byte in a page fails the read, naming the file.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.dataset import DatasetError
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

    expected = [f"r{p:02d}-{i}" for p in range(23) for i in range(4)]
    rows = ray_dataset(str(tmp_path / "data"), "train", driver_read_bytes=0).take_all()  # Ray's read tasks
    assert [r["id"] for r in rows] == expected
    assert VARIABLE not in os.environ

    # under DRIVER_READ_BYTES: the driver reads the parts and puts them in the object store
    small = ray_dataset(str(tmp_path / "data"), "train")
    assert small.num_blocks() == 23 and [r["id"] for r in small.take_all()] == expected
    # streamed (not materialized), Ray's read tasks read it whatever its size
    assert ray_dataset(str(tmp_path / "data"), "train", materialize=False).count() == 92


def test_a_corrupt_page_fails_the_read_by_the_driver(ray_local, tmp_path):
    split = tmp_path / "data" / "train"
    split.mkdir(parents=True)
    path = split / "part-00000.parquet"
    values = [float(i) for i in range(2000)]
    pq.write_table(pa.table({"id": [str(i) for i in range(2000)], "v": values}), path,
                   write_page_checksum=True, compression="none")
    data = bytearray(path.read_bytes())
    at = data.find(np.array(values[1000:1002], dtype=np.float64).tobytes())
    data[at] ^= 0xFF  # one flipped bit pattern inside a data page of column v
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=f"{path}: not a readable Parquet file.*CRC checksum"):
        ray_dataset(str(tmp_path / "data"), "train")
