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


@pytest.fixture
def in_process_recur(panel, monkeypatch, capsys):
    """The panel's `recur` runs `recur ARGS` in this process (the real CLI and importer, no
    subprocess); returns the argument lists it was called with."""
    from benchmarks.panel import CommandFailed, Finished
    from pipeline.cli import main

    calls: list[list[str]] = []

    def recur(args, *, cwd, check=True):
        calls.append(list(args))
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        finished = Finished(code, out, err, 0.5)
        if check and code != 0:
            raise CommandFailed(["recur", *args], finished)
        return finished

    monkeypatch.setattr(panel, "recur", recur)
    return calls


def series_csv(tmp_path, times: list[str]) -> Path:
    path = tmp_path / "s.csv"
    path.write_text("when,v\n" + "".join(f"{t},{i % 7}\n" for i, t in enumerate(times)))
    return path


def test_import_falls_back_to_file_order_when_the_importer_cannot_read_the_time_column(
        panel, in_process_recur, tmp_path):
    # given a time column the importer cannot read ("week 1", ...)
    path = series_csv(tmp_path, [f"week {i}" for i in range(1, 41)])
    # when the panel imports it, then it imports again without --time-column and says why
    done = panel.import_series(path, tmp_path / "ds", "when", ["v"], window=3, horizon=1, season=1,
                               cwd=tmp_path)
    assert done["time_column"] is None and done["import_s"] == 1.0
    assert done["time_column_error"] == (f"{path}:2: column 'when': expected a number, an ISO-8601 "
                                         "date, a quarter (1970 Q1) or a month (1970 Jan) as the time, got "
                                         "'week 1'")
    first, again = in_process_recur
    assert first[-2:] == ["--time-column", "when"] and "--time-column" not in again
    assert (tmp_path / "ds" / "manifest.json").is_file()


def test_import_keeps_a_readable_time_column_and_fails_on_other_errors(panel, in_process_recur, tmp_path):
    # given months as R's tsibble writes them: read as the time column, one import
    names = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    path = series_csv(tmp_path, [f"{1991 + (6 + i) // 12} {names[(6 + i) % 12]}" for i in range(40)])
    done = panel.import_series(path, tmp_path / "ds", "when", ["v"], window=3, horizon=1, season=1,
                               cwd=tmp_path)
    assert done == {"import_s": 0.5, "time_column": "when"} and len(in_process_recur) == 1
    # an error that is not about the time column (no such value column) is not worked around
    with pytest.raises(panel.CommandFailed, match=r"no column\(s\) \['w'\]"):
        panel.import_series(path, tmp_path / "ds2", "when", ["w"], window=3, horizon=1, season=1,
                            cwd=tmp_path)
    assert len(in_process_recur) == 2
