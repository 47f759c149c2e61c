"""text-classes importer: CSV, TSV and JSON Lines of labelled texts -> a classify dataset of token ids."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pipeline.config import RecurConfig
from pipeline.data.dataset import SPECIALS, UNK_ID, DatasetError, read_manifest, read_split
from pipeline.data.importers import import_dataset
from pipeline.data.validate import DataValidationError, validate_dataset

# 12 labelled reviews: 6 pos, 6 neg; "film" everywhere, "great" 3 times in pos
REVIEWS = [
    ("a great film", "pos"), ("great acting, great film", "pos"), ("Loved this film", "pos"),
    ("fine film", "pos"), ("a fun film", "pos"), ("nice film", "pos"),
    ("a bad film", "neg"), ("awful film", "neg"), ("Hated this film", "neg"),
    ("dull film", "neg"), ("a boring film", "neg"), ("weak film", "neg"),
]


def write_csv(path, rows=REVIEWS, sep=",", header=("text", "label")):
    lines = [sep.join(header)]
    for text, label in rows:
        quoted = f'"{text}"' if sep in text else text
        lines.append(f"{quoted}{sep}{label}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def write_jsonl(path, rows=REVIEWS, text_key="text", label_key="label"):
    path.write_text("".join(json.dumps({text_key: t, label_key: lab, "extra": 1}) + "\n" for t, lab in rows))
    return str(path)


def texts_of(root, split):
    manifest = read_manifest(str(root))
    return [[manifest.vocab[i] for i in row] for row in read_split(str(root), split).column("x").to_pylist()]


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_each_file_type_gives_the_same_word_level_dataset(tmp_path, kind):
    # given the same 12 reviews as CSV, TSV and JSON Lines
    src = tmp_path / f"reviews.{kind}"
    if kind == "jsonl":
        write_jsonl(src)
    else:
        write_csv(src, sep="," if kind == "csv" else "\t")
    # when imported on word level
    manifest = import_dataset("text-classes", [str(src)], str(tmp_path / "ds"), level="word", seed=3)
    # then: a classify dataset of token ids, labels sorted, every row kept, stratified splits
    assert manifest.task == "classify" and manifest.feature.kind == "token"
    assert manifest.labels == ["neg", "pos"]
    assert sum(s.rows for s in manifest.splits.values()) == 12
    for split in ("val", "test"):
        assert sorted(read_split(str(tmp_path / "ds"), split).column("y").to_pylist()) == [0, 1]
    assert manifest.vocab[: len(SPECIALS)] == list(SPECIALS) and "film" in manifest.vocab
    ids = read_split(str(tmp_path / "ds"), "train").column("id").to_pylist()
    assert all(i.startswith("reviews:") for i in ids)  # <file stem>:<line>
    assert manifest.task_params["level"] == "word" and manifest.task_params["input"] == "text"
    assert validate_dataset(str(tmp_path / "ds")).ok
    # the same rows land in the same splits whatever the file type (ids are stem:line)
    if kind == "csv":
        assert "great" in manifest.vocab  # "great acting, great film": the quoted comma kept the text whole


def test_char_level_vocab_comes_from_train_only_and_unseen_chars_are_unk(tmp_path):
    # given train and test files named by split; "z" appears only in test
    write_csv(tmp_path / "r_TRAIN.csv", [("ab", "x"), ("ba", "y"), ("aab", "x"), ("bba", "y")])
    write_csv(tmp_path / "r_VAL.csv", [("ab", "x"), ("ba", "y")])
    write_csv(tmp_path / "r_TEST.csv", [("az", "x"), ("b a", "y")])
    files = [str(tmp_path / f"r_{s}.csv") for s in ("TRAIN", "VAL", "TEST")]
    manifest = import_dataset("text-classes", files, str(tmp_path / "ds"))
    # then characters are tokens, the space too, and z (unseen in train) is <unk>
    assert manifest.vocab == [*SPECIALS, "a", "b"]
    assert texts_of(tmp_path / "ds", "test") == [["a", "<unk>"], ["b", "<unk>", "a"]]
    assert manifest.task_params["unknown_tokens"] == {"train": 0, "val": 0, "test": 2}
    assert read_split(str(tmp_path / "ds"), "test").column("x").to_pylist()[0][1] == UNK_ID


def test_lowercase_min_count_and_max_vocab(tmp_path):
    src = write_jsonl(tmp_path / "r_TRAIN.jsonl", [("Good good GOOD fun", "p"), ("bad bad fun sad", "n"),
                                                     ("good", "p"), ("bad", "n")])
    write_jsonl(tmp_path / "r_VAL.jsonl", [("good", "p"), ("bad", "n")])
    write_jsonl(tmp_path / "r_TEST.jsonl", [("good", "p"), ("bad", "n")])
    files = [src, str(tmp_path / "r_VAL.jsonl"), str(tmp_path / "r_TEST.jsonl")]
    # lowercase folds Good/GOOD into good (4 times); min_count 2 drops sad (1); fun stays (2)
    m = import_dataset("text-classes", files, str(tmp_path / "a"), level="word", lowercase=True, min_count=2)
    assert m.vocab == [*SPECIALS, "good", "bad", "fun"]
    # without lowercase the cased words are their own (rare) tokens
    m = import_dataset("text-classes", files, str(tmp_path / "b"), level="word", min_count=2)
    assert m.vocab == [*SPECIALS, "bad", "fun", "good"]
    # max_vocab counts the specials: 6 entries keep the two most frequent words
    m = import_dataset("text-classes", files, str(tmp_path / "c"), level="word", lowercase=True, max_vocab=6)
    assert m.vocab == [*SPECIALS, "good", "bad"]


def test_wordpunct_splits_punctuation_off_words(tmp_path):
    src = write_jsonl(tmp_path / "r_TRAIN.jsonl", [("Good, good.", "p"), ("bad!! Bad", "n"), ("good", "p"),
                                                     ("bad", "n")])
    write_jsonl(tmp_path / "r_VAL.jsonl", [("good", "p"), ("bad", "n")])
    write_jsonl(tmp_path / "r_TEST.jsonl", [("good:)", "p"), ("bad", "n")])
    files = [src, str(tmp_path / "r_VAL.jsonl"), str(tmp_path / "r_TEST.jsonl")]
    # when imported at wordpunct level, then "good," and "good." are the word good and punctuation
    m = import_dataset("text-classes", files, str(tmp_path / "a"), level="wordpunct", lowercase=True)
    assert m.vocab == [*SPECIALS, "bad", "good", "!!", ",", "."]
    assert m.task_params["level"] == "wordpunct" and m.task_params["joiner"] == " "
    # and a test text's word is known though its punctuation (unseen in train) is not
    test_ids = read_split(str(tmp_path / "a"), "test").column("x").to_pylist()
    assert test_ids[0] == [m.vocab.index("good"), UNK_ID]
    # while whitespace words keep it: good, good. and good are three tokens
    m = import_dataset("text-classes", files, str(tmp_path / "b"), level="word", lowercase=True)
    assert {"good,", "good.", "good", "bad!!"} <= set(m.vocab)


def test_configurable_columns_and_file_type_option(tmp_path):
    # a .txt file of tab-separated columns named review / stars
    src = tmp_path / "reviews.txt"
    write_csv(src, sep="\t", header=("stars", "review"), rows=[(lab, t) for t, lab in REVIEWS])
    m = import_dataset("text-classes", [str(src)], str(tmp_path / "ds"), text_column="review",
                       label_column="stars", file_type="tsv", level="word")
    assert m.labels == ["neg", "pos"] and "film" in m.vocab
    # the extension alone does not say: the error names the file and the option
    with pytest.raises(DatasetError, match=r"reviews.txt.*file_type"):
        import_dataset("text-classes", [str(src)], str(tmp_path / "ds2"))
    # a missing column names the header's columns
    with pytest.raises(DatasetError, match=r"reviews.txt:1: the header has no column\(s\) \['text'\]"):
        import_dataset("text-classes", [str(src)], str(tmp_path / "ds3"), file_type="tsv",
                       label_column="stars")


def test_max_length_truncates_or_rejects(tmp_path):
    rows = [*REVIEWS, ("a great film " * 5, "pos")]  # 15 words
    src = write_csv(tmp_path / "r.csv", rows)
    m = import_dataset("text-classes", [src], str(tmp_path / "t"), level="word", max_length=4)
    lengths = [len(r) for s in ("train", "val", "test") for r in texts_of(tmp_path / "t", s)]
    assert max(lengths) == 4 and len(lengths) == 13
    assert sum(m.import_params["truncated"].values()) == 1  # "great acting, great film" has 4: kept
    assert m.task_params["max_length"] == 4
    # reject: the too-long rows name file and line
    with pytest.raises(DataValidationError) as err:
        import_dataset("text-classes", [src], str(tmp_path / "r"), level="word", max_length=4,
                       on_too_long="reject")
    assert "r.csv:14" in str(err.value) and "r.csv:3" not in str(err.value)
    assert "longer than max_length 4" in str(err.value)


BAD_JSONL = """{"text": "a great film", "label": "pos"}
{"text": "a bad film", "label": "neg"}
{"text": "nice film", "label": "pos"
{"text": "", "label": "neg"}

{"text": "dull film"}
["not", "an", "object"]
{"text": "   ", "label": "neg"}
"""


def test_malformed_lines_are_named_by_file_and_line_then_quarantined(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(BAD_JSONL + "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in REVIEWS))
    # fail: every bad line named, nothing written
    with pytest.raises(DataValidationError) as err:
        import_dataset("text-classes", [str(src)], str(tmp_path / "ds"), level="word")
    message = str(err.value)
    for line, why in [(3, "not valid JSON"), (4, "missing or empty text"), (6, "missing or empty label"),
                      (7, "expected a JSON object"), (8, "missing or empty text")]:
        assert f"bad.jsonl:{line}" in message and why in message
    assert "bad.jsonl:5" not in message  # a blank line is no record
    assert "bad.jsonl:1)" not in message
    assert not (tmp_path / "ds" / "manifest.json").exists()
    # quarantine: the 5 bad lines set aside with reasons and raw text, the rest imported
    m = import_dataset("text-classes", [str(src)], str(tmp_path / "ds"), level="word",
                       on_invalid="quarantine")
    assert sum(m.quarantined.values()) == 5
    assert sum(s.rows for s in m.splits.values()) == 14
    quarantine = pq.read_table(str(tmp_path / "ds" / "quarantine")).to_pylist()
    by_source = {r["source"].rsplit("/", 1)[-1]: r for r in quarantine}
    assert set(by_source) == {"bad.jsonl:3", "bad.jsonl:4", "bad.jsonl:6", "bad.jsonl:7", "bad.jsonl:8"}
    assert by_source["bad.jsonl:6"]["text"] == "dull film" and "label" in by_source["bad.jsonl:6"]["reason"]


def test_csv_rows_with_wrong_field_count_and_unknown_labels(tmp_path):
    write_csv(tmp_path / "r_TRAIN.csv", REVIEWS[:4] + REVIEWS[6:10])
    write_csv(tmp_path / "r_VAL.csv", [REVIEWS[4], REVIEWS[10]])
    (tmp_path / "r_TEST.csv").write_text("text,label\nok film,pos\nso, so film,neg\nmeh,mixed\n")
    files = [str(tmp_path / f"r_{s}.csv") for s in ("TRAIN", "VAL", "TEST")]
    with pytest.raises(DataValidationError) as err:
        import_dataset("text-classes", files, str(tmp_path / "ds"))
    message = str(err.value)
    assert "r_TEST.csv:3" in message and "3 fields, but the header has 2" in message
    assert "r_TEST.csv:4" in message and "label 'mixed' is not among the train split's labels" in message


def test_the_config_knows_the_format_and_its_options():
    cfg = RecurConfig(data={"task": "classify", "max_length": 200, "source": {
        "format": "text-classes", "paths": ["x.csv"], "level": "word", "min_count": 2}})
    assert cfg.data.source.importer_options()["level"] == "word"
    with pytest.raises(ValueError, match="imports classify"):
        RecurConfig(data={"task": "lm", "source": {"format": "text-classes", "paths": ["x.csv"]}})
    # wordpunct is a text-classes level; the lm text importer does not take it
    with pytest.raises(ValueError, match="wordpunct"):
        RecurConfig(data={"task": "lm", "source": {"format": "text", "paths": ["x.txt"],
                                                   "level": "wordpunct"}})


def test_the_command_line_takes_the_wordpunct_level(tmp_path):
    from pipeline.cli import main

    # given labelled texts whose words touch punctuation
    src = write_jsonl(tmp_path / "r.jsonl", [("Good, good.", "p"), ("bad!", "n")] * 6)
    # when imported with --level wordpunct (a --level shared with the text and tsv formats)
    assert main(["data", "import", "--format", "text-classes", src, "--level", "wordpunct", "--lowercase",
                 "--out", str(tmp_path / "ds")]) == 0
    # then the words are split from their punctuation
    manifest = read_manifest(str(tmp_path / "ds"))
    assert manifest.task_params["level"] == "wordpunct" and "good." not in manifest.vocab
