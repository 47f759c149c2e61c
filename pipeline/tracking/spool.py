"""Metrics MLflow could not take yet: kept on disk, written once the tracking server answers.

`EpochLogger` (in the Train controller) tries each epoch's batch as the run's MLflow call policy
says (`pipeline.tracking.policy`: a few tries with backoff, within a deadline); when MLflow still
refuses it, the batch goes to the run's spool file, and the spool is flushed, oldest
first, before every later epoch. The driver flushes once more after training, and `recur runs
sync` uploads whatever is left (a server that stayed down until the run ended). Epochs the run
already holds are skipped, so every epoch is written once and in order.

A spool file is JSON lines under `<runs_dir>/spool/<run_id>.jsonl`: one line per batch,
{"epoch": N or null, "metrics": [[key, value, timestamp_ms, step], ...]}; `epoch: null` holds
run-level metrics (best_epoch, epochs_run), uploaded as they are. A last line
{"status": "FAILED"} says the run ended while the server was gone: `recur runs sync` marks the
MLflow run so once the rest is written, and nothing stays RUNNING.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric

log = logging.getLogger(__name__)

SPOOL_DIR = "spool"


def spool_path(runs_dir: str, run_id: str) -> Path:
    return Path(runs_dir).resolve() / SPOOL_DIR / f"{run_id}.jsonl"


def append(path: Path, epoch: int | None, metrics: list[Metric]) -> None:
    """Add one batch to the spool file (flushed to disk before returning)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"epoch": epoch, "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics]})
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def append_status(path: Path, status: str) -> None:
    """Say that the run ended with `status` while MLflow could not be told (`recur runs sync`
    sets it once the kept metrics are written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"status": status}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read(path: Path) -> list[tuple[int | None, list[Metric]]]:
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            if "metrics" not in item:  # a status line (read_status)
                continue
            batch = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in item["metrics"]]
            entries.append((item["epoch"], batch))
    return entries


def read_status(path: Path) -> str | None:
    """The status the run ended with while MLflow was gone (`append_status`), or None."""
    if not path.is_file():
        return None
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    statuses = [item["status"] for item in items if "status" in item]
    return statuses[-1] if statuses else None


def last_logged_epoch(client: MlflowClient, run_id: str) -> int:
    """The run's last epoch in MLflow (-1 for none), from its train_loss history."""
    return max((m.step for m in client.get_metric_history(run_id, "train_loss")), default=-1)


def flush(tracking_uri: str, run_id: str, path: Path, logged_through: int | None = None) -> tuple[int, int]:
    """Upload the spooled batches of `run_id` in epoch order, skipping epochs MLflow already holds,
    then delete the file. Returns (batches uploaded, the run's last logged epoch); raises when
    MLflow does not answer (the file is kept)."""
    entries = read(path)
    status = read_status(path)
    client = MlflowClient(tracking_uri)
    last = last_logged_epoch(client, run_id) if logged_through is None else logged_through
    if not entries and status is None:
        return 0, last
    uploaded = 0
    for epoch, batch in sorted(entries, key=lambda e: -1 if e[0] is None else e[0]):
        if epoch is None or epoch > last:
            client.log_batch(run_id, metrics=batch)
            uploaded += 1
            last = last if epoch is None else epoch
    if status is not None and client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status)  # a later `recur run` that continued it has closed it
    path.unlink()
    return uploaded, last


def sync_all(tracking_uri: str, runs_dir: str, report: Callable[[str], Any] = print) -> int:
    """`recur runs sync`: flush every spool file under runs_dir; returns how many are left."""
    folder = Path(runs_dir).resolve() / SPOOL_DIR
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        report(f"nothing to sync: no kept metrics under {folder}")
        return 0
    left = 0
    for path in files:
        run_id = path.stem
        status = read_status(path)
        try:
            uploaded, last = flush(tracking_uri, run_id, path)
        except Exception as exc:
            left += 1
            report(f"run {run_id}: not synced ({str(exc).splitlines()[0][:200]}); kept in {path}")
            continue
        report(f"run {run_id}: {uploaded} kept batch(es) written; last epoch in MLflow {last}"
               + ("; the run is marked as it ended" if status else ""))
    return left
