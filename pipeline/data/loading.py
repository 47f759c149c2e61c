"""From the canonical dataset to padded tensor batches on Ray Data workers."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import ray.data
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

from pipeline.data.contract import filesystem, split_dir


class TaskCollate(ArrowBatchCollateFn):
    """Arrow batch of canonical rows -> the task's tensors (`Task.collate`)."""

    def __init__(self, task: Any) -> None:
        super().__init__()
        self.task = task

    def __call__(self, batch: pa.Table) -> dict[str, torch.Tensor]:
        return self.task.collate(batch)


def ray_dataset(root: str, split: str, *, materialize: bool = True,
                read_cpus: float = 1.0) -> ray.data.Dataset:
    """A Ray Dataset over one split's Parquet files.

    Materialized, the split is read once into Ray's object store and every epoch reuses the blocks
    (an epoch over a small split drops from seconds to a fraction of a second); streamed, every
    epoch reads Parquet again, which is what data larger than the object store needs. Each read
    task asks Ray for `read_cpus`: streamed next to Train workers, a task asking for a whole CPU
    would wait forever on nodes where the workers left only part of one free.
    """
    fs, path = filesystem(split_dir(root, split))  # s3://: the environment's endpoint and credentials
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order
    context.execution_options.preserve_order = True  # blocks in file order on every run: reproducible
    try:
        ds = ray.data.read_parquet(path, filesystem=fs, num_cpus=read_cpus)
        return ds.materialize() if materialize else ds
    finally:
        context.execution_options.preserve_order = saved
