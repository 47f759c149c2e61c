"""UCR archive text files (2018 .tsv, 2015 .txt) -> classify dataset: values, labels, padding,
missing values, bad input, and the `recur data import --format ucr` / `data.source` entry points."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.data.dataset import DatasetError, read_manifest, read_quarantine, read_split, x_to_numpy
from pipeline.data.importers import import_dataset
from pipeline.data.importers.ucr import import_ucr, normalize_label
from pipeline.data.validate import DataValidationError, validate_dataset

EXPECTED = "expected the label, then at least one number"


def write(path: Path, lines: list[str], sep: str = "\t") -> str:
    """One case per line: `lines` items are "label v1 v2 ..." written with `sep` between fields."""
    path.write_text("".join(sep.join(line.split()) + "\n" for line in lines))
    return str(path)


def train_lines(n: int = 8) -> list[str]:
    """Case k: label k % 2 + 1, values k, k+1, k+2 (each value tells its case)."""
    return [f"{k % 2 + 1} {k} {k + 1} {k + 2}" for k in range(n)]


def rows_by_id(root: str) -> dict[str, tuple[list[float], int]]:
    """id -> (x as a flat list, y) over every split."""
    out = {}
    for split in ("train", "val", "test"):
        table = read_split(root, split)
        for i, x, y in zip(table.column("id").to_pylist(), x_to_numpy(table.column("x")),
                           table.column("y").to_pylist()):
            assert x.shape[1] == 1  # univariate
            out[i] = (x[:, 0].tolist(), y)
    return out


def test_2018_tsv_round_trips_values_labels_and_strips_nan_padding(tmp_path):
    # Given a TRAIN file of variable-length series right-padded with NaN, and a TEST file
    train = train_lines(8) + ["2 7.5 -1.25 NaN NaN", "1 3 NaN NaN NaN"]
    test = ["1 0.5 1.5 2.5 3.5", "2 9 8 NaN NaN"]
    root = str(tmp_path / "ds")
    m = import_ucr([write(tmp_path / "Toy_TRAIN.tsv", train), write(tmp_path / "Toy_TEST.tsv", test)], root,
                   name=None, val_fraction=0.2, test_fraction=0.2, seed=0, on_invalid="fail", missing="error")
    # then every case keeps its values and its own length (padding dropped), labels as written
    assert m.task == "classify" and m.name == "Toy" and m.labels == ["1", "2"]
    assert m.feature.num_channels == 1
    rows = rows_by_id(root)
    assert rows["Toy_TRAIN:8"] == ([7.5, -1.25], 1)
    assert rows["Toy_TRAIN:9"] == ([3.0], 0)
    assert rows["Toy_TEST:1"] == ([9.0, 8.0], 1)
    assert rows["Toy_TEST:0"] == ([0.5, 1.5, 2.5, 3.5], 0)
    for k in range(8):
        assert rows[f"Toy_TRAIN:{k}"] == ([k, k + 1, k + 2], k % 2)
    # TEST rows are the test split; val is carved from TRAIN
    assert read_split(root, "test").column("id").to_pylist() == ["Toy_TEST:0", "Toy_TEST:1"]
    assert m.splits["train"].rows + m.splits["val"].rows == 10
    assert m.lengths["train"].min == 1 or m.lengths["val"].min == 1
    assert m.import_params["format"] == "ucr" and m.import_params["filled"] == 0
    assert validate_dataset(root).ok


def test_2015_txt_float_labels_are_one_class_with_their_integer_text(tmp_path):
    # Given the 2015 layout: whitespace-separated, labels as floats, -1/1 classes, one comma file
    train = [f"{lab}  {v} {v + 1}" for lab, v in
             [("1.0000000e+00", 1), ("-1.0000000e+00", 2), ("1", 3), ("-1", 4), ("1.0", 5), ("-1e+00", 6)]]
    (tmp_path / "Old_TRAIN.txt").write_text("\n".join(train) + "\n")
    test = write(tmp_path / "Old_TEST.txt", ["1.0000000e+00 7 8", "-1.0000000e+00 9 10"], sep=",")
    root = str(tmp_path / "ds")
    m = import_ucr([str(tmp_path / "Old_TRAIN.txt"), test], root, val_fraction=0.34)
    # then "1.0000000e+00", "1.0" and "1" are one class "1" (and -1 likewise), sorted numerically
    assert m.labels == ["-1", "1"]
    rows = rows_by_id(root)
    assert [rows[f"Old_TRAIN:{k}"] for k in range(6)] == [
        ([1, 2], 1), ([2, 3], 0), ([3, 4], 1), ([4, 5], 0), ([5, 6], 1), ([6, 7], 0)]
    assert rows["Old_TEST:1"] == ([9, 10], 0)


@pytest.mark.parametrize("text,label", [("1.0000000e+00", "1"), ("-1", "-1"), ("2.0", "2"), ("0", "0"),
                                        ("1.5", "1.5"), ("cat", "cat"), ("10", "10")])
def test_normalize_label(text, label):
    assert normalize_label(text, "f:1") == label


def test_folder_source_takes_its_tsv_files(tmp_path):
    folder = tmp_path / "Toy"
    folder.mkdir()
    write(folder / "Toy_TRAIN.tsv", train_lines(8))
    write(folder / "Toy_TEST.tsv", train_lines(4))
    (folder / "README.md").write_text("not data\n")
    m = import_dataset("ucr", [str(folder)], str(tmp_path / "ds"))
    assert m.splits["test"].rows == 4 and m.splits["train"].rows + m.splits["val"].rows == 8


@pytest.mark.parametrize("line,message", [
    ("1\t2\tabc\t4", "value 2 (after the label) is 'abc'; expected a number (NaN for a missing value)"),
    ("1\t2\t\t4", "value 2 (after the label) is blank; expected a number"),
    ("NaN\t2\t3", "the label (first field) is 'NaN'; expected a class label"),
])
def test_malformed_line_is_named_by_file_and_line(tmp_path, line, message):
    lines = train_lines(4)
    path = tmp_path / "Toy_TRAIN.tsv"
    path.write_text("\n".join(["\t".join(x.split()) for x in lines[:2]] + [line] + lines[2:]) + "\n")
    with pytest.raises(DatasetError) as err:
        import_ucr(str(path), str(tmp_path / "ds"))
    assert str(err.value).startswith(f"{path}:3: {message}")
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_non_utf8_and_empty_files_are_named(tmp_path):
    bad = tmp_path / "Toy_TRAIN.tsv"
    bad.write_bytes(b"1\t2\t3\n2\t4\xff\t5\n")
    with pytest.raises(DatasetError, match=rf"{bad}: not valid UTF-8 at byte offset 9 \(line 2, byte 4"):
        import_ucr(str(bad), str(tmp_path / "ds"))
    empty = tmp_path / "Empty_TRAIN.tsv"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match=rf"{empty}: empty file; expected one series per line"):
        import_ucr(str(empty), str(tmp_path / "ds"))


def test_line_without_values_is_an_invalid_row_named_by_file_and_line(tmp_path):
    # Given a label-only line (line 9) and a line of padding only (line 10)
    path = write(tmp_path / "Toy_TRAIN.tsv", train_lines(8) + ["2", "1 NaN NaN NaN"])
    test = write(tmp_path / "Toy_TEST.tsv", train_lines(2))
    with pytest.raises(DataValidationError) as err:
        import_ucr([path, test], str(tmp_path / "ds"))
    found = [(p.row_id, p.source, p.reason) for p in err.value.problems]
    assert found == [
        ("Toy_TRAIN:8", f"{path}:9", f"no values after the label '2'; {EXPECTED}"),
        ("Toy_TRAIN:9", f"{path}:10", f"only NaN padding (3 values); {EXPECTED}"),
    ]
    # and with quarantine they are set aside with that reason
    root = str(tmp_path / "ds")
    m = import_ucr([path, test], root, on_invalid="quarantine")
    q = read_quarantine(root)
    assert sorted(q.column("id").to_pylist()) == ["Toy_TRAIN:8", "Toy_TRAIN:9"]
    assert sum(m.quarantined.values()) == 2


def test_nan_inside_a_series_fails_under_missing_error(tmp_path):
    path = write(tmp_path / "Toy_TRAIN.tsv", train_lines(8) + ["1 1 NaN 3 NaN"])
    with pytest.raises(DataValidationError) as err:
        import_ucr([path, write(tmp_path / "Toy_TEST.tsv", train_lines(2))], str(tmp_path / "ds"))
    [problem] = err.value.problems
    assert (problem.row_id, problem.source) == ("Toy_TRAIN:8", f"{path}:9")
    assert problem.reason == "NaN in x at step 1, channel 0"
    assert "pass missing='zero', 'ffill' or 'interpolate'" in str(err.value)


@pytest.mark.parametrize("missing,values", [
    ("interpolate", [1.0, 1.0, 2.0, 4.0, 6.0]),  # a leading gap holds the next value
    ("ffill", [1.0, 1.0, 2.0, 2.0, 6.0]),  # a leading gap takes the next value
    ("zero", [0.0, 1.0, 2.0, 0.0, 6.0]),
])
def test_nan_inside_a_series_is_filled_and_counted(tmp_path, missing, values):
    # Given a series with a NaN inside (kept as missing) and trailing NaN (padding, dropped)
    path = write(tmp_path / "Toy_TRAIN.tsv", train_lines(8) + ["1 NaN 1 2 NaN 6 NaN NaN"])
    root = str(tmp_path / "ds")
    m = import_ucr([path, write(tmp_path / "Toy_TEST.tsv", train_lines(2))], root, missing=missing)
    # then the leading and inner NaN are filled per the policy, the padding is gone
    assert rows_by_id(root)["Toy_TRAIN:8"] == (values, 0)
    assert m.import_params["filled"] == 2 and m.import_params["missing"] == missing


def test_label_in_test_unseen_in_train_is_an_invalid_row(tmp_path):
    train = write(tmp_path / "Toy_TRAIN.tsv", train_lines(8))
    test = write(tmp_path / "Toy_TEST.tsv", train_lines(2) + ["3.0 1 2 3"])
    with pytest.raises(DataValidationError) as err:
        import_ucr([train, test], str(tmp_path / "ds"))
    [problem] = err.value.problems
    assert (problem.split, problem.row_id, problem.source) == ("test", "Toy_TEST:2", f"{test}:3")
    assert problem.reason == "unknown label '3' (known: 1, 2)"


def test_max_length_truncates_like_ts(tmp_path):
    path = write(tmp_path / "Toy_TRAIN.tsv", train_lines(8) + ["1 1 2 3 4 5 6"])
    root = str(tmp_path / "ds")
    m = import_ucr([path, write(tmp_path / "Toy_TEST.tsv", train_lines(2))], root, max_length=4)
    assert rows_by_id(root)["Toy_TRAIN:8"][0] == [1, 2, 3, 4]
    assert sum(m.import_params["truncated"].values()) == 1


def test_cli_import_end_to_end(tmp_path, capsys):
    from pipeline.cli import main

    train = write(tmp_path / "Toy_TRAIN.tsv", train_lines(8) + ["2 5 NaN 7 NaN"])
    test = write(tmp_path / "Toy_TEST.tsv", train_lines(3))
    out = tmp_path / "out"
    code = main(["data", "import", "--format", "ucr", train, test, "--out", str(out),
                 "--missing", "interpolate"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert f"imported Toy (classify) -> {out}" in stdout
    assert "channels 1, 2 labels" in stdout
    assert "filled 1 missing values (--missing interpolate)" in stdout
    assert rows_by_id(str(out))["Toy_TRAIN:8"] == ([5.0, 6.0, 7.0], 1)
    assert read_manifest(str(out)).splits["test"].rows == 3

    # a malformed file: one error line naming file and line, exit code 2
    bad = write(tmp_path / "Bad_TRAIN.tsv", ["1 2 x3"])
    code = main(["data", "import", "--format", "ucr", bad, "--out", str(tmp_path / "bad")])
    _, err = capsys.readouterr()
    assert code == 2 and f"recur: error: {bad}:1: value 2 (after the label) is 'x3'" in err
    assert "Traceback" not in err


def test_config_source_format_ucr_imports(tmp_path):
    from pipeline.config import load_config
    from pipeline.workflow.steps import ingest

    train = write(tmp_path / "Toy_TRAIN.tsv", train_lines(8) + ["2 5 NaN 7"])
    test = write(tmp_path / "Toy_TEST.tsv", train_lines(3))
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  task: classify\n  root: {tmp_path / 'ds'}\n  source:\n    format: ucr\n"
                      f"    paths: [{train}, {test}]\n    missing: ffill\n")
    m = ingest(load_config([config]))
    assert m.import_params["format"] == "ucr" and m.import_params["missing"] == "ffill"
    assert rows_by_id(str(tmp_path / "ds"))["Toy_TRAIN:8"] == ([5.0, 5.0, 7.0], 1)


def test_2015_files_without_extension_given_by_name(tmp_path):
    # the 2015 archive ships Adiac/Adiac_TRAIN and Adiac/Adiac_TEST with no extension
    train = write(tmp_path / "Adiac_TRAIN", [f"{k % 2 + 1}.0000000e+00 {k} {k}" for k in range(6)], sep="  ")
    test = write(tmp_path / "Adiac_TEST", ["1.0000000e+00 1 2", "2.0000000e+00 3 4"], sep="  ")
    m = import_ucr([train, test], str(tmp_path / "ds"), val_fraction=0.34)
    assert m.name == "Adiac" and m.labels == ["1", "2"] and m.splits["test"].rows == 2
    assert rows_by_id(str(tmp_path / "ds"))["Adiac_TEST:1"] == ([3.0, 4.0], 1)
