"""Load on one small machine: a 32-trial study, then batch prediction over 1 million sequences.

Both run in one process on one local Ray, through recur's own code (`run_study`, `recur
predict`). A sampler thread reads the proportional set size (PSS: shared pages divided among the
processes that map them, so Ray's object store is counted once) of this process and every process
it started (Ray's GCS, raylet, workers, Train and Tune actors) twice a second; the peak of the sum
is the memory the whole run needed, the peak of the driver alone is shown beside it.

The study's MLflow logging is checked to have kept up: every trial's child run holds one value
per epoch the trial ran (from Tune's table) for every per-epoch metric, and nothing is left in the
spool of metrics MLflow refused.

    python -m benchmarks load [--trials 32] [--epochs 2] [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks import write_results

REPO = Path(__file__).resolve().parents[1]
CHANNELS, MIN_LEN, MAX_LEN = 12, 7, 29  # JapaneseVowels' shape, so its model reads the data


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration, ValueError):
        return 0


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class MemoryPeak:
    """Peak PSS of this process tree (and of this process alone) while the block runs."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s, self.tree_kib, self.driver_kib = interval_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            self.tree_kib = max(self.tree_kib, sum(_pss_kib(p) for p in _descendants(me)))
            self.driver_kib = max(self.driver_kib, _pss_kib(me))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mib(self) -> dict[str, float]:
        return {"peak_tree_pss_mib": round(self.tree_kib / 1024, 1),
                "peak_driver_pss_mib": round(self.driver_kib / 1024, 1)}


def sequences(rows: int, *, seed: int = 0, lengths: np.ndarray | None = None,
              channels: int = CHANNELS) -> pa.Table:
    """`rows` random sequences of JapaneseVowels' shape (12 channels unless `channels` says, 9
    classes; lengths 7..29 unless `lengths` gives them), built as Arrow arrays without a Python
    loop over rows (the dataset contract's x: list<list<float32>>)."""
    from pipeline.data.dataset import ARROW_SCHEMA

    rng = np.random.default_rng(seed)
    if lengths is None:
        lengths = rng.integers(MIN_LEN, MAX_LEN + 1, size=rows)
    steps = int(lengths.sum())
    row_offsets = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(lengths, out=row_offsets[1:])
    step_offsets = np.arange(0, (steps + 1) * channels, channels, dtype=np.int32)
    values = rng.standard_normal(size=steps * channels, dtype=np.float32)
    inner = pa.ListArray.from_arrays(pa.array(step_offsets), pa.array(values))
    x = pa.ListArray.from_arrays(pa.array(row_offsets), inner)
    ids = pa.array([f"gen:{i}" for i in range(rows)], pa.string())
    y = pa.array(rng.integers(0, 9, size=rows), pa.int64())
    return pa.Table.from_arrays([ids, x, y], schema=ARROW_SCHEMA)


def study(tmp: str, trials: int, epochs: int) -> tuple[dict, str]:
    """The 32-trial study on JapaneseVowels; returns its figures and the registered model name."""
    from mlflow import MlflowClient

    from pipeline.config import load_config
    from pipeline.tracking.store import resolve_tracking_uri
    from pipeline.workflow.runner import run_study
    from pipeline.workflow.session import connect_ray

    model = "load-bench"
    cfg = load_config([REPO / "configs" / "quickstart.yaml", REPO / "benchmarks" / "tune-space.yaml"], [
        f"tracking.runs_dir={tmp}/runs", f"data.root={tmp}/jv", f"train.epochs={epochs}",
        f"tune.num_samples={trials}", "tune.scheduler.name=fifo", "tune.seed=0", "tune.name=load",
        "resources.num_workers=1", f"registry.model_name={model}", "train.ray_log_level=ERROR"])
    start = time.perf_counter()
    with MemoryPeak() as memory:
        summary = run_study(cfg, connect=lambda: connect_ray(cfg, None))
    wall = time.perf_counter() - start

    client = MlflowClient(resolve_tracking_uri(cfg))
    children = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{summary.parent_run_id}'", max_results=1000)
    epochs_by_trial = dict(zip(summary.trials["trial_id"], summary.trials["epochs"], strict=True))
    lost = []
    for run in children:
        want = list(range(int(epochs_by_trial[run.data.tags["recur.trial_id"]])))
        for key in ("train_loss", "val_loss", "val_accuracy"):
            got = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            if got != want:
                lost.append(f"{run.data.tags['recur.trial_id']} {key}: {got} != {want}")
    spool = Path(cfg.tracking.runs_dir) / "spool"
    kept = sorted(p.name for p in spool.glob("*.jsonl")) if spool.exists() else []
    return {
        "trials": len(summary.trials), "concurrency": summary.concurrency,
        "trial_epochs": int(summary.trials["epochs"].sum()), "child_runs": len(children),
        "metric_histories_checked": 3 * len(children), "metric_histories_wrong": lost,
        "spooled_runs_left": kept, "wall_s": round(wall, 1),
        "trials_per_min": round(len(summary.trials) / wall * 60, 2), **memory.mib(),
    }, model


def predict(tmp: str, rows: int, model: str) -> dict:
    """`recur predict` of the study's model over `rows` generated sequences."""
    import pyarrow.parquet as pq

    from pipeline.cli import main as recur
    from pipeline.data.dataset import write_dataset

    small = sequences(64, seed=1)
    root = f"{tmp}/million"
    made = time.perf_counter()
    write_dataset(root, {"train": small, "val": small.slice(0, 16), "test": sequences(rows)},
                  name="generated", task="classify", labels=[str(i) for i in range(9)], sources=[],
                  import_params={"generator": "benchmarks.load", "rows": rows})
    print(f"{rows} sequences written in {time.perf_counter() - made:.1f} s", flush=True)
    out = f"{tmp}/predictions"
    start = time.perf_counter()
    with MemoryPeak() as memory:
        code = recur(["predict", model, "--data", root, "--out", out, "--split", "test",
                      "--runs-dir", f"{tmp}/runs"])
    wall = time.perf_counter() - start
    written = pq.read_table(out, columns=["id", "error"])
    return {
        "rows": rows, "exit_code": code, "rows_written": written.num_rows,
        "rows_failed": written.num_rows - written.column("error").null_count,
        "distinct_ids": len(set(written.column("id").to_pylist())),
        "wall_s": round(wall, 1), "rows_per_s": round(rows / wall), **memory.mib(),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks load")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="recur-bench-load-") as tmp:
        tuned, model = study(tmp, args.trials, args.epochs)
        print(json.dumps(tuned, indent=2), flush=True)
        predicted = predict(tmp, args.rows, model)
        print(json.dumps(predicted, indent=2), flush=True)
    ok = (not tuned["metric_histories_wrong"] and not tuned["spooled_runs_left"]
          and predicted["exit_code"] == 0 and predicted["rows_written"] == args.rows
          and predicted["distinct_ids"] == args.rows)
    print(f"study: {tuned['trials']} trials in {tuned['wall_s']} s, "
          f"peak PSS {tuned['peak_tree_pss_mib']} MiB "
          f"(driver {tuned['peak_driver_pss_mib']}); MLflow kept up: {not tuned['metric_histories_wrong']}")
    print(f"predict: {predicted['rows_written']} of {args.rows} rows in {predicted['wall_s']} s "
          f"({predicted['rows_per_s']} rows/s), peak PSS {predicted['peak_tree_pss_mib']} MiB "
          f"(driver {predicted['peak_driver_pss_mib']})")
    write_results("load", settings=vars(args), study=tuned, predict=predicted, ok=ok)
    return 0 if ok else 1
