"""Each task's test-split figures, logged with its run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


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


MAX_TOKEN_TICKS = 120  # tokens named under a row of the heatmap (a longer text: step numbers)


def attention_heatmap(weights_list: list[np.ndarray], titles: list[str],
                      tokens: list[list[str]] | None = None) -> Figure:
    """One row per example: its attention weights over its valid steps, step index on x.

    `weights_list[i]` is 1-D (T_i,), one example's weights with the padding already cut off.
    Each row has its own color scale (0 to its max): weights over long sequences are small,
    and a shared scale would wash them out. `tokens[i]` (texts: T_i characters or words) names
    each step under its row, when the row has at most MAX_TOKEN_TICKS of them.
    """
    if not weights_list or len(weights_list) != len(titles):
        raise ValueError(
            f"attention_heatmap: need one title per example and at least one example, "
            f"got {len(weights_list)} weight arrays and {len(titles)} titles"
        )
    rows_T = [np.asarray(w, dtype=float).reshape(-1) for w in weights_list]
    if tokens is not None and len(tokens) != len(rows_T):
        raise ValueError(f"attention_heatmap: {len(tokens)} token lists for {len(rows_T)} examples")
    named = tokens or [[] for _ in rows_T]
    longest = max(len(r) for r in rows_T)
    per_step = 0.2 if tokens is not None else 0.12  # inches: room for a token under each step
    width = min(14.0 if tokens is None else 24.0, max(6.0, per_step * longest + 2))
    height = (1.1 if tokens is None else 1.6) * len(rows_T) + 0.6
    fig, axes = plt.subplots(len(rows_T), 1, figsize=(width, height), squeeze=False)
    for ax, row_T, title, words in zip(axes[:, 0], rows_T, titles, named):
        vmax = float(row_T.max()) if row_T.size and row_T.max() > 0 else 1.0
        image = ax.imshow(row_T[None, :], aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax,
                          interpolation="nearest")
        ax.set_yticks([])
        if len(words) == len(row_T) and len(words) <= MAX_TOKEN_TICKS:
            shown = ["␣" if w == " " else w for w in words]  # a space would be an empty tick
            ax.set_xticks(range(len(words)), shown, rotation=90 if max(map(len, shown)) > 1 else 0,
                          fontsize=7)
        ax.set_title(title, fontsize=9, loc="left")
        fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    axes[-1, 0].set_xlabel("step" if tokens is None else "token")
    fig.tight_layout()
    return fig


def forecast_vs_actual(examples: list[dict], *, channel_name: str = "value") -> Figure:
    """One panel per test window: the history's tail, the actual horizon, the model's forecast and
    the seasonal-naive baseline, on steps relative to the first forecast step (0).

    `examples[i]` holds 1-D raw-unit arrays `history` (T,), `actual` (H,), `forecast` (H,),
    `baseline` (H,) of one channel, and a `title`.
    """
    if not examples:
        raise ValueError("forecast_vs_actual: need at least one example")
    fig, axes = plt.subplots(len(examples), 1, figsize=(9, 2.4 * len(examples) + 0.4), squeeze=False)
    for ax, example in zip(axes[:, 0], examples):
        history = np.asarray(example["history"], dtype=float)
        horizon = len(example["actual"])
        past, future = np.arange(-len(history), 0), np.arange(horizon)
        ax.plot(past, history, color="0.45", label="history")
        # Join the last observed step to each forecast so the lines read as continuations.
        for key, style, color in (("actual", "-o", "black"), ("forecast", "-s", "tab:blue"),
                                  ("baseline", "--^", "tab:orange")):
            values = np.asarray(example[key], dtype=float)
            ax.plot(np.concatenate([[-1], future]), np.concatenate([history[-1:], values]), style,
                    color=color, markersize=3, label="seasonal naive" if key == "baseline" else key)
        ax.axvline(-0.5, color="0.8", linewidth=1)
        ax.set_title(example.get("title", ""), fontsize=9, loc="left")
        ax.set_ylabel(channel_name)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, ncol=4, loc="upper left")
    axes[-1, 0].set_xlabel("step relative to the first forecast step")
    fig.tight_layout()
    return fig


def error_by_horizon(model_mae_H: np.ndarray, baseline_mae_H: np.ndarray, *,
                     unit: str = "raw units") -> Figure:
    """Test MAE per horizon step (1 = the step right after the history): model vs seasonal naive."""
    model_mae_H = np.asarray(model_mae_H, dtype=float)
    baseline_mae_H = np.asarray(baseline_mae_H, dtype=float)
    steps = np.arange(1, len(model_mae_H) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, model_mae_H, "-o", color="tab:blue", markersize=4, label="model")
    ax.plot(steps, baseline_mae_H, "--^", color="tab:orange", markersize=4, label="seasonal naive")
    ax.set(xlabel="horizon step", ylabel=f"MAE ({unit})", title="test error by horizon step")
    ax.set_xticks(steps)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def naive_blend_curve(record: dict) -> Figure:
    """The naive blend's choice (`model.naive_blend`): val MASE of w x model + (1 - w) x seasonal
    naive for every candidate w, one line per channel, the chosen w marked. `record` is what
    `ForecastTask.fit_naive_blend` returns (a channel whose naive forecast is exact has no MASE)."""
    grid = np.asarray(record["grid"], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in record["val_mase"].items():
        mase = np.array([np.nan if v is None else v for v in values], dtype=float)
        w = float(record["weights"][name])
        (line,) = ax.plot(grid, mase, "-", label=f"{name}: w = {w:.2f}")
        ax.plot([w], [mase[int(np.argmin(np.abs(grid - w)))]], "o", color=line.get_color(), markersize=7)
    ax.axhline(1.0, color="0.4", linestyle="--", linewidth=1, label="seasonal naive (MASE 1)")
    ax.set(xlabel="w, the model's weight (0: seasonal naive, 1: the model alone)", ylabel="val MASE",
           title=f"naive blend weighed on {record['windows']} val windows")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def entity_f1_bars(per_entity: dict[str, dict[str, float]], *, title: str = "test F1 per entity type"
                   ) -> Figure:
    """Tagging: one horizontal bar per entity type (its F1), labelled with its support.

    `per_entity[type]` holds at least `f1` and `support` (seqeval's classification_report).
    """
    if not per_entity:
        raise ValueError("entity_f1_bars: need at least one entity type")
    names = sorted(per_entity)
    return f1_bars(names, [float(per_entity[n]["f1"]) for n in names],
                   [int(per_entity[n].get("support", 0)) for n in names],
                   xlabel="F1 (entity level)", title=title)


def f1_bars(names: Sequence[str], f1: Sequence[float], support: Sequence[int], *, xlabel: str = "F1",
            title: str = "test F1 per class") -> Figure:
    """One horizontal bar per name (its F1, 0-1), labelled with its support (n = true count),
    first name on top. An F1 of NaN (a class neither true nor predicted) draws no bar.
    """
    if not names or not len(names) == len(f1) == len(support):
        raise ValueError(f"f1_bars: need at least one name and one F1 and support per name; got "
                         f"{len(names)} names, {len(f1)} F1 values and {len(support)} supports")
    widths = np.nan_to_num(np.asarray(f1, dtype=float), nan=0.0)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.5))
    # at positions with the names as tick labels: class names like "1".."9" as categories make
    # matplotlib log "Using categorical units ..." for every picture
    rows = np.arange(len(names))
    bars = ax.barh(rows, widths, color="tab:blue")
    ax.set_yticks(rows, [str(n) for n in names])
    for bar, n in zip(bars, support):
        ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, f"n={int(n)}", va="center",
                fontsize=8)
    ax.set(xlim=(0, 1.12), xlabel=xlabel, title=title)
    ax.invert_yaxis()  # first name on top
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def perplexity_curves(per_epoch: dict[str, Sequence[tuple[int, float]]]) -> Figure:
    """Language modelling: perplexity per epoch, one line per name (`train`, `val`).

    `per_epoch[name]` is [(epoch, perplexity)], perplexity = exp(mean cross-entropy in nats per
    token); the lowest value of `val` is marked. Non-finite values (an overflowing exp) are left out.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, style in zip(per_epoch, ("-o", "-s", "-^", "-d")):
        points = [(e, v) for e, v in per_epoch[name] if math.isfinite(v)]
        if points:
            epochs, values = zip(*points)
            ax.plot(epochs, values, style, markersize=3, label=f"{name} perplexity")
    val = [(e, v) for e, v in per_epoch.get("val", []) if math.isfinite(v)]
    if val:
        epoch, best = min(val, key=lambda p: p[1])
        ax.annotate(f"best val {best:.3f} (epoch {epoch})", (epoch, best), textcoords="offset points",
                    xytext=(0, 10), ha="center", fontsize=8)
    ax.set(xlabel="epoch", ylabel="perplexity (exp of nats per token)", title="perplexity per epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    return fig


def alignment_heatmap(weights_list: list[np.ndarray], source_tokens: list[list[str]],
                      target_tokens: list[list[str]], titles: list[str]) -> Figure:
    """Seq2seq attention: one panel per example, target steps (rows) x source steps (columns).

    `weights_list[i]` is (T_i, S_i): the weights each decoded step gave each source token, padding
    cut off; `source_tokens[i]` (S_i) and `target_tokens[i]` (T_i) label the axes. Each row sums
    to 1, so one 0-1 color scale is shared by every panel.
    """
    n = len(weights_list)
    if not n or not (n == len(source_tokens) == len(target_tokens) == len(titles)):
        raise ValueError(
            f"alignment_heatmap: need at least one example and one source, target and title per "
            f"example; got {n} weight matrices, {len(source_tokens)} sources, "
            f"{len(target_tokens)} targets and {len(titles)} titles"
        )
    matrices = [np.asarray(w, dtype=float).reshape(len(t), len(s))
                for w, s, t in zip(weights_list, source_tokens, target_tokens)]
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    widest = max(m.shape[1] for m in matrices)
    tallest = max(m.shape[0] for m in matrices)
    size = (cols * max(4.0, 0.28 * widest + 1.5), rows * max(3.0, 0.28 * tallest + 1.5))
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=size)
    for ax in axes.flat[n:]:
        ax.axis("off")

    def show(token: str) -> str:
        return "␣" if token == " " else token  # a space label would be invisible
    for ax, matrix, source, target, title in zip(axes.flat, matrices, source_tokens, target_tokens, titles):
        image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks(range(len(source)), [show(t) for t in source], fontsize=7, rotation=90)
        ax.set_yticks(range(len(target)), [show(t) for t in target], fontsize=7)
        ax.set_xlabel("source")
        ax.set_ylabel("output")
        ax.set_title(title, fontsize=9, loc="left")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    fig.tight_layout()
    return fig
