"""Kept metrics (pipeline.tracking.spool) against a real MLflow store (sqlite).

Given a run that holds epochs 0 and 1, and a spool that kept epochs 3, 1 and 2 (out of order,
epoch 1 also in MLflow) plus a run-level batch, when the spool is flushed, then epochs 2 and 3
are written in order, epoch 1 is not written again, the run-level metrics are written, and the
spool file is gone; `recur runs sync` says when there is nothing to sync.
"""

from __future__ import annotations

import os

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from pipeline.cli import main
from pipeline.tracking import spool
from pipeline.tracking.policy import CallPolicy


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


def test_the_call_policy_tries_again_then_raises_within_its_deadline():
    # given recur's policy with 2 retries and a clock that advances 1 s per try
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    policy = CallPolicy(retries=2, timeout_s=10.0, deadline_s=60.0)
    calls = []

    def flaky():
        calls.append(os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
        if len(calls) < 3:
            raise ConnectionError("refused")
        return "ok"

    # when a call fails twice, then it is tried a third time with MLflow's own retries off
    assert policy.call(flaky, "flaky", clock=lambda: now[0], sleep=sleep) == "ok"
    assert calls == ["0", "0", "0"] and slept == [0.5, 1.0]
    attempts = []

    def down():
        attempts.append(1)
        now[0] += 1.0
        raise ConnectionError("down")

    # when the server stays down, then the last error comes after 1 + retries tries
    with pytest.raises(ConnectionError, match="down"):
        policy.call(down, "down", clock=lambda: now[0], sleep=sleep)
    assert len(attempts) == 3
    # and no try starts past the deadline: one try that takes 50 s leaves no room for another
    slow = CallPolicy(retries=5, deadline_s=50.0)
    attempts.clear()

    def hangs():
        attempts.append(1)
        now[0] += 50.0
        raise TimeoutError("read timed out")

    with pytest.raises(TimeoutError):
        slow.call(hangs, "hangs", clock=lambda: now[0], sleep=sleep)
    assert len(attempts) == 1


def test_the_call_policy_bounds_mlflows_own_retries_and_puts_the_environment_back(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    policy = CallPolicy(retries=3, timeout_s=30.0, deadline_s=60.0)
    with policy.applied():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "15"  # 4 tries that time out fit in 60 s
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7"
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
