"""CSV time series -> forecast dataset: windows, time splits, train-only scaling, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.dataset import DatasetError, read_manifest, read_quarantine, read_split, x_to_numpy
from pipeline.data.importers import import_dataset
from pipeline.data.importers.csv import import_csv
from pipeline.data.validate import DataValidationError, validate_dataset


def csv_file(tmp_path, rows: list[str], header: str = "year,a,b", name: str = "series.csv") -> str:
    path = tmp_path / name
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return str(path)


def ramp(n: int, start: int = 2000) -> list[str]:
    """Step i holds a = i and b = 100 + 2i: every value tells which step it came from."""
    return [f"{start + i},{i},{100 + 2 * i}" for i in range(n)]


def windows_of(root: str, split: str) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    table = read_split(root, split)
    return (table.column("id").to_pylist(), x_to_numpy(table.column("x")),
            x_to_numpy(table.column("y")))


def test_windows_follow_the_time_split(tmp_path):
    # Given 40 steps, window 4, horizon 2, val and test 10 steps each (train 20)
    path = csv_file(tmp_path, ramp(40))
    root = str(tmp_path / "ds")
    m = import_csv(path, root, time_column="year", value_columns=["a", "b"], window=4, horizon=2,
                   seasonal_period=2, val_fraction=0.25, test_fraction=0.25)
    # then train windows lie inside steps 0..19; val/test targets inside 20..29 / 30..39
    assert {s: m.splits[s].rows for s in ("train", "val", "test")} == {"train": 15, "val": 9, "test": 9}
    segments = {"train": (0, 20), "val": (20, 30), "test": (30, 40)}
    for split, (lo, hi) in segments.items():
        ids, xs, ys = windows_of(root, split)
        for row_id, x, y in zip(ids, xs, ys):
            first = int(x[0, 0])
            assert x.shape == (4, 2) and y.shape == (2, 2)
            # contiguous history then horizon, both channels from the same steps, raw units
            assert x[:, 0].tolist() + y[:, 0].tolist() == list(range(first, first + 6))
            assert (x[:, 1] == 100 + 2 * x[:, 0]).all()
            # the row id is the time of the first forecast step
            assert row_id == str(2000 + int(y[0, 0]))
            # targets never cross a boundary; train histories stay in train
            assert lo <= y[0, 0] and y[-1, 0] < hi
            if split == "train":
                assert x[0, 0] >= lo
        # the first val/test window forecasts the segment's first step (history reaches back)
        if split != "train":
            assert int(ys[0][0, 0]) == lo and int(ys[-1][-1, 0]) == hi - 1
    params = m.task_params
    assert (params["window"], params["horizon"], params["stride"], params["seasonal_period"]) == (4, 2, 1, 2)
    assert params["value_columns"] == ["a", "b"] and params["time_column"] == "year"
    assert params["segments"]["test"] == {"steps": 10, "first": "2030", "last": "2039"}
    assert validate_dataset(root).ok


def test_scaling_is_fit_on_train_windows_only(tmp_path):
    # Given a series whose val/test part is far larger than its train part
    rows = [f"{i},{1.0 if i < 30 else 1000.0}" for i in range(50)]
    root = str(tmp_path / "ds")
    m = import_csv(csv_file(tmp_path, rows, header="t,v"), root, time_column="t", value_columns=["v"],
                   window=5, horizon=3, val_fraction=0.2, test_fraction=0.2)
    # then the statistics only see train values (all 1.0): mean 1, std at its floor
    assert m.normalization.mean == [pytest.approx(1.0)]
    assert m.normalization.std[0] < 1e-3
    # and they equal the statistics of the train rows' x
    train_x = np.concatenate(windows_of(root, "train")[1])
    assert train_x.max() == 1.0


def test_stride_and_no_time_column(tmp_path):
    root = str(tmp_path / "ds")
    m = import_csv(csv_file(tmp_path, ramp(40)), root, value_columns=["a"], window=4, horizon=2,
                   stride=3, val_fraction=0.25, test_fraction=0.25)
    ids, xs, _ = windows_of(root, "train")
    # train targets start at 4, 7, 10, ... up to 18 (target 18..19 still inside train)
    assert [int(x[-1, 0]) + 1 for x in xs] == [4, 7, 10, 13, 16]
    assert ids == ["t=4", "t=7", "t=10", "t=13", "t=16"]
    assert m.feature.num_channels == 1


def test_dates_as_time_and_cli_format_name(tmp_path):
    rows = [f"2024-01-{d:02d},{d}" for d in range(1, 31)]
    root = str(tmp_path / "ds")
    m = import_dataset("csv", [csv_file(tmp_path, rows, header="day,v")], root, time_column="day",
                       value_columns=["v"], window=3, horizon=2)
    assert m.task == "forecast" and m.name == "series"
    assert read_split(root, "test").column("id").to_pylist()[0] == "2024-01-25"


def test_segment_too_short_names_the_sizes(tmp_path):
    # 20 steps -> train 12, val 4, test 4; train needs window + horizon = 13
    with pytest.raises(DatasetError, match=r"20 time steps.*train 12, val 4, test 4.*"
                                           r"window \+ horizon = 8 \+ 5 = 13"):
        import_csv(csv_file(tmp_path, ramp(20)), str(tmp_path / "ds"), time_column="year",
                   value_columns=["a"], window=8, horizon=5, val_fraction=0.2, test_fraction=0.2)


def test_time_must_increase(tmp_path):
    rows = ramp(30)
    rows[12], rows[13] = rows[13], rows[12]  # line 15 (header is line 1) goes back in time
    with pytest.raises(DatasetError, match=r"series.csv:15: column 'year': time '2012' is not after .*"
                                           r"'2013' \(.*series.csv:14\)"):
        import_csv(csv_file(tmp_path, rows), str(tmp_path / "ds"), time_column="year",
                   value_columns=["a"], window=3, horizon=2)


def test_missing_column_names_the_columns_found(tmp_path):
    with pytest.raises(DatasetError, match=r"no column\(s\) \['c'\]; the header has \['year', 'a', 'b'\]"):
        import_csv(csv_file(tmp_path, ramp(30)), str(tmp_path / "ds"), time_column="year",
                   value_columns=["a", "c"], window=3, horizon=2)


def test_bad_values_fail_naming_file_line_column_and_text(tmp_path):
    rows = ramp(30)
    rows[5] = "2005,abc,110"  # line 7
    rows[9] = "2009,9,"  # line 11: blank
    rows[20] = "2020,nan,140"  # line 22
    root = tmp_path / "ds"
    with pytest.raises(DataValidationError) as err:
        import_csv(csv_file(tmp_path, rows), str(root), time_column="year", value_columns=["a", "b"],
                   window=3, horizon=2)
    text = str(err.value)
    assert "series.csv:7" in text and "series.csv:11" in text and "series.csv:22" in text
    found = [(p.source.rsplit(":", 1)[1], p.row_id, p.column) for p in err.value.problems]
    assert found == [("7", "2005", "a"), ("11", "2009", "b"), ("22", "2020", "a")]
    assert "expected a number, got 'abc'" in err.value.problems[0].reason
    assert "blank value" in err.value.problems[1].reason
    assert "not a finite number" in err.value.problems[2].reason
    assert not (root / "manifest.json").exists()


def test_quarantine_sets_aside_every_window_touching_a_bad_step(tmp_path):
    rows = ramp(40)
    rows[10] = "2010,oops,120"  # a train step
    root = str(tmp_path / "ds")
    m = import_csv(csv_file(tmp_path, rows), root, time_column="year", value_columns=["a"], window=4,
                   horizon=2, val_fraction=0.25, test_fraction=0.25, on_invalid="quarantine")
    # windows whose span [t-4, t+2) holds step 10: t in 9..14 -> 6 windows, all train
    quarantine = read_quarantine(root)
    assert sorted(quarantine.column("id").to_pylist()) == [str(2000 + t) for t in range(9, 15)]
    assert set(quarantine.column("split").to_pylist()) == {"train"}
    assert all("series.csv:12" in r and "'oops'" in r for r in quarantine.column("reason").to_pylist())
    assert m.quarantined == {"train": 6} and m.splits["train"].rows == 15 - 6
    ids, xs, ys = windows_of(root, "train")
    for x, y in zip(xs, ys):
        assert 10 not in x[:, 0].tolist() + y[:, 0].tolist()
    assert validate_dataset(root).ok


def test_option_checks(tmp_path):
    path = csv_file(tmp_path, ramp(30))
    with pytest.raises(ValueError, match="seasonal_period 5 is longer than window 4"):
        import_csv(path, str(tmp_path / "a"), value_columns=["a"], window=4, horizon=2, seasonal_period=5)
    with pytest.raises(ValueError, match="val_fraction > 0"):
        import_csv(path, str(tmp_path / "b"), value_columns=["a"], window=4, horizon=2, val_fraction=0.0)
    with pytest.raises(DatasetError, match=r"series.csv:4: 2 fields, but the header has 3"):
        import_csv(csv_file(tmp_path, ["2000,1,2", "2001,2,3", "2002,3"], name="series.csv"),
                   str(tmp_path / "c"), value_columns=["a"], window=1, horizon=1)


def test_builtin_sunspots(tmp_path):
    root = str(tmp_path / "sun")
    m = import_csv("builtin://sunspots/sunspots.csv", root, time_column="YEAR",
                   value_columns=["SUNACTIVITY"], window=32, horizon=8, seasonal_period=11)
    # 309 years: train 185 (1700-1884), val 62, test 62; 185-32-8+1 and 62-8+1 windows
    assert {s: i.rows for s, i in m.splits.items()} == {"train": 146, "val": 55, "test": 55}
    assert m.task_params["segments"]["val"]["first"] == "1885"
    assert read_split(root, "test").column("id").to_pylist()[0] == "1947"
    assert m.sources[0].path == "builtin://sunspots/sunspots.csv"
    assert read_manifest(root).data_hash == m.data_hash


@pytest.mark.parametrize("times,gaps", [
    ([f"{y}-{m:02d}-01" for y in (2020, 2021) for m in range(1, 13)], []),  # monthly: 28..31 days apart
    ([f"{y}-01-01" for y in range(2000, 2010)], []),  # yearly, leap years included
    (["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30", "2024-05-31"], []),  # month ends
    ([f"2024-01-01T{h:02d}:00" for h in range(10)], []),  # hourly
    ([f"{1.5 * i:g}" for i in range(10)], []),  # numbers, step 1.5
    (["2024-01-01", "2024-02-01", "2024-04-01", "2024-05-01"], [(2, "2 month(s)")]),  # March missing
    (["1", "2", "3", "5", "6", "7"], [(3, "2")]),
    (["2024-01-05", "2024-01-08", "2024-01-09", "2024-01-10", "2024-01-11", "2024-01-12", "2024-01-15"],
     [(1, "3 day(s)"), (6, "3 day(s)")]),  # business days: the weekends
])
def test_gaps_are_steps_off_the_usual_spacing(tmp_path, times, gaps):
    from pipeline.data.importers.csv_series import find_gaps, read_series

    path = csv_file(tmp_path, [f"{t},1" for t in times], header="t,v")
    found, _ = find_gaps(read_series([(path, path)], time_column="t", value_columns=["v"]))
    assert found == gaps


# ------------------------------------------------------------------ missing values (blank / NaN cells)


def values_by_step(root: str, window: int, start: int = 2000) -> dict[int, list[float]]:
    """Step -> [a, b] as stored in the windows' histories (ids are the first forecast year)."""
    out: dict[int, list[float]] = {}
    for split in ("train", "val", "test"):
        for row_id, x, _ in zip(*windows_of(root, split)):
            first = int(row_id) - start - window
            for j, step_values in enumerate(x.tolist()):
                out[first + j] = step_values
    return out


