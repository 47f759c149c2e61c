"""recur's generic forecaster on a panel of CSV series: test MASE against seasonal naive.

    python -m benchmarks forecast-panel CSV[:SEASON] [CSV[:SEASON] ...] [--value-columns NAME=A,B ...]
                                        [--config OVERLAY ...] [--set KEY=VALUE ...] [--work-dir DIR]

Each CSV is one (multichannel) series: the first column is the time, every other column whose
cells are all numbers (blanks allowed, they are interpolated) is a value column, unless
`--value-columns NAME=A,B` names them for the file NAME (its name without `.csv`). SEASON is the
seasonal period the user knows (12 for monthly data with a yearly cycle; default 1: none).

One rule, the same for every series (`horizon_window`), sets the forecast horizon and the history
window from the season m and the series' length N (val and test are the last 20% of the steps
each, the importer's default, so train holds about 0.6 N steps):

    horizon = m if m > 1 else 8, at most max(1, N // 10)
    window  = max(2 m, 2 horizon, 16), at most (train steps - horizon + 1) // 2, at least m

The cap keeps at least `window` training windows (train steps - window - horizon + 1 of them),
and the floor keeps one full season in every history (the seasonal-naive baseline repeats it).

Per series, as a user would:

1. `recur data import --format csv FILE --out ... --time-column <first column> --value-columns ...
   --window W --horizon H --seasonal-period m --missing interpolate --val-fraction 0.2
   --test-fraction 0.2`. When the importer cannot read the time column (it takes numbers,
   ISO-8601 dates, quarters like "1970 Q1" and months like "1991 Jul"; its error starts with
   `unreadable_time`, pipeline/data/importers/csv_series.py), the series is imported again without
   `--time-column` (rows in file order, which is time order for these files) and
   `time_column_error` records why.
2. `recur -q run configs/forecast.yaml --set data.root=... --set registry.model_name=forecast-<name>
   --set tracking.runs_dir=...` (plus the `--set` items given here), one at a time. Read back from
   MLflow: test MASE (model MAE / seasonal-naive MAE on the same test windows: the gate's metric),
   MAE, the naive MAE, RMSE, sMAPE, optimizer steps, epochs, `budget.*`, the gate's decision;
   `wall_s` is the command's wall time.

Writes benchmarks/results/forecast-panel.json (forecast-panel-TAG.json with `--tag`) and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from pathlib import Path
from typing import Any

from benchmarks import add_tag_argument, write_results
from benchmarks.panel import (
    REPO,
    CommandFailed,
    fmt,
    markdown_table,
    read_run,
    recur,
    run_each,
    train,
    versions,
)

VAL_FRACTION = 0.2  # the importer's defaults, passed explicitly so the rule and the import agree
TEST_FRACTION = 0.2
HORIZON_NO_SEASON = 8  # steps forecast when the series has no season
HORIZON_SHARE = 10  # horizon at most 1/10 of the series' length
MIN_WINDOW = 16  # shortest history the rule picks (a season or two horizons may ask for more)


def horizon_window(num_steps: int, season: int, *, val_fraction: float = VAL_FRACTION,
                   test_fraction: float = TEST_FRACTION) -> tuple[int, int]:
    """(horizon, window) in time steps for a series of `num_steps` steps with seasonal period
    `season` (1: none), by the rule in the module docstring. Raises ValueError when the train
    segment cannot hold one window and its horizon."""
    from pipeline.data.importers.csv import segment_bounds

    if num_steps < 1 or season < 1:
        raise ValueError(f"num_steps and season must be >= 1, got {num_steps} and {season}")
    horizon = min(season if season > 1 else HORIZON_NO_SEASON, max(1, num_steps // HORIZON_SHARE))
    lo, hi = segment_bounds(num_steps, val_fraction, test_fraction)["train"]
    train_steps = hi - lo
    cap = (train_steps - horizon + 1) // 2  # windows in train = train_steps - window - horizon + 1 >= window
    window = max(min(max(2 * season, 2 * horizon, MIN_WINDOW), cap), season)
    if window + horizon > train_steps:
        raise ValueError(f"a series of {num_steps} steps has {train_steps} train steps, too few for a "
                         f"window of {window} (at least the season, {season}) and a horizon of {horizon}")
    return horizon, window


def parse_series_arg(text: str) -> tuple[Path, int]:
    """`path.csv` -> (path, 1); `path.csv:12` -> (path, 12)."""
    path, sep, season = text.rpartition(":")
    if sep and season.isdigit():
        if int(season) < 1:
            raise SystemExit(f"{text}: the season after ':' must be >= 1")
        return Path(path), int(season)
    return Path(text), 1


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_columns(path: Path) -> tuple[str, list[str], int]:
    """(time column, numeric columns, time steps) of a CSV series: the first column, every other
    column whose non-blank cells all parse as numbers (and has one), and the non-blank data rows."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = [cells for cells in csv.reader(fh) if any(c.strip() for c in cells)]
    if len(rows) < 2:
        raise SystemExit(f"{path}: expected a header row and at least one row per time step")
    header = [c.strip() for c in rows[0]]
    numeric = []
    for at, column in enumerate(header[1:], start=1):
        cells = [r[at].strip() for r in rows[1:] if at < len(r) and r[at].strip()]
        if cells and all(_is_number(c) for c in cells):
            numeric.append(column)
    return header[0], numeric, len(rows) - 1


