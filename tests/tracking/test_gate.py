"""The registry gate's decision rule, for metrics where higher is better and where lower is, and
the picture of a decision (`plots/gate.png`): given the scores, when the gate decides, then the
picture draws those scores, the line the challenger had to pass, and the decision in its title."""

import math

import pytest

from pipeline.tasks.classify import score_labels
from pipeline.tracking import plots
from pipeline.tracking.registry import decide


def test_first_model_becomes_champion():
    assert decide(0.5, None, 0.0) == (True, "no current champion")


@pytest.mark.parametrize("candidate,champion,higher,promoted", [
    (0.91, 0.90, True, True),    # accuracy up
    (0.90, 0.91, True, False),   # accuracy down
    (0.80, 0.90, False, True),   # MASE down: better
    (0.95, 0.90, False, False),  # MASE up: worse
    (0.90, 0.90, False, False),  # a tie never replaces the champion
])
def test_direction_follows_the_metric(candidate, champion, higher, promoted):
    assert decide(candidate, champion, 0.0, higher_is_better=higher)[0] is promoted


def test_margin_must_exceed_min_improvement_in_the_better_direction():
    # binary fractions, so the margins are exact
    promoted, reason = decide(0.75, 1.0, 0.25, higher_is_better=False)
    assert not promoted and "+0.2500" in reason  # improved by exactly the margin: not more
    promoted, reason = decide(0.5, 1.0, 0.25, higher_is_better=False)
    assert promoted and "+0.5000" in reason


def test_a_candidate_scoring_nan_is_never_promoted():
    assert decide(math.nan, 0.9, 0.0)[0] is False


def test_labels_are_scored_by_name():
    truth = ["a", "a", "b", "b"]
    predicted = ["a", "a", "a", "b"]
    scores = score_labels(truth, predicted)
    assert scores["accuracy"] == pytest.approx(0.75)
    # a: tp 2, support 2, predicted 3 -> F1 = 4/5; b: tp 1, support 2, predicted 1 -> F1 = 2/3
    assert scores["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def _gate_figure(candidate, champion, margin, *, higher, version="2", champion_version="1"):
    promoted, reason = decide(candidate, champion, margin, higher_is_better=higher)
    fig = plots.gate_comparison(metric="accuracy" if higher else "perplexity", higher_is_better=higher,
                                candidate_version=version, candidate_score=candidate,
                                champion_version=champion_version if champion is not None else None,
                                champion_score=champion, min_improvement=margin, promoted=promoted,
                                reason=reason)
    return fig, promoted, reason


def test_gate_picture_kept_challenger_below_the_champion_plus_margin():
    fig, promoted, reason = _gate_figure(0.75, 0.625, 0.25, higher=True)  # exact binary fractions
    try:
        (ax,) = fig.axes
        assert not promoted
        assert [t.get_text() for t in ax.get_xticklabels()] == ["champion v1", "challenger v2"]
        assert [bar.get_height() for bar in ax.patches] == [0.625, 0.75]
        (line,) = ax.lines
        assert list(line.get_ydata()) == [0.875, 0.875]  # champion + margin
        assert "margin 0.25 = 0.8750" in line.get_label()
        assert ax.get_title() == f"version 2 kept as @challenger\n{reason}"
        assert [t.get_text() for t in ax.texts] == ["0.6250", "0.7500"]
        assert ax.get_ylabel() == "test accuracy (higher is better)"
        assert ax.get_ylim()[1] > 0.875  # the line is inside the picture
    finally:
        plots.close(fig)


def test_gate_picture_lower_is_better_promoted_below_the_champion_minus_margin():
    fig, promoted, _ = _gate_figure(2.5, 4.0, 0.5, higher=False)
    try:
        (ax,) = fig.axes
        assert promoted
        assert [bar.get_height() for bar in ax.patches] == [4.0, 2.5]
        (line,) = ax.lines
        assert list(line.get_ydata()) == [3.5, 3.5]  # champion - margin
        assert ax.get_title().startswith("version 2 promoted to @champion\nbeats the champion by +1.5000")
        assert ax.get_ylabel() == "test perplexity (lower is better)"
    finally:
        plots.close(fig)


def test_gate_picture_without_a_champion_shows_the_challenger_alone_and_says_so():
    fig, promoted, _ = _gate_figure(0.8, None, 0.1, higher=True, version="1")
    try:
        (ax,) = fig.axes
        assert promoted
        assert [t.get_text() for t in ax.get_xticklabels()] == ["challenger v1"]
        assert [bar.get_height() for bar in ax.patches] == [0.8]
        assert len(ax.lines) == 0  # no champion: no line to pass
        assert ax.get_title() == "no champion yet: version 1 promoted to @champion"
    finally:
        plots.close(fig)


def test_gate_picture_of_a_version_gated_again_is_the_champion_alone():
    fig = plots.gate_comparison(metric="accuracy", higher_is_better=True, candidate_version="3",
                                candidate_score=0.9, champion_version="3", champion_score=0.9,
                                min_improvement=0.0, promoted=True, reason="already @champion")
    try:
        (ax,) = fig.axes
        assert len(ax.patches) == 1 and len(ax.lines) == 0
        assert [t.get_text() for t in ax.get_xticklabels()] == ["champion v3"]
        assert ax.get_title() == "version 3 is already @champion"
    finally:
        plots.close(fig)
