"""The pipeline as recorded steps, and `recur retrain`, on a real local Ray and real MLflow servers.

Given the toy dataset: running the same config twice skips every step the second time (same run,
no new model version); `--from evaluate` re-runs evaluate, register and promote only; a run whose
tracking server dies mid-training finishes training (epoch metrics kept on disk), prints where the
model is, `recur runs sync` writes the kept epochs once and in order when the server is back, and
the run continues from the evaluate step in the same MLflow run; `recur retrain` starts from the
champion's weights (its first epoch's loss is below a fresh model's) and refuses data with other
channels.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, make_toy_dataset
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.training.trainer import latest_checkpoint
from pipeline.workflow.records import workflow_steps

pytestmark = pytest.mark.slow

MODEL = "workflow-toy"


def _args(tmp_path: Path, dataset: Path, uri: str, command: str = "run", workers: int = 2) -> list[str]:
    config = tmp_path / "workflow.yaml"
    config.write_text(
        f"resources: {{num_workers: {workers}}}\n"
        "model: {cell: gru, hidden_size: 16}\n"
        "train: {epochs: 3, lr: 0.01, early_stopping_patience: 0}\n"
        "data: {batch_size: 16}\n"
        f"registry: {{model_name: {MODEL}, min_improvement: 0.0}}\n"
        "tracking: {experiment: workflow}\n"
    )
    return [command, str(config), "--set", f"data.root={dataset}", "--set", f"tracking.tracking_uri={uri}",
            "--set", f"tracking.runs_dir={tmp_path / 'runs'}"]


def _steps(out: str) -> dict[str, str]:
    line = next(x for x in out.splitlines() if x.strip().startswith("steps "))
    parts = [p.split() for p in line.split("steps", 1)[1].split(",")]
    return {p[0]: p[1] for p in parts}


def _runs(client: MlflowClient) -> list:
    return client.search_runs([client.get_experiment_by_name("workflow").experiment_id])


def test_steps_are_skipped_rerun_from_a_step_and_shown(ray_local, mlflow_server, toy_dataset, tmp_path,
                                                        capsys):
    client = MlflowClient(mlflow_server)
    # one rank in this process: the steps are the subject, not the worker group
    args = _args(tmp_path, toy_dataset, mlflow_server, workers=0)
    assert main(args) == 0
    assert set(_steps(capsys.readouterr().out).values()) == {"succeeded"}
    (run,) = _runs(client)

    assert main(args) == 0  # the same config and data: nothing to do
    out = capsys.readouterr().out
    assert _steps(out) == dict.fromkeys(workflow_steps(tune=False), "skipped")
    assert run.info.run_id in out and len(_runs(client)) == 1
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1

    assert main([*args, "--from", "evaluate"]) == 0
    steps = _steps(capsys.readouterr().out)
    assert steps == {"ingest": "skipped", "validate": "skipped", "train": "skipped",
                     "evaluate": "succeeded", "register": "succeeded", "promote": "succeeded"}
    assert len(_runs(client)) == 1 and len(client.search_model_versions(f"name='{MODEL}'")) == 2

    # a change to the registry section re-runs only the gate
    assert main([*args, "--set", "registry.min_improvement=0.5"]) == 0
    assert _steps(capsys.readouterr().out)["promote"] == "succeeded"

    assert main(["runs", "show", run.info.run_id, "--tracking-uri", mlflow_server]) == 0
    shown = capsys.readouterr().out
    for step in workflow_steps(tune=False):
        assert step in shown
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["recur.step.promote"] == "succeeded" and tags["recur.step.evaluate"] == "skipped"
    records = list((tmp_path / "runs" / "steps").glob("train-*.json"))
    (record,) = [json.loads(p.read_text()) for p in records]
    assert record["status"] == "succeeded" and record["outputs"]["run_id"] == run.info.run_id
    assert {"config_hash", "input_hashes", "data_hash", "seconds"} <= set(record)

    # retrain: fine-tunes the champion, whose weights already fit this data
    assert main(_args(tmp_path, toy_dataset, mlflow_server, "retrain", workers=0)) == 0
    out = capsys.readouterr().out
    assert f"fine-tuned from models:/{MODEL}/" in out and _steps(out)["train"] == "succeeded"
    fresh, tuned = sorted(_runs(client), key=lambda r: r.info.start_time)
    first_loss = {r.info.run_id: client.get_metric_history(r.info.run_id, "val_loss")[0].value
                  for r in (fresh, tuned)}
    assert first_loss[tuned.info.run_id] < first_loss[fresh.info.run_id], first_loss

    # a dataset with another number of channels cannot be fine-tuned on: refused before training
    other = make_toy_dataset(tmp_path / "four-channels", num_channels=4)
    assert main(_args(tmp_path, other, mlflow_server, "retrain", workers=0)) == 2
    err = capsys.readouterr().err
    assert "cannot fine-tune" in err and "channels differ: champion 3, data 4" in err
    assert len(_runs(client)) == 2


def _start_server(root: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination",
         str(root / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300  # ~10 s on an idle machine, minutes on a busy one
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("mlflow server did not start")


def _stop(process: subprocess.Popen) -> None:
    import os

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_a_run_continues_after_its_tracking_server_died(ray_local, tmp_path, capsys, caplog):
    # MLflow's own retries stay as they are in this process (no MLFLOW_HTTP_REQUEST_MAX_RETRIES=0):
    # recur's call policy (tracking.retries, request_timeout_s, deadline_s) is what bounds the wait
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    port, root = free_port(), tmp_path / "server"
    root.mkdir()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(root, port)
    steps_dir = tmp_path / "runs" / "steps"
    epochs = 5

    def stop_server_mid_training() -> None:
        client = MlflowClient(uri)
        deadline = time.time() + 600
        while time.time() < deadline:
            try:
                runs = _runs(client) if client.get_experiment_by_name("workflow") else []
                if runs and len(client.get_metric_history(runs[0].info.run_id, "train_loss")) >= 2:
                    _stop(server)  # epochs 1 and 2 are in MLflow; the others are still to come
                    return
            except Exception:
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=stop_server_mid_training, daemon=True)
    watcher.start()
    try:
        # one rank in this process, epochs of about a second (200 steps): the server dies while
        # the run trains, and the run goes on without a worker group to hide behind
        dataset = make_toy_dataset(tmp_path / "toy", n_train=3200, n_val=64, n_test=48)
        args = _args(tmp_path, dataset, uri, workers=0) + ["--set", f"train.epochs={epochs}"]
        failed = main(args)  # one line and exit 2: the server is gone
        ended = time.time()
        assert failed == 2
        watcher.join(timeout=5)
        err = capsys.readouterr().err
        records = {r["step"]: r for r in (json.loads(p.read_text()) for p in steps_dir.glob("*.json"))}
        assert records["train"]["status"] == "succeeded"  # training went on without the server
        assert "evaluate" not in records  # refused at once, not call by call
        # after training (its last epoch's checkpoint), the dead server ended the run within a minute,
        # not the 12 or more MLflow's own backoff took
        last = Path(latest_checkpoint(records["train"]["outputs"]["storage_dir"]))
        after_training = ended - last.stat().st_mtime
        assert after_training < 60, f"{after_training:.0f} s after training"
        print(f"the run ended {after_training:.1f} s after its last checkpoint")  # shown with -s
        assert f"recur: error: MLflow tracking server {uri} stopped answering before the evaluate step" in err
        run_id = records["train"]["outputs"]["run_id"]
        kept = tmp_path / "runs" / "spool" / f"{run_id}.jsonl"
        # the warning comes from the run's epoch logger: in this process, through logging
        assert kept.exists() and f"did not take epoch {epochs - 1}" in err + caplog.text
        checkpoint = records["train"]["outputs"]["checkpoint_dir"]
        assert f"the trained model is not lost: its checkpoint is {checkpoint}" in err
        assert "`recur runs sync`" in err
        assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the policy was the run's alone

        server = _start_server(root, port)  # the same store comes back
        client = MlflowClient(uri)
        assert client.get_run(run_id).info.status == "RUNNING"  # recur could not tell it
        assert main(["runs", "sync", "--tracking-uri", uri, "--runs-dir", str(tmp_path / "runs")]) == 0
        assert f"run {run_id}: " in capsys.readouterr().out and not kept.exists()
        assert client.get_run(run_id).info.status == "FAILED"  # nothing is left RUNNING
        assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == list(range(epochs))
        assert main(args) == 0
        steps = _steps(capsys.readouterr().out)
        assert steps["train"] == "skipped" and steps["evaluate"] == "succeeded"
        (run,) = _runs(client)
        assert run.info.run_id == run_id and run.info.status == "FINISHED"
        assert "test_accuracy" in run.data.metrics and run.data.metrics["epochs_run"] == epochs
        # every epoch once and in order, though most were written after the server came back
        for key in ("train_loss", "val_loss"):
            assert [m.step for m in client.get_metric_history(run_id, key)] == list(range(epochs))
        assert client.get_model_version_by_alias(MODEL, "champion").run_id == run_id
    finally:
        _stop(server)


def test_another_mlflow_server_gets_its_own_run_and_champion(champion, tmp_path, tmp_path_factory, capsys):
    """The MLflow-switch scenario: step records are keyed by where results live and checked
    against the store before a step is skipped.

    Given the session's champion (every step recorded against the shared server), when the same
    config runs again against that server, every step is skipped and the summary says whose
    results it shows and how to make the gate compare. When it runs against a second, fresh
    `mlflow server`, it trains there: the second store ends with its own run and @champion
    (before: all six steps skipped, exit 0, and a run id and version the server did not have).
    A record whose run the store no longer holds (deleted) is no reason to skip either.
    """
    import shutil

    from conftest import start_mlflow_server, stop

    # a copy of the champion's records (the shared ones stay as they are), with its checkpoints
    # where they are: the storage path is part of where results live
    runs = tmp_path / "runs"
    shutil.copytree(champion.runs_dir / "steps", runs / "steps")
    where = (f"tracking.runs_dir={runs}", f"tracking.storage_path={champion.runs_dir / 'ray'}")
    first = MlflowClient(champion.tracking_uri)
    trained_by = first.get_model_version_by_alias(champion.model, "champion").run_id

    assert main(champion.run_args(*where)) == 0
    out = capsys.readouterr().out
    assert _steps(out) == dict.fromkeys(workflow_steps(tune=False), "skipped")
    assert "recur run finished: nothing ran (every step matches a finished record)" in out
    assert f"results of      MLflow run {trained_by}, trained " in out
    assert "became @champion (decided " in out and "not gated again" in out
    assert "timings (s)     none (nothing ran)" in out and "`--force` (or a changed config)" in out

    root = tmp_path_factory.mktemp("second-server")
    uri, server = start_mlflow_server(root, str(root / "artifacts"))
    try:
        other = champion.run_args(*where, f"tracking.tracking_uri={uri}")
        assert main(other) == 0
        out = capsys.readouterr().out
        steps = _steps(out)
        assert [steps[s] for s in ("train", "evaluate", "register", "promote")] == ["succeeded"] * 4
        second = MlflowClient(uri)
        (run,) = second.search_runs([second.get_experiment_by_name("predict").experiment_id])
        assert run.info.run_id != trained_by and run.info.run_id in out
        assert second.get_model_version_by_alias(champion.model, "champion").run_id == run.info.run_id
        assert f"{champion.model} version 1: became @champion" in out

        # again on the second server: skipped, its own run's results
        assert main(other) == 0
        out = capsys.readouterr().out
        assert set(_steps(out).values()) == {"skipped"} and f"MLflow run {run.info.run_id}, trained" in out

        # the run is deleted on the server: its record no longer counts; the gate compares
        second.delete_run(run.info.run_id)
        assert main(other) == 0
        out = capsys.readouterr().out
        assert _steps(out)["train"] == "succeeded" and "champion v1" in out
        assert len(second.search_model_versions(f"name='{champion.model}'")) == 2
    finally:
        stop(server)
    # the first server has nothing new
    assert len(first.search_model_versions(f"name='{champion.model}'")) == 1
