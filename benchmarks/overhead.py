"""What recur's Ray Train path costs over a plain PyTorch loop, epoch by epoch, on one machine.

Side by side in one run, on the same generated dataset (JapaneseVowels' shape: 12 channels,
lengths 7 to 29, 9 classes), model, batch size, optimizer and intra-op thread count:

* plain: one process, no Ray; batches cut from the train split in a seeded random order, recur's
  `train_epoch`, then the val split evaluated and a checkpoint saved, every epoch (what a
  hand-written loop that keeps its best model does);
* recur, 1 worker and 2 workers: `build_trainer` (Ray Data shards, DDP over gloo with 2, val,
  checkpoint, report), timed by the workers' own training seconds (`epoch_seconds`, the slowest
  rank) and by the wall time between two epochs' reports reaching Train's controller.

Ratios are recur over plain, medians over the epochs after the first (start-up is reported apart:
from `fit()` to the first report, against the plain loop's first epoch). With 2 workers each
trains half the rows; on a 2-core machine that is the data-parallel speed-up, not overhead.

    python -m benchmarks overhead [--rows 40000] [--epochs 5] [--batch-size 64] [--hidden 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import ReportsToFile, write_results


def _config(root: str, args: argparse.Namespace, workers: int):
    from pipeline.config import load_config

    overrides = [f"data.root={root}", f"resources.num_workers={workers}", "resources.cpus_per_worker=0.5",
                 f"train.epochs={args.epochs}", f"data.batch_size={args.batch_size}",
                 f"model.hidden_size={args.hidden}", "model.cell=gru", "train.early_stopping_patience=0",
                 "train.lr=0.003", "train.ray_log_level=ERROR",
                 # random batches like the plain loop's: bucketing would change the work, not the overhead
                 "data.bucket_by_length=false"]
    return load_config([], overrides)


def plain(root: str, args: argparse.Namespace) -> list[dict[str, float]]:
    """The hand-written loop: recur's task, model and epoch function, no Ray."""
    import numpy as np
    import torch

    from pipeline.data.dataset import read_manifest, read_split
    from pipeline.data.preprocess import Preprocessing
    from pipeline.tasks import build_task
    from pipeline.training.loop import evaluate_batches, train_epoch
    from pipeline.training.optimizer import make_optimizer
    from pipeline.training.trainer import loop_config

    cfg = _config(root, args, 1)
    pre = Preprocessing.from_manifest(read_manifest(root))
    torch.set_num_threads(loop_config(cfg, pre)["torch_threads"])  # what a worker gets
    torch.manual_seed(cfg.train.seed)
    task = build_task(cfg, pre)
    model = task.build_model()
    optimizer = make_optimizer(cfg.train.optimizer, model.parameters(), lr=cfg.train.lr)
    train, val = read_split(root, "train"), read_split(root, "val")
    b = cfg.data.batch_size
    epochs = []
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(cfg.train.epochs):
            start = time.perf_counter()
            order = np.random.default_rng(cfg.data.seed + epoch).permutation(train.num_rows)
            batches = (task.collate(train.take(order[i:i + b])) for i in range(0, train.num_rows, b))
            stats = train_epoch(model, batches, optimizer, task, grad_clip=cfg.train.grad_clip)
            trained = time.perf_counter() - start
            task.compute(evaluate_batches(model, task.table_batches(val, b), task))
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, f"{tmp}/ckpt.pt")
            epochs.append({"train_s": trained, "epoch_s": time.perf_counter() - start, "loss": stats.loss})
    return epochs


def recur(root: str, args: argparse.Namespace, workers: int) -> tuple[list[dict[str, float]], float]:
    from pipeline.data.dataset import read_manifest
    from pipeline.training.trainer import build_trainer

    with tempfile.TemporaryDirectory() as tmp:
        reports = Path(tmp) / "reports.jsonl"
        trainer = build_trainer(_config(root, args, workers), read_manifest(root), storage_path=f"{tmp}/ray",
                                name=f"overhead-{workers}", callbacks=[ReportsToFile(str(reports))])
        start = time.time()
        trainer.fit()
        rows = [json.loads(line) for line in reports.read_text().splitlines()]
    walls = [start] + [r["_wall"] for r in rows]
    epochs = [{"train_s": r["epoch_seconds"], "epoch_s": walls[i + 1] - walls[i], "loss": r["train_loss"]}
              for i, r in enumerate(rows)]
    return epochs, rows[0]["_wall"] - start


def _median(epochs: list[dict[str, float]], key: str) -> float:
    return statistics.median(e[key] for e in epochs[1:])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks overhead")
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args(argv)
    import ray

    from benchmarks.load import sequences
    from pipeline.data.dataset import write_dataset

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="recur-overhead-") as tmp:
        root = f"{tmp}/data"
        write_dataset(root, {"train": sequences(args.rows), "val": sequences(args.rows // 8, seed=1),
                             "test": sequences(64, seed=2)},
                      name="generated", task="classify", labels=[str(i) for i in range(9)], sources=[],
                      import_params={"generator": "benchmarks.load", "rows": args.rows})
        results["plain"] = {"epochs": plain(root, args)}
        print(f"plain: {_median(results['plain']['epochs'], 'epoch_s'):.2f} s per epoch", flush=True)
        ray.init(num_cpus=2, include_dashboard=False)
        try:
            for workers in (1, 2):
                epochs, startup = recur(root, args, workers)
                results[f"recur_{workers}"] = {"epochs": epochs, "startup_s": startup}
                print(f"recur {workers} worker(s): {_median(epochs, 'epoch_s'):.2f} s per epoch, "
                      f"{startup:.1f} s to the first report", flush=True)
        finally:
            ray.shutdown()

    base = results["plain"]["epochs"]
    print(f"\n{'path':18s} {'train s':>8s} {'epoch s':>8s} {'train x':>8s} {'epoch x':>8s} "
          f"{'first epoch s':>14s}")
    table = {}
    paths = (("plain", "plain PyTorch"), ("recur_1", "recur, 1 worker"), ("recur_2", "recur, 2 workers"))
    for name, label in paths:
        epochs = results[name]["epochs"]
        first = results[name].get("startup_s", epochs[0]["epoch_s"])
        row = {"train_s": _median(epochs, "train_s"), "epoch_s": _median(epochs, "epoch_s"),
               "train_ratio": _median(epochs, "train_s") / _median(base, "train_s"),
               "epoch_ratio": _median(epochs, "epoch_s") / _median(base, "epoch_s"), "first_epoch_s": first}
        table[name] = {k: round(v, 3) for k, v in row.items()}
        print(f"{label:18s} {row['train_s']:8.2f} {row['epoch_s']:8.2f} {row['train_ratio']:8.3f} "
              f"{row['epoch_ratio']:8.3f} {first:14.1f}")
    write_results("overhead", settings=vars(args), table=table, runs=results)
    return 0