def gappy_ramp() -> list[str]:
    """ramp(40) (a = i, b = 100 + 2i) with blank/NaN cells: a at steps 0 (leading), 5 and 6
    (inner), 19 (the last train step: its next value lies in val) and 25; b at step 12 (NaN)."""
    rows = ramp(40)
    for step in (0, 5, 6, 19, 25):
        rows[step] = f"{2000 + step},,{100 + 2 * step}"
    rows[12] = "2012,12,NaN"
    return rows


@pytest.mark.parametrize("missing,a_expected,b12", [
    # interpolate: linear in time; the leading blank takes the next value; step 19 holds the last
    # train value (18): a fill never reads the next segment (val starts at step 20)
    ("interpolate", {0: 1, 5: 5, 6: 6, 19: 18, 25: 25}, 124),
    # ffill: the previous value; the leading blank takes the next one
    ("ffill", {0: 1, 5: 4, 6: 4, 19: 18, 25: 24}, 122),
])
def test_blank_and_nan_cells_are_filled_and_counted(tmp_path, missing, a_expected, b12):
    # Given a series with blank and NaN value cells
    root = str(tmp_path / "ds")
    m = import_csv(csv_file(tmp_path, gappy_ramp()), root, time_column="year", value_columns=["a", "b"],
                   window=4, horizon=2, val_fraction=0.25, test_fraction=0.25, missing=missing)
    # then every filled cell holds the policy's value and every other cell is as read
    steps = values_by_step(root, window=4)
    for step, (a, b) in steps.items():
        assert a == a_expected.get(step, step), step
        assert b == (b12 if step == 12 else 100 + 2 * step), step
    assert {0, 5, 6, 12, 19, 25} <= set(steps)
    # and the counts per column are in the manifest, nothing was quarantined
    assert m.task_params["filled"] == {"a": 5, "b": 1}
    assert m.import_params["missing"] == missing and not m.quarantined
    assert {s: m.splits[s].rows for s in ("train", "val", "test")} == {"train": 15, "val": 9, "test": 9}
    assert validate_dataset(root).ok


