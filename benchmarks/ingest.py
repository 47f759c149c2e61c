"""Does training wait for data? Ray Data ingest against the training step, side by side.

On one generated dataset (JapaneseVowels' shape: 12 channels, lengths 7 to 29, 9 classes), in one
process on a local Ray with 2 CPUs, for the train split streamed from Parquet and materialized
in the object store:

* ingest alone: rows per second of `Task.train_batches` (Ray Data -> Arrow -> recur's collate ->
  tensors) with nothing consuming them;
* training: recur's `train_step` on every batch, timing separately the wait for the next batch
  and the step itself; the fraction of the epoch spent waiting is the number to keep under 5%.

Both batch paths are measured: length-bucketed (`data.bucket_by_length: true`, the default: pools
read with Ray's prefetch, then drawn, sorted, cut and collated a few batches ahead on a background
thread), the same as it was before (`bucketed, drawn on the training thread`: pools fetched,
sorted and each batch's Arrow `take` on the training thread, only the padding ahead), and Ray's
own `iter_torch_batches` (`false`), with `prefetch_batches` 0, 1, 2 (recur's) and 4.
The first epoch of each arm warms up; the second is measured.

    python -m benchmarks ingest [--rows 20000] [--batch-size 32] [--hidden 64] [--channels 12]
                                [--num-cpus 2] [--device cpu|cuda] [--tag TAG]

`--num-cpus` gives the local Ray more CPUs (a bigger machine: read tasks still ask for 0.5 CPU
each, so more of them run at once); `--device cuda` runs the training step on the GPU (the batch
copied from pinned memory, as recur's collate does on a GPU worker), where a step is far shorter
and the wait for data shows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from benchmarks import add_tag_argument, write_results


def _epoch(batches: Iterable[Any], step=None, sync=None) -> dict[str, float]:
    """One pass: the wait for each batch, the step on it. The first batch's wait (Ray Data
    starting the epoch's execution: listing files, launching read tasks) is reported apart from the
    steady state's."""
    wait = work = first = 0.0
    rows = steps = 0
    iterator = iter(batches)
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        t1 = time.perf_counter()
        if step is not None:
            step(batch)
        t2 = time.perf_counter()
        if steps == 0:
            first = t1 - t0
        wait, work = wait + (t1 - t0), work + (t2 - t1)
        rows, steps = rows + int(batch["x"].shape[0]), steps + 1
    if sync is not None:
        sync()  # the GPU's queued steps belong to the epoch
    total = time.perf_counter() - start
    steady = total - first
    return {"rows": rows, "steps": steps, "seconds": round(total, 3), "rows_per_s": round(rows / total),
            "wait_s": round(wait, 3), "step_s": round(work, 3), "wait_fraction": round(wait / total, 4),
            "first_batch_s": round(first, 3),
            "steady_wait_fraction": round((wait - first) / steady, 4) if steady > 0 else 0.0}


ARMS = {True: "bucketed", "before": "bucketed, drawn on the training thread"}


