"""CoNLL column files -> the canonical tag dataset: sentences, splits, vocabularies, characters,
malformed lines (fail naming file:line, or quarantine the sentence)."""

from __future__ import annotations

import pytest

from pipeline.cli import main
from pipeline.data.dataset import SPECIALS, UNK_ID, read_manifest, read_quarantine, read_split
from pipeline.data.importers.conll import conll_split_of, import_conll
from pipeline.data.validate import DataValidationError, validate_dataset

TRAIN = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
.  .  O  O
\t
Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
rejects VBZ B-VP O

-DOCSTART- -X- -X- O

German JJ B-NP I-MISC
rejects VBZ B-VP O
"""
DEV = "Paris NNP B-NP B-LOC\nrejects VBZ B-VP O\n"
TEST = "Zane NNP B-NP B-PER\nrejects VBZ B-VP O\n\nEU NNP B-NP B-ORG\n"


def _write(folder, **files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def conll2003(tmp_path):
    return _write(tmp_path / "src", **{"eng.train": TRAIN, "eng.testa": DEV, "eng.testb": TEST})


def test_sentences_tags_and_vocabularies(conll2003, tmp_path):
    # given CoNLL-2003-style files, when imported with default options
    manifest = import_conll([str(conll2003)], str(tmp_path / "ds"))
    # then eng.train/testa/testb are train/val/test, DOCSTART lines and blank lines split sentences
    assert {s: i.rows for s, i in manifest.splits.items()} == {"train": 3, "val": 1, "test": 2}
    assert manifest.name == "eng" and manifest.task == "tag" and manifest.feature.kind == "token"
    # tags of every split, O first, then by entity type
    assert manifest.labels == ["O", "B-LOC", "B-MISC", "I-MISC", "B-ORG", "B-PER", "I-PER"]
    # the word vocabulary comes from train only: SPECIALS, then by frequency, ties by token
    assert manifest.vocab[:4] == list(SPECIALS)
    assert manifest.vocab[4:] == ["rejects", "German", ".", "Blackburn", "EU", "Peter", "call"]
    train = read_split(str(tmp_path / "ds"), "train")
    assert train.column("id").to_pylist() == ["eng.train:0", "eng.train:1", "eng.train:2"]
    vocab, labels = manifest.vocab, manifest.labels
    words = [[vocab[i] for i in row] for row in train.column("x").to_pylist()]
    assert words == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn", "rejects"],
                     ["German", "rejects"]]
    tags = [[labels[i] for i in row] for row in train.column("y").to_pylist()]
    assert tags[2] == ["I-MISC", "O"]  # an I- after a boundary is legal IOB1
    # words seen only outside train are <unk>: "Paris" in val, "Zane" in test
    val = read_split(str(tmp_path / "ds"), "val")
    assert val.column("x").to_pylist() == [[UNK_ID, vocab.index("rejects")]]
    # characters keep their case and decode back to the original tokens (unseen chars are <unk>)
    char_vocab = manifest.task_params["char_vocab"]
    assert char_vocab[:4] == list(SPECIALS) and manifest.columns == ["chars"]
    decoded = ["".join(char_vocab[c] for c in word) for word in train.column("chars").to_pylist()[1]]
    assert decoded == ["Peter", "Blackburn", "rejects"]
    zane = read_split(str(tmp_path / "ds"), "test").column("chars").to_pylist()[0][0]
    assert zane[0] == UNK_ID and [char_vocab[c] for c in zane[1:]] == ["a", "n", "e"]  # no Z in train
    assert manifest.task_params["scheme"] == "IOB" and manifest.task_params["lowercase"] is False
    assert [s.path for s in manifest.sources] == sorted(str(p) for p in conll2003.iterdir())
    assert validate_dataset(str(tmp_path / "ds")).ok


def test_lowercase_and_min_count(conll2003, tmp_path):
    # when words are lowercased and words seen once in train become <unk>
    manifest = import_conll([str(conll2003)], str(tmp_path / "ds"), lowercase=True, min_count=2)
    # then only train words seen at least twice stay
    assert manifest.vocab == [*SPECIALS, "rejects", "german"]
    assert manifest.task_params["min_count"] == 2
    train = read_split(str(tmp_path / "ds"), "train")
    assert train.column("x").to_pylist()[2] == [5, 4]  # German -> german
    # characters still keep their case
    assert "G" in manifest.task_params["char_vocab"]


def test_pooled_sentences_split_by_fraction_with_the_seed(tmp_path):
    text = "".join(f"w{i} O\nx{i} B-PER\n\n" for i in range(20))
    src = _write(tmp_path / "src", **{"corpus.txt": text})
    a = import_conll([str(src / "corpus.txt")], str(tmp_path / "a"), val_fraction=0.2, test_fraction=0.3,
                     seed=3)
    b = import_conll([str(src / "corpus.txt")], str(tmp_path / "b"), val_fraction=0.2, test_fraction=0.3,
                     seed=3)
    c = import_conll([str(src / "corpus.txt")], str(tmp_path / "c"), val_fraction=0.2, test_fraction=0.3,
                     seed=4)
    assert {s: i.rows for s, i in a.splits.items()} == {"train": 10, "val": 4, "test": 6}
    assert a.data_hash == b.data_hash != c.data_hash
    ids = {s: set(read_split(str(tmp_path / "a"), s).column("id").to_pylist())
           for s in ("train", "val", "test")}
    assert set().union(*ids.values()) == {f"corpus.txt:{i}" for i in range(20)}
    assert sum(len(v) for v in ids.values()) == 20


@pytest.mark.parametrize(("name", "split"), [
    ("eng.train", "train"), ("eng.testa", "val"), ("eng.testb", "test"), ("NER_TRAIN.txt", "train"),
    ("ner_VAL.conll", "val"), ("dev.txt", "val"), ("test.txt", "test"), ("corpus.txt", None),
])
def test_split_from_file_name(name, split):
    assert conll_split_of(f"/data/{name}") == split


def test_malformed_lines_fail_naming_file_and_line(tmp_path):
    # given a wrong column count on line 3 and a tag outside the BIO scheme on line 6
    text = "EU B-ORG\nrejects O\nGerman JJ B-MISC\n\nPeter B-PER\nBlackburn X-PER\n\nok O\n"
    src = _write(tmp_path / "src", **{"bad_TRAIN.txt": text, "bad_TEST.txt": "a O\n\nb O\n"})
    # when imported, then the error names both files' lines and what was expected; nothing is written
    with pytest.raises(DataValidationError) as info:
        import_conll([str(src / "bad_TRAIN.txt"), str(src / "bad_TEST.txt")], str(tmp_path / "ds"))
    message = str(info.value)
    assert f"{src / 'bad_TRAIN.txt'}:3" in message and "3 whitespace-separated columns, expected 2" in message
    assert f"{src / 'bad_TRAIN.txt'}:6" in message and "'X-PER'" in message
    assert "2 of 5 sentences" in message
    assert [p.row_id for p in info.value.problems] == ["bad_TRAIN.txt:0", "bad_TRAIN.txt:1"]
    assert not (tmp_path / "ds").exists()


def test_quarantine_sets_the_sentence_aside_with_its_reason(tmp_path):
    text = "EU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn X-PER\n\nok O\nfine B-LOC\n\nmore O\n"
    src = _write(tmp_path / "src", **{"q_TRAIN.txt": text, "q_TEST.txt": "a O\n"})
    manifest = import_conll([str(src)], str(tmp_path / "ds"), on_invalid="quarantine", val_fraction=0.3)
    # then the bad sentence is kept aside with its reason and raw tokens; the others are written
    assert manifest.quarantined == {"train": 1} or manifest.quarantined == {"val": 1}
    quarantine = read_quarantine(str(tmp_path / "ds")).to_pylist()
    assert len(quarantine) == 1
    row = quarantine[0]
    assert row["id"] == "q_TRAIN.txt:1" and "X-PER" in row["reason"] and "line 5" in row["reason"]
    assert row["tokens"] == ["Peter", "Blackburn"] and row["tags"] == ["B-PER", "X-PER"]
    assert row["source"] == f"{src / 'q_TRAIN.txt'}:4"
    assert sum(i.rows for i in manifest.splits.values()) == 4
    assert "X-PER" not in manifest.labels and "B-PER" not in manifest.labels


def test_column_index_outside_the_line_is_an_error(tmp_path):
    src = _write(tmp_path / "src", **{"x_TRAIN.txt": "EU B-ORG\n"})
    with pytest.raises(ValueError, match=r"x_TRAIN.txt:1: tag_column=3, but the line has 2 columns"):
        import_conll([str(src / "x_TRAIN.txt")], str(tmp_path / "ds"), tag_column=3)


def test_cli_import_with_conll_options(conll2003, tmp_path, capsys):
    out = tmp_path / "ds"
    files = [str(conll2003 / name) for name in ("eng.train", "eng.testa", "eng.testb")]
    assert main(["data", "import", "--format", "conll", *files, "--out", str(out), "--token-column", "0",
                 "--tag-column", "3", "--lowercase", "--min-count", "2"]) == 0
    assert "imported eng (tag)" in capsys.readouterr().out
    manifest = read_manifest(str(out))
    assert manifest.vocab == [*SPECIALS, "rejects", "german"]
    assert manifest.import_params["tag_column"] == 3 and manifest.import_params["lowercase"] is True
