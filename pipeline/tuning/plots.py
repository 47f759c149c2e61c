"""A study's figures: the best value so far by trial, and parallel coordinates of the trials
(matplotlib, Agg backend: no display needed)."""

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
