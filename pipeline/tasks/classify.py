"""Sequence classification: cross-entropy, accuracy, macro-F1, confusion matrix."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from pipeline.tasks.base import MetricState, Task


class ClassifyTask(Task):
    name = "classify"
    metrics: ClassVar[tuple[str, ...]] = ("loss", "accuracy", "macro_f1")
    higher_is_better: ClassVar[dict[str, bool]] = {"loss": False, "accuracy": True, "macro_f1": True}

    def __init__(self, num_classes: int, *, label_smoothing: float = 0.0) -> None:
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing  # training loss only; metrics use plain cross-entropy

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the batch (nats per sequence)."""
        return F.cross_entropy(outputs.float(), batch["y"], label_smoothing=self.label_smoothing)

    def new_state(self, device: torch.device | str = "cpu") -> MetricState:
        k = self.num_classes
        return {
            "loss_sum": torch.zeros((), dtype=torch.float64, device=device),  # nats
            "count": torch.zeros((), dtype=torch.int64, device=device),  # sequences
            "confusion": torch.zeros((k, k), dtype=torch.int64, device=device),  # [true, predicted]
        }

    def update(self, state: MetricState, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        logits_BK, y_B = outputs.float(), batch["y"]
        state["loss_sum"] += F.cross_entropy(logits_BK, y_B, reduction="sum").detach().double()
        state["count"] += y_B.numel()
        k = self.num_classes
        flat = (y_B * k + logits_BK.argmax(dim=-1)).bincount(minlength=k * k)
        state["confusion"] += flat.view(k, k)

    def compute(self, state: MetricState) -> dict[str, float]:
        confusion = state["confusion"].detach().cpu().numpy()
        return {"loss": float(state["loss_sum"]) / max(int(state["count"]), 1),
                **classification_scores(confusion)}


def classification_scores(confusion_KK: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 from a confusion matrix [true, predicted].

    Classes absent from both truth and predictions are left out of the macro mean, as
    scikit-learn's f1_score(average="macro") does over the labels it sees.
    """
    confusion_KK = confusion_KK.astype(np.float64)
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
