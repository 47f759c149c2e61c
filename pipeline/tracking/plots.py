"""Figures logged with every run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def learning_curves(history: dict[str, Sequence[tuple[int, float]]], *, metric: str):
    """Train/val loss and the val task metric per epoch. `history[name]` is [(epoch, value)]."""
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    for name, style in (("train_loss", "-o"), ("val_loss", "-s")):
        if history.get(name):
            epochs, values = zip(*history[name])
            ax_loss.plot(epochs, values, style, label=name, markersize=3)
    ax_loss.set(xlabel="epoch", ylabel="training objective (task loss)", title="loss")
    if ax_loss.get_legend_handles_labels()[0]:  # no curve, no legend (matplotlib warns otherwise)
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


def gate_comparison(*, metric: str, higher_is_better: bool, candidate_version: str, candidate_score: float,
                    champion_version: str | None, champion_score: float | None, min_improvement: float,
                    promoted: bool, reason: str = "", baseline_name: str | None = None,
                    baseline_score: float | None = None, references: dict[str, float] | None = None,
                    rejected: bool = False) -> Figure:
    """The registry gate's decision: the test `metric` of the trivial baseline, of any reference
    models, of the champion and of the challenger (bars, the score written on each), the line the
    challenger had to pass to replace the champion, champion + min_improvement (champion -
    min_improvement when lower is better), and the decision in the title.

    `baseline_score` (the trivial baseline, named `baseline_name`) is the bar the challenger must
    beat to be promoted at all; `references` (label -> score, e.g. {"1-NN Euclidean": 0.81}) are
    drawn for comparison only. `rejected`: the challenger did not beat the baseline.
    Without a champion (or when the candidate already is it) no champion bar is drawn. The axes'
    bars are in order baseline, references, champion, challenger; the margin line is the axes'
    only line.
    """
    again = champion_version == str(candidate_version)  # gated again: it already is @champion
    alone = champion_score is None or again
    names, scores = [f"{'champion' if again else 'challenger'} v{candidate_version}"], [candidate_score]
    colors = ["tab:red" if rejected else "tab:blue"]
    hatches = [""]
    if not alone:
        names, scores = [f"champion v{champion_version}", *names], [champion_score, *scores]
        colors, hatches = ["0.6", *colors], ["", *hatches]
    extra = [(label, score, "0.8", "..") for label, score in (references or {}).items()]
    if baseline_score is not None:
        extra.insert(0, (f"{baseline_name or 'trivial'}\nbaseline", baseline_score, "0.9", "//"))
    names = [e[0] for e in extra] + names
    scores = [e[1] for e in extra] + scores
    colors = [e[2] for e in extra] + colors
    hatches = [e[3] for e in extra] + hatches
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(names)), 4.5))
    heights = [float(s) for s in scores]
    columns = np.arange(len(names))  # positions, names as tick labels (see f1_bars)
    bars = ax.bar(columns, np.nan_to_num(heights, nan=0.0, posinf=0.0, neginf=0.0), color=colors,
                  edgecolor="0.3", width=0.5)
    ax.set_xticks(columns, names)
    for bar, score, hatch in zip(bars, heights, hatches):
        bar.set_hatch(hatch)
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{score:.4f}", ha="center",
                va="bottom", fontsize=9)
    shown = [h for h in heights if math.isfinite(h)]
    if not alone:
        sign = 1.0 if higher_is_better else -1.0
        threshold = float(champion_score) + sign * min_improvement
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1.2,
                   label=f"to beat: champion {'+' if higher_is_better else '-'} margin {min_improvement:g}"
                   f" = {threshold:.4f}")
        ax.legend(fontsize=8, loc="lower right")
        shown.append(threshold)
    top = max(shown, default=1.0)
    ax.set_ylim(min(0.0, *shown) if shown else 0.0, top * 1.15 if top > 0 else 1.0)
    better = "higher" if higher_is_better else "lower"
    ax.set_ylabel(f"test {metric} ({better} is better)")
    verdict = "promoted to @champion" if promoted else "kept as @challenger"
    if rejected:
        headline = (f"version {candidate_version} NOT promoted: does not beat the "
                    f"{baseline_name or 'trivial'} baseline")
    elif champion_score is None:  # the reason would only repeat it
        headline, reason = f"no champion yet: version {candidate_version} {verdict}", ""
    elif again:
        headline, reason = f"version {candidate_version} is already @champion", ""
    else:
        headline = f"version {candidate_version} {verdict}"
    ax.set_title(headline + (f"\n{reason}" if reason else ""), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
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


def _check_mode(mode: str) -> None:
    if mode not in ("min", "max"):
        raise ValueError(f"tune.mode must be 'min' or 'max', got {mode!r}")


def _missing(value: Any) -> bool:
    """None or NaN: a trial without this value."""
    return value is None or (isinstance(value, numbers.Real) and math.isnan(value))


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if _missing(v) else float(v) for v in values], dtype=float)


def best_metric_so_far(best: Sequence[float | None], *, metric: str, mode: str,
                       trial_values: Sequence[float | None] | None = None) -> Figure:
    """A study's progress: the best `metric` so far (a step line) against trial number (1-based).

    `best[i]` is the best over trials 1..i+1, None before any reported one (what
    pipeline.tuning.report.best_so_far returns). `trial_values`, if given (one per trial), are each
    trial's own best, drawn as points: how far from the front each trial landed.
    """
    _check_mode(mode)
    if trial_values is not None and len(trial_values) != len(best):
        raise ValueError(f"best_metric_so_far: need one trial value per trial, got {len(trial_values)} "
                         f"trial values for {len(best)} trials")
    trials = np.arange(1, len(best) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    if trial_values is not None:
        ax.plot(trials, _floats(trial_values), "o", color="0.55", markersize=4, label="trial's best")
    ax.step(trials, _floats(best), where="post", color="tab:blue", label="best so far")
    better = "lower" if mode == "min" else "higher"
    ax.set(xlabel="trial", ylabel=metric, title=f"best {metric} so far ({better} is better)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


_MARGIN = 0.05  # room above and below [0, 1] so lines at the extremes stay visible


def _coordinate(values: list[Any], *, allow_log: bool) -> tuple[np.ndarray, str, Any]:
    """One column's values placed in [0, 1] (NaN where missing), and how to label its axis.

    Returns (positions, kind, info): ("linear", (lo, hi)), ("log", (lo, hi)) or
    ("categorical", level names). Any non-number (a string, a bool) makes the column categorical.
    """
    present = [v for v in values if not _missing(v)]
    if present and not all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
                           for v in present):
        names = sorted({str(v) for v in present})
        spacing = max(len(names) - 1, 1)
        index = {name: (i / spacing if len(names) > 1 else 0.5) for i, name in enumerate(names)}
        return np.array([np.nan if _missing(v) else index[str(v)] for v in values]), "categorical", names
    numbers_ = _floats(values)
    if not present:
        return numbers_, "linear", None
    lo, hi = float(np.nanmin(numbers_)), float(np.nanmax(numbers_))
    if allow_log and lo > 0 and hi / lo > 20:
        return (np.log10(numbers_) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)), "log", (lo, hi)
    if hi == lo:
        return np.where(np.isnan(numbers_), np.nan, 0.5), "linear", (lo, hi)
    return (numbers_ - lo) / (hi - lo), "linear", (lo, hi)


def _label_axis(ax: Axes, kind: str, info: Any) -> None:
    """Limits and ticks of one vertical axis, matching positions in [0, 1] on the shared y range."""
    if kind == "categorical":
        ax.set_ylim(-_MARGIN, 1 + _MARGIN)
        spacing = max(len(info) - 1, 1)
        ax.set_yticks([i / spacing if len(info) > 1 else 0.5 for i in range(len(info))], info)
    elif info is None:  # no values at all
        ax.set_ylim(-_MARGIN, 1 + _MARGIN)
        ax.set_yticks([])
    elif kind == "log":
        low, high = math.log10(info[0]), math.log10(info[1])
        span = high - low
        ax.set_yscale("log")
        ax.set_ylim(10 ** (low - _MARGIN * span), 10 ** (high + _MARGIN * span))
    else:
        lo, hi = info
        if hi > lo:
            ax.set_ylim(lo - _MARGIN * (hi - lo), hi + _MARGIN * (hi - lo))
        else:  # a constant column sits at 0.5, the middle of the y range: centre a made-up range on it
            half = abs(lo) * 0.1 or 1.0
            ax.set_ylim(lo - half, lo + half)


def parallel_coordinates(table: pd.DataFrame, *, params: list[str], metric: str, mode: str) -> Figure:
    """Which parameter values the good trials share: one vertical axis per searched parameter, then
    the metric; one line per trial, coloured by its metric value (brighter is better, per `mode`).

    `table` is pipeline.tuning.report.trials_table's: columns named by the dotted `params` and
    `best_<metric>`. Numeric params span their axis (log scale when all > 0 and max/min > 20, as
    learning rates do); strings and bools sit at evenly spaced, labelled levels. Trials with no
    metric value are grey and dashed. The figure's axes, in order: the one holding the lines, the
    colorbar (left out when no trial has a metric value), then one per vertical axis, left to right.
    """
    _check_mode(mode)
    column = f"best_{metric}"
    if not params:
        raise ValueError("parallel_coordinates: need at least one parameter")
    missing = [c for c in [*params, column] if c not in table.columns]
    if missing:
        raise ValueError(f"parallel_coordinates: table has no column(s) {missing}; "
                         f"it has {list(table.columns)}")
    placed = [_coordinate(table[key].tolist(), allow_log=True) for key in params]
    placed.append(_coordinate(table[column].tolist(), allow_log=False))
    labels = [*params, column]
    positions_TA = np.column_stack([p for p, _, _ in placed]) if len(table) else np.zeros((0, len(labels)))
    scores = table[column].to_numpy(dtype=float)

    n_axes = len(labels)
    fig, (host, cax) = plt.subplots(1, 2, figsize=(max(6.0, 1.8 * n_axes + 1.5), 5),
                                    gridspec_kw={"width_ratios": [1, 0.03]})
    host.set_xlim(0, n_axes - 1)
    host.set_ylim(-_MARGIN, 1 + _MARGIN)
    host.set_xticks(range(n_axes), labels, fontsize=8)
    host.set_yticks([])
    for spine in host.spines.values():
        spine.set_visible(False)
    better = "lower" if mode == "min" else "higher"
    host.set_title(f"{len(table)} trials ({better} {metric} is better: brighter)", fontsize=10)

    for i, (_, kind, info) in enumerate(placed):
        axis = host.twinx()  # its own scale and ticks, on the host's y range
        axis.yaxis.tick_left()
        axis.spines["left"].set_position(("axes", i / (n_axes - 1)))
        for side in ("right", "top", "bottom"):
            axis.spines[side].set_visible(False)
        axis.tick_params(labelsize=7)
        _label_axis(axis, kind, info)

    scored = ~np.isnan(scores)
    cmap = plt.get_cmap("viridis" if mode == "max" else "viridis_r")
    norm = Normalize(vmin=np.nanmin(scores), vmax=np.nanmax(scores)) if scored.any() else None
    # Better trials are drawn on top (higher zorder), keeping the lines in trial order.
    order = np.argsort(scores if mode == "max" else -scores)
    rank = np.empty(len(scores), dtype=int)
    rank[order] = np.arange(len(scores))
    x = np.arange(n_axes)
    for t in range(len(table)):
        if scored[t]:
            host.plot(x, positions_TA[t], "-", color=cmap(norm(scores[t])), linewidth=1.5, alpha=0.9,
                      zorder=2 + rank[t] / max(len(scores), 1))
        else:
            host.plot(x, positions_TA[t], "--", color="0.6", linewidth=1, alpha=0.7, zorder=1)
    if norm is not None:
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, label=column)
    else:
        cax.remove()
    fig.tight_layout()
    return fig
