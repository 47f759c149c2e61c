"""From the canonical dataset to padded tensor batches on Ray Data workers."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import ray.data
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

from pipeline.data.dataset import read_split_parts, split_dir
from pipeline.storage import filesystem_for

T = TypeVar("T")
FOOTERS_PER_READER = 10  # Ray's RAY_DATA_PARQUET_FOOTER_BATCH_SIZE: footers one reader call reads
MAX_FOOTER_READERS = 32  # Ray's own default pool size
# Ray Data 2.60 lists a read's files in a task of its own that asks for one whole CPU: its
# planner sets no num_cpus there, and read_parquet's num_cpus reaches the read tasks only.
LISTING_CPUS = 1.0
# Materialized splits up to this size are read by the driver and put in the object store
# (`ray.data.from_arrow`): a read through Ray Data's tasks starts a worker process per task, 5 to 10 s
# of start-up on a 2-core machine for a split that pyarrow reads in milliseconds.
DRIVER_READ_BYTES = 64 * 2**20


def cpus_kept_for_data(reserve_cpus: float) -> float:
    """CPUs to keep free beside training or inference for Ray Data's tasks:
    `resources.reserve_cpus_for_data`, and at least the whole CPU its file listing asks for (with
    less free, a read next to workers that hold the rest waits for it forever)."""
    return max(LISTING_CPUS, reserve_cpus)


def footer_readers(num_files: int) -> int:
    """Actors Ray Data should start to read the Parquet footers of `num_files` files."""
    return max(1, min(MAX_FOOTER_READERS, math.ceil(num_files / FOOTERS_PER_READER)))


def with_footer_readers(num_files: int, read: Callable[[], T]) -> T:
    """`read()` (a `ray.data.read_parquet` call) with a footer-reader pool sized to the files.

    Ray Data 2.60 plans every Parquet read with a pool of 32 footer-reading actors, a new worker
    process each, whatever the file count: 3 to 6 s of process start-up on a 2-core machine for a
    split of one file, and again for every streamed epoch. One actor per 10 files (Ray's batch of
    footers per call) reads them all as fast. The pool size is read when the read is planned, so
    the variable is set only around the call; a value the user exported is kept.
    """
    name = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"
    if name in os.environ:
        return read()
    os.environ[name] = str(footer_readers(num_files))
    try:
        return read()
    finally:
        os.environ.pop(name, None)


def verified_scan() -> Any:
    """Ray Data's own Parquet scan options (buffered 8 MiB reads), plus the check of every page's
    CRC32 that recur writes (`storage.PARQUET_WRITE`): flipped bytes fail the read."""
    import pyarrow.dataset as pds

    return pds.ParquetFragmentScanOptions(use_buffered_stream=True, buffer_size=8 * 2**20,
                                          page_checksum_verification=True)


def parquet_files(fs: pafs.FileSystem, path: str) -> tuple[int, int]:
    """The number of Parquet files under `path` and their total size in bytes."""
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    sizes = [i.size or 0 for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")]
    return len(sizes), sum(sizes)


def count_parquet_files(fs: pafs.FileSystem, path: str) -> int:
    return parquet_files(fs, path)[0]


class TaskCollate(ArrowBatchCollateFn):
    """Arrow batch of canonical rows -> the task's tensors (`Task.collate`).

    Training on a GPU, the tensors are put in pinned (page-locked) host memory here, on Ray
    Data's collate thread, so the copy to the device runs asynchronously (`non_blocking`) while the
    previous step computes. `lengths` stays in ordinary memory: it never leaves the host.
    """

    def __init__(self, task: Any) -> None:
        super().__init__()
        self.task = task
        self.pin_memory = bool(task.cfg.resources.use_gpu) and torch.cuda.is_available()

    def __call__(self, batch: pa.Table) -> dict[str, torch.Tensor]:
        tensors = self.task.collate(batch)
        if self.pin_memory:
            return {k: v.pin_memory() if k != "lengths" and torch.is_tensor(v) else v
                    for k, v in tensors.items()}
        return tensors


def ray_dataset(root: str, split: str, *, materialize: bool = True, read_cpus: float = 1.0,
                driver_read_bytes: int = DRIVER_READ_BYTES) -> ray.data.Dataset:
    """A Ray Dataset over one split's Parquet files.

    Materialized, the split is read once into Ray's object store and every epoch reuses the blocks
    (an epoch over a small split drops from seconds to a fraction of a second); streamed, every
    epoch reads Parquet again, which is what data larger than the object store needs. Each read
    task asks Ray for `read_cpus`: streamed next to Train workers, a task asking for a whole CPU
    would wait forever on nodes where the workers left only part of one free. A materialized split
    of at most `driver_read_bytes` of Parquet is read here, by the driver, into the object store.
    """
    fs, path = filesystem_for(split_dir(root, split))  # s3://: the environment's endpoint and credentials
    files, size = parquet_files(fs, path)
    if materialize and size <= driver_read_bytes:
        # one block per part file, in name order, pages checked as a Ray Data read checks them
        return ray.data.from_arrow(read_split_parts(root, split))
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order
    context.execution_options.preserve_order = True  # blocks in file order on every run: reproducible
    try:
        ds = with_footer_readers(files,
                                 lambda: ray.data.read_parquet(path, filesystem=fs, num_cpus=read_cpus,
                                                               fragment_scan_options=verified_scan()))
        return ds.materialize() if materialize else ds
    finally:
        context.execution_options.preserve_order = saved
