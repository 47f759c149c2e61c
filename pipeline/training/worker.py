"""The Ray Train worker function: get shards, wrap the model, run the plain loop, report.

Everything numeric happens in `pipeline.training.loop`; this module only adds what data-parallel
training needs: shards, DDP, cross-worker sums, checkpoints and resume.
"""

from __future__ import annotations

import logging
import os
import resource
import tempfile
from typing import Any

import torch
import torch.distributed as dist

from pipeline.config import RecurConfig
from pipeline.data.preprocess import Preprocessing
from pipeline.models.frontend import sync_batch_statistics
from pipeline.models.recurrent import start_from_vectors
from pipeline.tasks import build_task
from pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from pipeline.training.loop import (
    FIT_LOSS_FRACTION,
    EpochStats,
    FitPlan,
    FitState,
    Precision,
    TrainingDiverged,
    evaluate_batches,
    fit,
)
from pipeline.training.optimizer import make_optimizer


def _all_reduce_sum(tensors: list[torch.Tensor]) -> None:
    if dist.is_available() and dist.is_initialized():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def _global_epoch_metrics(stats: EpochStats, device: torch.device) -> dict[str, float]:
    """Combine per-worker epoch stats: loss weighted by its units; time, data wait and peak
    memory of the worker with the most."""
    sums = torch.tensor([stats.loss * stats.num_units, stats.num_units, stats.num_sequences,
                         stats.grad_norm], dtype=torch.float64, device=device)
    _all_reduce_sum([sums])
    # Peak memory so far: this process's resident set (Linux reports KiB) and, on CUDA, the most
    # device memory its tensors held.
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    device_mib = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    wait = stats.data_wait_seconds / stats.seconds if stats.seconds > 0 else 0.0
    slowest = torch.tensor([stats.seconds, stats.grad_norm_max, wait, rss_mib, device_mib],
                           dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        world = dist.get_world_size()
    else:
        world = 1
    loss_sum, num_units, num_sequences, grad_norm_sum = sums.tolist()
    seconds, grad_norm_max, wait, rss_mib, device_mib = slowest.tolist()
    memory = {"worker_peak_rss_mib": rss_mib}
    if device.type == "cuda":
        memory["worker_peak_device_mib"] = device_mib
    return {
        "train_loss": loss_sum / max(num_units, 1.0),
        "grad_norm": grad_norm_sum / world,  # DDP gradients are identical across ranks
        "grad_norm_max": grad_norm_max,
        "epoch_seconds": seconds,
        "sequences_per_second": num_sequences / seconds if seconds > 0 else 0.0,
        "train_sequences": num_sequences,
        "train_steps": stats.num_steps,
        "data_wait_fraction": wait,  # of the slowest-waiting worker's epoch, waiting for batches
        **memory,  # the largest of any worker
    }


def _broadcast_buffers(module: torch.nn.Module) -> None:
    """Every rank takes rank 0's buffers (batch-norm running statistics), as DDP does before each
    training forward; nothing to do in one process."""
    if dist.is_available() and dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def _rank_0_decides(stop: bool) -> bool:
    """Rank 0's early-stopping decision on every rank: a rank that left the loop alone would
    leave the others waiting in DDP's next collective forever."""
    if not (dist.is_available() and dist.is_initialized()):
        return stop
    flag = torch.tensor([int(stop)], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _param_checksum(model: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum(p.double().sum() for p in model.parameters()))


def _quiet_ray_train_logs(level: str) -> None:
    """Ray Train logs each report at INFO through a logger named after its file, which Train's own
    LoggingConfig does not reach; set it (and the ray.train tree) to the configured level."""
    from ray.train.v2._internal.execution import context as train_context

    for name in (train_context.__file__, "ray.train"):
        logging.getLogger(name).setLevel(level)


def train_func(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train worker entry point. `loop_config` holds the config and manifest as dicts.
    Returns None, or {"diverged": why, "epoch": N} when training stopped on NaN or inf."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    cfg = RecurConfig.model_validate(loop_config["config"])
    _quiet_ray_train_logs(cfg.train.ray_log_level)
    pre = Preprocessing.from_dict(loop_config["preprocessing"])
    task = build_task(cfg, pre)
    torch.set_num_threads(int(loop_config.get("torch_threads", 1)))
    torch.manual_seed(cfg.train.seed)  # same init everywhere; DDP also broadcasts rank 0's weights

    # One rank in this process (resources.num_workers: 0): the Ray Train calls go to recur's
    # stand-in for a worker group (pipeline.training.local); else to Ray Train
    local = loop_config.get("local_run")
    train = local if local is not None else ray.train
    context = train.get_context()
    rank = context.get_world_rank()
    device = local.device() if local is not None else ray.train.torch.get_device()
    model = task.build_model()
    if loop_config.get("word_vectors") is not None:  # model.embeddings, before any checkpoint's weights
        vectors_VD, found_V = ray.get(loop_config["word_vectors"])
        start_from_vectors(task.word_embedding(model), vectors_VD, found_V,
                           freeze=cfg.model.freeze_embeddings)
    # on the device before the optimizer is made: fused CUDA optimizers need their parameters there
    model = model.to(device)
    optimizer = make_optimizer(cfg.train.optimizer, model.parameters(), lr=cfg.train.lr,
                               weight_decay=cfg.train.weight_decay, momentum=cfg.train.momentum,
                               device=device)
    torch.manual_seed(cfg.train.seed + 1 + rank)  # after init: each rank draws its own dropout masks
    fit_state = FitState()

    # Ray Train's own checkpoint after a worker-group restart; else a checkpoint handed in by the
    # caller (a Tune trial restored or exploited by PBT), which continues from its progress.
    restored = train.get_checkpoint()
    if restored is None:
        restored = loop_config.get("initial_checkpoint")
    if restored is not None:
        with restored.as_directory() as directory:
            state = load_checkpoint(directory)
        model.load_state_dict(state["state_dict"])
        if state.get("optimizer"):
            optimizer.load_state_dict(state["optimizer"])
        fit_state = FitState(**state["progress"])
    elif loop_config.get("initial_weights") is not None:  # fine-tune: weights only, from epoch 0
        model.load_state_dict(ray.get(loop_config["initial_weights"]))

    if local is None:
        model = ray.train.torch.prepare_model(model)
    # the conv front-end's masked batch norm takes its statistics over every rank's batch: with
    # per-rank statistics 2 workers of batch 16 trained like batch 16, not 32 (frontend.py)
    if cfg.train.sync_batch_norm:
        sync_batch_statistics(model)
    precision = Precision.resolve(cfg.train.precision, device)
    scaler = precision.scaler(device)
    train_shard = train.get_dataset_shard("train")
    val_iterator = train.get_dataset_shard("val")
    batch_size = cfg.data.batch_size

    # rank 0 shows the driver how the epoch goes (pipeline.training.step_board); none in tests and
    # benchmarks that run without a board
    publisher = None
    if rank == 0 and loop_config.get("step_board") is not None:
        from pipeline.training.step_board import StepPublisher

        publisher = StepPublisher(loop_config["step_board"], world_size=context.get_world_size())
    steps = [loop_config.get("steps_per_epoch")]  # expected; then what the last epoch ran
    chance = [""]  # the task's word on the last validation: what a trivial predictor also scores

    def train_batches(epoch: int) -> Any:
        if publisher is not None:
            publisher.start_epoch(epoch, steps[0])
        return task.train_batches(train_shard, batch_size=batch_size, epoch=epoch, seed=cfg.data.seed)

    def validate(module: torch.nn.Module) -> dict[str, Any]:
        # The val split is not sharded: every rank evaluates all of it and gets the same numbers,
        # once the ranks hold the same buffers. DDP hands rank 0's buffers to the others before each
        # training forward, but each rank then updates its batch-norm running statistics with its
        # own batch: unsynced, the ranks' val metrics (and early-stopping decisions) would differ.
        _broadcast_buffers(getattr(module, "module", module))
        val_state = evaluate_batches(getattr(module, "module", module),
                             task.eval_batches(val_iterator, batch_size=batch_size), task, device=device)
        chance[0] = task.at_chance(val_state)
        return {**{f"val_{k}": v for k, v in task.compute(val_state).items()}, "at_chance": bool(chance[0])}

    def epoch_metrics(stats: EpochStats) -> dict[str, float]:
        steps[0] = stats.num_steps  # what the next epoch's progress expects
        return _global_epoch_metrics(stats, device)

    def report(epoch: int, metrics: dict[str, Any], state: FitState, stop: bool) -> None:
        metrics.update(rank=rank, pid=os.getpid(),
                       # per-rank sum of the weights: lets tests and users see that DDP replicas agree
                       param_checksum=_param_checksum(model))
        if metrics["at_chance"] and state.chance_epochs == plan.chance_epochs and rank == 0:
            logging.getLogger("recur").warning(
                "validation at chance after %d epochs (%d steps): %s. More steps (train.min_steps), a "
                "smaller batch (data.batch_size: auto) or another encoder (model.frontend, model.patch) "
                "may help", state.next_epoch, state.steps_done, chance[0])
        if metrics.get("restarted") and rank == 0:
            floor = f", both counted from the loss's floor {plan.loss_floor:.4g}" if plan.loss_floor else ""
            logging.getLogger("recur").warning(
                "epoch %d: the training loss is still falling, and at %.4g (its lowest in these %d "
                "epochs) above %g of the first epoch's %.4g%s: the schedule restarts for %d more epochs "
                "(train.max_epochs %d)", epoch + 1, state.ended_cycle_loss, plan.epochs,
                FIT_LOSS_FRACTION, state.first_loss, floor, plan.epochs, plan.max_epochs)
        checkpoint = None
        if rank == 0 and not metrics.get("diverged"):  # NaN weights are never a checkpoint
            # Ray copies the folder to storage_path and then deletes it; with one rank in this
            # process (num_workers=0) the folder is in the run's own, and it is the checkpoint.
            directory = (local.checkpoint_dir(epoch) if local is not None
                         else tempfile.mkdtemp(prefix="recur-ckpt-"))
            save_checkpoint(directory, model=model, preprocessing=pre, optimizer=optimizer,
                            fit_state=state, metrics=metrics,
                            mlflow_run_id=loop_config.get("mlflow_run_id"))
            checkpoint = Checkpoint.from_directory(directory)
        train.report(metrics, checkpoint=checkpoint, delete_local_checkpoint_after_upload=True)

    plan = FitPlan.from_config(cfg.train, loss_floor=task.loss_floor)
    try:
        fit(model, optimizer, task, plan, train_batches=train_batches, validate=validate, report=report,
            agree=_rank_0_decides,
            state=fit_state, device=device, grad_clip=cfg.train.grad_clip,
            grad_clip_mode=cfg.train.grad_clip_mode, scaler=scaler, precision=precision,
            publisher=publisher, epoch_metrics=epoch_metrics)
    except TrainingDiverged as exc:
        # returned, not raised: Ray Train would restart the worker group to diverge again. The
        # driver reads rank 0's return value (`Result.return_value`) and stops the run with it.
        return {"diverged": exc.why, "epoch": exc.epoch}
    return None
