"""Builds the TorchTrainer. `recur train`, `recur run` and tuning all get their trainer here."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from typing import Any

from pipeline.config import RecurConfig
from pipeline.data.preprocess import Preprocessing
from pipeline.errors import Failure
from pipeline.training.resources import ResourceError, worker_resources

log = logging.getLogger(__name__)


class TrainingFailed(Failure, RuntimeError):
    """Ray Train gave up (train.max_failures restarts used): what failed, what to change, and
    where the latest checkpoint is."""


def training_failure(exc: BaseException, cfg: RecurConfig, run_dir: str) -> TrainingFailed:
    """recur's message for a `TrainingFailedError` from `trainer.fit()` of the run in `run_dir`."""
    import ray

    cause = getattr(exc, "controller_failure", None) or exc
    failures = getattr(exc, "worker_failures", None) or {}
    what = (str(cause).replace("Training failed due to worker errors:", "").strip().splitlines()
            or [type(cause).__name__])[0]
    if failures:
        what = "; ".join(f"rank {rank}: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
                         for rank, e in sorted(failures.items()))
    r = cfg.resources
    message = (f"training failed after {max(cfg.train.max_failures, 0)} restart(s) of the worker group "
               f"(train.max_failures): {what[:400]}")
    if "timed out" in what or "StartupTimeout" in type(cause).__name__:
        have = ray.cluster_resources().get("CPU", 0.0)
        message += (f". The workers need {r.num_workers} x {r.cpus_per_worker} CPU and the cluster has "
                    f"{have:g} CPU now (a node was lost?): lower resources.num_workers or "
                    "resources.cpus_per_worker, add nodes, or raise resources.start_timeout_s "
                    f"(now {r.start_timeout_s:g} s) for an autoscaling cluster")
    latest = latest_checkpoint(run_dir)
    message += (f". The latest checkpoint is {latest}" if latest
                else f". No checkpoint was written under {run_dir}")
    return TrainingFailed(message)


def diverged_failure(metrics: dict[str, Any], cfg: RecurConfig, run_dir: str) -> TrainingFailed:
    """recur's message when the workers stopped on NaN or inf (`loop.TrainingDiverged`): the
    epoch, what was not finite, what to change, and the last checkpoint with finite weights."""
    from pipeline.training.loop import TrainingDiverged

    message = str(TrainingDiverged(int(metrics.get("epoch", -1)), str(metrics["diverged"]),
                                   lr=cfg.train.lr, grad_clip=cfg.train.grad_clip))
    latest = latest_checkpoint(run_dir)
    message += (f". Nothing was evaluated or registered; the last checkpoint (finite weights) is {latest}"
                if latest else ". Nothing was evaluated or registered, and no epoch left finite weights")
    return TrainingFailed(message)


def latest_checkpoint(run_dir: str) -> str | None:
    """The newest `checkpoint_*` folder of a Ray Train run (local or s3://), or None."""
    from pipeline import storage

    if storage.is_s3(run_dir):
        prefix = storage.split_s3(run_dir)[1].rstrip("/") + "/"
        names = {o.key[len(prefix):].split("/")[0] for o in storage.list_objects(run_dir.rstrip("/") + "/")}
    else:
        names = set(os.listdir(run_dir)) if os.path.isdir(run_dir) else set()
    names = sorted(n for n in names if re.fullmatch(r"checkpoint_\d[\d_.-]*", n))  # not the manager's json
    return storage.join(run_dir, names[-1]) if names else None


def word_vectors_for(cfg: RecurConfig, pre: Preprocessing) -> Any:
    """`model.embeddings` read for `pre`'s vocabulary (`pipeline.data.embeddings.WordVectors`), or
    None without it; a task whose inputs are no words is a config error. The vectors' width is
    the embedding's (model.embedding_size sizes embeddings learned from scratch)."""
    if not cfg.model.embeddings:
        return None
    from pipeline.config import ConfigError
    from pipeline.data.embeddings import read_word_vectors

    if pre.feature_kind != "token" or cfg.data.task not in ("classify", "tag"):
        raise ConfigError(f"model.embeddings: pretrained word vectors start the word embedding of text "
                          f"classification (--format text-classes) or tagging; this dataset is task "
                          f"{cfg.data.task!r} with {pre.feature_kind} inputs: remove model.embeddings")
    return read_word_vectors(cfg.model.embeddings, pre.vocab)


