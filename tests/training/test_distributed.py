"""The Ray Train worker function: in one process (num_workers=0) and as 2-worker DDP over gloo."""

from __future__ import annotations

import sys

import pytest
import ray
import ray.train

from pipeline.config import load_config
from pipeline.data.dataset import read_manifest
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.resources import ResourceError, check_resources
from pipeline.training.trainer import build_trainer

pytestmark = pytest.mark.slow

# Test modules are not importable inside Ray's actors: ship this module's classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class ReportRecorder(ray.train.UserCallback):
    """Keeps every rank's report, on the controller, and hands them back through a Ray actor."""

    def __init__(self, sink):
        self.sink = sink

    def after_report(self, run_context, metrics, checkpoint):
        ray.get(self.sink.add.remote(metrics))


@ray.remote(num_cpus=0)
class Sink:
    def __init__(self):
        self.reports = []

    def add(self, metrics):
        self.reports.append(metrics)

    def get(self):
        return self.reports


def _cfg(root, num_workers, epochs=6, **extra):
    overrides = [f"data.root={root}", f"resources.num_workers={num_workers}", f"train.epochs={epochs}",
                 "data.batch_size=16", "model.hidden_size=16", "train.lr=0.01",
                 "train.early_stopping_patience=0", *[f"{k}={v}" for k, v in extra.items()]]
    return load_config([], overrides)


def test_worker_function_in_one_process(ray_local, toy_dataset, tmp_path):
    # given the worker function with num_workers=0 (one rank in this process, no worker group)
    # and a callback, as a distributed run's controller would call it
    from pipeline.training.trainer import best_checkpoint, latest_checkpoint

    keep = {"train.monitor": "val_loss", "train.monitor_mode": "min", "train.num_checkpoints_to_keep": 2}
    cfg = _cfg(toy_dataset, num_workers=0, epochs=4, **keep)
    sink = Sink.remote()
    trainer = build_trainer(cfg, read_manifest(str(toy_dataset)), storage_path=str(tmp_path / "ray"),
                            name="local", callbacks=[ReportRecorder(sink)])
    # when it trains
    result = trainer.fit()
    # then it ran every epoch and left a checkpoint that rebuilds the model with its preprocessing
    assert result.metrics["epoch"] == 3
    with result.checkpoint.as_directory() as directory:
        state = load_checkpoint(directory)
    assert state["model_args"]["input_size"] == 3 and state["model_args"]["num_classes"] == 2
    assert state["preprocessing"]["labels"] == ["neg", "pos"]
    assert state["progress"]["next_epoch"] == 4
    # and recur did what the controller does in a distributed run: every report reached the
    # callback, the checkpoints are in the run's folder (the best 2 by val_loss and the latest),
    # and the run's best checkpoint is the lowest val_loss's
    reports = [r[0] for r in ray.get(sink.get.remote())]
    assert [r["epoch"] for r in reports] == [0, 1, 2, 3]
    losses = {r["epoch"]: r["val_loss"] for r in reports}
    ranked = sorted(losses, key=lambda e: (-losses[e], e))[-2:]  # the 2 lowest, ties to the later
    kept = sorted(p.name for p in (tmp_path / "ray" / "local").glob("checkpoint_*"))
    assert kept == sorted({f"checkpoint_{e:06d}" for e in [*ranked, 3]}), (losses, kept)
    assert latest_checkpoint(str(tmp_path / "ray" / "local")).endswith("checkpoint_000003")
    best, metrics = best_checkpoint(result, cfg)
    assert metrics["epoch"] == ranked[-1] and best.path.endswith(f"checkpoint_{ranked[-1]:06d}")


def test_train_on_val_trains_on_the_val_rows_and_keeps_the_lowest_train_loss(ray_local, toy_dataset,
                                                                             tmp_path):
    # given train.train_on_val (what auto turns on for a small classify val split), one rank
    from pipeline.training.budget import resolve
    from pipeline.training.trainer import best_checkpoint

    manifest = read_manifest(str(toy_dataset))
    cfg = resolve(_cfg(toy_dataset, num_workers=0, epochs=3, **{"train.train_on_val": "true"}), manifest).cfg
    assert cfg.train.monitor == "train_loss"
    sink = Sink.remote()
    trainer = build_trainer(cfg, manifest, storage_path=str(tmp_path / "ray"), name="on-val",
                            callbacks=[ReportRecorder(sink)])
    # when it trains
    result = trainer.fit()
    # then every epoch went over the train and val rows, and the checkpoint kept as the best is
    # the one of the lowest training loss
    reports = [r[0] for r in ray.get(sink.get.remote())]
    rows = manifest.splits["train"].rows + manifest.splits["val"].rows
    assert [r["train_sequences"] for r in reports] == [rows] * 3
    _, metrics = best_checkpoint(result, cfg)
    assert metrics["train_loss"] == min(r["train_loss"] for r in reports)


