"""Length-bucketed training batches (data.bucket_by_length), on a real local Ray.

Given a split's rows in pools of any sizes, when they are bucketed, then every row comes once, the
epoch has ceil(rows / batch_size) batches of which only the last may be short, and rows of one
length keep their order. Given the toy dataset read through Ray Data as training reads it, when a
worker's shard is bucketed, then every row comes once per epoch, batches hold less padding than
random ones, two shards of equal rows give equal step counts, and the order is a function of the
seed and the epoch.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import RecurConfig
from pipeline.data.bucketing import bucket_tables, bucketed_batches, collated_ahead, padding_fraction
from pipeline.data.dataset import read_manifest
from pipeline.data.loading import ray_dataset
from pipeline.data.preprocess import Preprocessing
from pipeline.tasks import build_task

ROWS = 96  # the toy dataset's train split


def _table(lengths: list[int], start: int = 0) -> pa.Table:
    return pa.table({"id": [f"r{start + i}" for i in range(len(lengths))],
                     "x": [[[0.0]] * n for n in lengths]})


def _task(root, *, bucket: bool, batch_size: int = 8, bucket_batches: int = 3):
    cfg = RecurConfig(data={"task": "classify", "root": str(root), "batch_size": batch_size,
                            "bucket_by_length": bucket, "bucket_batches": bucket_batches})
    return build_task(cfg, Preprocessing.from_manifest(read_manifest(str(root))))


def _ids(shard, *, batch_size: int, epoch: int, seed: int) -> list[list[str]]:
    """Row ids of each bucketed batch (the collate keeps the Arrow rows)."""
    batches = bucketed_batches(shard, lambda t: t, batch_size=batch_size, bucket_batches=3, epoch=epoch,
                               seed=seed)
    return [b.column("id").to_pylist() for b in batches]


def test_pools_of_any_size_give_ceil_rows_over_batch_size_batches_and_only_the_last_short():
    rng = np.random.default_rng(0)
    sizes = [30, 17, 30, 5, 30, 3]  # what a reader might hand over; 115 rows in all
    pools, start = [], 0
    for size in sizes:
        pools.append(_table(rng.integers(1, 50, size).tolist(), start))
        start += size

    batches = list(bucket_tables(pools, batch_size=10, rng=np.random.default_rng(1)))

    assert len(batches) == math.ceil(115 / 10)
    assert [b.num_rows for b in batches[:-1]] == [10] * 11 and batches[-1].num_rows == 5
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    assert sorted(ids) == sorted(f"r{i}" for i in range(115))


def test_rows_of_one_length_keep_their_order():
    pools = [_table([12] * 20), _table([12] * 7, start=20)]
    batches = list(bucket_tables(pools, batch_size=8, rng=np.random.default_rng(0)))
    assert [i for b in batches for i in b.column("id").to_pylist()] == [f"r{i}" for i in range(27)]


def test_batches_are_drawn_and_collated_off_the_training_thread_in_order():
    drawn_on, collated_on = set(), set()

    def items():
        for i in range(20):
            drawn_on.add(threading.current_thread().name)
            yield i

    def collate(i):
        collated_on.add(threading.current_thread().name)
        return i * 10

    assert list(collated_ahead(items(), collate, ahead=2)) == [i * 10 for i in range(20)]
    assert drawn_on == collated_on == {"recur-collate"}


def test_an_error_while_drawing_comes_after_the_batches_before_it():
    def items():
        yield from range(3)
        raise ValueError("part-00001.parquet: bad row")

    got = []
    with pytest.raises(ValueError, match="part-00001.parquet: bad row"):
        for batch in collated_ahead(items(), lambda i: i, ahead=2):
            got.append(batch)
    assert got == [0, 1, 2]


def test_leaving_an_epoch_early_stops_the_thread_and_closes_the_source():
    drawn, closed = [], threading.Event()

    def items():
        try:
            for i in range(1000):
                drawn.append(i)
                yield i
        finally:
            closed.set()

    batches = collated_ahead(items(), lambda i: i, ahead=2)
    assert [next(batches) for _ in range(3)] == [0, 1, 2]
    batches.close()
    assert closed.is_set()
    assert len(drawn) <= 3 + 2 + 1  # taken, queued, one in hand: nothing read beyond that
    assert not any(t.name == "recur-collate" for t in threading.enumerate())


def test_every_row_comes_once_per_epoch_in_ceil_rows_over_batch_size_batches(ray_local, toy_dataset):
    ds = ray_dataset(str(toy_dataset), "train")
    every_id = sorted(row["id"] for row in ds.select_columns(["id"]).take_all())
    for epoch in (0, 1):
        batches = _ids(ds.iterator(), batch_size=10, epoch=epoch, seed=3)
        assert len(batches) == math.ceil(ROWS / 10)
        assert [len(b) for b in batches[:-1]] == [10] * 9
        assert sorted(i for b in batches for i in b) == every_id


def test_bucketed_batches_hold_less_padding_than_random_ones(ray_local, toy_dataset):
    ds = ray_dataset(str(toy_dataset), "train")
    fractions = {}
    for bucket in (False, True):
        task = _task(toy_dataset, bucket=bucket)
        batches = list(task.train_batches(ds.iterator(), batch_size=8, epoch=0, seed=0))
        assert len(batches) == ROWS // 8 and sum(len(b["y"]) for b in batches) == ROWS
        fractions[bucket] = padding_fraction(b["lengths"] for b in batches)
    assert fractions[True] < fractions[False] / 2, fractions


@pytest.mark.parametrize("bucket", [False, True])
def test_two_shards_of_equal_rows_run_the_same_number_of_steps(ray_local, toy_dataset, bucket):
    ds = ray_dataset(str(toy_dataset), "train")
    task = _task(toy_dataset, bucket=bucket)
    shards = ds.streaming_split(2, equal=True)
    steps, rows = [0, 0], [0, 0]

    def consume(rank: int) -> None:  # the split's consumers read together, as Train workers do
        for batch in task.train_batches(shards[rank], batch_size=10, epoch=0, seed=0):
            steps[rank] += 1
            rows[rank] += len(batch["y"])

    threads = [threading.Thread(target=consume, args=(rank,)) for rank in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert rows == [ROWS // 2] * 2
    assert steps == [math.ceil(ROWS / 2 / 10)] * 2


def test_the_order_is_the_same_for_a_seed_and_epoch_and_differs_across_epochs(ray_local, toy_dataset):
    ds = ray_dataset(str(toy_dataset), "train")
    first = _ids(ds.iterator(), batch_size=8, epoch=0, seed=3)
    again = _ids(ds.iterator(), batch_size=8, epoch=0, seed=3)
    next_epoch = _ids(ds.iterator(), batch_size=8, epoch=1, seed=3)
    other_seed = _ids(ds.iterator(), batch_size=8, epoch=0, seed=4)
    assert first == again
    assert first != next_epoch and first != other_seed


def test_a_pool_of_wide_rows_is_held_to_bucket_pool_mib(toy_dataset):
    # given the toy dataset (3 float channels) and its manifest's mean train length
    from pipeline.training.trainer import bucket_pool_batches

    manifest = read_manifest(str(toy_dataset))
    row_bytes = manifest.lengths["train"].mean * 3 * 4
    cfg = RecurConfig(data={"root": str(toy_dataset), "batch_size": 16})
    # when the default 64 MiB holds 64 batches' worth of rows easily, then the pool keeps 64
    assert bucket_pool_batches(cfg, manifest) == 64
    # when the limit holds 5.5 batches of rows, then the pool has 5; under one batch, then 1
    limit = 5.5 * 16 * row_bytes / 2**20
    assert bucket_pool_batches(cfg.model_copy(update={"data": cfg.data.model_copy(
        update={"bucket_pool_mib": limit})}), manifest) == 5
    assert bucket_pool_batches(cfg.model_copy(update={"data": cfg.data.model_copy(
        update={"bucket_pool_mib": 1e-6})}), manifest) == 1


@pytest.mark.parametrize("bucket", [False, True])
def test_a_small_train_shard_is_kept_after_the_first_epoch_and_reshuffled_every_epoch(
        ray_local, toy_dataset, bucket):
    # given a train split small enough for train.cache_train_mb
    ds = ray_dataset(str(toy_dataset), "train")
    task = _task(toy_dataset, bucket=bucket)
    assert getattr(task, "_train_cache", None) is None
    orders = []
    for epoch in range(3):
        # when the worker asks for an epoch's batches (epochs 1 and 2 from the kept rows)
        batches = list(task.train_batches(ds.iterator(), batch_size=8, epoch=epoch, seed=0))
        # then every row comes once, in ceil(rows / batch) batches, as from Ray Data
        assert len(batches) == math.ceil(ROWS / 8) and sum(len(b["y"]) for b in batches) == ROWS
        orders.append([b["lengths"].tolist() + b["y"].tolist() for b in batches])
        assert getattr(task, "_train_cache", None) is not None and task._train_cache.num_rows == ROWS
    assert orders[1] != orders[2]  # a new order each epoch
    again = _task(toy_dataset, bucket=bucket)
    again._train_cache = task._train_cache
    assert [b["lengths"].tolist() + b["y"].tolist()
            for b in again.train_batches(None, batch_size=8, epoch=2, seed=0)] == orders[2]  # same order


def test_a_train_shard_over_the_limit_is_streamed_every_epoch(ray_local, toy_dataset):
    ds = ray_dataset(str(toy_dataset), "train")
    task = _task(toy_dataset, bucket=True)
    tiny = task.cfg.train.model_copy(update={"cache_train_mb": 1e-6})
    task.cfg = task.cfg.model_copy(update={"train": tiny})
    assert len(list(task.train_batches(ds.iterator(), batch_size=8, epoch=0, seed=0))) == math.ceil(ROWS / 8)
    assert getattr(task, "_train_cache", None) is None
