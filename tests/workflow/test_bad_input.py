"""Bad input through the entry points a user hits: `recur data import`, `recur data validate`,
`recur run` (failing before Ray starts) and config loading.

Every case ends in one of two ways: exit code 2 with one `recur: error:` message that names the
file (and line or row id), the column or key, and what was expected; or, where the user asked for
it, rows set aside in `<out>/quarantine/` with their reasons and counted in the manifest. Never a
traceback, never a row dropped without a count.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_toy_dataset, no_ray

from pipeline.cli import main
from pipeline.data.dataset import read_manifest, read_quarantine, read_split

TS_HEADER = "@problemName p\n@univariate true\n@classLabel true a b\n@data\n"
TS_CASES = [f"{i},{i + 1},{i + 2}:{'ab'[i % 2]}" for i in range(10)]  # 10 good univariate cases


def recur(capsys, *argv) -> tuple[int, str, str]:
    """Run `recur ARGV` in this process: (exit code, stdout, stderr); never a traceback."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


def ts_file(path: Path, cases: list[str], header: str = TS_HEADER) -> Path:
    path.write_text(header + "".join(c + "\n" for c in cases))
    return path


def import_ts(capsys, tmp_path, train: list[str], test: list[str] = TS_CASES, *options):
    """`recur data import --format ts X_TRAIN.ts X_TEST.ts --out <tmp>/out OPTIONS`."""
    files = [ts_file(tmp_path / "x_TRAIN.ts", train), ts_file(tmp_path / "x_TEST.ts", test)]
    return recur(capsys, "data", "import", "--format", "ts", *files, "--out", tmp_path / "out", *options)


def parquet_file(path: Path, xs: list, ys: list | None = None, **columns) -> Path:
    """A Parquet source with ids r0, r1, ... and the given x (and y, default a/b alternating)."""
    data = {"id": [f"r{i}" for i in range(len(xs))], "x": xs}
    if ys is not False:
        data["y"] = ys if ys is not None else ["ab"[i % 2] for i in range(len(xs))]
    pq.write_table(pa.table({**data, **columns}), path)
    return path


def steps(num_rows: int = 20, length: int = 3, channels: int = 2) -> list:
    return [[[float(i + t)] * channels for t in range(length)] for i in range(num_rows)]


def import_parquet(capsys, tmp_path, path: Path, *options):
    return recur(capsys, "data", "import", "--format", "parquet", path, "--out", tmp_path / "out", *options)


def csv_file(path: Path, rows: list[str], header: str = "day,v") -> Path:
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


def days(n: int, skip: tuple[int, ...] = ()) -> list[str]:
    return [str(np.datetime64("2024-01-01") + i) for i in range(n) if i not in skip]


