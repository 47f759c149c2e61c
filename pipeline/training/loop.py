"""The epoch loop in plain PyTorch: no Ray, no MLflow. Runs on tensors from any iterable.

A batch is a dict with `x` (B, T, C) float32 padded inputs, `lengths` (B,) int64 valid steps
and `y` (B,) int64 labels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from pipeline import tasks

Batch = Mapping[str, torch.Tensor]


@dataclass
class EpochStats:
    loss: float  # mean training loss per sequence (nats)
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


def train_step(model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer, *,
               grad_clip: float = 0.0, scaler: torch.amp.GradScaler | None = None) -> tuple[float, float]:
    """One optimizer step. Returns (mean loss, pre-clipping global gradient norm)."""
    optimizer.zero_grad(set_to_none=True)
    device_type = batch["x"].device.type
    with torch.autocast(device_type=device_type, enabled=scaler is not None):
        logits_BK = model(batch["x"], batch["lengths"])
        loss = tasks.classification_loss(logits_BK.float(), batch["y"])
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    # Clip the global norm at grad_clip, or only measure it when clipping is disabled (== 0).
    max_norm = grad_clip if grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return float(loss.detach()), float(grad_norm)


def train_epoch(model: nn.Module, batches: Iterable[Batch], optimizer: torch.optim.Optimizer, *,
                device: torch.device | str = "cpu", grad_clip: float = 0.0,
                scaler: torch.amp.GradScaler | None = None) -> EpochStats:
    """Train over every batch once."""
    device = torch.device(device)
    model.train()
    start = time.perf_counter()
    loss_sum, num_sequences, num_steps, norm_sum, norm_max = 0.0, 0, 0, 0.0, 0.0
    for batch in batches:
        batch = to_device(batch, device)
        loss, grad_norm = train_step(model, batch, optimizer, grad_clip=grad_clip, scaler=scaler)
        size = int(batch["y"].shape[0])
        loss_sum += loss * size
        num_sequences += size
        num_steps += 1
        if math.isfinite(grad_norm):
            norm_sum += grad_norm
            norm_max = max(norm_max, grad_norm)
    return EpochStats(
        loss=loss_sum / max(num_sequences, 1),
        num_sequences=num_sequences,
        num_steps=num_steps,
        grad_norm=norm_sum / max(num_steps, 1),
        grad_norm_max=norm_max,
        seconds=time.perf_counter() - start,
    )


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch], *, num_classes: int,
             device: torch.device | str = "cpu") -> tasks.MetricState:
    """Accumulate loss and the confusion matrix over every batch (model in eval mode)."""
    device = torch.device(device)
    model.eval()
    state = tasks.MetricState.zeros(num_classes, device=device)
    for batch in batches:
        batch = to_device(batch, device)
        logits_BK = model(batch["x"], batch["lengths"])
        tasks.update_metrics(state, logits_BK, batch["y"])
    return state


@torch.no_grad()
def predict_logits(model: nn.Module, batches: Iterable[Batch], *,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits (N, K) for every sequence, in batch order."""
    device = torch.device(device)
    model.eval()
    out = []
    for batch in batches:
        batch = to_device(batch, device)
        out.append(model(batch["x"], batch["lengths"]).float().cpu())
    return torch.cat(out) if out else torch.empty(0)