def test_interpolate_is_linear_in_time_across_kept_gaps(tmp_path):
    # Given times 0..9, 12, 13, ... (a kept gap) with v = time, and v blank at time 12
    times = [*range(10), *range(12, 42)]
    rows = [f"{t},{'' if t == 12 else t}" for t in times]
    root = str(tmp_path / "ds")
    m = import_csv(csv_file(tmp_path, rows, header="t,v"), root, time_column="t", value_columns=["v"],
                   window=3, horizon=1, gaps="keep", missing="interpolate")
    # then the fill lies on the line through (9, 9) and (13, 13), not halfway between the steps
    ids, xs, _ = windows_of(root, "train")
    history = xs[ids.index("13")][:, 0].tolist()  # the steps at times 8, 9, 12
    assert history == [8.0, 9.0, 12.0]
    assert m.task_params["filled"] == {"v": 1} and m.task_params["gaps"] == 1


def test_blank_cells_fail_under_missing_error_with_a_hint(tmp_path):
    with pytest.raises(DataValidationError) as err:
        import_csv(csv_file(tmp_path, gappy_ramp()), str(tmp_path / "ds"), time_column="year",
                   value_columns=["a", "b"], window=4, horizon=2)
    assert len(err.value.problems) == 6
    assert "data.source.missing ffill or interpolate (--missing) fills them" in str(err.value)


