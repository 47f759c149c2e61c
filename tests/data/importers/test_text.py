"""Plain-text importer (lm): vocabulary from train only, contiguous splits, stream rows, errors.

Given small texts written here, when they are imported at char or word level, then the splits are
contiguous blocks in order, the stream comes back from the rows ordered by id, the vocabulary holds
train tokens only (others counted as <unk>), and bad files fail naming the file and the place.
"""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from pipeline.cli import main
from pipeline.data.dataset import SPECIALS, UNK_ID, DatasetError, read_manifest, read_split
from pipeline.data.importers.text import import_text
from pipeline.data.tokens import join_tokens, stream_from_rows, tokenize_corpus
from pipeline.data.validate import validate_dataset


def _decode(ids: np.ndarray, vocab: list[str]) -> str:
    return "".join("?" if i == UNK_ID else vocab[i] for i in ids.tolist())


def test_char_level_contiguous_splits_and_train_only_vocab(tmp_path):
    # given a text whose last tenth holds characters never seen before it
    rng = random.Random(0)
    body = "".join(rng.choice("abcd \n") for _ in range(900))
    text = body + "xyzzy" + body[:95]
    src = tmp_path / "corpus.txt"
    src.write_text(text, encoding="utf-8")

    # when it is imported with 10% val and 10% test in rows of 64 characters
    manifest = import_text([str(src)], str(tmp_path / "ds"), level="char", val_fraction=0.1,
                           test_fraction=0.1, chunk_length=64)

    # then train, val and test are the first 80%, the next 10% and the last 10% of the text
    n = len(text)
    assert manifest.task_params["tokens"] == {"train": n - 200, "val": 100, "test": 100}
    assert manifest.task_params["characters"] == manifest.task_params["tokens"]
    vocab = manifest.vocab
    assert vocab[: len(SPECIALS)] == list(SPECIALS)
    assert set(vocab[len(SPECIALS):]) == set("abcd \n")  # nothing from val/test
    streams = {s: stream_from_rows(read_split(str(tmp_path / "ds"), s)) for s in ("train", "val", "test")}
    assert _decode(streams["train"], vocab) == text[: n - 200]
    assert _decode(streams["val"], vocab) == text[n - 200 : n - 100]
    # x, y and z are unknown: 5 characters of "xyzzy" land in test as <unk>
    unknown = str.maketrans({"x": "?", "y": "?", "z": "?"})
    assert _decode(streams["test"], vocab) == text[n - 100 :].translate(unknown)
    assert manifest.task_params["unknown_tokens"] == {"train": 0, "val": 0, "test": 5}
    # rows of 64 tokens with ids in stream order
    train = read_split(str(tmp_path / "ds"), "train")
    ids = train.column("id").to_pylist()
    assert ids == sorted(ids) and ids[0] == "train:000000"
    lengths = [len(r) for r in train.column("x").to_pylist()]
    assert all(length == 64 for length in lengths[:-1]) and sum(lengths) == n - 200
    assert manifest.feature.kind == "token" and manifest.sources[0].path == str(src)
    assert validate_dataset(str(tmp_path / "ds")).ok


