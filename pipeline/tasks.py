"""Loss and metrics per task.

Metrics accumulate into a `MetricState` of plain tensors (sums and a confusion matrix), so that
data-parallel workers can add their states with one `all_reduce` and derive the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F


@dataclass
class MetricState:
    """Running sums over evaluated sequences. `confusion_KK[true, predicted]` counts sequences."""

    loss_sum: torch.Tensor  # summed per-sequence loss (nats)
    count: torch.Tensor  # sequences seen
    confusion_KK: torch.Tensor

    @classmethod
    def zeros(cls, num_classes: int, device: torch.device | str = "cpu") -> MetricState:
        return cls(
            loss_sum=torch.zeros((), dtype=torch.float64, device=device),
            count=torch.zeros((), dtype=torch.int64, device=device),
            confusion_KK=torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device),
        )

    def tensors(self) -> list[torch.Tensor]:
        return [self.loss_sum, self.count, self.confusion_KK]


def classification_loss(logits_BK: torch.Tensor, y_B: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the batch (nats per sequence)."""
    return F.cross_entropy(logits_BK, y_B)


def update_metrics(state: MetricState, logits_BK: torch.Tensor, y_B: torch.Tensor) -> None:
    losses_B = F.cross_entropy(logits_BK.float(), y_B, reduction="sum")
    state.loss_sum += losses_B.detach().double()
    state.count += y_B.numel()
    num_classes = state.confusion_KK.shape[0]
    predicted_B = logits_BK.argmax(dim=-1)
    flat = (y_B * num_classes + predicted_B).bincount(minlength=num_classes * num_classes)
    state.confusion_KK += flat.view(num_classes, num_classes)


def compute_metrics(state: MetricState) -> dict[str, float]:
    """loss (mean nats per sequence), accuracy, macro_f1 (classes absent from both truth and
    predictions are left out of the mean, as scikit-learn does with `labels=` present ones)."""
    confusion = state.confusion_KK.detach().cpu().numpy().astype(np.float64)
    return {
        "loss": float(state.loss_sum) / max(int(state.count), 1),
        **classification_scores(confusion),
    }


def classification_scores(confusion_KK: np.ndarray) -> dict[str, float]:
    total = confusion_KK.sum()
    true_positive = np.diag(confusion_KK)
    support = confusion_KK.sum(axis=1)
    predicted = confusion_KK.sum(axis=0)
    present = (support + predicted) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(present, 2 * true_positive / (support + predicted), 0.0)
    return {
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }


def per_class_f1(confusion_KK: np.ndarray) -> np.ndarray:
    true_positive = np.diag(confusion_KK).astype(np.float64)
    denominator = confusion_KK.sum(axis=1) + confusion_KK.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, 2 * true_positive / denominator, 0.0)