def test_text_and_empty_columns_stay_invalid_when_filling(tmp_path):
    # Given a non-numeric cell (not a missing value) and a column blank up to the end of train
    rows = [f"{2000 + i},{i}," for i in range(30)]
    rows[7] = "2007,n/a,"
    rows[25] = "2025,25,1"
    with pytest.raises(DataValidationError) as err:
        import_csv(csv_file(tmp_path, rows), str(tmp_path / "ds"), time_column="year",
                   value_columns=["a", "b"], window=3, horizon=2, missing="ffill")
    found = {(p.row_id, p.column) for p in err.value.problems}
    # then 'n/a' is still named, and b's blanks before its first number (step 25) cannot be filled
    assert ("2007", "a") in found
    assert {(str(2000 + s), "b") for s in range(24)} <= found  # train 0..17, val 18..23 have no b
    assert ("2027", "b") not in found  # test steps after step 25 take its value


def test_missing_zero_is_refused_for_csv(tmp_path):
    from pydantic import ValidationError

    from pipeline.config import source_config

    with pytest.raises(ValueError, match="missing must be one of error, ffill, interpolate for a csv series, "
                                         "got 'zero'"):
        import_csv(csv_file(tmp_path, ramp(30)), str(tmp_path / "ds"), value_columns=["a"], window=3,
                   horizon=2, missing="zero")
    with pytest.raises(ValidationError, match="data.source.missing: zero does not apply to format 'csv'"):
        source_config(format="csv", paths=["s.csv"], value_columns=["a"], missing="zero")
    # ffill and interpolate reach the importer from a config
    source = source_config(format="csv", paths=["s.csv"], value_columns=["a"], missing="interpolate")
    assert source.importer_options()["missing"] == "interpolate"


