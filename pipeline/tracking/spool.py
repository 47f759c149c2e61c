"""Metrics MLflow could not take yet: kept on disk, written once the tracking server answers.

`EpochLogger` (in the Train controller) tries each epoch's batch a few times with backoff; when
MLflow still refuses it, the batch goes to the run's spool file, and the spool is flushed, oldest
first, before every later epoch. The driver flushes once more after training, and `recur runs
sync` uploads whatever is left (a server that stayed down until the run ended). Epochs the run
already holds are skipped, so every epoch is written once and in order.

A spool file is JSON lines under `<runs_dir>/spool/<run_id>.jsonl`: one line per batch,
{"epoch": N or null, "metrics": [[key, value, timestamp_ms, step], ...]}; `epoch: null` holds
run-level metrics (best_epoch, epochs_run), uploaded as they are.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric

log = logging.getLogger(__name__)

SPOOL_DIR = "spool"
RETRY_DELAYS_S = (0.5, 1.0, 2.0)  # between tries of one batch, then it is spooled
T = TypeVar("T")


@contextlib.contextmanager
def quick_requests(timeout_s: int = 10) -> Iterator[None]:
    """MLflow's client without its own long backoff (7 retries, minutes) for the block: recur's
    `with_retries` decides, so an unreachable server costs seconds per epoch. Restored after."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def spool_path(runs_dir: str, run_id: str) -> Path:
    return Path(runs_dir).resolve() / SPOOL_DIR / f"{run_id}.jsonl"


def with_retries(call: Callable[[], T], what: str, delays: tuple[float, ...] = RETRY_DELAYS_S) -> T:
    """`call()`, tried again after each delay in `delays` while it raises; the last error is raised."""
    for delay in (*delays, None):
        try:
            return call()
        except Exception as exc:
            if delay is None:
                raise
            log.info("%s failed (%s); trying again in %.1f s", what, str(exc).splitlines()[0][:200], delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def append(path: Path, epoch: int | None, metrics: list[Metric]) -> None:
    """Add one batch to the spool file (flushed to disk before returning)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"epoch": epoch, "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics]})
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read(path: Path) -> list[tuple[int | None, list[Metric]]]:
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            batch = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in item["metrics"]]
            entries.append((item["epoch"], batch))
    return entries


def last_logged_epoch(client: MlflowClient, run_id: str) -> int:
    """The run's last epoch in MLflow (-1 for none), from its train_loss history."""
    return max((m.step for m in client.get_metric_history(run_id, "train_loss")), default=-1)


def flush(tracking_uri: str, run_id: str, path: Path, logged_through: int | None = None) -> tuple[int, int]:
    """Upload the spooled batches of `run_id` in epoch order, skipping epochs MLflow already holds,
    then delete the file. Returns (batches uploaded, the run's last logged epoch); raises when
    MLflow does not answer (the file is kept)."""
    entries = read(path)
    client = MlflowClient(tracking_uri)
    last = last_logged_epoch(client, run_id) if logged_through is None else logged_through
    if not entries:
        return 0, last
    uploaded = 0
    for epoch, batch in sorted(entries, key=lambda e: -1 if e[0] is None else e[0]):
        if epoch is None or epoch > last:
            client.log_batch(run_id, metrics=batch)
            uploaded += 1
            last = last if epoch is None else epoch
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
        try:
            uploaded, last = flush(tracking_uri, run_id, path)
        except Exception as exc:
            left += 1
            report(f"run {run_id}: not synced ({str(exc).splitlines()[0][:200]}); kept in {path}")
            continue
        report(f"run {run_id}: {uploaded} kept batch(es) written; last epoch in MLflow {last}")
    return left
