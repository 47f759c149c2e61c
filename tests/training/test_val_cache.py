"""Validation batches kept in the worker after the first epoch, on a real Ray Data split.

Given the toy dataset's val split as Ray Data streams it to a worker, when a task evaluates it
twice, then the second pass reuses the first pass's batches (no Ray Data execution) with the
same contents; when the split does not fit `train.cache_val_mb`, every pass streams it again.
"""

from __future__ import annotations

import torch

from pipeline.config import RecurConfig
from pipeline.data.dataset import read_manifest
from pipeline.data.loading import ray_dataset
from pipeline.data.preprocess import Preprocessing
from pipeline.tasks import build_task


def _passes(root, cache_mb: float):
    pre = Preprocessing.from_manifest(read_manifest(str(root)))
    task = build_task(RecurConfig(data={"root": str(root)}, train={"cache_val_mb": cache_mb}), pre)
    iterator = ray_dataset(str(root), "val").iterator()
    first_source = task.eval_batches(iterator, batch_size=8)
    first = list(first_source)
    second_source = task.eval_batches(iterator, batch_size=8)
    return first, first_source, list(second_source), second_source


def test_val_batches_are_kept_after_the_first_pass(ray_local, toy_dataset):
    first, _, second, second_source = _passes(toy_dataset, 256.0)
    assert isinstance(second_source, list)  # the kept batches, no new Ray Data execution
    assert len(first) == len(second) == 4  # 32 val rows in batches of 8
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))


def test_a_val_split_over_the_limit_is_streamed_every_epoch(ray_local, toy_dataset):
    first, _, second, second_source = _passes(toy_dataset, 1e-4)  # about 100 bytes: nothing fits
    assert not isinstance(second_source, list) and len(first) == len(second) == 4
    assert sum(len(b["x"]) for b in second) == 32  # every row, every pass
