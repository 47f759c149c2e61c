"""The registry gate's decision rule, for metrics where higher is better and where lower is."""

import math

import pytest

from pipeline.tasks.classify import score_labels
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