def test_two_worker_ddp_trains_the_hybrid_encoder_and_ranks_agree(ray_local, toy_dataset, tmp_path):
    # given 2 workers at 0.5 CPU each on a 2-CPU Ray (one CPU left for Ray Data), training the
    # hybrid CNN-RNN as model.frontend auto builds it for float inputs: masked residual conv blocks
    # (with masked batch norm, whose running statistics are buffers DDP broadcasts from rank 0) and
    # patches of 2 before the GRU, rows cut to random windows as train.random_crop auto does under
    # it (patience 1: early stopping may come any epoch, and every rank
    # must take it together). The one 2-worker DDP
    # training of the classify task: the workflow tests train one rank in the driver.
    cfg = _cfg(toy_dataset, num_workers=2, epochs=6, **{"model.cell": "gru", "model.frontend": "resnet",
                                                        "model.frontend_channels": 8, "model.patch": 2,
                                                        "train.early_stopping_patience": 1,
                                                        "train.random_crop": 0.8})
    sink = Sink.remote()
    trainer = build_trainer(cfg, read_manifest(str(toy_dataset)), storage_path=str(tmp_path / "ray"),
                            name="ddp-hybrid", callbacks=[ReportRecorder(sink)])
    # when it trains
    result = trainer.fit()
    reports = ray.get(sink.get.remote())
    # then both ranks reported every epoch it ran (it finished: no rank left the loop alone) with
    # the same number of steps, the model learned, and the replicas stayed identical
    assert len(reports) >= 2 and all(len(r) == 2 for r in reports)
    assert all(r[0]["train_steps"] == r[1]["train_steps"] > 0 for r in reports)
    assert reports[-1][0]["train_loss"] < reports[0][0]["train_loss"]
    assert max(r[0]["val_accuracy"] for r in reports) > 0.8
    # the train split's 96 rows are shared equally: 48 per rank, 3 steps of 16
    assert reports[0][0]["train_sequences"] == 96
    for per_rank in reports:
        assert per_rank[0]["param_checksum"] == pytest.approx(per_rank[1]["param_checksum"], abs=0, rel=1e-12)
        # and both evaluated the same model: rank 0's batch-norm statistics, not each rank's own
        assert per_rank[0]["val_loss"] == per_rank[1]["val_loss"]
        assert per_rank[0]["early_stopped"] == per_rank[1]["early_stopped"]
    # and the checkpoint rebuilds the hybrid (its model_args name the front-end)
    with result.checkpoint.as_directory() as directory:
        state = load_checkpoint(directory)
    args = state["model_args"]
    assert (args["frontend"], args["frontend_channels"], args["patch"]) == ("resnet", 8, 2)
    assert any(key.startswith("frontend.blocks.2.shortcut_norm.running_mean") for key in state["state_dict"])


def test_resources_that_cannot_fit_fail_before_training(toy_dataset):
    cfg = _cfg(toy_dataset, num_workers=2, **{"resources.cpus_per_worker": 1.0})
    # 2 x 1 CPU and a whole CPU for Ray Data's file listing (more than the 0.5 reserved)
    with pytest.raises(ResourceError,
                       match=r"resources.num_workers=2 .* \+ 1 kept for Ray Data .* needs 3 CPUs.* has 2"):
        check_resources(cfg, {"CPU": 2.0})
    check_resources(cfg.model_copy(update={"resources": cfg.resources.model_copy(
        update={"cpus_per_worker": 0.5})}), {"CPU": 2.0})


def test_mixed_precision_without_gpus_fails_before_training(toy_dataset):
    cfg = _cfg(toy_dataset, num_workers=1, **{"train.precision": "fp16"})
    with pytest.raises(ResourceError, match="train.precision=fp16 needs resources.use_gpu=true"):
        check_resources(cfg, {"CPU": 2.0})


