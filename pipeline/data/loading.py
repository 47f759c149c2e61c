"""From the canonical dataset to padded tensor batches on Ray Data workers."""

from __future__ import annotations

import pyarrow as pa
import ray.data
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

from pipeline.data.contract import split_dir
from pipeline.data.preprocess import Preprocessing, collate_table


class SequenceCollate(ArrowBatchCollateFn):
    """Arrow batch of canonical rows -> {"x": x_BTC, "lengths": lengths_B, "y": y_B}."""

    def __init__(self, pre: Preprocessing) -> None:
        super().__init__()
        self.pre = pre

    def __call__(self, batch: pa.Table) -> dict[str, torch.Tensor]:
        return collate_table(batch, self.pre)


def ray_dataset(root: str, split: str) -> ray.data.Dataset:
    """A Ray Dataset over one split's Parquet files (only the columns training needs)."""
    return ray.data.read_parquet(split_dir(root, split), columns=["id", "x", "y"])