def loop_config(cfg: RecurConfig, pre: Preprocessing, *, mlflow_run_id: str | None = None,
                initial_checkpoint: Any = None, initial_weights: Any = None,
                step_board: Any = None, steps_per_epoch: int | None = None,
                local_run: Any = None, word_vectors: Any = None) -> dict[str, Any]:
    """The dict the worker function receives (config crosses the Ray boundary as a dict)."""
    return {
        "config": cfg.model_dump(mode="json"),
        "preprocessing": pre.to_dict(),
        "mlflow_run_id": mlflow_run_id,
        # start from this ray.train.Checkpoint (weights, optimizer, epoch) unless Train restores one
        "initial_checkpoint": initial_checkpoint,
        # fine-tune: an object ref to a model's state dict (epoch 0, new optimizer); a ref, not a
        # path, so workers on other nodes can read it
        "initial_weights": initial_weights,
        # One intra-op thread per whole CPU a worker holds; oversubscribing cores slows every rank.
        "torch_threads": max(1, math.floor(cfg.resources.cpus_per_worker)),
        # rank 0 publishes its step progress to this actor (pipeline.training.step_board), if any
        "step_board": step_board,
        "steps_per_epoch": steps_per_epoch,
        # resources.num_workers: 0: the worker function runs in this process and takes its Ray
        # Train calls from this `LocalRun` (pipeline.training.local); None with a worker group
        "local_run": local_run,
        # model.embeddings: an object ref to (vectors_VD, found_V) for the vocabulary, or None
        "word_vectors": word_vectors,
    }


