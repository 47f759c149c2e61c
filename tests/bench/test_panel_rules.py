"""The forecast panel's horizon/window rule (benchmarks/forecast_panel.py): one rule for every
series, so it is pinned here. The benchmarks themselves never run in the suite."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def panel(monkeypatch):
    # benchmarks/ is not an installed package: import it from the checkout, as `python -m benchmarks` does
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import forecast_panel

    return forecast_panel


@pytest.mark.parametrize(("steps", "season", "expected"), [
    (144, 12, (12, 24)),  # monthly, yearly season: a season ahead, two seasons of history
    (114, 10, (10, 20)),
    (187, 4, (4, 16)),  # a short season: the 16-step floor of the window
    (1000, 1, (8, 16)),  # no season: 8 steps ahead
    (60, 1, (6, 15)),  # horizon capped at N // 10, window capped so train keeps >= window windows
    (200, 52, (20, 52)),  # the cap would cut the season: the window keeps one full season
])
def test_rule_gives_horizon_and_window(panel, steps, season, expected):
    # given a series length and season, when the rule runs, then it gives the documented values
    assert panel.horizon_window(steps, season) == expected


def test_rule_holds_its_promises_over_many_series(panel):
    from pipeline.data.importers.csv import segment_bounds

    checked = 0
    for steps in range(40, 400, 7):
        for season in (1, 2, 4, 7, 12, 24):
            lo, hi = segment_bounds(steps, 0.2, 0.2)["train"]
            try:
                horizon, window = panel.horizon_window(steps, season)
            except ValueError:
                # only when train cannot hold one season of history and the shortest horizon
                assert hi - lo < season + min(season if season > 1 else 8, max(1, steps // 10))
                continue
            checked += 1
            train_windows = (hi - lo) - window - horizon + 1
            assert 1 <= horizon <= max(1, steps // 10)
            assert window >= season
            assert train_windows >= 1
            # the cap keeps at least `window` training windows unless the season floor overrides it
            assert train_windows >= window or window == season
    assert checked > 300  # the grid is mostly series the rule accepts


def test_rule_rejects_a_series_too_short_for_its_season(panel):
    with pytest.raises(ValueError, match="10 steps has 6 train steps"):
        panel.horizon_window(10, 12)


def test_series_argument_takes_an_optional_season(panel):
    assert panel.parse_series_arg("data/air.csv:12") == (Path("data/air.csv"), 12)
    assert panel.parse_series_arg("data/air.csv") == (Path("data/air.csv"), 1)
