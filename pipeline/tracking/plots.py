"""Figures logged with every run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


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


def attention_heatmap(weights_list: list[np.ndarray], titles: list[str]) -> Figure:
    """One row per example: its attention weights over its valid steps, step index on x.

    `weights_list[i]` is 1-D (T_i,), one example's weights with the padding already cut off.
    Each row has its own color scale (0 to its max): weights over long sequences are small,
    and a shared scale would wash them out.
    """
    if not weights_list or len(weights_list) != len(titles):
        raise ValueError(
            f"attention_heatmap: need one title per example and at least one example, "
            f"got {len(weights_list)} weight arrays and {len(titles)} titles"
        )
    rows_T = [np.asarray(w, dtype=float).reshape(-1) for w in weights_list]
    width = min(14.0, max(6.0, 0.12 * max(len(r) for r in rows_T) + 2))
    fig, axes = plt.subplots(len(rows_T), 1, figsize=(width, 1.1 * len(rows_T) + 0.6), squeeze=False)
    for ax, row_T, title in zip(axes[:, 0], rows_T, titles):
        vmax = float(row_T.max()) if row_T.size and row_T.max() > 0 else 1.0
        image = ax.imshow(row_T[None, :], aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax,
                          interpolation="nearest")
        ax.set_yticks([])
        ax.set_title(title, fontsize=9, loc="left")
        fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)