def bucket_pool_batches(cfg: RecurConfig, manifest: Any) -> int:
    """data.bucket_batches, lowered (to 1 at least) so that one pool of the train split's rows of
    mean length stays within data.bucket_pool_mib (float32 values, or int32 token ids)."""
    stats = manifest.lengths.get("train")
    row_bytes = (stats.mean if stats else 0.0) * 4 * (manifest.feature.num_channels
                                                      if manifest.feature.kind == "float" else 1)
    if row_bytes <= 0:
        return cfg.data.bucket_batches
    fits = int(cfg.data.bucket_pool_mib * 2**20 // (row_bytes * cfg.data.batch_size))
    return max(1, min(cfg.data.bucket_batches, fits))


def build_trainer(cfg: RecurConfig, manifest: Any, *, storage_path: str, name: str,
                  mlflow_run_id: str | None = None, callbacks: Sequence[Any] = (),
                  initial_checkpoint: Any = None, initial_weights: Any = None,
                  preprocessing: Preprocessing | None = None, step_board: Any = None,
                  word_vectors: Any = None):
    """A TorchTrainer over the dataset's train and val splits.

    Train is split across workers with equal row counts (Ray Data's `equal=True`), so every rank
    runs the same number of steps per epoch; val is read whole by every rank (and is part of
    train too under train.train_on_val). `step_board`:
    where rank 0 shows its step progress (`pipeline.training.step_board`). `word_vectors`:
    `model.embeddings` as the caller read it (`word_vectors_for`); read here when not given,
    except for a fine-tune, whose `initial_weights` hold the model's own word table.
    """
    import ray.data
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipeline.data.loading import LISTING_CPUS, ray_dataset
    from pipeline.tasks import task_class
    from pipeline.training.budget import resolve
    from pipeline.training.worker import train_func

    resolved = resolve(cfg, manifest)  # a Tune trial's sampled config may hold "auto" values too
    cfg = resolved.cfg

    # Train V2 hands this to its controller: a worker's report waits for the next poll, so Ray's
    # 2 s default would put a floor under every epoch of a small dataset.
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(cfg.train.report_poll_s)
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(cfg.resources.start_timeout_s)
    # Per-epoch dataset progress bars from every worker would interleave with recur's epoch lines.
    ray.data.DataContext.get_current().enable_progress_bars = cfg.train.ray_log_level in ("DEBUG", "INFO")
    # a fine-tune keeps the model's own preprocessing (normalization, labels, vocabulary)
    pre = preprocessing or Preprocessing.from_manifest(manifest)
    if word_vectors is None and initial_weights is None:
        word_vectors = word_vectors_for(cfg, pre)
    vectors_ref = None
    if word_vectors is not None:  # the embedding takes the vectors' width; workers get them by ref
        model = cfg.model.model_copy(update={"embedding_size": word_vectors.dimensions})
        cfg = cfg.model_copy(update={"model": model})
        vectors_ref = ray.put((word_vectors.vectors, word_vectors.found))
    pool = bucket_pool_batches(cfg, manifest)
    if cfg.data.bucket_by_length is True and pool < cfg.data.bucket_batches:
        log.info("data.bucket_batches %d -> %d: a pool of %d rows of this data would hold more than "
                 "data.bucket_pool_mib=%g MiB", cfg.data.bucket_batches, pool,
                 cfg.data.bucket_batches * cfg.data.batch_size, cfg.data.bucket_pool_mib)
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"bucket_batches": pool})})
    materialize = _materialize(cfg.data.materialize)
    # read tasks fit in the CPU kept for Ray Data (resources.reserve_cpus_for_data), on any node
    read_cpus = min(1.0, cfg.resources.reserve_cpus_for_data) or 1.0
    # Materialized, the splits are read here and now; streamed, beside the workers once they start.
    r = cfg.resources
    wait_for_free_cpus(LISTING_CPUS + (0.0 if materialize else r.num_workers * r.cpus_per_worker),
                       timeout_s=r.start_timeout_s,
                       what=f"reading {cfg.data.root}" + ("" if materialize else " beside the workers"))
    datasets = {split: ray_dataset(cfg.data.root, split, materialize=materialize, read_cpus=read_cpus)
                for split in ("train", "val")}
    if cfg.train.train_on_val:  # the val rows are trained on as well (resolve: train.train_on_val)
        datasets["train"] = datasets["train"].union(datasets["val"])
    if r.num_workers == 0:  # one rank in this process, no worker group (pipeline.training.local)
        from pipeline.training.local import LocalRun, LocalTrainer

        local = LocalRun(local_run_dir(cfg, storage_path, name), callbacks, monitor=cfg.train.monitor,
                         mode=cfg.train.monitor_mode, num_to_keep=cfg.train.num_checkpoints_to_keep,
                         datasets=datasets, use_gpu=r.use_gpu)
        return LocalTrainer(train_func, loop_config(
            cfg, pre, mlflow_run_id=mlflow_run_id, initial_checkpoint=initial_checkpoint,
            initial_weights=initial_weights, step_board=step_board,
            steps_per_epoch=resolved.steps_per_epoch, local_run=local, word_vectors=vectors_ref), local)
    return TorchTrainer(
        train_func,
        train_loop_config=loop_config(cfg, pre, mlflow_run_id=mlflow_run_id,
                                      initial_checkpoint=initial_checkpoint, initial_weights=initial_weights,
                                      step_board=step_board,
                                      steps_per_epoch=resolved.steps_per_epoch, word_vectors=vectors_ref),
        scaling_config=ScalingConfig(
            num_workers=cfg.resources.num_workers,
            use_gpu=cfg.resources.use_gpu,
            resources_per_worker=worker_resources(cfg),
            placement_strategy=cfg.resources.placement_strategy,
        ),
        torch_config=TorchConfig(backend="nccl" if cfg.resources.use_gpu else "gloo"),
        datasets=datasets,
        # Tasks that carry state across batches (lm) read the whole train split on every rank and
        # take their own contiguous part; the others get an equal share from Ray Data.
        dataset_config=DataConfig(datasets_to_split=["train"] if task_class(cfg.data.task).split_train
                                  else [], execution_options=_ordered_ingest()),
        run_config=RunConfig(
            name=name,
            **_storage(storage_path),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.train.num_checkpoints_to_keep,
                checkpoint_score_attribute=cfg.train.monitor,
                checkpoint_score_order=cfg.train.monitor_mode,
            ),
            callbacks=list(callbacks),
            logging_config=LoggingConfig(log_level=cfg.train.ray_log_level),
        ),
    )