def import_series(path: Path, out: Path, time_column: str, columns: list[str], *, window: int,
                  horizon: int, season: int, cwd: Path) -> dict[str, Any]:
    """`recur data import --format csv` (see the module docstring); the time column is dropped
    when the importer cannot read it. Returns the seconds and the time column used."""
    from pipeline.data.importers.csv_series import unreadable_time

    def command(time: str | None) -> list[str]:
        args = ["data", "import", "--format", "csv", str(path), "--out", str(out),
                "--value-columns", ",".join(columns), "--window", str(window), "--horizon", str(horizon),
                "--seasonal-period", str(season), "--missing", "interpolate",
                "--val-fraction", str(VAL_FRACTION), "--test-fraction", str(TEST_FRACTION)]
        return args + (["--time-column", time] if time else [])

    done = recur(command(time_column), cwd=cwd, check=False)
    if done.returncode == 0:
        return {"import_s": round(done.seconds, 2), "time_column": time_column}
    error = (done.stderr.strip().splitlines() or [""])[-1].removeprefix("recur: error: ")
    if unreadable_time(time_column) not in error:  # the importer's own words: they cannot drift apart
        raise CommandFailed(["recur", *command(time_column)], done)
    print(f"[{path.stem}] the importer cannot read the time column: {error}; importing in file order",
          flush=True)
    again = recur(command(None), cwd=cwd)
    return {"import_s": round(done.seconds + again.seconds, 2), "time_column": None,
            "time_column_error": error}


def plan_series(text: str, value_columns: dict[str, list[str]]) -> dict[str, Any]:
    """What the panel does with one `CSV[:SEASON]` argument (file, columns, horizon, window), checked
    before anything trains."""
    path, season = parse_series_arg(text)
    path = path.resolve()
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (expected a CSV series, PATH[:SEASON])")
    time_column, numeric, num_steps = read_columns(path)
    columns = value_columns.get(path.stem) or numeric
    if not columns:
        raise SystemExit(f"{path}: no numeric value column besides the time column {time_column!r}; "
                         f"name them with --value-columns {path.stem}=A,B")
    try:
        horizon, window = horizon_window(num_steps, season)
    except ValueError as error:
        raise SystemExit(f"{path}: {error}") from None
    return {"name": path.stem, "file": str(path), "time_column_in_file": time_column, "steps": num_steps,
            "channels": len(columns), "value_columns": columns, "season": season, "horizon": horizon,
            "window": window}


