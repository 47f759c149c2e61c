"""A study whose driver is killed mid-study, continued with `recur tune --resume`.

Given `recur run` with `tune.enabled` running as its own process, a driver on the test's Ray
cluster, when that process is killed with SIGKILL while the second trial is training (Ray then
ends the job's trials and frees their resources, the cluster lives on), then
`recur tune CONFIG --resume` finishes the study: the trial that had finished is not run again,
the interrupted one continues from its checkpoint (no epoch is logged twice), every
trial has exactly one MLflow child run, and the study keeps its one parent run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_toy_dataset
from mlflow import MlflowClient

from pipeline.cli import main

pytestmark = pytest.mark.slow

EPOCHS = 4
EXPERIMENT = "tune-resume"


def _args(tmp_path: Path, dataset: Path, uri: str) -> list[str]:
    config = tmp_path / "study.yaml"
    config.write_text(
        "model: {cell: gru, hidden_size: 8}\n"
        f"train: {{epochs: {EPOCHS}, early_stopping_patience: 0}}\n"
        "data: {batch_size: 16}\n"
        "registry: {model_name: tune-resume}\n"
        f"tracking: {{experiment: {EXPERIMENT}}}\n"
        # one rank in each trial's actor (pipeline.training.local): the study's resume is the
        # subject, not the worker group (the documented study, test_tune_readme.py, has one)
        "resources: {num_cpus: 2, num_workers: 0}\n"
        "tune:\n"
        "  num_samples: 2\n"
        "  max_concurrent_trials: 1\n"  # the first trial has finished when the second trains
        "  scheduler: {name: fifo}\n"
        "  seed: 3\n"
        "  space:\n"
        "    train.lr: {loguniform: [1.0e-3, 3.0e-2]}\n"
    )
    return [str(config), "--set", f"data.root={dataset}", "--set", f"tracking.tracking_uri={uri}",
            "--set", f"tracking.runs_dir={tmp_path / 'runs'}"]


def _trial_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    return [r for r in client.search_runs([experiment.experiment_id]) if "recur.trial_id" in r.data.tags]


def _steps(client: MlflowClient, run_id: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, "val_loss")]


def _snapshot_holds_a_checkpoint(runs_dir: Path, trial_id: str) -> bool:
    """Whether a saved snapshot of the study (Tune's experiment_state-*.json, written every few
    seconds) already holds a checkpoint of `trial_id`: what `--resume` will restore it from."""
    for state in runs_dir.rglob("experiment_state-*.json"):
        try:
            trials = json.loads(state.read_text())["trial_data"]
        except (OSError, ValueError, KeyError):
            continue  # being written
        for trial, runtime in trials:
            if json.loads(trial)["trial_id"] == trial_id:
                manager = json.loads(runtime)["checkpoint_manager"]  # cloudpickled, as hex
                if b"checkpoint_0" in bytes.fromhex(manager["value"]):
                    return True
    return False


def _kill_when_second_trial_is_training(process: subprocess.Popen, client: MlflowClient, log: Path,
                                        runs_dir: Path) -> None:
    deadline = time.time() + 600
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the study ended before it could be interrupted:\n{log.read_text()[-4000:]}")
        runs = sorted(_trial_runs(client), key=lambda r: r.info.start_time)
        # two finished epochs of the second trial, and a checkpoint of it in the study's snapshot
        # (on a loaded machine the snapshot can lag the epochs MLflow already shows)
        if (len(runs) >= 2 and len(_steps(client, runs[1].info.run_id)) >= 2
                and _snapshot_holds_a_checkpoint(runs_dir, runs[1].data.tags["recur.trial_id"])):
            os.killpg(process.pid, signal.SIGKILL)  # the driver; its job's actors go with it
            process.wait(timeout=60)
            return
        time.sleep(0.25)
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail("the second trial never trained two epochs with a checkpoint in the study's snapshot:\n"
                f"{log.read_text()[-4000:]}")


def test_resume_after_the_driver_is_killed(ray_local, mlflow_server, tmp_path, capsys):
    # epochs of about a second (200 steps), so the test sees the second trial mid-training
    dataset = make_toy_dataset(tmp_path / "toy", n_train=3200, n_val=64, n_test=48)
    args = _args(tmp_path, dataset, mlflow_server)
    client = MlflowClient(mlflow_server)
    log = tmp_path / "driver.log"
    # one Ray on the machine: a second local one would leave Ray Train's placement-group cleaner
    # unable to tell which cluster to ask about a stopped trial
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "recur"), "run", *args, "--set", "tune.enabled=true"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            _kill_when_second_trial_is_training(process, client, log, tmp_path / "runs")
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    before = {r.data.tags["recur.trial_id"]: r for r in _trial_runs(client)}
    first, second = sorted(before.values(), key=lambda r: r.info.start_time)[:2]
    assert _steps(client, first.info.run_id) == list(range(EPOCHS))

    # Ray's name for the folders a checkpoint is copied into when read without a path
    copied_before = set(Path(tempfile.gettempdir()).glob("checkpoint_tmp_*"))
    assert main(["tune", *args, "--resume"]) == 0, capsys.readouterr().err
    # the restored trial read its checkpoint in place: no copy of it left behind in the temp folder
    assert set(Path(tempfile.gettempdir()).glob("checkpoint_tmp_*")) <= copied_before
    out = capsys.readouterr().out
    assert "recur tune finished" in out

    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("recur.kind") == "study"]
    assert parent.info.status == "FINISHED" and "test_accuracy" in parent.data.metrics
    trials = _trial_runs(client)
    ids = Counter(r.data.tags["recur.trial_id"] for r in trials)
    assert len(ids) == 2 and set(ids.values()) == {1}, ids  # no trial ran twice as a new run
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" and r.data.tags["recur.trial_status"] == "completed"
               for r in trials)
    assert set(before) <= set(ids)

    # the finished trial was not trained again; the interrupted one went on from its checkpoint
    assert _steps(client, first.info.run_id) == list(range(EPOCHS))
    resumed = _steps(client, second.info.run_id)
    assert resumed == list(range(EPOCHS)), resumed  # every epoch once, in order
    restored_from = client.get_run(second.info.run_id).data.tags.get("recur.restored_from", "")
    assert Path(restored_from).name.startswith("checkpoint_"), restored_from
    assert any(k.startswith("recur.sampled.restart_") for k in client.get_run(second.info.run_id).data.tags)

    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "tune/trials.csv", str(tmp_path)))
    assert len(table) == 2 and table["trial_id"].is_unique