def import_csv(capsys, tmp_path, path: Path, *options):
    return recur(capsys, "data", "import", "--format", "csv", path, "--time-column", "day",
                 "--value-columns", "v", "--window", "3", "--horizon", "1", "--out", tmp_path / "out",
                 *options)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One local MLflow store for every `recur run` here (creating one costs seconds)."""
    return tmp_path_factory.mktemp("runs")


def run(capsys, runs: Path, config: Path | str, *overrides: str) -> tuple[int, str, str]:
    """`recur run CONFIG --set ...` against the shared local store; Ray must never start."""
    from pipeline.tracking.store import default_tracking_uri

    sets = [f"tracking.runs_dir={runs}", f"tracking.tracking_uri={default_tracking_uri(str(runs))}",
            *overrides]
    with no_ray():
        return recur(capsys, "run", config, *[a for s in sets for a in ("--set", s)])


def config_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------- NaN and inf values


@pytest.mark.parametrize("value,kind", [("nan", "NaN"), ("inf", "inf"), ("-inf", "inf")])
def test_nan_or_inf_in_ts_fails_naming_file_line_row_and_step(capsys, tmp_path, value, kind):
    code, _, err = import_ts(capsys, tmp_path, [*TS_CASES, f"1,{value},3:a"])
    assert code == 2
    assert f"train row 'x_TRAIN:10' ({tmp_path / 'x_TRAIN.ts'}:15) x: {kind} in x at step 1, channel 0" in err
    assert not (tmp_path / "out" / "manifest.json").exists()  # nothing written


def test_nan_in_parquet_fails_naming_row_id(capsys, tmp_path):
    xs = steps()
    xs[3][2][1] = float("nan")
    code, _, err = import_parquet(capsys, tmp_path, parquet_file(tmp_path / "t.parquet", xs))
    assert code == 2 and f"row 'r3' ({tmp_path / 't.parquet'}) x: NaN in x at step 2, channel 1" in err


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_nan_or_inf_in_csv_fails_naming_file_line_and_column(capsys, tmp_path, value):
    rows = [f"{d},{i}" for i, d in enumerate(days(40))]
    rows[7] = f"2024-01-08,{value}"  # line 9
    code, _, err = import_csv(capsys, tmp_path, csv_file(tmp_path / "s.csv", rows))
    assert code == 2
    assert f"row '2024-01-08' ({tmp_path / 's.csv'}:9) v: '{value}' is not a finite number" in err


def test_nan_row_is_quarantined_with_its_reason_when_asked(capsys, tmp_path):
    code, out, _ = import_ts(capsys, tmp_path, [*TS_CASES, "1,inf,3:a"], TS_CASES,
                             "--on-invalid", "quarantine")
    assert code == 0 and "quarantined 1 rows" in out
    quarantine = read_quarantine(str(tmp_path / "out"))
    assert quarantine.column("id").to_pylist() == ["x_TRAIN:10"]
    assert quarantine.column("reason").to_pylist() == ["x: inf in x at step 1, channel 0"]
    assert read_manifest(str(tmp_path / "out")).quarantined == {"train": 1}


# ------------------------------------------------------------------------------ empty sequences


def test_empty_sequence_in_ts_fails_naming_the_row(capsys, tmp_path):
    code, _, err = import_ts(capsys, tmp_path, [*TS_CASES, ":b"])
    assert code == 2 and "train row 'x_TRAIN:10'" in err and "x: empty sequence" in err


def test_empty_sequence_in_parquet_fails_naming_the_row(capsys, tmp_path):
    xs = steps()
    xs[5] = []
    code, _, err = import_parquet(capsys, tmp_path, parquet_file(tmp_path / "t.parquet", xs))
    assert code == 2 and "row 'r5'" in err and "x: empty sequence" in err


# ------------------------------------------------------------------ sequences over data.max_length

LONG = [*TS_CASES, "1,2,3,4,5,6,7:a", "1,2,3,4,5:b"]  # rows x_TRAIN:10 (7 steps) and :11 (5 steps)


def test_too_long_sequences_are_truncated_and_counted(capsys, tmp_path):
    code, out, _ = import_ts(capsys, tmp_path, LONG, TS_CASES, "--max-length", "4")
    assert code == 0 and "truncated 2 rows to their first 4 time steps" in out
    manifest = read_manifest(str(tmp_path / "out"))
    assert manifest.import_params["max_length"] == 4
    assert sum(manifest.import_params["truncated"].values()) == 2
    assert max(info.max for info in manifest.lengths.values()) == 4
    rows = {r["id"]: r["x"] for split in ("train", "val")
            for r in read_split(str(tmp_path / "out"), split).to_pylist()}
    assert rows["x_TRAIN:10"] == [[1.0], [2.0], [3.0], [4.0]]  # the first 4 steps


def test_too_long_sequences_rejected_fail_naming_the_rows(capsys, tmp_path):
    code, _, err = import_ts(capsys, tmp_path, LONG, TS_CASES, "--max-length", "4", "--on-too-long", "reject")
    assert code == 2
    assert "row 'x_TRAIN:10'" in err and "x: 7 time steps, longer than max_length 4" in err
    assert "row 'x_TRAIN:11'" in err and "x: 5 time steps, longer than max_length 4" in err


def test_too_long_sequences_rejected_are_quarantined_when_asked(capsys, tmp_path):
    code, out, _ = import_ts(capsys, tmp_path, LONG, TS_CASES, "--max-length", "4", "--on-too-long", "reject",
                             "--on-invalid", "quarantine")
    assert code == 0 and "quarantined 2 rows" in out
    reasons = read_quarantine(str(tmp_path / "out")).column("reason").to_pylist()
    assert reasons == ["x: 7 time steps, longer than max_length 4 (on_too_long='truncate' keeps the first 4)",
                       "x: 5 time steps, longer than max_length 4 (on_too_long='truncate' keeps the first 4)"]


def test_run_rejects_too_long_sequences_before_ray(capsys, tmp_path, runs):
    train = ts_file(tmp_path / "x_TRAIN.ts", LONG)
    test = ts_file(tmp_path / "x_TEST.ts", TS_CASES)
    config = config_file(tmp_path / "c.yaml", f"data:\n  root: {tmp_path / 'ds'}\n  max_length: 4\n"
                         f"  on_too_long: reject\n  source: {{format: ts, paths: ['{train}', '{test}']}}\n")
    code, _, err = run(capsys, runs, config)
    assert code == 2 and "row 'x_TRAIN:10'" in err and "longer than max_length 4" in err


def test_run_refuses_an_imported_dataset_longer_than_max_length(capsys, tmp_path, runs):
    root = make_toy_dataset(tmp_path / "toy")  # sequences of 4..14 steps
    code, _, err = run(capsys, runs, config_file(tmp_path / "c.yaml", ""), f"data.root={root}",
                       "data.max_length=5")
    assert code == 2 and f"dataset {root}: sequences up to" in err and "longer than data.max_length 5" in err


def test_max_length_does_not_apply_to_csv(capsys, tmp_path):
    path = csv_file(tmp_path / "s.csv", [f"{d},{i}" for i, d in enumerate(days(40))])
    code, _, err = import_csv(capsys, tmp_path, path, "--max-length", "3")
    assert code == 2
    assert "data.max_length applies to ts, ucr, parquet and text-classes sources (classify), not 'csv'" in err


# ------------------------------------------------------------------------- ragged channel counts


def test_ragged_channels_within_a_parquet_row_fail_naming_row_and_step(capsys, tmp_path):
    xs = steps()
    xs[19][1] = [3.0]  # one value where every other step has 2
    code, _, err = import_parquet(capsys, tmp_path, parquet_file(tmp_path / "t.parquet", xs))
    assert code == 2 and "row 'r19'" in err
    assert "x: wrong channel count: step 1 has 1 values, expected 2" in err


def test_ts_files_with_other_dimensions_fail_naming_both_files(capsys, tmp_path):
    train = ts_file(tmp_path / "x_TRAIN.ts", TS_CASES)
    test = ts_file(tmp_path / "x_TEST.ts", ["1,2:3,4:a"] * 4,
                   header="@problemName p\n@dimensions 2\n@classLabel true a b\n@data\n")
    code, _, err = recur(capsys, "data", "import", "--format", "ts", train, test, "--out", tmp_path / "out")
    assert code == 2 and f"{test}: 2 dimensions, but {train} has 1" in err


def test_ts_case_with_another_dimension_count_fails_naming_file_and_line(capsys, tmp_path):
    header = "@problemName p\n@dimensions 2\n@classLabel true a b\n@data\n"
    train = ts_file(tmp_path / "x_TRAIN.ts", ["1,2:3,4:a", "1,2:b"], header=header)
    code, _, err = recur(capsys, "data", "import", "--format", "ts", train, "--out", tmp_path / "out")
    assert code == 2 and f"{train}:6: case has 1 dimensions, expected 2 (from @dimensions)" in err


# ------------------------------------------------------------------------------- wrong dtypes


def test_string_in_ts_fails_naming_file_line_dimension_and_value(capsys, tmp_path):
    code, _, err = import_ts(capsys, tmp_path, [*TS_CASES, "1,abc,3:a"])
    assert code == 2
    assert f"{tmp_path / 'x_TRAIN.ts'}:15: dimension 1 value 2 is 'abc'; expected a number" in err


def test_strings_in_parquet_x_fail_naming_file_and_column(capsys, tmp_path):
    path = parquet_file(tmp_path / "t.parquet", [["1", "a"]] * 20)
    code, _, err = import_parquet(capsys, tmp_path, path)
    assert code == 2 and f"{path}: column 'x': x values must be numbers, got list<element: string>" in err


def test_non_label_type_in_parquet_y_fails_naming_file_and_column(capsys, tmp_path):
    path = parquet_file(tmp_path / "t.parquet", steps(), ys=[[1.0]] * 20)
    code, _, err = import_parquet(capsys, tmp_path, path)
    assert code == 2 and f"{path}: column 'y' has type list<element: double>; expected class labels" in err


def test_string_in_csv_value_fails_naming_file_line_and_column(capsys, tmp_path):
    rows = [f"{d},{i}" for i, d in enumerate(days(40))]
    rows[4] = "2024-01-05,n/a"  # line 6
    code, _, err = import_csv(capsys, tmp_path, csv_file(tmp_path / "s.csv", rows))
    assert code == 2 and f"row '2024-01-05' ({tmp_path / 's.csv'}:6) v: expected a number, got 'n/a'" in err


def test_strings_in_a_dataset_column_are_reported_by_validate(capsys, tmp_path):
    root = make_toy_dataset(tmp_path / "toy")
    part = root / "val" / "part-00000.parquet"
    table = pq.read_table(part)
    pq.write_table(table.set_column(2, "y", table.column("y").cast(pa.string())), part)
    code, out, _ = recur(capsys, "data", "validate", root)
    assert code == 1 and f"{part}  row '*'  y: y must be int64 label indices, got string" in out


# ----------------------------------------------------------------- a label unseen in train


def test_label_in_test_unseen_in_train_fails_naming_row_and_known_labels(capsys, tmp_path):
    header = "@problemName p\n@univariate true\n@classLabel true\n@data\n"  # labels from the data
    train = ts_file(tmp_path / "x_TRAIN.ts", TS_CASES, header=header)
    test = ts_file(tmp_path / "x_TEST.ts", [*TS_CASES, "1,2,3:c"], header=header)
    code, _, err = recur(capsys, "data", "import", "--format", "ts", train, test, "--out", tmp_path / "out")
    assert code == 2 and f"test row 'x_TEST:10' ({test}:15) y: unknown label 'c' (known: a, b)" in err


def test_label_in_val_unseen_in_train_is_quarantined_when_asked(capsys, tmp_path):
    ys = ["ab"[i % 2] for i in range(20)]
    ys[15] = "zebra"
    split = ["train"] * 12 + ["val"] * 4 + ["test"] * 4
    path = parquet_file(tmp_path / "t.parquet", steps(), ys, split=split)
    code, _, _ = import_parquet(capsys, tmp_path, path, "--split-column", "split",
                                "--on-invalid", "quarantine")
    assert code == 0
    quarantine = read_quarantine(str(tmp_path / "out")).to_pylist()
    assert [(q["id"], q["split"], q["reason"]) for q in quarantine] == [
        ("r15", "val", "y: unknown label 'zebra' (known: a, b)")]


# ---------------------------------------------------------------------------- a missing y column


def test_parquet_source_without_y_fails_naming_file_and_columns_found(capsys, tmp_path):
    path = parquet_file(tmp_path / "t.parquet", steps(), ys=False)
    code, _, err = import_parquet(capsys, tmp_path, path)
    assert code == 2 and f"{path}: no column(s) ['y']; the file has ['id', 'x']" in err


def test_dataset_split_without_y_is_reported_by_validate(capsys, tmp_path):
    root = make_toy_dataset(tmp_path / "toy")
    part = root / "test" / "part-00000.parquet"
    pq.write_table(pq.read_table(part).drop(["y"]), part)
    code, out, _ = recur(capsys, "data", "validate", root)
    assert code == 1 and f"{part}  row '*'  y: column is missing" in out


# ---------------------------------------------------- a schema other than the champion's (retrain)


def test_retrain_refuses_data_whose_schema_differs_from_the_champion(tmp_path):
    # `recur retrain` end to end (tests/workflow/test_steps.py, slow tier) refuses a 4-channel dataset
    # for a 3-channel champion with exit code 2; here its check on its own, without a registry.
    from pipeline.config import ConfigError, RecurConfig
    from pipeline.data.preprocess import Preprocessing
    from pipeline.tasks import build_task
    from pipeline.training.checkpoint import save_checkpoint
    from pipeline.workflow.retrain import check_fine_tune
    from pipeline.workflow.steps import FineTune

    champion_data = read_manifest(str(make_toy_dataset(tmp_path / "three", num_channels=3)))
    new_data = read_manifest(str(make_toy_dataset(tmp_path / "four", num_channels=4)))
    cfg = RecurConfig.model_validate({"data": {"root": str(tmp_path / "four")}})
    pre = Preprocessing.from_manifest(champion_data)
    (tmp_path / "champion").mkdir()
    save_checkpoint(str(tmp_path / "champion"), model=build_task(cfg, pre).build_model(), preprocessing=pre)
    champion = FineTune(source="models:/m/1", checkpoint_dir=str(tmp_path / "champion"), preprocessing=pre)
    with pytest.raises(ConfigError) as err:  # the CLI prints a ConfigError and exits with 2
        check_fine_tune(cfg, champion, new_data)
    assert "cannot fine-tune models:/m/1" in str(err.value)
    assert "channels differ: champion 3, data 4" in str(err.value)


# ------------------------------------------------------------ a corrupt or truncated Parquet file


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_parquet_source_fails_naming_the_file(capsys, tmp_path):
    path = parquet_file(tmp_path / "t.parquet", steps(200))
    _cut_in_half(path)
    code, _, err = import_parquet(capsys, tmp_path, path)
    assert code == 2 and f"{path}: not a readable Parquet file" in err


def test_truncated_parquet_source_is_one_line_from_the_recur_process(tmp_path):
    # the other tests call `main` in this process; this one checks what a shell user sees
    path = parquet_file(tmp_path / "t.parquet", steps(200))
    _cut_in_half(path)
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "data", "import", "--format", "parquet",
                           str(path), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"recur: error: {path}: not a readable Parquet file")


def test_truncated_dataset_part_is_reported_by_validate_and_stops_run_before_ray(capsys, tmp_path, runs):
    root = make_toy_dataset(tmp_path / "toy")
    part = root / "train" / "part-00000.parquet"
    _cut_in_half(part)
    code, out, _ = recur(capsys, "data", "validate", root)
    assert code == 1 and f"{part}: not a readable Parquet file, truncated or corrupt" in out
    code, _, err = run(capsys, runs, config_file(tmp_path / "c.yaml", ""), f"data.root={root}")
    assert code == 2 and f"{part}: not a readable Parquet file" in err


# ----------------------------------------------------------------- a .ts file with a broken header


@pytest.mark.parametrize("header,line,message", [
    ("@problemName p\n@dimensions two\n@data\n", 2,
     "@dimensions must be followed by a positive integer, got 'two'"),
    ("@problemName p\n@univariate maybe\n@data\n", 2, "@univariate must be followed by true or false"),
    ("@problemName p\n@timeStamps true\n@data\n", 2,
     "@timeStamps true: timestamped .ts files are not supported"),
    ("@problemName p\n@classLabel true a a\n@data\n", 2, "@classLabel declares a label twice"),
    ("@problemName p\n@univariate true\n", 3, "data before @data; expected header tags"),
    ("@problemName p\n@univariate true\n@dimensions 3\n@data\n", None,
     "@univariate true contradicts @dimensions 3"),
], ids=["dimensions-not-a-number", "bad-boolean", "timestamps", "duplicate-label", "no-data-line",
        "contradiction"])
def test_broken_ts_header_fails_naming_file_and_line(capsys, tmp_path, header, line, message):
    path = ts_file(tmp_path / "x_TRAIN.ts", TS_CASES, header=header)
    code, _, err = recur(capsys, "data", "import", "--format", "ts", path, "--out", tmp_path / "out")
    assert code == 2 and f"{path}{f':{line}' if line else ''}: {message}" in err


# ------------------------------------------------------- CSV: unparseable timestamps and gaps


@pytest.mark.parametrize("time", ["2024-13-45", "yesterday", "", "NaT", "2024 Jux"])
def test_unparseable_csv_time_fails_naming_file_line_and_column(capsys, tmp_path, time):
    rows = [f"{d},{i}" for i, d in enumerate(days(40))]
    rows[10] = f"{time},10"  # line 12
    code, _, err = import_csv(capsys, tmp_path, csv_file(tmp_path / "s.csv", rows))
    assert code == 2
    assert (f"{tmp_path / 's.csv'}:12: column 'day': expected a number, an ISO-8601 date, a quarter "
            f"(1970 Q1) or a month (1970 Jan) as the time, got {time!r}") in err


def test_csv_gap_fails_naming_file_line_and_the_usual_spacing(capsys, tmp_path):
    rows = [f"{d},{i}" for i, d in enumerate(days(40, skip=(10, 11)))]  # 2024-01-11 and -12 missing
    code, _, err = import_csv(capsys, tmp_path, csv_file(tmp_path / "s.csv", rows))
    assert code == 2
    assert "column 'day': 1 time step(s) break the series' usual spacing of 1 day(s) (36 of 37 steps)" in err
    assert (f"{tmp_path / 's.csv'}:12: time '2024-01-13' is 3 day(s) after the previous step "
            "'2024-01-10'") in err
    assert "data.source.gaps: keep (--gaps keep)" in err


def test_csv_gap_kept_when_asked_is_counted(capsys, tmp_path):
    rows = [f"{d},{i}" for i, d in enumerate(days(40, skip=(10,)))]
    code, out, _ = import_csv(capsys, tmp_path, csv_file(tmp_path / "s.csv", rows), "--gaps", "keep")
    assert code == 0 and "kept 1 gaps" in out
    manifest = read_manifest(str(tmp_path / "out"))
    assert manifest.task_params["gaps"] == 1 and manifest.import_params["gaps"] == "keep"


def test_csv_blank_cells_filled_when_asked_are_counted_and_printed(capsys, tmp_path):
    rows = [f"{d},{i}" for i, d in enumerate(days(40))]
    rows[7], rows[8] = "2024-01-08,", "2024-01-09,nan"  # lines 9 and 10
    path = csv_file(tmp_path / "s.csv", rows)
    code, out, err = import_csv(capsys, tmp_path, path, "--missing", "interpolate")
    assert code == 0, err
    assert "filled 2 blank/NaN cells (--missing interpolate): v 2" in out
    assert read_manifest(str(tmp_path / "out")).task_params["filled"] == {"v": 2}


def test_csv_missing_zero_is_refused_naming_the_key(capsys, tmp_path):
    rows = [f"{d},{i}" for i, d in enumerate(days(40))]
    code, _, err = import_csv(capsys, tmp_path, csv_file(tmp_path / "s.csv", rows), "--missing", "zero")
    assert code == 2 and "data.source.missing: zero does not apply to format 'csv'" in err
    code, _, err = run(capsys, tmp_path / "runs", config_file(tmp_path / "c.yaml", (
        f"data:\n  task: forecast\n  source:\n    format: csv\n    paths: [{tmp_path / 's.csv'}]\n"
        "    value_columns: [v]\n    missing: zero\n")))
    assert code == 2 and "data.source.missing: zero does not apply to format 'csv'" in err


# ------------------------------------------------------------------- an empty dataset or split


def test_ts_file_without_cases_fails_naming_the_file(capsys, tmp_path):
    path = ts_file(tmp_path / "x_TRAIN.ts", [])
    code, _, err = recur(capsys, "data", "import", "--format", "ts", path, "--out", tmp_path / "out")
    assert code == 2 and f"no rows in ['{path}']: the source files hold no cases" in err


def test_parquet_without_rows_fails_naming_the_file(capsys, tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "x": pa.array([], pa.list_(pa.float32())),
                             "y": pa.array([], pa.string())}), path)
    code, _, err = import_parquet(capsys, tmp_path, path)
    assert code == 2 and f"no rows in ['{path}']" in err


def test_zero_byte_parquet_fails_naming_the_file(capsys, tmp_path):
    path = tmp_path / "t.parquet"
    path.write_bytes(b"")
    code, _, err = import_parquet(capsys, tmp_path, path)
    assert code == 2 and f"{path}: not a readable Parquet file (Parquet file size is 0 bytes)" in err


def test_empty_csv_fails_naming_the_file(capsys, tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("")
    code, _, err = import_csv(capsys, tmp_path, path)
    assert code == 2 and f"{path}: empty file (expected a header row" in err


def test_empty_split_fails_naming_the_split(capsys, tmp_path):
    # every test row broken: the test split would be empty, even with quarantine
    code, _, err = import_ts(capsys, tmp_path, TS_CASES, ["1,nan,3:a", "1,2,nan:b"],
                             "--on-invalid", "quarantine")
    assert code == 2 and "split(s) ['test'] would be empty (valid rows per split:" in err


def test_empty_split_in_a_dataset_is_reported_by_validate(capsys, tmp_path):
    root = make_toy_dataset(tmp_path / "toy")
    part = root / "test" / "part-00000.parquet"
    pq.write_table(pq.read_table(part).slice(0, 0), part)
    code, out, _ = recur(capsys, "data", "validate", root)
    assert code == 1 and f"{part}  row '*'  rows: manifest says 48 rows, the files hold 0" in out


# ------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("text,needle", [
    ("train:\n  learning_rate: 0.1\n", "train.learning_rate: unknown key; known keys in train:"),
    ("model:\n  hidden_size: big\n", "model.hidden_size: Input should be a valid integer"),
    ("train:\n  lr: -0.01\n", "train.lr: Input should be greater than 0 (got -0.01)"),
    ("resources:\n  num_workers: -1\n", "resources.num_workers: Input should be greater than or equal to 0"),
    ("resources:\n  cpus_per_worker: 0\n", "resources.cpus_per_worker: Input should be greater than 0"),
    ("data:\n  val_fraction: 0.6\n  test_fraction: 0.5\n",
     "data.val_fraction + data.test_fraction must be below 1"),
    ("data:\n  max_length: 0\n", "data.max_length: Input should be greater than or equal to 1"),
], ids=["unknown-key", "wrong-type", "negative-lr", "negative-workers", "zero-cpus", "fractions",
        "zero-max-length"])
def test_bad_config_fails_before_ray_naming_key_and_file(capsys, tmp_path, runs, text, needle):
    config = config_file(tmp_path / "bad.yaml", text)
    code, _, err = run(capsys, runs, config)
    assert code == 2 and needle in err and f"[from {config}]" in err


def test_zero_workers_is_valid_local_mode(capsys):
    # resources.num_workers: 0 is not out of range: it runs the worker function in the driver
    code, out, _ = recur(capsys, "config", "show", Path(__file__).parents[2] / "configs" / "quickstart.yaml",
                         "--set", "resources.num_workers=0")
    assert code == 0 and "num_workers: 0" in out


def test_nonexistent_config_file_fails(capsys, tmp_path, runs):
    code, _, err = run(capsys, runs, tmp_path / "nope.yaml")
    assert code == 2 and f"cannot read config file {tmp_path / 'nope.yaml'}" in err


def test_nonexistent_source_path_fails_before_ray(capsys, tmp_path, runs):
    config = config_file(tmp_path / "c.yaml", f"data:\n  root: {tmp_path / 'ds'}\n"
                         f"  source: {{format: ts, paths: ['{tmp_path / 'missing_TRAIN.ts'}']}}\n")
    code, _, err = run(capsys, runs, config)
    assert code == 2 and f"source not found: {tmp_path / 'missing_TRAIN.ts'}" in err


def test_nonexistent_dataset_root_fails_before_ray(capsys, tmp_path, runs):
    code, _, err = run(capsys, runs, config_file(tmp_path / "c.yaml", ""), f"data.root={tmp_path / 'none'}")
    assert code == 2 and f"no manifest.json in {tmp_path / 'none'}" in err


# --------------------------------------------------- finite or nothing: numbers a run cannot train on


def step_records(runs: Path) -> set[Path]:
    return set((runs / "steps").glob("*.json"))


def nothing_registered(runs: Path) -> bool:
    """The shared store holds no registered model (every `recur run` here fails before Ray)."""
    from mlflow import MlflowClient

    from pipeline.tracking.store import default_tracking_uri

    return MlflowClient(default_tracking_uri(str(runs))).search_registered_models() == []


@pytest.mark.parametrize("key,value,needle", [
    ("train.lr", ".inf", "train.lr: Input should be a finite number (got inf)"),
    ("train.lr", ".nan", "train.lr: Input should be a finite number (got nan)"),
    ("train.lr", "1e30", "train.lr: Input should be less than or equal to 10"),
    ("train.epochs", "10000000", "train.epochs: Input should be less than or equal to 100000"),
    ("model.hidden_size", "1000000", "model.hidden_size: Input should be less than or equal to 16384"),
    ("data.batch_size", "10000000", "data.batch_size must be 1..65536 or auto; got 10000000"),
    ("train.grad_clip", ".inf", "train.grad_clip: Input should be a finite number (got inf)"),
], ids=["inf-lr", "nan-lr", "huge-lr", "huge-epochs", "huge-hidden", "huge-batch", "inf-clip"])
def test_non_finite_or_absurd_numbers_fail_before_ray_naming_the_key(capsys, tmp_path, runs, key, value,
                                                                       needle):
    config = config_file(tmp_path / "bad.yaml", f"data:\n  root: {make_toy_dataset(tmp_path / 'toy')}\n")
    records = step_records(runs)
    code, _, err = run(capsys, runs, config, f"{key}={value}")
    assert code == 2 and needle in err
    assert nothing_registered(runs) and step_records(runs) == records


# ------------------------------------------------------------ values read wrong without a word


def test_csv_value_beyond_float32_fails_naming_file_line_and_column(capsys, tmp_path):
    # float64 holds 1e39; float32, as recur stores it, would make it inf in every window
    rows = [f"{d},{i}" for i, d in enumerate(days(40))]
    rows[9] = "2024-01-10,1e39"  # line 11
    code, _, err = import_csv(capsys, tmp_path, csv_file(tmp_path / "s.csv", rows))
    assert code == 2
    assert f"row '2024-01-10' ({tmp_path / 's.csv'}:11) v: '1e39' is beyond the range of float32" in err
    assert not (tmp_path / "out").exists()


def test_number_with_an_underscore_fails_naming_the_cell(capsys, tmp_path):
    # Python reads 1_303 as 1303; in a CSV or .ts file it is a typo or a thousands separator
    rows = [f"{d},{i}" for i, d in enumerate(days(40))]
    rows[3] = "2024-01-04,1_303"  # line 5
    code, _, err = import_csv(capsys, tmp_path, csv_file(tmp_path / "s.csv", rows))
    assert code == 2 and f"row '2024-01-04' ({tmp_path / 's.csv'}:5) v: expected a number, got '1_303'" in err
    code, _, err = import_ts(capsys, tmp_path, [*TS_CASES, "1,1_303,3:a"])
    assert code == 2 and f"{tmp_path / 'x_TRAIN.ts'}:15: dimension 1 value 2 is '1_303'" in err
    assert not (tmp_path / "out").exists()


def test_blank_csv_line_between_steps_fails_naming_file_and_line(capsys, tmp_path):
    rows = [f"{d},{i}" for i, d in enumerate(days(40))]
    rows.insert(5, "")  # line 7: blank, between two time steps
    code, _, err = import_csv(capsys, tmp_path, csv_file(tmp_path / "s.csv", rows + ["", ""]))
    assert code == 2 and f"{tmp_path / 's.csv'}:7: blank line between time steps" in err
    assert not (tmp_path / "out").exists()
    # blank lines at the end of a file are not steps between others: allowed
    del rows[5]
    code, _, _ = import_csv(capsys, tmp_path, csv_file(tmp_path / "s.csv", rows + ["", ""]))
    assert code == 0


def test_duplicate_csv_header_fails_naming_the_column(capsys, tmp_path):
    rows = [f"{d},{i},{-i}" for i, d in enumerate(days(40))]
    code, _, err = import_csv(capsys, tmp_path, csv_file(tmp_path / "s.csv", rows, header="day,v,v"))
    assert code == 2 and f"{tmp_path / 's.csv'}:1: the header names column(s) ['v'] more than once" in err
    assert not (tmp_path / "out").exists()


def test_nan_label_in_parquet_fails_naming_the_row(capsys, tmp_path):
    # a float label column with a NaN: a missing label, not a class named "nan"
    ys = [float(i % 2) for i in range(20)]
    ys[6] = float("nan")
    code, _, err = import_parquet(capsys, tmp_path, parquet_file(tmp_path / "t.parquet", steps(), ys))
    assert code == 2 and "row 'r6'" in err and "y: label is null or NaN (expected a class label)" in err
    assert not (tmp_path / "out").exists()


def test_tsv_line_with_extra_columns_fails_naming_file_and_line(capsys, tmp_path):
    lines = [f"source {i}\ttarget {i}" for i in range(30)]
    lines[11] = "source 11\ttarget\t11"  # line 12: a tab inside the target cuts it short
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n")
    code, _, err = recur(capsys, "data", "import", "--format", "tsv", path, "--out", tmp_path / "out")
    assert code == 2 and f"({path}:12) x: 3 tab-separated columns, but line 1 has 2" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("missing", ["error", "zero", "interpolate"])
def test_ts_dimension_one_value_short_fails_under_every_missing_policy(capsys, tmp_path, missing):
    header = "@problemName p\n@univariate false\n@dimensions 2\n@classLabel true a b\n@data\n"
    cases = [f"{i},{i + 1},{i + 2}:{i},{i},{i}:{'ab'[i % 2]}" for i in range(10)]
    train = ts_file(tmp_path / "x_TRAIN.ts", [*cases, "1,2,3:4,5:a"], header=header)  # line 16
    test = ts_file(tmp_path / "x_TEST.ts", cases, header=header)
    code, _, err = recur(capsys, "data", "import", "--format", "ts", train, test, "--out", tmp_path / "out",
                         "--missing", missing)
    assert code == 2
    assert f"{train}:16: dimension 2 has 2 values but dimension 1 has 3; expected every dimension" in err
    assert not (tmp_path / "out").exists()


def test_manifest_naming_files_outside_its_folder_is_refused(capsys, tmp_path, runs):
    import json

    root = make_toy_dataset(tmp_path / "toy")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["splits"]["train"]["files"] = ["../../etc/part-00000.parquet"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = recur(capsys, "data", "validate", root)
    assert code == 2 and "file '../../etc/part-00000.parquet' is outside the dataset folder" in err
    code, _, err = run(capsys, runs, config_file(tmp_path / "c.yaml", ""), f"data.root={root}")
    assert code == 2 and f"invalid manifest {root / 'manifest.json'}" in err and "outside the dataset" in err
    assert nothing_registered(runs)


def test_flipped_bytes_in_a_dataset_part_fail_its_page_checksum(capsys, tmp_path, runs):
    # recur writes a CRC32 per Parquet page and checks it on every read: 64 flipped bytes in a
    # stored split are an unreadable file, never changed values trained on
    root = make_toy_dataset(tmp_path / "toy")
    part = root / "train" / "part-00000.parquet"
    data = bytearray(part.read_bytes())
    data[200:264] = bytes(b ^ 0xFF for b in data[200:264])
    part.write_bytes(bytes(data))
    code, out, _ = recur(capsys, "data", "validate", root)
    assert code == 1 and f"{part}: not a readable Parquet file" in out and "CRC checksum" in out
    code, _, err = run(capsys, runs, config_file(tmp_path / "c.yaml", ""), f"data.root={root}")
    assert code == 2 and f"{part}: not a readable Parquet file" in err
    assert nothing_registered(runs)


# ----------------------------------------------------------- one line, exit 2, never a traceback


def test_files_that_are_not_utf8_fail_in_one_line_naming_file_and_line(capsys, tmp_path):
    ts = tmp_path / "x_TRAIN.ts"
    ts.write_bytes((TS_HEADER + "\n".join(TS_CASES) + "\n1,2,3:caf\xe9\n").encode("latin-1"))
    code, _, err = recur(capsys, "data", "import", "--format", "ts", ts, "--out", tmp_path / "out")
    assert code == 2 and f"{ts}: not valid UTF-8 at byte offset" in err and "(line 15," in err
    csv_path = tmp_path / "s.csv"
    csv_path.write_bytes(("day,v\n" + "".join(f"{d},{i}\n" for i, d in enumerate(days(40)))
                          + "2024-02-10,caf\xe9\n").encode("latin-1"))
    code, _, err = import_csv(capsys, tmp_path, csv_path)
    assert code == 2 and f"{csv_path}: not valid UTF-8 at byte offset" in err and "(line 42," in err
    config = tmp_path / "c.yaml"
    config.write_bytes("train:\n  lr: 0.01  # caf\xe9\n".encode("latin-1"))
    code, _, err = recur(capsys, "config", "show", config)
    assert code == 2
    assert err.strip() == (f"recur: error: {config}:2: not UTF-8 text (byte 0xe9 at offset 24); "
                           "save the config as UTF-8")
    assert not (tmp_path / "out").exists()


def test_set_value_that_is_not_yaml_fails_in_one_line(capsys, tmp_path, runs):
    code, _, err = run(capsys, runs, config_file(tmp_path / "c.yaml", ""), "train.lr=[0.1, 0.2")
    assert code == 2
    assert err.strip() == ("recur: error: --set 'train.lr=[0.1, 0.2': not valid YAML at line 1, column 10: "
                           "expected ',' or ']', but got '<stream end>'")


def test_out_pointing_at_a_file_fails_naming_it(capsys, tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("keep me\n")
    files = [ts_file(tmp_path / "x_TRAIN.ts", TS_CASES), ts_file(tmp_path / "x_TEST.ts", TS_CASES)]
    code, _, err = recur(capsys, "data", "import", "--format", "ts", *files, "--out", out)
    assert code == 2 and f"{out}: is a file, not a folder" in err
    assert out.read_text() == "keep me\n"


# ------------------------------------------------------------------- size guards


def test_yaml_alias_bomb_is_refused_before_it_expands(capsys, tmp_path):
    # nine levels of nine aliases: 342 bytes that expand to 387 million values
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    config = config_file(tmp_path / "bomb.yaml", "\n".join(levels) + "\n")
    code, _, err = recur(capsys, "config", "show", config)
    assert code == 2 and f"{config}: more than 100000 values once its aliases (*name) are expanded" in err


def test_a_row_longer_than_the_default_max_length_is_refused_naming_it_and_the_key(capsys, tmp_path):
    from pipeline.config import DEFAULT_MAX_LENGTH

    long_case = ",".join(["1"] * (DEFAULT_MAX_LENGTH + 1)) + ":a"
    code, _, err = import_ts(capsys, tmp_path, [*TS_CASES, long_case])
    assert code == 2
    assert (f"row 'x_TRAIN:10' ({tmp_path / 'x_TRAIN.ts'}:15) has {DEFAULT_MAX_LENGTH + 1} time steps, more "
            f"than data.max_length's default {DEFAULT_MAX_LENGTH}") in err and "--max-length" in err
    assert not (tmp_path / "out").exists()
    # a limit set by the user keeps (or cuts) them, as asked
    code, _, _ = import_ts(capsys, tmp_path, [*TS_CASES, long_case], TS_CASES,
                           "--max-length", str(DEFAULT_MAX_LENGTH + 1))
    assert code == 0


# -------------------------------------------------- checked before Ray: names, buckets, predict


@pytest.mark.parametrize("name", ["team/model", "model:v2", "model@best"])
def test_model_name_mlflow_refuses_fails_before_ray(capsys, tmp_path, runs, name):
    root = make_toy_dataset(tmp_path / "toy")
    records = step_records(runs)
    code, _, err = run(capsys, runs, config_file(tmp_path / "c.yaml", ""), f"data.root={root}",
                       f"registry.model_name={name}")
    assert code == 2 and f"registry.model_name: {name!r} contains" in err
    assert nothing_registered(runs) and step_records(runs) == records


def test_predict_arguments_and_column_types_fail_before_ray_and_before_an_mlflow_run(capsys, tmp_path):
    from mlflow import MlflowClient

    root = make_toy_dataset(tmp_path / "toy")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--data", root, "--out", tmp_path / "out", "--tracking-uri", uri,
              "--runs-dir", tmp_path / "runs"]
    with no_ray():
        code, _, err = recur(capsys, "predict", "toy", *common, "--concurrency", "-1")
    assert code == 2 and "--concurrency must be >= 1 (model replicas), got -1" in err
    with no_ray():
        code, _, err = recur(capsys, "predict", "toy", *common, "--batch-size", "0")
    assert code == 2 and "--batch-size must be >= 1, got 0" in err
    part = root / "test" / "part-00000.parquet"
    table = pq.read_table(part)
    strings = pa.array([[str(v) for step in row for v in step] for row in table.column("x").to_pylist()])
    pq.write_table(table.set_column(1, "x", strings), part)
    with no_ray():
        code, _, err = recur(capsys, "predict", "toy", *common, "--split", "test")
    assert code == 2
    assert f"{part}: column 'x' has type list<element: string>; expected list<list<float32>>" in err
    assert not (tmp_path / "out").exists()
    assert MlflowClient(uri).search_experiments(filter_string="name != 'Default'") == []


# ------------------------------------------------------ data changed in place after it was checked


def test_data_changed_in_place_is_validated_again_before_training(tmp_path, runs):
    from pipeline.config import load_config
    from pipeline.data.validate import DataValidationError
    from pipeline.tracking.store import default_tracking_uri
    from pipeline.workflow.runner import run_pipeline

    class RayWouldStart(Exception):
        pass

    def connect() -> str:  # the steps before training are what this test is about
        raise RayWouldStart

    root = make_toy_dataset(tmp_path / "toy")
    cfg = load_config([], [f"data.root={root}", f"tracking.runs_dir={tmp_path / 'runs'}",
                           f"tracking.tracking_uri={default_tracking_uri(str(runs))}"])
    validations = lambda: sorted((tmp_path / "runs" / "steps").glob("validate-*.json"))  # noqa: E731
    # given a dataset that was ingested and validated, and the same data again: validate is skipped
    for _ in range(2):
        with pytest.raises(RayWouldStart):
            run_pipeline(cfg, connect=connect)
        assert len(validations()) == 1
    # when one value of the train split is rewritten as NaN in place (the manifest untouched)
    part = root / "train" / "part-00000.parquet"
    table = pq.read_table(part)
    xs = table.column("x").to_pylist()
    xs[3][1][0] = float("nan")
    pq.write_table(table.set_column(1, "x", pa.array(xs, table.schema.field("x").type)), part)
    # then validation runs again and stops the run naming the row, before Ray would start
    with pytest.raises(DataValidationError, match=r"train row 'train:3' .*x: NaN in x at step 1, channel 0"):
        run_pipeline(cfg, connect=connect)
    assert len(validations()) == 2