def run_series(plan: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Import and train one planned series; the row of the results for it."""
    row = dict(plan)
    path, season, horizon, window = Path(plan["file"]), plan["season"], plan["horizon"], plan["window"]
    slug = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-") or "series"
    dataset, runs = work / "datasets" / slug, work / f"runs-{slug}"
    overrides = [f"data.root={dataset}", f"registry.model_name=forecast-{slug}", f"tracking.runs_dir={runs}",
                 *args.overrides]
    print(f"[{path.stem}] {plan['steps']} steps, {plan['channels']} channel(s), season {season}: horizon "
          f"{horizon}, window {window}; import, then recur run", flush=True)
    try:
        row.update(import_series(path, dataset, plan["time_column_in_file"], plan["value_columns"],
                                 window=window, horizon=horizon, season=season, cwd=work))
        run_id, finished = train(args.configs, overrides, cwd=work)
    except CommandFailed as error:
        print(f"[{path.stem}] FAILED: {error}", flush=True)
        row["error"] = str(error)
        return row
    run = read_run(args.configs, overrides, run_id)
    metrics, decision = run["metrics"], run["decision"] or {}
    row.update({
        "run_id": run_id, "windows": run["rows"],
        "runs_dir": str(runs) if args.work_dir else None,  # a temporary folder is removed at the end
        "test_mase": metrics.get("test_mase"), "test_mae": metrics.get("test_mae"),
        "naive_mae": metrics.get("test_baseline_mae"), "test_rmse": metrics.get("test_rmse"),
        "naive_rmse": metrics.get("test_baseline_rmse"), "test_smape": metrics.get("test_smape"),
        "steps_done": int(metrics["steps_done"]) if "steps_done" in metrics else None,
        "epochs": int(metrics["epochs_run"]) if "epochs_run" in metrics else None,
        "budget": run["budget"], "wall_s": round(finished.seconds, 1),
        "train_s": round(run["train_s"], 1) if run["train_s"] else None, "steps_s": run["steps_s"],
        "peak_mib": finished.peak_mib,  # the run's process tree, Ray's processes included
        "gate_decision": decision.get("decision"), "gate_reason": decision.get("reason"),
    })
    return row


def table(rows: list[dict[str, Any]]) -> str:
    header = ["series", "steps", "ch", "season", "horizon", "window", "windows tr/val/te", "MASE", "MAE",
              "naive MAE", "sMAPE %", "opt steps", "epochs", "wall s", "gate"]
    body = []
    for r in rows:
        w = r.get("windows") or {}
        counts = "/".join(str(w.get(s, "-")) for s in ("train", "val", "test")) if w else None
        body.append([r["name"], r["steps"], r["channels"], r["season"], r["horizon"], r["window"], counts,
                     r.get("test_mase"), fmt(r.get("test_mae"), 2), fmt(r.get("naive_mae"), 2),
                     fmt(r.get("test_smape"), 1), r.get("steps_done"), r.get("epochs"),
                     fmt(r.get("wall_s"), 0), r.get("gate_decision", "FAILED")])
    return markdown_table(header, body)


def _value_columns(items: list[str]) -> dict[str, list[str]]:
    out = {}
    for item in items:
        name, sep, columns = item.partition("=")
        if not sep or not name or not columns:
            raise SystemExit(f"--value-columns {item!r}: expected NAME=A,B (NAME: the file's name "
                             "without .csv)")
        out[name] = [c.strip() for c in columns.split(",") if c.strip()]
    return out


def add_series_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of every benchmark that runs recur on CSV series (this one, `peers`): the
    series, their value columns, recur's config overlays and overrides, the work folder, the tag."""
    parser.add_argument("series", nargs="+", metavar="CSV[:SEASON]",
                        help="CSV series, first column the time; SEASON the seasonal period (default 1)")
    parser.add_argument("--value-columns", action="append", default=[], metavar="NAME=A,B",
                        help="value columns of the file NAME (without .csv); default: every numeric column")
    parser.add_argument("--config", dest="configs", action="append", type=Path, default=None,
                        help="config overlay(s) for recur run (default: configs/forecast.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to recur run after the benchmark's own (repeatable)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the imported datasets and runs here (default: a temporary folder, "
                             "removed)")
    add_tag_argument(parser)


def plan_all(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every series planned (`plan_series`), checked before anything trains; resolves
    `args.configs` and `args.value_columns` on the way."""
    args.configs = [c.resolve() for c in (args.configs or [REPO / "configs" / "forecast.yaml"])]
    args.value_columns = _value_columns(args.value_columns)
    plans = [plan_series(text, args.value_columns) for text in args.series]
    unknown = set(args.value_columns) - {p["name"] for p in plans}
    if unknown:
        parser.error(f"--value-columns names {sorted(unknown)}, which are not among the series "
                     f"{[p['name'] for p in plans]}")
    if len({p["name"] for p in plans}) < len(plans):
        parser.error(f"two series have the same file name: {[p['name'] for p in plans]}")
    return plans


def geometric_mean(mases: list[float]) -> float | None:
    """MASE is a ratio, so one series' 2.0 and another's 0.5 average to 1.0; None when there is
    none (or one is 0)."""
    if not mases or min(mases) <= 0:
        return None
    return math.exp(sum(math.log(m) for m in mases) / len(mases))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks forecast-panel",
        description="recur's generic forecaster: test MASE against seasonal naive")
    add_series_arguments(parser)
    args = parser.parse_args(argv)
    plans = plan_all(parser, args)

    rows = run_each(plans, lambda item, work: run_series(item, args, work), args.work_dir, "recur-forecast-")
    print()
    print(table(rows))
    mases = [r["test_mase"] for r in rows if r.get("test_mase") is not None]
    geo = geometric_mean(mases)
    if geo is not None:
        print(f"\ngeometric mean MASE over {len(mases)} series: {geo:.3f} (< 1: better than seasonal naive)")
    settings = {"configs": [str(c) for c in args.configs], "overrides": args.overrides,
                "value_columns": args.value_columns,
                "rule": "horizon = season if season > 1 else 8, at most max(1, steps // 10); window = "
                        "max(2 season, 2 horizon, 16), at most (train steps - horizon + 1) // 2, "
                        "at least season"}
    write_results("forecast-panel", tag=args.tag, settings=settings, geometric_mean_mase=geo,
                  versions=versions("recur", "torch", "ray", "mlflow", "numpy"), series=rows)
    return 1 if any("error" in r for r in rows) else 0
