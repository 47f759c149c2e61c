"""One rank in this process: recur's trainer for `resources.num_workers: 0`.

A Ray Train worker group costs 10-30 s to start on 2 cores (a controller, a worker actor per rank,
a Ray Data split coordinator, each a new Python process importing torch), which is most of a
small run. With `resources.num_workers: 0` recur runs the same worker function
(`pipeline.training.worker.train_func`) in the calling process instead: the driver, or a Tune
trial's own actor. Ray Train's local mode does that too, but it drops what the controller does
with each report (no callbacks: no MLflow curves, no epoch lines, no hand-over to a Tune trial;
no checkpoint kept or ranked), and inside a Tune trial its `ray.train.get_context()` and
`ray.train.report()` raise (Ray points such functions at `ray.tune` instead). So the worker
function takes the four calls it makes of Ray Train (`get_context`, `get_checkpoint`,
`get_dataset_shard`, `report`) from a `LocalRun`, which also does the controller's part:
checkpoints under the run's folder as `checkpoint_<epoch>` (the best
`train.num_checkpoints_to_keep` by `train.monitor` and the latest, as Ray Train keeps them), the
run's callbacks called with every report, and a `ray.train.Result` at the end, so the caller
cannot tell the two apart. Data is read by Ray Data as in a distributed run, whole (one rank).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any


class LocalRun:
    """The Ray Train calls of one rank, and the controller's part, for a run in this process.
    `run_dir` is a local folder (the run's storage path, or a local one when storage is on S3)."""

    def __init__(self, run_dir: str, callbacks: Sequence[Any], *, monitor: str, mode: str,
                 num_to_keep: int | None, datasets: dict[str, Any] | None = None,
                 use_gpu: bool = False) -> None:
        self.run_dir = run_dir
        self.callbacks = list(callbacks)
        self.monitor, self.mode = monitor, mode
        self.num_to_keep = num_to_keep
        self.datasets = dict(datasets or {})
        self.use_gpu = use_gpu
        self.kept: list[tuple[float, int, str, dict[str, Any]]] = []  # (score, epoch, folder, metrics)
        self.last_metrics: dict[str, Any] = {}
        self.last_checkpoint: Any = None

    # ---- what the worker function asks of Ray Train (`ray.train.*` in a worker group)

    def get_context(self) -> LocalRun:
        return self

    def get_world_rank(self) -> int:
        return 0

    def get_local_rank(self) -> int:
        return 0

    def get_world_size(self) -> int:
        return 1

    def get_checkpoint(self) -> None:
        """Nothing to restore from a restarted worker group: there is none (the caller's
        checkpoint comes in the loop config, as for a Tune trial)."""
        return None

    def get_dataset_shard(self, name: str) -> Any:
        """The whole dataset: this rank is every rank."""
        return self.datasets[name]

    def device(self) -> Any:
        import torch

        return torch.device("cuda:0" if self.use_gpu and torch.cuda.is_available() else "cpu")

    def report(self, metrics: dict[str, Any], checkpoint: Any = None, **_: Any) -> None:
        """Keep the checkpoint (dropping the worst beyond `num_to_keep`), then run the callbacks
        with the report, as the controller runs them after each round of reports."""
        self.last_metrics = dict(metrics)
        if checkpoint is not None:
            self.last_checkpoint = checkpoint
            self.kept = [k for k in self.kept if k[2] != checkpoint.path]  # an epoch trained again
            self.kept.append((self._score(metrics), int(metrics.get("epoch", -1)), checkpoint.path,
                              dict(metrics)))
            self._prune()
        for callback in self.callbacks:
            callback.after_report(None, [dict(metrics)], checkpoint)

    # ---- the controller's part

    def checkpoint_dir(self, epoch: int) -> str:
        """The folder rank 0 writes this epoch's checkpoint into (named as Ray Train names them,
        so `trainer.latest_checkpoint` finds it)."""
        path = os.path.join(self.run_dir, f"checkpoint_{epoch:06d}")
        shutil.rmtree(path, ignore_errors=True)  # an epoch trained again after a resume
        os.makedirs(path)
        return path

    def result(self, return_value: Any) -> Any:
        """The `ray.train.Result` a worker group's run returns: the last report and checkpoint,
        the kept checkpoints with their metrics, the run's folder, rank 0's return value."""
        from ray.train import Checkpoint, Result

        return Result(metrics=self.last_metrics, checkpoint=self.last_checkpoint, error=None,
                      path=self.run_dir, return_value=return_value,
                      best_checkpoints=[(Checkpoint.from_directory(k[2]), k[3]) for k in self.kept])

    def _score(self, metrics: dict[str, Any]) -> float:
        value = metrics.get(self.monitor)
        try:
            value = float(value)
        except (TypeError, ValueError):
            return -math.inf
        if math.isnan(value):
            return -math.inf
        return value if self.mode == "max" else -value

    def _prune(self) -> None:
        """The best `num_to_keep` by score, and the latest whatever its score (a resume starts
        from it), as Ray Train's checkpoint manager keeps them."""
        if not self.num_to_keep or len(self.kept) <= self.num_to_keep:
            return
        best = sorted(self.kept, key=lambda k: (k[0], k[1]), reverse=True)[:self.num_to_keep]
        keep = [k for k in self.kept if k in best or k is self.kept[-1]]
        for k in self.kept:
            if all(k[2] != other[2] for other in keep):
                shutil.rmtree(k[2], ignore_errors=True)
        self.kept = keep


class LocalTrainer:
    """`TorchTrainer`'s place for `resources.num_workers: 0`: `fit()` runs the worker function
    here with `run` as its Ray Train, and returns the `ray.train.Result` a worker group would.
    An exception from the worker function is raised as it is (no worker group to restart)."""

    def __init__(self, train_func: Callable[[dict[str, Any]], Any], train_loop_config: dict[str, Any],
                 run: LocalRun) -> None:
        self.train_func = train_func
        self.train_loop_config = train_loop_config
        self.run = run

    def fit(self) -> Any:
        os.makedirs(self.run.run_dir, exist_ok=True)
        return self.run.result(self.train_func(self.train_loop_config))
