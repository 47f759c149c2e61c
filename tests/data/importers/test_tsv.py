"""The tsv pair importer and the generated dates dataset."""

from __future__ import annotations

import pytest

from pipeline.cli import main
from pipeline.data.dataset import SPECIALS, UNK_ID, read_manifest, read_quarantine, read_split
from pipeline.data.dates import FORMATS, builtin_path, dates_tsv, generate_dates, ordinal
from pipeline.data.importers import IMPORTERS, import_dataset
from pipeline.data.importers.tsv import import_pairs
from pipeline.data.validate import DataValidationError, validate_dataset


def write(path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def decode(ids: list[int], vocab: list[str]) -> list[str]:
    return [vocab[i] for i in ids]


# --------------------------------------------------------------------------------------------
# import


def test_split_files_vocab_from_train_only_and_unknowns(tmp_path):
    # given named TRAIN / VAL / TEST files where val and test hold characters train never has
    train = write(tmp_path / "toy_TRAIN.tsv", ["ab\txy", "ba\tyx", "aab\txxy", "b\ty"])
    val = write(tmp_path / "toy_VAL.tsv", ["az\txq"])
    test = write(tmp_path / "toy_TEST.tsv", ["", "abz\tyxw"])  # a blank line is not a row
    out = tmp_path / "ds"
    # when they are imported (through the registry, as the CLI and the pipeline do)
    assert IMPORTERS["tsv"] == "pipeline.data.importers.tsv:import_pairs"
    m = import_dataset("tsv", [train, val, test], str(out))
    # then each file is its split, rows keep file order, ids name file stem and line
    assert m.task == "seq2seq" and m.feature.kind == "token"
    assert {s: i.rows for s, i in m.splits.items()} == {"train": 4, "val": 1, "test": 1}
    assert read_split(str(out), "test").column("id").to_pylist() == ["toy_TEST:2"]
    # and both vocabularies come from train only (a: 4, b: 4 -> code-point order), specials first
    assert m.vocab == [*SPECIALS, "a", "b"]
    assert m.target_vocab == [*SPECIALS, "x", "y"]
    # and tokens absent from train are <unk>; y holds the target without <bos>/<eos>
    val_row = read_split(str(out), "val").to_pylist()[0]
    assert decode(val_row["x"], m.vocab) == ["a", "<unk>"]
    assert val_row["y"] == [m.target_vocab.index("x"), UNK_ID]
    first = read_split(str(out), "train").to_pylist()[0]
    assert decode(first["x"], m.vocab) == ["a", "b"] and decode(first["y"], m.target_vocab) == ["x", "y"]
    assert m.task_params == {"level": "char", "lowercase": False, "joiner": "",
                             "columns": {"source": 0, "target": 1}}
    assert m.sources[0].path == train and len(m.sources[0].sha256) == 64
    assert validate_dataset(str(out)).ok


def test_word_level_columns_lowercase_and_min_count(tmp_path):
    # given a three-column file with the target first and the source last
    lines = [f"{'le chat' if i % 2 else 'le chien'}\t{i}\t{'The Cat' if i % 2 else 'the DOG'}"
             for i in range(20)]
    path = write(tmp_path / "pairs.tsv", lines)
    # when it is imported word by word, lowercased, with min_count 2
    m = import_pairs(path, str(tmp_path / "ds"), level="word", source_column=-1, target_column=0,
                     lowercase=True, min_count=2, val_fraction=0.25, test_fraction=0.25, seed=3)
    # then the source is the last column, lowercased words; the target the first column
    assert set(m.vocab[4:]) == {"the", "cat", "dog"} and set(m.target_vocab[4:]) == {"le", "chat", "chien"}
    assert m.task_params["joiner"] == " "
    # and 20 pooled rows split 10 / 5 / 5 at random with the seed, the same every time
    assert {s: i.rows for s, i in m.splits.items()} == {"train": 10, "val": 5, "test": 5}
    again = import_pairs(path, str(tmp_path / "again"), level="word", source_column=-1, target_column=0,
                         lowercase=True, min_count=2, val_fraction=0.25, test_fraction=0.25, seed=3)
    assert again.data_hash == m.data_hash
    other = import_pairs(path, str(tmp_path / "other"), level="word", source_column=-1, target_column=0,
                         lowercase=True, min_count=2, val_fraction=0.25, test_fraction=0.25, seed=4)
    assert other.data_hash != m.data_hash


def test_malformed_lines_fail_naming_file_and_line(tmp_path):
    # given a file with a line without a tab, an empty source and an empty target
    path = write(tmp_path / "bad_TRAIN.tsv", ["ab\tcd", "no tab here", "\tcd", "ab\t  ", "ba\tdc"])
    write(tmp_path / "bad_TEST.tsv", ["ab\tcd"])
    out = tmp_path / "ds"
    # when it is imported, then it fails listing every bad line with file:line and the expectation
    with pytest.raises(DataValidationError) as err:
        import_pairs([path, str(tmp_path / "bad_TEST.tsv")], str(out))
    message = str(err.value)
    assert f"{path}:2" in message and "1 tab-separated column(s); expected at least 2" in message
    assert f"{path}:3" in message and "empty source text (column 0)" in message
    assert f"{path}:4" in message and "empty target text (column 1)" in message
    assert f"{path}:1" not in message and f"{path}:5" not in message
    assert [p.row_id for p in err.value.problems] == ["bad_TRAIN:2", "bad_TRAIN:3", "bad_TRAIN:4"]
    assert "nothing was written" in message and not (out / "manifest.json").exists()


def test_not_utf8_line_is_named(tmp_path):
    # given a line with bytes that are not UTF-8
    path = tmp_path / "enc.tsv"
    path.write_bytes(b"ab\tcd\n\xff\xfe\tcd\n")
    # when imported, then the line is named with the reason
    with pytest.raises(DataValidationError, match=r"enc\.tsv:2.*not valid UTF-8"):
        import_pairs(str(path), str(tmp_path / "ds"))


def test_quarantine_sets_malformed_lines_aside(tmp_path):
    # given the same kind of bad lines among good ones
    good = [f"{'ab' * (i % 3 + 1)}\t{'x' * (i % 3 + 1)}" for i in range(30)]
    path = write(tmp_path / "q.tsv", [*good[:10], "lonely", *good[10:20], "src\t", *good[20:]])
    out = tmp_path / "ds"
    # when imported with on_invalid="quarantine"
    m = import_pairs(str(path), str(out), on_invalid="quarantine", seed=1)
    # then the good rows are written, the bad ones quarantined with reason, source and raw line
    assert sum(i.rows for i in m.splits.values()) == 30
    assert sum(m.quarantined.values()) == 2
    q = read_quarantine(str(out)).to_pylist()
    assert [(r["id"], r["source"], r["line"]) for r in q] == [
        ("q:11", f"{path}:11", "lonely"), ("q:22", f"{path}:22", "src\t")]
    assert "x: 1 tab-separated column(s)" in q[0]["reason"]
    assert q[1]["reason"] == "y: empty target text (column 1)"
    assert validate_dataset(str(out)).ok


def test_bad_options_are_rejected(tmp_path):
    path = write(tmp_path / "p.tsv", ["a\tb"] * 10)
    with pytest.raises(ValueError, match="source_column and target_column are both 1"):
        import_pairs(path, str(tmp_path / "ds"), source_column=1, target_column=1)
    with pytest.raises(ValueError, match="empty"):  # 1 row cannot fill three splits
        import_pairs(write(tmp_path / "one.tsv", ["a\tb"]), str(tmp_path / "ds"))


def test_cli_import_with_format_options(tmp_path, capsys):
    # given a tsv file, when `recur data import --format tsv` runs with word-level options
    path = write(tmp_path / "cli.tsv", [f"Hello World {i % 3}\tbonjour {i % 3}" for i in range(30)])
    out = tmp_path / "ds"
    assert main(["data", "import", "--format", "tsv", path, "--out", str(out), "--level", "word",
                 "--lowercase", "--source-column", "0", "--target-column", "1", "--min-count", "2"]) == 0
    # then the dataset is written with those options
    assert "imported cli (seq2seq)" in capsys.readouterr().out
    m = read_manifest(str(out))
    assert "hello" in m.vocab and "Hello" not in m.vocab
    assert m.import_params["level"] == "word" and m.import_params["min_count"] == 2


# --------------------------------------------------------------------------------------------
# the dates example


def test_shipped_dates_file_is_the_generator_output():
    # given the generator, when it regenerates the shipped file, then the bytes are identical
    assert builtin_path().read_bytes() == dates_tsv().encode("utf-8")
    assert builtin_path().stat().st_size < 400_000  # modest enough to ship in the package


def test_dates_are_correct_and_cover_every_format():
    # given generated pairs
    pairs = generate_dates(2000, seed=5)
    # then each target is the ISO date the source writes, for a spread of formats
    assert generate_dates(2000, seed=5) == pairs and generate_dates(2000, seed=6) != pairs
    import datetime as dt

    for source, target in pairs:
        day = dt.date.fromisoformat(target)
        assert dt.date(1950, 1, 1) <= day <= dt.date(2049, 12, 31)
        assert source in {write_date(day) for write_date in FORMATS.values()}
    written = {name: fmt(dt.date(1998, 3, 3)) for name, fmt in FORMATS.items()}
    assert written["ordinal_of"] == "3rd of March 1998"
    assert written["us_slash_yy"] == "03/03/98"
    assert written["weekday_month_day"] == "Tuesday, March 3, 1998"
    assert written["iso_unpadded"] == "1998-3-3"
    assert written["month_ordinal_yy"] == "March 3rd '98"
    used = {name for name, fmt in FORMATS.items() for source, target in pairs
            if fmt(dt.date.fromisoformat(target)) == source}
    assert used == set(FORMATS)
    assert [ordinal(d) for d in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd"]