def test_a_quarterly_time_column_like_1970_q1_is_a_regular_series(tmp_path):
    # given quarters written as "1970 Q1" (as in published macro series), one missing quarter later
    from pipeline.data.importers.csv_series import _time_key, find_gaps, read_series

    rows = [f"{1970 + q // 4} Q{q % 4 + 1},{q}" for q in range(12)]
    path = tmp_path / "q.csv"
    path.write_text("quarter,v\n" + "\n".join(rows) + "\n")
    series = read_series([(str(path), str(path))], time_column="quarter", value_columns=["v"])
    # then every quarter is a date on its first day, three calendar months apart: no gaps
    assert series.time_keys[1] == _time_key("1970-04-01")
    assert find_gaps(series) == ([], "3 month(s) (11 of 11 steps)")
    assert _time_key("1970-Q3") == _time_key("1970Q3") == _time_key("1970-07-01")
    assert _time_key("1970 Q5") is None


@pytest.mark.parametrize("text", [
    "1991 Jul", "1991-Jul", "1991Jul", "1991/jul", "Jul 1991", "Jul-1991", "jul1991", "JUL 1991", "July 1991",
    "1991 July", "1991-JULY", " july  1991 ",
])
def test_a_month_with_an_english_name_is_its_first_day(text):
    # given a month written as R's tsibble prints it ("1991 Jul") or in another common spelling
    from pipeline.data.importers.csv_series import _time_key

    # then it is the date of the month's first day, like the ISO month 1991-07
    assert _time_key(text) == ("date", np.datetime64("1991-07-01", "ns")) == _time_key("1991-07")


@pytest.mark.parametrize(("text", "month"), [
    ("1991 Jan", "1991-01"), ("Feb 1991", "1991-02"), ("1991 March", "1991-03"), ("apr 1991", "1991-04"),
    ("1991 May", "1991-05"), ("June 1991", "1991-06"), ("1991 Aug", "1991-08"), ("Sep 1991", "1991-09"),
    ("Sept 1991", "1991-09"), ("1991 September", "1991-09"), ("Oct-1991", "1991-10"),
    ("1991-Nov", "1991-11"), ("December 1991", "1991-12"), ("0999 Dec", "0999-12"),
])
def test_every_month_name_maps_to_its_month(text, month):
    from pipeline.data.importers.csv_series import _time_key

    assert _time_key(text) == ("date", np.datetime64(f"{month}-01", "ns"))


