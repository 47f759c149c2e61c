"""Kept metrics (pipeline.tracking.spool) against a real MLflow store (sqlite).

Given a run that holds epochs 0 and 1, and a spool that kept epochs 3, 1 and 2 (out of order,
epoch 1 also in MLflow) plus a run-level batch, when the spool is flushed, then epochs 2 and 3
are written in order, epoch 1 is not written again, the run-level metrics are written, and the
spool file is gone; `recur runs sync` says when there is nothing to sync.
"""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from pipeline.cli import main
from pipeline.tracking import spool


def _batch(epoch: int) -> list[Metric]:
    return [Metric("train_loss", 1.0 / (epoch + 1), 1000 + epoch, epoch),
            Metric("val_loss", 2.0 / (epoch + 1), 1000 + epoch, epoch)]


def test_flush_writes_each_missing_epoch_once_in_order(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("spool")).info.run_id
    for epoch in (0, 1):
        client.log_batch(run_id, metrics=_batch(epoch))
    path = spool.spool_path(str(tmp_path / "runs"), run_id)
    for epoch in (3, 1, 2):
        spool.append(path, epoch, _batch(epoch))
    spool.append(path, None, [Metric("epochs_run", 4, 2000, 0)])

    uploaded, last = spool.flush(uri, run_id, path)
    assert (uploaded, last) == (3, 3) and not path.exists()
    history = client.get_metric_history(run_id, "train_loss")
    assert [m.step for m in history] == [0, 1, 2, 3]
    assert [m.value for m in history] == [1.0, 0.5, 1 / 3, 0.25]
    assert client.get_run(run_id).data.metrics["epochs_run"] == 4

    assert main(["runs", "sync", "--tracking-uri", uri, "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "nothing to sync" in capsys.readouterr().out


def test_with_retries_tries_again_then_raises():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("refused")
        return "ok"

    assert spool.with_retries(flaky, "flaky", delays=(0.0, 0.0, 0.0)) == "ok" and len(calls) == 3
    attempts = []

    def down():
        attempts.append(1)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError, match="down"):
        spool.with_retries(down, "down", delays=(0.0, 0.0))
    assert len(attempts) == 3