def local_run_dir(cfg: RecurConfig, storage_path: str, name: str) -> str:
    """Where a local-mode run keeps its checkpoints: the run's folder under a local storage path,
    or, with storage on S3, the local folder a distributed run's best checkpoint is copied to."""
    from pipeline import storage

    if storage.is_s3(storage_path):
        return os.path.join(os.path.abspath(cfg.tracking.runs_dir), "checkpoints", name)
    return os.path.join(os.path.abspath(storage_path), name)


def best_checkpoint(result: Any, cfg: RecurConfig) -> tuple[Any, dict[str, Any]]:
    """The run's best checkpoint by train.monitor (its last when none was ranked) and the
    metrics reported with it."""
    best = (result.get_best_checkpoint(metric=cfg.train.monitor, mode=cfg.train.monitor_mode)
            if result.best_checkpoints else None) or result.checkpoint
    return best, next((m for c, m in result.best_checkpoints or [] if best and c.path == best.path), {})


def wait_for_free_cpus(need: float, *, timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    """Return once the cluster has `need` CPUs free; after `timeout_s` (resources.start_timeout_s)
    fail, saying what is free and what placement groups hold.

    Ray Data queues a task that cannot be placed with no deadline: a placement group left behind
    (by a crashed run, another user's job) would hang the run forever, where Ray Train's own wait
    for its workers gives up after the same timeout.
    """
    import time

    import ray

    from pipeline.data.loading import LISTING_CPUS

    deadline = time.monotonic() + timeout_s
    while (free := float(ray.available_resources().get("CPU", 0.0))) + 1e-9 < need:
        if time.monotonic() >= deadline:
            total = float(ray.cluster_resources().get("CPU", 0.0))
            cpus = [sum(float(b.get("CPU", 0.0)) for b in g.get("bundles", {}).values())
                    for g in ray.util.placement_group_table().values() if g.get("state") == "CREATED"]
            groups, held = sum(1 for c in cpus if c > 0), sum(cpus)
            raise ResourceError(
                f"{what} needs {need:g} CPU free (Ray Data's file listing asks for {LISTING_CPUS:g}), but "
                f"only {free:g} of the cluster's {total:g} CPUs were free for resources.start_timeout_s = "
                f"{timeout_s:g} s; {groups} placement group(s) hold {held:g} CPUs (`ray list "
                "placement-groups` shows them; one left by a crashed run holds its CPUs until removed). "
                "Free them, lower resources.num_workers or resources.cpus_per_worker, or raise "
                "resources.start_timeout_s on an autoscaling cluster"
            )
        time.sleep(poll_s)


def _materialize(setting: bool | str) -> bool:
    """data.materialize: auto holds the splits in the object store on a one-node cluster only.
    Blocks held by a node that is lost cannot be rebuilt for a restarted worker group (the split
    coordinator only borrows them), so a multi-node run streams Parquet and survives the loss."""
    import ray

    if isinstance(setting, bool):
        return setting
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    if nodes > 1:
        log.info("data.materialize=auto streams the splits from Parquet every epoch: %d nodes, and "
                 "a restart after losing one must be able to read its blocks again", nodes)
    return nodes <= 1


def _storage(storage_path: str) -> dict[str, Any]:
    """RunConfig's storage: a local folder made absolute, or an s3:// URI with the S3
    filesystem of the environment's endpoint and credentials (Ray ships it to every worker)."""
    from pipeline import storage

    if storage.is_s3(storage_path):
        filesystem, path = storage.filesystem_for(storage_path)
        return {"storage_path": path, "storage_filesystem": filesystem}
    return {"storage_path": os.path.abspath(storage_path)}


def _ordered_ingest() -> Any:
    """Ray Train's ingest options with blocks in a fixed order, so that a seeded shuffle gives
    the same batches on every run (the same config, seed and data train the same model)."""
    from ray.train import DataConfig

    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    return options