@pytest.mark.parametrize("text", ["1991 Jux", "1991 Ju", "Julyy 1991", "91 Jul", "Jul 91", "1991 Jul 1",
                                  "1991 Jul Aug", "1991 - - Jul", "Jul", "1991 \u017fep"])
def test_text_that_is_not_a_month_is_no_time(text):
    from pipeline.data.importers.csv_series import _time_key

    assert _time_key(text) is None


def pbs_like(months: int, start_year: int = 1991, start_month: int = 7) -> list[str]:
    """Monthly rows as R's tsibble prints them (the PBS data: "1991 Jul", "1991 Aug", ...)."""
    names = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    rows = []
    for i in range(months):
        at = start_month - 1 + i
        rows.append(f"{start_year + at // 12} {names[at % 12]},{i},{100 + 2 * i}")
    return rows


def test_a_monthly_time_column_like_1991_jul_is_a_regular_series(tmp_path):
    # given 36 months written "1991 Jul" ... "1994 Jun", across three year ends
    from pipeline.data.importers.csv_series import _time_key, find_gaps, read_series

    path = csv_file(tmp_path, pbs_like(36), header="Month,a,b")
    series = read_series([(path, path)], time_column="Month", value_columns=["a", "b"])
    # then every month is a date on its first day, one calendar month apart: no gaps
    assert series.time_keys[0] == _time_key("1991-07-01") and series.time_keys[6] == _time_key("1992-01-01")
    assert series.time_keys[-1] == _time_key("1994-06-01")
    assert find_gaps(series) == ([], "1 month(s) (35 of 35 steps)")
    # and the import (gaps="error" by default) windows it, the row ids keeping the file's text
    root = str(tmp_path / "ds")
    m = import_csv(path, root, time_column="Month", value_columns=["a", "b"], window=12, horizon=2,
                   seasonal_period=12, val_fraction=0.25, test_fraction=0.25)
    assert m.task_params["time_column"] == "Month"
    assert m.task_params["segments"]["test"] == {"steps": 9, "first": "1993 Oct", "last": "1994 Jun"}
    ids, _, ys = windows_of(root, "test")
    assert ids[0] == "1993 Oct" and int(ys[0][0, 0]) == 27


def test_a_missing_month_is_a_gap(tmp_path):
    from pipeline.data.importers.csv_series import find_gaps, read_series

    rows = pbs_like(14)
    del rows[5]  # 1991 Dec
    path = csv_file(tmp_path, rows, header="Month,a,b")
    series = read_series([(path, path)], time_column="Month", value_columns=["a"])
    assert find_gaps(series) == ([(5, "2 month(s)")], "1 month(s) (11 of 12 steps)")


def test_a_bad_month_fails_naming_file_line_and_column(tmp_path):
    rows = pbs_like(24)
    rows[10] = "1992 Jux,10,120"  # line 12
    path = csv_file(tmp_path, rows, header="Month,a,b")
    with pytest.raises(DatasetError) as err:
        import_csv(path, str(tmp_path / "ds"), time_column="Month", value_columns=["a"], window=3, horizon=1)
    assert str(err.value) == (f"{path}:12: column 'Month': expected a number, an ISO-8601 date, a quarter "
                              "(1970 Q1) or a month (1970 Jan) as the time, got '1992 Jux'")


def test_months_mixed_with_numbers_fail_naming_both_kinds(tmp_path):
    rows = pbs_like(24)
    rows[10] = "1992,10,120"  # line 12: a number after months
    path = csv_file(tmp_path, rows, header="Month,a,b")
    with pytest.raises(DatasetError) as err:
        import_csv(path, str(tmp_path / "ds"), time_column="Month", value_columns=["a"], window=3, horizon=1)
    assert str(err.value) == (f"{path}:12: column 'Month': time '1992' is a number, but the time at "
                              f"{path}:11 is a date")
