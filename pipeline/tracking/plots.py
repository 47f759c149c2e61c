"""Figures of a run's training and of the registry gate (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
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


def close(fig) -> None:
    plt.close(fig)


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