class KillRankOnce(ray.train.UserCallback):
    """Kills rank 1's worker process (SIGKILL) right after epoch `at_epoch` was reported."""

    def __init__(self, sink, at_epoch):
        self.sink = sink
        self.at_epoch = at_epoch

    def after_report(self, run_context, metrics, checkpoint):
        import os
        import signal

        ray.get(self.sink.add.remote(metrics))
        already = any(r[0].get("killed") for r in ray.get(self.sink.get.remote()))
        if metrics[0]["epoch"] == self.at_epoch and not already:
            ray.get(self.sink.add.remote([{"killed": True}]))
            os.kill(int(metrics[1]["pid"]), signal.SIGKILL)


def test_killed_worker_resumes_from_last_checkpoint(ray_local, toy_dataset, tmp_path):
    import io

    from mlflow import MlflowClient

    from pipeline.progress import Display, TrainView
    from pipeline.tracking.run import EpochLogger
    from pipeline.training.step_board import TrainWatch, start_board

    # given a 2-worker run allowed one failure, logging to one MLflow run (a real sqlite store),
    # its progress shown by this driver as plain lines
    board, shown = start_board(), io.StringIO()
    cfg = _cfg(toy_dataset, num_workers=2, epochs=5, **{"train.max_failures": 1})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("faulty", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    sink = Sink.remote()
    trainer = build_trainer(cfg, read_manifest(str(toy_dataset)), storage_path=str(tmp_path / "ray"),
                            name="faulty", mlflow_run_id=run_id, step_board=board,
                            callbacks=[EpochLogger(uri, run_id, 5, spool=str(tmp_path / "spool.jsonl"),
                                                   board=board),
                                       KillRankOnce(sink, at_epoch=1)])
    # when rank 1's process is killed after epoch 1 was checkpointed
    with TrainWatch(board, TrainView(Display("plain", shown), 5)):
        result = trainer.fit()
    epochs = [r[0]["epoch"] for r in ray.get(sink.get.remote()) if "epoch" in r[0]]
    # then the restarted worker group resumed at epoch 2 (not 0) and finished every epoch once
    assert epochs == [0, 1, 2, 3, 4]
    assert result.metrics["epoch"] == 4
    # and the driver showed rank 0's first step and every epoch once, in order, across the restart
    lines = [line for line in shown.getvalue().splitlines() if not line.startswith("[recur] waiting for ")]
    assert lines[0].startswith("[recur] epoch 1/5  step 1/3 (33%)  loss "), lines
    assert [line.split("  ")[0] for line in lines if "train_loss" in line] == [
        f"[recur] epoch {e}/5" for e in range(1, 6)]
    with result.checkpoint.as_directory() as directory:
        checkpoint = load_checkpoint(directory)
    assert checkpoint["progress"]["next_epoch"] == 5 and checkpoint["mlflow_run_id"] == run_id
    # and MLflow holds the one run, with every epoch's metrics once and in order
    assert [r.info.run_id for r in client.search_runs([experiment])] == [run_id]
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [0, 1, 2, 3, 4]


def test_worker_function_stops_on_nan_without_a_checkpoint_or_a_restart(ray_local, tmp_path):
    # given training data holding an inf (written past validation), and one restart allowed
    import numpy as np
    from conftest import make_toy_dataset

    from pipeline.data.dataset import make_table, read_split, write_dataset
    from pipeline.training.trainer import diverged_failure

    root = make_toy_dataset(tmp_path / "toy")
    tables = {s: read_split(str(root), s) for s in ("train", "val", "test")}
    xs = [np.asarray(x, np.float32) for x in tables["train"].column("x").to_pylist()]
    xs[5][0, 0] = np.inf
    train = tables["train"]
    tables["train"] = make_table(train.column("id").to_pylist(), xs, train.column("y").to_pylist())
    write_dataset(str(tmp_path / "bad"), tables, name="bad", task="classify", labels=["neg", "pos"],
                  sources=[], import_params={})
    cfg = _cfg(tmp_path / "bad", num_workers=0, epochs=4, **{"train.max_failures": 1})
    trainer = build_trainer(cfg, read_manifest(str(tmp_path / "bad")), storage_path=str(tmp_path / "ray"),
                            name="nan")
    # when it trains
    result = trainer.fit()
    # then the first epoch ends it: rank 0 returns why, no checkpoint of NaN weights was kept, and
    # the driver's message names the epoch and the keys to change
    assert result.return_value == {"epoch": 0, "diverged": "train_loss is nan"}
    assert result.checkpoint is None
    message = str(diverged_failure(result.return_value, cfg, str(tmp_path / "ray" / "nan")))
    assert message.startswith("training diverged in epoch 1: ") and "Lower train.lr (now 0.01)" in message
    assert "Nothing was evaluated or registered" in message
