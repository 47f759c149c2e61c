"""recur's message when Ray Train gives up: what failed, what to change, the latest checkpoint.

Given the exceptions Ray Train raises from `fit()` (Train V2's own classes) and a run folder with
checkpoints, when recur turns them into its error, then the message names the failed ranks or the
start timeout with the CPUs needed and left, the keys to change, and the newest checkpoint.
"""

from __future__ import annotations

from ray.train import ControllerError, WorkerGroupError
from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

from pipeline.config import RecurConfig
from pipeline.training.trainer import latest_checkpoint, training_failure


def _run_dir(tmp_path):
    run = tmp_path / "quickstart-20261122"
    for name in ("checkpoint_2026-11-22_10-00-01.000001", "checkpoint_2026-11-22_10-00-09.000002"):
        (run / name).mkdir(parents=True)
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    return run


def test_worker_errors_name_each_rank_and_the_latest_checkpoint(tmp_path):
    run = _run_dir(tmp_path)
    error = WorkerGroupError("2 workers failed", {1: RuntimeError("gloo: Connection reset by peer\nmore")})
    message = str(training_failure(error, RecurConfig(train={"max_failures": 2}), str(run)))
    assert message.startswith("training failed after 2 restart(s) of the worker group (train.max_failures)")
    assert "rank 1: RuntimeError: gloo: Connection reset by peer" in message and "more" not in message
    assert message.endswith(f"The latest checkpoint is {run / 'checkpoint_2026-11-22_10-00-09.000002'}")


def test_a_start_timeout_says_what_the_workers_need_and_what_to_change(ray_local, tmp_path):
    cfg = RecurConfig(resources={"num_workers": 2, "cpus_per_worker": 1.25, "start_timeout_s": 15})
    error = ControllerError(WorkerGroupStartupTimeoutError(num_workers=2))
    message = str(training_failure(error, cfg, str(tmp_path / "nothing-yet")))
    assert "The workers need 2 x 1.25 CPU and the cluster has 2 CPU now (a node was lost?)" in message
    assert "resources.num_workers" in message and "resources.start_timeout_s (now 15 s)" in message
    assert message.endswith(f"No checkpoint was written under {tmp_path / 'nothing-yet'}")


def test_latest_checkpoint_is_none_without_checkpoints(tmp_path):
    assert latest_checkpoint(str(tmp_path)) is None
    assert latest_checkpoint(str(tmp_path / "missing")) is None
