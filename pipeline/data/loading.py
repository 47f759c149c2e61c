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


def ray_dataset(root: str, split: str, *, materialize: bool = True) -> ray.data.Dataset:
    """A Ray Dataset over one split's Parquet files (only the columns training needs).

    Materialized, the split is read once into Ray's object store and every epoch reuses the blocks
    (an epoch over a small split drops from seconds to a fraction of a second); streamed, every
    epoch reads Parquet again, which is what data larger than the object store needs.
    """
    ds = ray.data.read_parquet(split_dir(root, split)).select_columns(["id", "x", "y"])
    return ds.materialize() if materialize else ds
