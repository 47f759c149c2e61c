"""Does training wait for data? Ray Data ingest against the training step, side by side.

On one generated dataset (JapaneseVowels' shape: 12 channels, lengths 7 to 29, 9 classes), in one
process on a local Ray with 2 CPUs, for the train split streamed from Parquet and materialized
in the object store:

* ingest alone: rows per second of `Task.train_batches` (Ray Data -> Arrow -> recur's collate ->
  tensors) with nothing consuming them;
* training: recur's `train_step` on every batch, timing separately the wait for the next batch
  and the step itself; the fraction of the epoch spent waiting is the number to keep under 5%.

Both batch paths are measured: length-bucketed (`data.bucket_by_length: true`, the default: pools
read with Ray's prefetch, collated a few batches ahead on a thread) and Ray's own
`iter_torch_batches` (`false`), the latter also with `prefetch_batches` 0, 1, 2 (recur's) and 4.
The first epoch of each arm warms up; the second is measured.

    python -m benchmarks ingest [--rows 20000] [--batch-size 32] [--hidden 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterable
from typing import Any

from benchmarks import write_results


def _epoch(batches: Iterable[Any], step=None) -> dict[str, float]:
    wait = work = 0.0
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
        wait, work = wait + (t1 - t0), work + (t2 - t1)
        rows, steps = rows + int(batch["x"].shape[0]), steps + 1
    total = time.perf_counter() - start
    return {"rows": rows, "steps": steps, "seconds": round(total, 3), "rows_per_s": round(rows / total),
            "wait_s": round(wait, 3), "step_s": round(work, 3), "wait_fraction": round(wait / total, 4)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ingest")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args(argv)
    import ray
    import torch

    from benchmarks.load import sequences
    from pipeline.config import load_config
    from pipeline.data.contract import read_manifest, write_dataset
    from pipeline.data.loading import TaskCollate, ray_dataset
    from pipeline.data.preprocess import Preprocessing
    from pipeline.tasks import build_task
    from pipeline.training.loop import make_optimizer, to_device, train_step

    torch.set_num_threads(1)  # what a 0.5- or 1-CPU worker gets
    arms: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="recur-ingest-") as tmp:
        root = f"{tmp}/data"
        write_dataset(root, {"train": sequences(args.rows), "val": sequences(256, seed=1),
                             "test": sequences(64, seed=2)},
                      name="generated", task="classify", labels=[str(i) for i in range(9)], sources=[],
                      import_params={"generator": "benchmarks.load", "rows": args.rows})
        ray.init(num_cpus=2, include_dashboard=False)
        try:
            pre = Preprocessing.from_manifest(read_manifest(root))
            for materialize in (False, True):
                ds = ray_dataset(root, "train", materialize=materialize, read_cpus=0.5)
                for bucket, prefetch in ((True, None), (False, 0), (False, 1), (False, 2), (False, 4)):
                    cfg = load_config([], [
                        f"data.root={root}", f"data.bucket_by_length={str(bucket).lower()}",
                        f"data.batch_size={args.batch_size}", f"model.hidden_size={args.hidden}",
                        "model.cell=gru"])
                    task = build_task(cfg, pre)
                    torch.manual_seed(0)
                    model = task.build_model()
                    optimizer = make_optimizer("adam", model.parameters(), lr=1e-3)

                    def batches(epoch: int, task=task, bucket=bucket, prefetch=prefetch, ds=ds):
                        if bucket:
                            return task.train_batches(ds, batch_size=args.batch_size, epoch=epoch, seed=0)
                        return ds.iter_torch_batches(  # Task.train_batches with another prefetch
                            batch_size=args.batch_size, collate_fn=TaskCollate(task),
                            local_shuffle_buffer_size=args.batch_size * 8, local_shuffle_seed=epoch,
                            prefetch_batches=prefetch)

                    def step(batch, model=model, optimizer=optimizer, task=task):
                        train_step(model, to_device(batch, torch.device("cpu")), optimizer, task,
                                   grad_clip=1.0)

                    _epoch(batches(0))  # warm-up: Ray Data's first execution, worker start-up
                    ingest = _epoch(batches(1))
                    _epoch(batches(2), step)
                    trained = _epoch(batches(3), step)
                    arm = {"split": "materialized" if materialize else "streamed from Parquet",
                           "batches": "bucketed" if bucket else f"iter_torch_batches prefetch {prefetch}",
                           "ingest_rows_per_s": ingest["rows_per_s"], "train": trained}
                    arms.append(arm)
                    print(f"{arm['split']:22s} {arm['batches']:34s} "
                          f"ingest {ingest['rows_per_s']:>8,d} rows/s   "
                          f"training {trained['rows_per_s']:>6,d} rows/s, waiting for data "
                          f"{trained['wait_fraction']:6.1%} of the epoch", flush=True)
        finally:
            ray.shutdown()
    write_results("ingest", settings=vars(args), arms=arms)
    return 0