def bucketed_before(task: Any, ds: Any, *, batch_size: int, epoch: int, seed: int) -> Iterator[Any]:
    """recur's bucketed batches before the whole pipeline moved off the training thread (kept here
    for the side-by-side row): the same pools and order, but the pool fetch, the sort and each
    batch's `take` ran on the training thread; only the padding ran ahead, in a one-thread pool."""
    import numpy as np

    from pipeline.data.bucketing import BATCHES_AHEAD, POOLS_AHEAD, bucket_tables
    from pipeline.data.loading import TaskCollate

    pool = batch_size * task.cfg.data.bucket_batches
    pools = ds.iter_batches(batch_size=pool, batch_format="pyarrow", local_shuffle_buffer_size=pool,
                            local_shuffle_seed=seed + epoch, prefetch_batches=POOLS_AHEAD)
    collate = TaskCollate(task)
    with ThreadPoolExecutor(max_workers=1) as executor:
        pending: deque[Future] = deque()
        for table in bucket_tables(pools, batch_size=batch_size, rng=np.random.default_rng([seed, epoch])):
            pending.append(executor.submit(collate, table))
            if len(pending) > BATCHES_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ingest")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--channels", type=int, default=12, help="float channels per step")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the step runs")
    add_tag_argument(parser)
    args = parser.parse_args(argv)
    import ray
    import torch

    from benchmarks.load import sequences
    from pipeline.config import load_config
    from pipeline.data.dataset import read_manifest, write_dataset
    from pipeline.data.loading import TaskCollate, ray_dataset
    from pipeline.data.preprocess import Preprocessing
    from pipeline.tasks import build_task
    from pipeline.training.loop import to_device, train_step
    from pipeline.training.optimizer import make_optimizer

    torch.set_num_threads(1)  # what a 0.5- or 1-CPU worker gets
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    arms: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="recur-ingest-") as tmp:
        root = f"{tmp}/data"
        write_dataset(root, {"train": sequences(args.rows, channels=args.channels),
                             "val": sequences(256, seed=1, channels=args.channels),
                             "test": sequences(64, seed=2, channels=args.channels)},
                      name="generated", task="classify", labels=[str(i) for i in range(9)], sources=[],
                      import_params={"generator": "benchmarks.load", "rows": args.rows})
        ray.init(num_cpus=args.num_cpus, include_dashboard=False)
        try:
            pre = Preprocessing.from_manifest(read_manifest(root))
            for materialize in (False, True):
                ds = ray_dataset(root, "train", materialize=materialize, read_cpus=0.5)
                for bucket, prefetch in ((True, None), ("before", None), (False, 0), (False, 1), (False, 2),
                                         (False, 4)):
                    cfg = load_config([], [
                        f"data.root={root}", f"data.bucket_by_length={str(bool(bucket)).lower()}",
                        f"data.batch_size={args.batch_size}", f"model.hidden_size={args.hidden}",
                        "model.cell=gru", f"resources.use_gpu={str(device.type == 'cuda').lower()}"])
                    task = build_task(cfg, pre)
                    torch.manual_seed(0)
                    model = task.build_model().to(device)
                    optimizer = make_optimizer("adam", model.parameters(), lr=1e-3)

                    def batches(epoch: int, task=task, bucket=bucket, prefetch=prefetch, ds=ds):
                        if bucket == "before":
                            return bucketed_before(task, ds, batch_size=args.batch_size, epoch=epoch, seed=0)
                        if bucket:
                            return task.train_batches(ds, batch_size=args.batch_size, epoch=epoch, seed=0)
                        return ds.iter_torch_batches(  # Task.train_batches with another prefetch
                            batch_size=args.batch_size, collate_fn=TaskCollate(task),
                            local_shuffle_buffer_size=args.batch_size * 8, local_shuffle_seed=epoch,
                            prefetch_batches=prefetch)

                    def step(batch, model=model, optimizer=optimizer, task=task):
                        # as recur's epoch: no read of the loss per step, one synchronization at the end
                        train_step(model, to_device(batch, device), optimizer, task, grad_clip=1.0)

                    _epoch(batches(0))  # warm-up: Ray Data's first execution, worker start-up
                    ingest = _epoch(batches(1))
                    sync = torch.cuda.synchronize if device.type == "cuda" else None
                    _epoch(batches(2), step, sync)
                    trained = _epoch(batches(3), step, sync)
                    arm = {"split": "materialized" if materialize else "streamed from Parquet",
                           "batches": ARMS.get(bucket, f"iter_torch_batches prefetch {prefetch}"),
                           "ingest_rows_per_s": ingest["rows_per_s"], "train": trained}
                    arms.append(arm)
                    print(f"{arm['split']:22s} {arm['batches']:39s} "
                          f"ingest {ingest['rows_per_s']:>8,d} rows/s   "
                          f"training {trained['rows_per_s']:>6,d} rows/s, waiting for data "
                          f"{trained['wait_fraction']:6.1%} of the epoch (first batch "
                          f"{trained['first_batch_s']:.2f} s, then {trained['steady_wait_fraction']:.1%})",
                          flush=True)
        finally:
            ray.shutdown()
    write_results("ingest", args.tag, settings=vars(args),
                  device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", arms=arms)
    return 0