def test_stream_is_rebuilt_from_rows_in_any_order(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("hello world, hello recur\n" * 20)
    import_text(str(src), str(tmp_path / "ds"), chunk_length=7, val_fraction=0.1, test_fraction=0.1)
    table = read_split(str(tmp_path / "ds"), "train")
    expected = stream_from_rows(table)
    shuffled = table.take(pa.array(np.random.default_rng(0).permutation(table.num_rows)))
    assert np.array_equal(stream_from_rows(shuffled), expected)


def test_word_level_keeps_newlines_counts_unknowns_and_characters(tmp_path):
    # given words on lines; "Rare" appears once in train, "zebra" only in test
    lines = ["the cat sat", "on the  mat", "Rare cat\tsat", *["the cat sat on the mat"] * 6, "the zebra sat"]
    text = "\n".join(lines) + "\n"
    src = tmp_path / "words.txt"
    src.write_text(text)
    tokens = tokenize_corpus(text.lower(), "word")
    assert tokens[:4] == ["the", "cat", "sat", "\n"]

    # when imported lowercased at word level, dropping train words seen fewer than twice
    n = len(tokens)
    manifest = import_text(str(src), str(tmp_path / "ds"), level="word", lowercase=True, min_count=2,
                           val_fraction=0.1, test_fraction=0.1, chunk_length=8)

    # then the vocabulary is train words seen twice or more, plus the newline token
    n_val, n_test = round(n * 0.1), round(n * 0.1)
    n_train = n - n_val - n_test
    assert set(manifest.vocab[len(SPECIALS):]) == {"the", "cat", "sat", "on", "mat", "\n"}
    # "rare" is cut by min_count (train); "zebra" is unseen (test)
    assert manifest.task_params["unknown_tokens"] == {"train": 1, "val": 0, "test": 1}
    assert manifest.task_params["tokens"] == {"train": n_train, "val": n_val, "test": n_test}
    # characters per split: the split's words joined by single spaces, newlines kept
    assert manifest.task_params["characters"]["test"] == len(join_tokens(tokens[n - n_test :], "word"))
    assert manifest.task_params["level"] == "word" and manifest.task_params["join"] == " "
    stream = stream_from_rows(read_split(str(tmp_path / "ds"), "test"))
    assert [manifest.vocab[i] for i in stream.tolist()] == [
        "<unk>" if t == "zebra" else t for t in tokens[n - n_test :]]


def test_max_vocab_keeps_the_most_frequent_train_tokens(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("aaaaabbbbcc d\n" * 30)
    manifest = import_text(str(src), str(tmp_path / "ds"), level="char", max_vocab=len(SPECIALS) + 2,
                           val_fraction=0.1, test_fraction=0.1)
    assert manifest.vocab == [*SPECIALS, "a", "b"]  # most frequent first
    assert manifest.task_params["unknown_tokens"]["train"] > 0


def test_files_are_joined_in_order_on_separate_lines(tmp_path):
    (tmp_path / "one.txt").write_text("abc")
    (tmp_path / "two.txt").write_text("def\n" * 10)
    manifest = import_text([str(tmp_path / "one.txt"), str(tmp_path / "two.txt")], str(tmp_path / "ds"),
                           val_fraction=0.1, test_fraction=0.1)
    train = stream_from_rows(read_split(str(tmp_path / "ds"), "train"))
    assert _decode(train, manifest.vocab).startswith("abc\ndef\n")


def test_empty_file_fails_naming_it(tmp_path):
    src = tmp_path / "empty.txt"
    src.write_text("")
    with pytest.raises(DatasetError, match=r"empty\.txt: the file is empty \(0 bytes\)"):
        import_text(str(src), str(tmp_path / "ds"))
    (tmp_path / "spaces.txt").write_text("   \t  ")
    with pytest.raises(DatasetError, match="spaces.txt: the file is empty .*all whitespace"):
        import_text(str(tmp_path / "spaces.txt"), str(tmp_path / "ds"), level="word")
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_invalid_utf8_fails_naming_file_line_and_offset(tmp_path):
    src = tmp_path / "latin1.txt"
    src.write_bytes(b"first line\nsecond caf\xe9 au lait\n")
    with pytest.raises(DatasetError, match=r"latin1\.txt: not valid UTF-8 at byte offset 21 \(line 2, "
                                           r"byte 11 of the line\).*0xe9"):
        import_text(str(src), str(tmp_path / "ds"))


def test_split_too_short_fails_with_the_sizes(tmp_path):
    src = tmp_path / "short.txt"
    src.write_text("abcdefghij")
    with pytest.raises(DatasetError, match=r"short\.txt: 10 char tokens give split sizes "
                                           r"\{'train': 8, 'val': 1, 'test': 1\}"):
        import_text(str(src), str(tmp_path / "ds"), val_fraction=0.1, test_fraction=0.1)


def test_cli_imports_word_level(tmp_path, capsys):
    src = tmp_path / "corpus.txt"
    src.write_text("to be or not to be\nthat is the question\n" * 20)
    out = tmp_path / "ds"
    code = main(["data", "import", "--format", "text", str(src), "--level", "word", "--chunk-length", "16",
                 "--val-fraction", "0.1", "--test-fraction", "0.1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "(lm)" in printed and f"vocabulary {len(read_manifest(str(out)).vocab)} tokens" in printed
    assert read_manifest(str(out)).task_params["level"] == "word"
    # a missing file is an error naming it, not a traceback
    assert main(["data", "import", "--format", "text", str(tmp_path / "nope.txt"), "--out", str(out)]) == 2
    assert "nope.txt" in capsys.readouterr().err
