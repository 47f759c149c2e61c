"""Length-bucketed against random training batches (data.bucket_by_length), side by side.

Two datasets: a generated long-tailed one (log-normal lengths clipped to 20..2000 steps, 12
channels) and JapaneseVowels (lengths 7..29). Each is written as a recur dataset, read into
Ray's object store as training reads it (`ray_dataset`), and fed through `Task.train_batches` to
recur's own classifier and `train_epoch` (forward, backward, optimizer step; an LSTM whose
encoder runs a batch padded unless more than `PADDED_UP_TO` of it is padding). A third arm,
"random, packed", runs the random batches packed (`padded_up_to = 0`), as recur's encoder ran
every batch before. Each arm trains its own copy of one initial model; after a warm-up epoch
each, their measured epochs alternate, so load from other processes falls on all alike.
Reported per batching: sequences per second over the measured epochs, the fraction of the padded
steps (B x T summed over batches) that are padding, and steps; then bucketed / random ratios.
Each split is also cut into 2 shards as Ray Train cuts it (`streaming_split(2, equal=True)`) and
the steps each shard yields are checked to be equal (uneven counts hang DDP).

`--device cuda` trains on the GPU and also times a forward and backward of `nn.LSTM` over one
epoch's batches of each batching, padded (every step of the padded tensor) and packed
(`pack_padded_sequence`, as recur's encoder runs); without CUDA that part is skipped, and
`--lstm` runs it on the CPU. It shows where the time goes: PyTorch's packed LSTM backward costs
more per step the more rows and distinct lengths a batch holds (pytorch/pytorch#149194), which is
why the encoder runs bucketed batches padded.

    python -m benchmarks bucketing [--quick] [--rows 2000] [--epochs 1] [--device cpu|cuda] [--lstm]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import add_tag_argument, write_results
from benchmarks.load import sequences
from pipeline.config import RecurConfig, load_config

REPO = Path(__file__).resolve().parents[1]
MIN_LEN, MAX_LEN, MEDIAN_LEN, SIGMA = 20, 2000, 80, 1.0  # the long-tailed set's log-normal lengths
TARGET_PADDING, TARGET_SPEEDUP = 0.10, 2.0  # issue 8's targets on the long-tailed set


def long_tailed(root: str, rows: int, *, seed: int = 0) -> str:
    """A classify dataset of `rows` train sequences with log-normal lengths (median MEDIAN_LEN),
    clipped to MIN_LEN..MAX_LEN; small val/test splits (not used here)."""
    from pipeline.data.dataset import write_dataset

    rng = np.random.default_rng(seed)

    def split(n: int, seed: int):
        lengths = np.clip(np.rint(rng.lognormal(math.log(MEDIAN_LEN), SIGMA, size=n)), MIN_LEN, MAX_LEN)
        return sequences(n, seed=seed, lengths=lengths.astype(np.int64))

    write_dataset(root, {"train": split(rows, 1), "val": split(32, 2), "test": split(32, 3)},
                  name="long-tailed", task="classify", labels=[str(i) for i in range(9)], sources=[],
                  import_params={"generator": "benchmarks.bucketing", "rows": rows})
    return root


def japanese_vowels(tmp: str) -> str:
    """JapaneseVowels imported as the quick start imports it."""
    from pipeline.workflow.steps import ingest

    root = f"{tmp}/jv"
    ingest(load_config([REPO / "configs" / "quickstart.yaml"], [f"data.root={root}"]))
    return root


def _recorded(batches: Iterable[dict[str, torch.Tensor]], lengths: list[torch.Tensor]) -> Iterator[Any]:
    for batch in batches:
        lengths.append(batch["lengths"])
        yield batch


class Arm:
    """One batching (random or bucketed) with its own task, model copy and optimizer."""

    def __init__(self, name: str, cfg: RecurConfig, pre: Any, state: dict, device: torch.device,
                 padded_up_to: float | None = None) -> None:
        from pipeline.tasks import build_task
        from pipeline.training.optimizer import make_optimizer

        self.name, self.cfg, self.device = name, cfg, device
        self.task = build_task(cfg, pre)
        self.model = self.task.build_model()
        self.model.load_state_dict(state)
        if padded_up_to is not None:
            self.model.encoder.padded_up_to = padded_up_to
        self.model.to(device)
        self.optimizer = make_optimizer("adam", self.model.parameters(), lr=1e-3)
        self.seconds, self.sequences, self.steps = 0.0, 0, 0
        self.lengths: list[torch.Tensor] = []

    def epoch(self, shard: Any, epoch: int, *, measured: bool) -> None:
        from pipeline.training.loop import train_epoch

        lengths: list[torch.Tensor] = []
        batches = self.task.train_batches(shard, batch_size=self.cfg.data.batch_size, epoch=epoch,
                                          seed=self.cfg.data.seed)
        stats = train_epoch(self.model, _recorded(batches, lengths), self.optimizer, self.task,
                            device=self.device, grad_clip=1.0)
        if measured:
            self.seconds += stats.seconds
            self.sequences += stats.num_sequences
            self.steps += stats.num_steps
            self.lengths += lengths

    def row(self) -> dict[str, Any]:
        from pipeline.data.bucketing import padding_fraction

        return {"batching": self.name, "sequences": self.sequences, "steps": self.steps,
                "padding": round(padding_fraction(self.lengths), 4), "seconds": round(self.seconds, 2),
                "sequences_per_s": round(self.sequences / self.seconds, 1) if self.seconds else 0.0}


def shard_steps(ds: Any, task: Any, batch_size: int) -> list[int]:
    """Steps each of 2 shards (Ray Train's equal split) yields in one epoch, read together."""
    shards = ds.streaming_split(2, equal=True)
    steps = [0, 0]

    def consume(rank: int) -> None:
        for _ in task.train_batches(shards[rank], batch_size=batch_size, epoch=0, seed=0):
            steps[rank] += 1

    threads = [threading.Thread(target=consume, args=(rank,)) for rank in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return steps


def padding_by_pool(ds: Any, batch_size: int, rows: int) -> dict[str, float]:
    """Padding fraction of one epoch's bucketed batches for several data.bucket_batches (1 is
    random batching; the last pools the whole split), from row lengths alone (no training)."""
    from pipeline.data.bucketing import bucketed_batches, padding_fraction, row_lengths

    whole = math.ceil(rows / batch_size)
    return {str(k): round(padding_fraction(bucketed_batches(
        ds.iterator(), row_lengths, batch_size=batch_size, bucket_batches=k, epoch=0, seed=0)), 4)
        for k in sorted({k for k in (1, 4, 16, 64) if k < whole} | {whole})}


def lstm_padded_vs_packed(batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
                          hidden: int, repeats: int = 3) -> dict[str, float]:
    """Seconds for a forward and backward of nn.LSTM over `batches` (x_BTC, lengths_B): on the
    padded tensor (every step of T) and on the packed sequence (pad steps skipped)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    lstm = torch.nn.LSTM(batches[0][0].shape[-1], hidden, batch_first=True).to(device)
    on_device = [(x.to(device), lengths) for x, lengths in batches]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda device: None)

    def padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return lstm(x)[0].sum()

    def packed(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))[0].data.sum()

    out = {}
    for name, run in (("padded_s", padded), ("packed_s", packed)):
        best = math.inf
        for _ in range(repeats + 1):  # the first pass warms cuDNN's plans up
            sync(device)
            start = time.perf_counter()
            for x, lengths in on_device:
                lstm.zero_grad(set_to_none=True)
                run(x, lengths).backward()
            sync(device)
            best = min(best, time.perf_counter() - start)
        out[name] = round(best, 4)
    return out


def compare(name: str, root: str, *, batch_size: int, epochs: int, hidden: int,
            device: torch.device, lstm: bool) -> dict[str, Any]:
    """Random against bucketed batches on one dataset: table rows, ratios, shard steps."""
    from pipeline.data.dataset import read_manifest
    from pipeline.data.loading import ray_dataset
    from pipeline.data.preprocess import Preprocessing

    pre = Preprocessing.from_manifest(read_manifest(root))
    ds = ray_dataset(root, "train")
    arms = []
    for arm_name, bucket, padded_up_to in (("random", False, None), ("bucketed", True, None),
                                           ("random, packed", False, 0.0)):
        cfg = RecurConfig(data={"task": "classify", "root": root, "batch_size": batch_size,
                                "bucket_by_length": bucket},
                          model={"cell": "lstm", "hidden_size": hidden})
        if not arms:
            torch.manual_seed(0)
            from pipeline.tasks import build_task

            state = build_task(cfg, pre).build_model().state_dict()
        arms.append(Arm(arm_name, cfg, pre, state, device, padded_up_to))
    for arm in arms:
        arm.epoch(ds.iterator(), 0, measured=False)  # warm-up
    for epoch in range(1, epochs + 1):
        for arm in arms:
            arm.epoch(ds.iterator(), epoch, measured=True)
    random, bucketed, random_packed = (arm.row() for arm in arms)
    result: dict[str, Any] = {
        "dataset": name, "train_rows": ds.count(), "batch_size": batch_size,
        "bucket_batches": arms[1].cfg.data.bucket_batches, "rows": [random, bucketed, random_packed],
        "throughput_ratio": round(bucketed["sequences_per_s"] / random["sequences_per_s"], 2),
        "random_packed_ratio": round(random_packed["sequences_per_s"] / random["sequences_per_s"], 2),
        "padding_ratio": round(bucketed["padding"] / random["padding"], 3) if random["padding"] else None,
        "shard_steps": {arm.name: shard_steps(ds, arm.task, batch_size) for arm in arms[:2]},
        "padding_by_bucket_batches": padding_by_pool(ds, batch_size, ds.count()),
    }
    if lstm:
        result["lstm"] = {}
        for arm in arms[:2]:
            # one measured epoch's batches, rebuilt (the loop kept only their lengths)
            batches = [(b["x"], b["lengths"]) for b in arm.task.train_batches(
                ds.iterator(), batch_size=batch_size, epoch=1, seed=arm.cfg.data.seed)]
            result["lstm"][arm.name] = lstm_padded_vs_packed(batches, device, hidden,
                                                             repeats=3 if device.type == "cuda" else 1)
    return result


def _print(results: list[dict[str, Any]], device: torch.device, lstm: bool) -> None:
    print(f"\n{'dataset':<16}{'batching':<16}{'seqs':>7}{'steps':>7}{'padding':>9}{'seq/s':>9}{'s':>8}")
    for r in results:
        for row in r["rows"]:
            print(f"{r['dataset']:<16}{row['batching']:<16}{row['sequences']:>7}{row['steps']:>7}"
                  f"{row['padding']:>9.1%}{row['sequences_per_s']:>9.1f}{row['seconds']:>8.1f}")
    print()
    for r in results:
        steps = r["shard_steps"]
        print(f"{r['dataset']}: bucketed/random throughput x{r['throughput_ratio']:.2f}, padding "
              f"{r['rows'][0]['padding']:.1%} -> {r['rows'][1]['padding']:.1%}; random batches packed "
              f"x{r['random_packed_ratio']:.2f} of padded; steps per worker of 2 "
              f"(equal=True): random {steps['random']}, bucketed {steps['bucketed']}, equal: "
              f"{all(len(set(s)) == 1 for s in steps.values())}")
        print("  padding by data.bucket_batches (1: random; the last: the whole split): " + ", ".join(
            f"{k}: {v:.1%}" for k, v in r["padding_by_bucket_batches"].items()))
    if not lstm:
        print("nn.LSTM padded vs packed: skipped (CUDA not available, or no --device cuda / --lstm)")
        return
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\nnn.LSTM forward+backward over one epoch's batches on {where}, seconds:")
    for r in results:
        for name, t in r["lstm"].items():
            print(f"  {r['dataset']:<16}{name:<10} padded {t['padded_s']:.4f}  packed {t['packed_s']:.4f}  "
                  f"packed/padded x{t['packed_s'] / t['padded_s']:.2f}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks bucketing")
    parser.add_argument("--quick", action="store_true", help="a smaller run of about a minute")
    parser.add_argument("--rows", type=int, default=None,
                        help="long-tailed train sequences (2000; quick 600)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="measured epochs after the warm-up (1; JapaneseVowels 5x as many)")
    parser.add_argument("--batch-size", type=int, default=32, help="long-tailed set (JapaneseVowels: 16)")
    parser.add_argument("--hidden", type=int, default=64, help="LSTM hidden size")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda (when available): train there and time nn.LSTM padded vs packed")
    parser.add_argument("--lstm", action="store_true", help="time nn.LSTM padded vs packed on the CPU too")
    add_tag_argument(parser)
    args = parser.parse_args(argv)
    rows = args.rows or (600 if args.quick else 2000)
    epochs = args.epochs or 1
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" and torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and device.type != "cuda":
        print("--device cuda: CUDA is not available here; training on the CPU, the LSTM timing is skipped")

    import ray.data

    from pipeline.workflow.session import connect_ray

    connect_ray(load_config([], ["train.ray_log_level=ERROR"]))
    ray.data.DataContext.get_current().enable_progress_bars = False
    lstm = device.type == "cuda" or args.lstm
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recur-bench-bucketing-") as tmp:
        results = [
            compare("long-tailed", long_tailed(f"{tmp}/long", rows), batch_size=args.batch_size,
                    epochs=epochs, hidden=args.hidden, device=device, lstm=lstm),
            # a tiny split: more epochs for a steadier figure
            compare("JapaneseVowels", japanese_vowels(tmp), batch_size=16, epochs=5 * epochs,
                    hidden=args.hidden, device=device, lstm=lstm),
        ]
    _print(results, device, lstm)
    long = results[0]
    targets = {"padding_below": TARGET_PADDING, "speedup_at_least": TARGET_SPEEDUP,
               "padding_met": long["rows"][1]["padding"] < TARGET_PADDING,
               "speedup_met": long["throughput_ratio"] >= TARGET_SPEEDUP}
    print(f"long-tailed targets: padding < {TARGET_PADDING:.0%}: {targets['padding_met']}; throughput >= "
          f"{TARGET_SPEEDUP:g}x: {targets['speedup_met']}; wall {time.perf_counter() - start:.0f} s")
    equal = all(len(set(s)) == 1 for r in results for s in r["shard_steps"].values())
    write_results("bucketing", args.tag,
                  settings={**vars(args), "rows": rows, "epochs": epochs, "device": str(device)},
                  results=results, targets=targets, equal_shard_steps=equal)
    return 0 if equal else 1
