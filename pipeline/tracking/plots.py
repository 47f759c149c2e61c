"""Figures logged with every run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def learning_curves(history: dict[str, Sequence[tuple[int, float]]], *, metric: str):
    """Train/val loss and the val task metric per epoch. `history[name]` is [(epoch, value)]."""
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    for name, style in (("train_loss", "-o"), ("val_loss", "-s")):
        if history.get(name):
            epochs, values = zip(*history[name])
            ax_loss.plot(epochs, values, style, label=name, markersize=3)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy (nats / sequence)", title="loss")
    ax_loss.legend()
    if history.get(metric):
        epochs, values = zip(*history[metric])
        ax_metric.plot(epochs, values, "-o", color="tab:green", markersize=3)
    ax_metric.set(xlabel="epoch", ylabel=metric, title=metric)
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def confusion_matrix(
    confusion_KK: np.ndarray, labels: Sequence[str], *, title: str = "test confusion matrix"
):
    """Counts with true labels on rows, predictions on columns."""
    size = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(confusion_KK, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    threshold = confusion_KK.max() / 2 if confusion_KK.size else 0
    for i in range(confusion_KK.shape[0]):
        for j in range(confusion_KK.shape[1]):
            ax.text(j, i, int(confusion_KK[i, j]), ha="center", va="center",
                    color="white" if confusion_KK[i, j] > threshold else "black", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)
