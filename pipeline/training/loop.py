"""The epoch loop in plain PyTorch: no Ray, no MLflow. Runs on tensors from any iterable.

A batch is a dict with `x` (padded inputs: (B, T, C) float32 or (B, T) token ids), `lengths`
(B,) int64 valid steps and the task's targets. What differs between tasks (forward pass, loss,
metrics, carried state) comes from a `Task`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.tasks import MetricState, Task

Batch = Mapping[str, torch.Tensor]


@dataclass
class EpochStats:
    loss: float  # mean training loss per unit (sequence, or token for token losses; nats)
    num_units: int  # what the loss averages over (Task.loss_weight)
    num_sequences: int
    num_steps: int
    grad_norm: float  # mean pre-clipping global gradient norm over steps
    grad_norm_max: float
    seconds: float

    @property
    def sequences_per_second(self) -> float:
        return self.num_sequences / self.seconds if self.seconds > 0 else 0.0


def make_optimizer(name: str, params: Iterable[nn.Parameter], *, lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """adam | adamw | rmsprop | sgd."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise ValueError(f"train.optimizer: unknown optimizer {name!r}; choose adam, adamw, rmsprop or sgd")


def to_device(batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    # lengths stay on the CPU: pack_padded_sequence wants them there.
    return {k: (v if k == "lengths" else v.to(device, non_blocking=True)) for k, v in batch.items()}


def train_step(model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer, task: Task, *,
               grad_clip: float = 0.0, grad_clip_mode: str = "norm",
               scaler: torch.amp.GradScaler | None = None) -> tuple[float, float]:
    """One optimizer step. Returns (mean loss, pre-clipping global gradient norm)."""
    optimizer.zero_grad(set_to_none=True)
    device_type = batch["x"].device.type
    with torch.autocast(device_type=device_type, enabled=scaler is not None):
        outputs = task.forward(model, batch, train=True)
        loss = task.loss(outputs, batch)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    # The norm is always measured (and reported); clip it at grad_clip, or clamp each element at
    # +-grad_clip in "value" mode; grad_clip == 0 disables clipping.
    by_norm = grad_clip > 0 and grad_clip_mode == "norm"
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if by_norm else math.inf)
    if grad_clip > 0 and grad_clip_mode == "value":
        torch.nn.utils.clip_grad_value_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return float(loss.detach()), float(grad_norm)


def train_epoch(model: nn.Module, batches: Iterable[Batch], optimizer: torch.optim.Optimizer, task: Task,
                *, device: torch.device | str = "cpu", grad_clip: float = 0.0,
                grad_clip_mode: str = "norm", scaler: torch.amp.GradScaler | None = None) -> EpochStats:
    """Train over every batch once."""
    device = torch.device(device)
    model.train()
    task.start_epoch(train=True)
    start = time.perf_counter()
    loss_sum, num_units, num_sequences, num_steps, norm_sum, norm_max = 0.0, 0, 0, 0, 0.0, 0.0
    for batch in batches:
        batch = to_device(batch, device)
        loss, grad_norm = train_step(model, batch, optimizer, task, grad_clip=grad_clip,
                                     grad_clip_mode=grad_clip_mode, scaler=scaler)
        units = task.loss_weight(batch)
        loss_sum += loss * units
        num_units += units
        num_sequences += int(batch["x"].shape[0])
        num_steps += 1
        if math.isfinite(grad_norm):
            norm_sum += grad_norm
            norm_max = max(norm_max, grad_norm)
    return EpochStats(
        loss=loss_sum / max(num_units, 1),
        num_units=num_units,
        num_sequences=num_sequences,
        num_steps=num_steps,
        grad_norm=norm_sum / max(num_steps, 1),
        grad_norm_max=norm_max,
        seconds=time.perf_counter() - start,
    )


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch], task: Task, *,
             device: torch.device | str = "cpu") -> MetricState:
    """Accumulate the task's metric sums over every batch (model in eval mode)."""
    device = torch.device(device)
    model.eval()
    task.start_epoch(train=False)
    state = task.new_state(device)
    for batch in batches:
        batch = to_device(batch, device)
        task.update(state, task.forward(model, batch, train=False), batch)
    return state


def learning_rate(base_lr: float, epoch: int, *, total_epochs: int, schedule: Any,
                  plateau_decays: int = 0) -> float:
    """The learning rate for `epoch` (0-based): linear warm-up, then the named schedule.

    A pure function of the epoch (and, for `plateau`, of how many decays have happened), so a
    run resumed from a checkpoint continues on exactly the same curve.
    """
    warmup = schedule.warmup_epochs
    if epoch < warmup:
        return base_lr * (epoch + 1) / (warmup + 1)
    since = epoch - warmup
    if schedule.name == "step":
        return base_lr * schedule.gamma ** (since // schedule.step_size)
    if schedule.name == "cosine":
        progress = min(since / max(total_epochs - warmup - 1, 1), 1.0)
        return schedule.min_lr + (base_lr - schedule.min_lr) * (1 + math.cos(math.pi * progress)) / 2
    if schedule.name == "plateau":
        return max(base_lr * schedule.gamma**plateau_decays, schedule.min_lr)
    return base_lr


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
