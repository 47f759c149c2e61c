"""Length-bucketed training batches: pools of rows sorted by length, cut into batches.

A batch is padded to its longest sequence, so random batches of a long-tailed length distribution
spend most of their steps on padding (and a packed RNN still runs as many sequential steps as the
longest sequence). Bucketing reads `batch_size * bucket_batches` rows at a time from the shard (in
Ray Data's locally shuffled order), sorts them by length, cuts them into batches of similar
lengths and shuffles the order of those batches.

Every row is used once per epoch and an epoch has ceil(rows / batch_size) batches, as without
bucketing: a pool whose row count is not a multiple of `batch_size` hands its remainder on to the
next one, so only the epoch's last batch can be short and data-parallel ranks holding equal row
counts run equal step counts (uneven counts hang DDP). The order is a function of the seed and the
epoch.

Shape suffixes: B batch, T padded time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

T = TypeVar("T")
POOLS_AHEAD = 1  # Ray Data prefetches this many pools (each bucket_batches batches) while we train
BATCHES_AHEAD = 2  # batches collated ahead in a background thread
STOP_TIMEOUT_S = 30.0  # how long leaving an epoch early waits for that thread's current item


def row_lengths(table: pa.Table) -> np.ndarray | None:
    """Time steps of each row's `x` (B,), or None when the rows have no `x` column."""
    if "x" not in table.column_names:
        return None
    lengths = pc.list_value_length(table.column("x"))
    return pc.fill_null(lengths, 0).to_numpy().astype(np.int64, copy=False)


def bucket_slices(lengths_B: np.ndarray | None, batch_size: int,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of each batch of one pool: rows sorted by length (stably, so ties keep their
    shuffled order), cut into batches of `batch_size` (the last may be shorter), batches in a
    random order. Rows without lengths, or all of one length (forecast windows), keep their order
    and so do the batches: bucketing changes nothing there."""
    n = len(lengths_B) if lengths_B is not None else 0
    if lengths_B is None or n == 0 or lengths_B.min() == lengths_B.max():
        return [np.arange(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    order = np.argsort(lengths_B, kind="stable")
    batches = [order[start : start + batch_size] for start in range(0, n, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def bucket_tables(pools: Iterable[pa.Table], *, batch_size: int, rng: np.random.Generator,
                  sort: bool = True) -> Iterator[pa.Table]:
    """Batches of rows from `pools` (Arrow tables of any row counts), bucketed per pool (`sort`
    False: in the pools' order).

    Every pool but the last hands the rows beyond a multiple of `batch_size` on to the next, so
    only the final batch of all can be short: ceil(total rows / batch_size) batches.
    """
    pending: pa.Table | None = None
    for pool in pools:
        if pending is not None:
            full = pending.num_rows // batch_size * batch_size
            yield from _cut(pending.slice(0, full), batch_size, rng, sort)
            pool = pa.concat_tables([pending.slice(full), pool]) if full < pending.num_rows else pool
        pending = pool
    if pending is not None and pending.num_rows:
        yield from _cut(pending, batch_size, rng, sort)


def _cut(table: pa.Table, batch_size: int, rng: np.random.Generator, sort: bool) -> Iterator[pa.Table]:
    if not sort:
        for start in range(0, table.num_rows, batch_size):
            yield table.slice(start, batch_size)
        return
    for rows in bucket_slices(row_lengths(table), batch_size, rng):
        yield table.take(pa.array(rows))


def collated_ahead(items: Iterable[T], collate: Callable[[T], Any],
                   ahead: int = BATCHES_AHEAD) -> Iterator[Any]:
    """`collate(item)` for each item, in order, up to `ahead` batches early.

    One background thread draws the items as well as collating them: for bucketed batches that
    is the whole pipeline (Ray Data's pools, the sort, the Arrow `take` of each batch, padding),
    so the training thread only picks up finished batches (and never stalls at a pool boundary).
    An error in the thread is raised here, in order; closing this generator early stops the thread
    after its current item (waiting at most STOP_TIMEOUT_S for it) and closes `items`.
    """
    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    source = iter(items)

    def hand_over(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not hand_over((True, collate(item))):
                    return
            hand_over((False, None))
        except BaseException as error:  # handed to the consumer and raised there
            hand_over((False, error))

    thread = threading.Thread(target=produce, name="recur-collate", daemon=True)
    thread.start()
    try:
        while True:
            is_batch, value = ready.get()
            if is_batch:
                yield value
            elif value is None:
                return
            else:
                raise value
    finally:
        stop.set()
        # the thread stops after its current item; one stuck in Ray Data is left behind (a daemon)
        # rather than hanging the epoch that is ending, and its source is then not closed
        thread.join(timeout=STOP_TIMEOUT_S)
        close = getattr(source, "close", None)
        if close is not None and not thread.is_alive():
            close()


def bucketed_batches(shard: Any, collate: Callable[[pa.Table], Any], *, batch_size: int,
                     bucket_batches: int, epoch: int, seed: int, keep: list[pa.Table] | None = None,
                     bucket: bool = True) -> Iterator[Any]:
    """One epoch of length-bucketed, collated batches from a Ray Data shard (a DataIterator or
    Dataset) or from an Arrow table kept from an earlier epoch: pools of `batch_size *
    bucket_batches` rows in a locally shuffled order (seeded with seed + epoch), batch order
    shuffled with (seed, epoch). `keep`: every pool read from the shard is appended to it (the
    caller keeps a small split in memory). `bucket` False: batches in the shuffled order."""
    pool = batch_size * bucket_batches
    if isinstance(shard, pa.Table):
        pools: Iterable[pa.Table] = table_pools(shard, pool, epoch=epoch, seed=seed)
    else:
        pools = shard.iter_batches(batch_size=pool, batch_format="pyarrow", local_shuffle_buffer_size=pool,
                                   local_shuffle_seed=seed + epoch, prefetch_batches=POOLS_AHEAD)
        if keep is not None:
            pools = _kept(pools, keep)
    rng = np.random.default_rng([seed, epoch])
    return collated_ahead(bucket_tables(pools, batch_size=batch_size, rng=rng, sort=bucket), collate)


def table_pools(table: pa.Table, pool: int, *, epoch: int, seed: int) -> Iterator[pa.Table]:
    """A kept split's rows in a new random order each epoch (seeded with seed, epoch), in pools of
    `pool` rows: what Ray Data's local shuffle gives, without a Ray Data execution per epoch."""
    order = np.random.default_rng([seed, epoch, 1]).permutation(table.num_rows)
    shuffled = table.take(pa.array(order))
    for start in range(0, table.num_rows, pool):
        yield shuffled.slice(start, pool)


def _kept(pools: Iterable[pa.Table], keep: list[pa.Table]) -> Iterator[pa.Table]:
    for table in pools:
        keep.append(table)
        yield table


def padding_fraction(lengths: Iterable[torch.Tensor | np.ndarray]) -> float:
    """Fraction of the padded steps (B x T summed over batches) that are padding, from each
    batch's `lengths` (B,) valid steps."""
    padded = valid = 0
    for lengths_B in lengths:
        lengths_B = np.asarray(lengths_B)
        if lengths_B.size:
            padded += int(lengths_B.max()) * lengths_B.size
            valid += int(lengths_B.sum())
    return 1.0 - valid / padded if padded else 0.0
