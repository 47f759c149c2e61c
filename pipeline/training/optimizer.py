"""The optimizer of a run and the learning rate it takes each epoch: plain PyTorch, no Ray."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def make_optimizer(name: str, params: Iterable[nn.Parameter], *, lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9, device: torch.device | str = "cpu") -> torch.optim.Optimizer:
    """adam | adamw | rmsprop | sgd. On CUDA, Adam, AdamW and SGD use their fused kernels: one
    launch per step for every parameter, and a gradient scaler's inf check stays on the device."""
    fused = {"fused": True} if torch.device(device).type == "cuda" else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **fused)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, **fused)
    raise ValueError(f"train.optimizer: unknown optimizer {name!r}; choose adam, adamw, rmsprop or sgd")


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

