"""A training set larger than the object store, streamed: does memory stay bounded?

Generates a classification dataset of `--gb` gigabytes of Parquet (default 10; less, and said so,
when the disk holds less) in a temporary folder: wide sequences (`--channels` float32 channels,
lengths `--min-len`..`--max-len`) written as many part files of about 256 MB, the canonical
dataset recur trains on. Then recur's own `build_trainer` trains one epoch over it with
`data.materialize: false` (every epoch reads Parquet through Ray Data, as a split larger than the
object store needs), on a local Ray whose object store is capped at `--object-store-gb`.

The same run first trains one epoch over a small slice of the data (`--small-gb`, the first part
files), so the two sizes sit side by side: if memory is bounded, the peaks barely move while the
data grows tenfold. Reported for each: rows, seconds, rows/s, the training workers' own
`data_wait_fraction` (the share of the epoch spent waiting for the next batch) and
`worker_peak_rss_mib` (what recur logs to MLflow every epoch), and, sampled twice a second: the
peak resident memory of each Ray Train worker process, of Ray Data's read tasks, the peak PSS
of the whole process tree (shared pages counted once), and the peak use of the object store.

    python -m benchmarks stream [--gb 10] [--small-gb 1] [--dir DIR] [--workers 2]
                                [--num-cpus 2] [--gpu] [--tag TAG]

`--num-cpus` sizes the local Ray (a bigger machine: the CPUs the workers leave go to read tasks);
`--gpu` trains on the GPU (`resources.use_gpu`: one GPU per worker, so `--workers 1` on one GPU).

Results: benchmarks/results/stream.json (stream-<GB>gb.json for another --gb; -TAG.json added with --tag).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import ReportsToFile, add_tag_argument, write_results
from benchmarks.load import _descendants, _pss_kib

PART_BYTES = 256 * 2**20  # about this much float data per part file


def write_train_split(root: str, rows: int, files: list[str]) -> None:
    """Rewrite the manifest with the train split's rows and files as generated here (its data hash
    covers only the first part file: this benchmark trains without `recur data validate`)."""
    from pipeline.data.dataset import manifest_path, read_manifest

    manifest = read_manifest(root)
    train = manifest.splits["train"].model_copy(update={"rows": rows, "files": files})
    manifest = manifest.model_copy(update={"splits": {**manifest.splits, "train": train}})
    Path(manifest_path(root)).write_text(manifest.model_dump_json(indent=2) + "\n")


def generate(root: str, gb: float, *, channels: int, min_len: int, max_len: int) -> dict[str, Any]:
    """A recur dataset whose train split holds about `gb` GB of float32 values in part files of
    about PART_BYTES; small val/test splits. Returns the manifest's train files and sizes."""
    import pyarrow.parquet as pq

    from benchmarks.load import sequences
    from pipeline.data.dataset import split_dir, write_dataset

    def table(rows: int, seed: int):
        rng = np.random.default_rng(seed)
        return sequences(rows, seed=seed, channels=channels,
                         lengths=rng.integers(min_len, max_len + 1, size=rows))

    row_bytes = channels * 4 * (min_len + max_len) / 2
    part_rows = max(1, int(PART_BYTES / row_bytes))
    parts = max(1, math.ceil(gb * 1e9 / (part_rows * row_bytes)))
    splits = {"train": table(part_rows, 0), "val": table(512, 10**6), "test": table(64, 10**6 + 1)}
    write_dataset(root, splits,
                  name="stream", task="classify", labels=[str(i) for i in range(9)], sources=[],
                  import_params={"generator": "benchmarks.stream", "gb": gb, "channels": channels})
    folder = split_dir(root, "train")
    start = time.perf_counter()
    for part in range(1, parts):
        pq.write_table(table(part_rows, part), os.path.join(folder, f"part-{part:05d}.parquet"),
                       compression="zstd")
        if part % 8 == 0:
            print(f"  generated {part + 1}/{parts} part files ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    files = sorted(p.name for p in Path(folder).glob("part-*.parquet"))
    write_train_split(root, part_rows * parts, [f"train/{name}" for name in files])
    return {"parts": parts, "rows": part_rows * parts, "rows_per_part": part_rows,
            "bytes_on_disk": sum((Path(folder) / name).stat().st_size for name in files)}


class Sampler:
    """Twice a second: per-process peak RSS and PSS by role (Train worker, Ray Data's split
    coordinator and read tasks), the peak PSS of the whole tree, and the peak bytes used in Ray's
    object store. RSS counts every object-store page a process maps; PSS divides shared pages
    among the processes that map them."""

    ROLES = {"RayTrainWorker": "train_worker", "SplitCoordinator": "split_coordinator",
             "ReadFiles": "data_task", "ListFiles": "data_task", "ReadParquet": "data_task"}

    def __init__(self) -> None:
        self.rss_mib: dict[str, float] = {}
        self.pss_mib: dict[str, float] = {}  # shared pages (the object store) divided among mappers
        self.tree_pss_mib = self.object_store_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _status(pid: int) -> tuple[str, float]:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
            return title, rss / 1024
        except (OSError, StopIteration, ValueError):
            return "", 0.0

    def _run(self) -> None:
        import ray

        total = ray.cluster_resources().get("object_store_memory", 0.0)
        while not self._stop.is_set():
            pids = _descendants(os.getpid())
            self.tree_pss_mib = max(self.tree_pss_mib, sum(_pss_kib(p) for p in pids) / 1024)
            for pid in pids:
                title, rss = self._status(pid)
                role = next((r for key, r in self.ROLES.items() if key in title), None)
                if role:
                    self.rss_mib[role] = max(self.rss_mib.get(role, 0.0), rss)
                    self.pss_mib[role] = max(self.pss_mib.get(role, 0.0), _pss_kib(pid) / 1024)
            free = ray.available_resources().get("object_store_memory", total)
            self.object_store_mib = max(self.object_store_mib, (total - free) / 2**20)
            self._stop.wait(0.5)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def train_one_epoch(root: str, args: argparse.Namespace, label: str) -> dict[str, Any]:
    from pipeline.config import load_config
    from pipeline.data.dataset import read_manifest
    from pipeline.training.trainer import build_trainer

    cfg = load_config([], [
        f"data.root={root}", "data.materialize=false", f"data.batch_size={args.batch_size}",
        f"resources.num_workers={args.workers}", f"resources.cpus_per_worker={args.cpus_per_worker}",
        "train.epochs=1", "train.early_stopping_patience=0", "model.cell=lstm",
        f"model.hidden_size={args.hidden}", "train.ray_log_level=ERROR",
        f"resources.use_gpu={str(args.gpu).lower()}"])
    with tempfile.TemporaryDirectory(prefix="recur-stream-run-") as tmp:
        reports = Path(tmp) / "reports.jsonl"
        trainer = build_trainer(cfg, read_manifest(root), storage_path=f"{tmp}/ray", name=f"stream-{label}",
                                callbacks=[ReportsToFile(str(reports))])
        start = time.perf_counter()
        with Sampler() as sampler:
            trainer.fit()
        wall = time.perf_counter() - start
        (report,) = [json.loads(line) for line in reports.read_text().splitlines()]
    return {
        "label": label, "rows": int(report["train_sequences"]), "wall_s": round(wall, 1),
        "epoch_s": round(report["epoch_seconds"], 1),
        "rows_per_s": round(report["train_sequences"] / report["epoch_seconds"]),
        "data_wait_fraction": round(report["data_wait_fraction"], 4),
        "worker_peak_rss_mib_reported": round(report["worker_peak_rss_mib"], 1),
        "peak_rss_mib": {k: round(v, 1) for k, v in sampler.rss_mib.items()},
        "peak_pss_mib": {k: round(v, 1) for k, v in sampler.pss_mib.items()},
        "peak_tree_pss_mib": round(sampler.tree_pss_mib, 1),
        "peak_object_store_mib": round(sampler.object_store_mib, 1),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks stream")
    parser.add_argument("--gb", type=float, default=10.0, help="train split size in GB of float32 values")
    parser.add_argument("--small-gb", type=float, default=1.0, help="the small run beside it")
    parser.add_argument("--dir", default=None, help="where to generate it (default: the temp folder)")
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--min-len", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="recur's default")
    parser.add_argument("--cpus-per-worker", type=float, default=0.5, help="recur's default")
    parser.add_argument("--object-store-gb", type=float, default=2.0,
                        help="Ray's object store, smaller than the data on purpose")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--gpu", action="store_true", help="train on the GPU (one per worker)")
    add_tag_argument(parser)
    args = parser.parse_args(argv)

    import ray

    base = args.dir or tempfile.gettempdir()
    free_gb = shutil.disk_usage(base).free / 1e9
    gb = args.gb
    if free_gb < gb * 1.2 + 2:
        gb = max(0.5, round((free_gb - 2) / 1.2, 1))
        print(f"only {free_gb:.1f} GB free under {base}: generating {gb} GB instead of {args.gb} GB")
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    runs = []
    with tempfile.TemporaryDirectory(prefix="recur-bench-stream-", dir=base) as tmp:
        start = time.perf_counter()
        print(f"generating {gb} GB of Parquet under {tmp} ...", flush=True)
        data = generate(f"{tmp}/big", gb, channels=args.channels, min_len=args.min_len, max_len=args.max_len)
        data["generate_s"] = round(time.perf_counter() - start, 1)
        print(f"  {data['rows']:,} rows in {data['parts']} part files, "
              f"{data['bytes_on_disk'] / 1e9:.2f} GB on disk, {data['generate_s']:.0f} s", flush=True)
        # the small run: the big dataset's first part files, as a dataset of its own (links, no copy)
        small_parts = max(1, round(data["parts"] * args.small_gb / gb))
        small = f"{tmp}/small"
        def later_parts(folder: str, names: list[str]) -> list[str]:
            return [n for n in names if folder.endswith("train") and n.startswith("part-")
                    and int(n[5:10]) >= small_parts]

        shutil.copytree(f"{tmp}/big", small, ignore=later_parts, copy_function=os.link)
        write_train_split(small, data["rows_per_part"] * small_parts,
                          [f"train/part-{part:05d}.parquet" for part in range(small_parts)])

        ray.init(num_cpus=args.num_cpus, num_gpus=None if args.gpu else 0, include_dashboard=False,
                 object_store_memory=int(args.object_store_gb * 2**30))
        try:
            for label, root in ((f"{args.small_gb:g} GB", small), (f"{gb:g} GB", f"{tmp}/big")):
                print(f"training one epoch over {label} (streamed) ...", flush=True)
                runs.append(train_one_epoch(root, args, label))
                print("  " + json.dumps(runs[-1]), flush=True)
        finally:
            ray.shutdown()

    small_run, big_run = runs
    print(f"\nmachine: {os.cpu_count()} CPUs, {memory_gib:.1f} GiB memory; object store "
          f"{args.object_store_gb:g} GiB; data {data['bytes_on_disk'] / 1e9:.2f} GB on disk "
          f"({data['rows']:,} rows x {args.channels} channels x {args.min_len}..{args.max_len} steps)")
    print(f"{'train split':<12}{'rows':>11}{'epoch s':>9}{'rows/s':>9}{'wait':>7}{'worker RSS/PSS':>16}"
          f"{'coordinator PSS':>17}{'read task PSS':>15}{'tree PSS':>10}{'object store':>14}")
    for r in runs:
        rss, pss = r["peak_rss_mib"], r["peak_pss_mib"]
        print(f"{r['label']:<12}{r['rows']:>11,}{r['epoch_s']:>9.1f}{r['rows_per_s']:>9,}"
              f"{r['data_wait_fraction']:>7.1%}{rss.get('train_worker', 0):>7.0f}/"
              f"{pss.get('train_worker', 0):.0f} MiB"
              f"{pss.get('split_coordinator', 0):>13.0f} MiB{pss.get('data_task', 0):>11.0f} MiB"
              f"{r['peak_tree_pss_mib']:>6.0f} MiB{r['peak_object_store_mib']:>10.0f} MiB")
    ratios = {key: round(big_run[key] / small_run[key], 2) if small_run[key] else None
              for key in ("peak_tree_pss_mib", "peak_object_store_mib", "worker_peak_rss_mib_reported")}
    print(f"{big_run['label']} over {small_run['label']}: rows x{big_run['rows'] / small_run['rows']:.1f}, "
          f"peak tree PSS x{ratios['peak_tree_pss_mib']}, "
          f"worker RSS x{ratios['worker_peak_rss_mib_reported']}, "
          f"object store x{ratios['peak_object_store_mib']}")
    name = "stream" if args.gb == parser.get_default("gb") else f"stream-{args.gb:g}gb"
    write_results(name, args.tag, settings={**vars(args), "gb": gb}, data=data, runs=runs, ratios=ratios)
    return 0
