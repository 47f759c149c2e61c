"""Score importer (lm over note events): music21 corpus files and hand-written MusicXML.

Given chorales from the corpus inside music21 and tiny MusicXML scores written here, when they are
imported with `--format music`, then each piece is one line of event tokens (pitches, durations,
rests, bar lines, `/` between parts), whole pieces go to one split each, the vocabulary holds train
tokens only, and a file music21 cannot read (or without a named part) is named in the error, or
quarantined with its reason.
"""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.cli import main
from pipeline.data.dataset import SPECIALS, UNK_ID, DatasetError, read_manifest, read_quarantine, read_split
from pipeline.data.importers.music import import_music
from pipeline.data.importers.sources import resolve_source
from pipeline.data.tokens import stream_from_rows
from pipeline.data.validate import DataValidationError, validate_dataset

pytest.importorskip("music21", reason="the music extra: pip install 'recur[music]'")

SATB = ["Soprano", "Alto", "Tenor", "Bass"]
CHORALES = ["bwv66.6", "bwv1.6", "bwv10.7", "bwv101.7", "bwv102.7", "bwv103.6"]

# Two 4/4 measures and a third: C4 quarter, quarter rest, E4+G4 half chord | F#4 dotted quarter,
# D4 eighth, D4 half tied over the bar line to a D4 quarter | a dotted half rest.
MEASURES = """
    <measure number="1">
      <attributes><divisions>2</divisions><time><beats>4</beats><beat-type>4</beat-type></time>
        <clef><sign>G</sign><line>2</line></clef></attributes>
      <note><pitch><step>C</step><octave>4</octave></pitch><duration>2</duration><type>quarter</type></note>
      <note><rest/><duration>2</duration><type>quarter</type></note>
      <note><pitch><step>E</step><octave>4</octave></pitch><duration>4</duration><type>half</type></note>
      <note><chord/><pitch><step>G</step><octave>4</octave></pitch><duration>4</duration><type>half</type></note>
    </measure>
    <measure number="2">
      <note><pitch><step>F</step><alter>1</alter><octave>4</octave></pitch><duration>3</duration>
        <type>quarter</type><dot/></note>
      <note><pitch><step>D</step><octave>4</octave></pitch><duration>1</duration><type>eighth</type></note>
      <note><pitch><step>D</step><octave>4</octave></pitch><duration>4</duration><tie type="start"/>
        <type>half</type><notations><tied type="start"/></notations></note>
    </measure>
    <measure number="3">
      <note><pitch><step>D</step><octave>4</octave></pitch><duration>2</duration><tie type="stop"/>
        <type>quarter</type><notations><tied type="stop"/></notations></note>
      <note><rest/><duration>6</duration><type>half</type><dot/></note>
    </measure>"""
# the tied D is one event of 3 quarters, before the second bar line
EXPECTED = ["n60", "d1", "r", "d1", "n64", "n67", "d2", "|",
            "n66", "d3/2", "n62", "d1/2", "n62", "d3", "|",
            "r", "d3", "|"]


def musicxml(*part_names: str, transpose: int = 0) -> str:
    """A MusicXML score of the parts named, each playing MEASURES (`transpose` octaves up)."""
    head = "".join(f'<score-part id="P{i}"><part-name>{name}</part-name></score-part>'
                   for i, name in enumerate(part_names, 1))
    body = MEASURES.replace("<octave>4</octave>", f"<octave>{4 + transpose}</octave>")
    parts = "".join(f'<part id="P{i}">{body}</part>' for i in range(1, len(part_names) + 1))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<score-partwise version="3.1">'
            f"<part-list>{head}</part-list>{parts}</score-partwise>\n")


def _stream(root, split: str, vocab: list[str]) -> list[str]:
    return [vocab[i] if i >= len(SPECIALS) else SPECIALS[i] for i in
            stream_from_rows(read_split(str(root), split)).tolist()]


def test_hand_written_musicxml_becomes_event_tokens_one_line_per_piece(tmp_path):
    # given three one-part scores named for their splits, the test one an octave higher
    for split, octave in (("TRAIN", 0), ("VAL", 0), ("TEST", 1)):
        (tmp_path / f"tune_{split}.musicxml").write_text(musicxml("Melody", transpose=octave))

    # when they are imported
    manifest = import_music([str(tmp_path)], str(tmp_path / "ds"), chunk_length=8)

    # then the train piece is exactly its events, then the newline that ends a piece
    vocab = manifest.vocab
    assert _stream(tmp_path / "ds", "train", vocab) == [*EXPECTED, "\n"]
    assert _stream(tmp_path / "ds", "val", vocab) == [*EXPECTED, "\n"]
    # and the vocabulary is train's only: the test piece's pitches an octave up are <unk>
    test = _stream(tmp_path / "ds", "test", vocab)
    assert test.count("<unk>") == 6 and manifest.task_params["unknown_tokens"]["test"] == 6
    assert set(vocab[len(SPECIALS):]) == set(EXPECTED) | {"\n"}
    assert manifest.task == "lm" and manifest.task_params["level"] == "word"
    assert manifest.task_params["music"]["pieces"] == {"train": ["tune_TRAIN"], "val": ["tune_VAL"],
                                                       "test": ["tune_TEST"]}
    assert validate_dataset(str(tmp_path / "ds")).ok


def test_parts_are_kept_by_name_in_the_order_given_with_a_separator(tmp_path):
    # given two-part scores whose parts are Bass then Soprano
    for split in ("TRAIN", "VAL", "TEST"):
        (tmp_path / f"duet_{split}.musicxml").write_text(musicxml("Bass", "Soprano"))

    # when the parts are asked for as soprano, bass
    manifest = import_music([str(tmp_path)], str(tmp_path / "ds"), parts=["soprano", "BASS"])

    # then the piece is one part's events, "/", the other's, then the end of the piece
    assert _stream(tmp_path / "ds", "train", manifest.vocab) == [*EXPECTED, "/", *EXPECTED, "\n"]
    # and a score without one of them is refused naming the file and the parts it has
    with pytest.raises(DataValidationError, match=r"duet_TRAIN\.musicxml\) x: has no part named 'Alto' "
                                                  r"\(its parts: Bass, Soprano\)"):
        import_music([str(tmp_path)], str(tmp_path / "ds2"), parts=["Soprano", "Alto"])


def test_a_malformed_file_fails_naming_it_or_is_quarantined_with_its_reason(tmp_path):
    # given two good scores and a MusicXML file cut off in the middle
    (tmp_path / "a_TRAIN.musicxml").write_text(musicxml("Melody"))
    (tmp_path / "b_VAL.musicxml").write_text(musicxml("Melody"))
    (tmp_path / "c_TEST.musicxml").write_text(musicxml("Melody"))
    broken = musicxml("Melody")
    (tmp_path / "broken_TRAIN.musicxml").write_text(broken[: len(broken) // 2])

    # when it is imported, the import stops naming the file and writes nothing
    with pytest.raises(DataValidationError) as failed:
        import_music([str(tmp_path)], str(tmp_path / "ds"))
    message = str(failed.value)
    assert "broken_TRAIN.musicxml" in message and "not a readable score" in message
    assert "1 of 4 score file(s) cannot be read" in message
    assert not (tmp_path / "ds" / "manifest.json").exists()

    # and with on_invalid quarantine the file is set aside with its reason and counted
    manifest = import_music([str(tmp_path)], str(tmp_path / "ds"), on_invalid="quarantine")
    assert manifest.quarantined == {"train": 1}
    (row,) = read_quarantine(str(tmp_path / "ds")).to_pylist()
    assert row["id"] == "broken_TRAIN" and row["source"].endswith("broken_TRAIN.musicxml")
    assert row["reason"].startswith("x: not a readable score (music21: ")
    assert manifest.task_params["music"]["pieces"]["train"] == ["a_TRAIN"]


def test_a_split_left_without_pieces_is_an_error_naming_the_counts(tmp_path):
    (tmp_path / "a_TRAIN.musicxml").write_text(musicxml("Melody"))
    (tmp_path / "b_TEST.musicxml").write_text(musicxml("Melody"))
    with pytest.raises(DatasetError, match=r"split\(s\) \['val'\] would be empty \(valid pieces per split"):
        import_music([str(tmp_path)], str(tmp_path / "ds"), val_fraction=0.0)


def test_chorales_from_the_music21_corpus_are_split_by_whole_piece(tmp_path):
    # given six chorales of the corpus that ships inside music21 (one has a horn part too)
    sources = [f"music21:bach/{name}.mxl" for name in CHORALES]
    assert resolve_source(sources[0]).endswith("bach/bwv66.6.mxl")

    # when they are imported through the command line, soprano to bass, a third held out
    assert main(["data", "import", "--format", "music", *sources, "--parts", "Soprano,Alto,Tenor,Bass",
                 "--val-fraction", "0.17", "--test-fraction", "0.17", "--out", str(tmp_path / "ds")]) == 0
    manifest = read_manifest(str(tmp_path / "ds"))

    # then every chorale is in exactly one split, whole: one line of four parts each
    pieces = manifest.task_params["music"]["pieces"]
    assert sorted(sum(pieces.values(), [])) == sorted(CHORALES)
    assert len(pieces["val"]) == 1 and len(pieces["test"]) == 1
    for split in ("train", "val", "test"):
        stream = _stream(tmp_path / "ds", split, manifest.vocab)
        assert stream.count("\n") == len(pieces[split]) and stream[-1] == "\n"
        assert stream.count("/") == 3 * len(pieces[split])  # SATB: three part separators a piece
        assert stream.count("|") > 10 * len(pieces[split])
    # (bwv1.6's horn part left out, or its line would hold a fourth "/")
    # and the vocabulary is the train tokens' (most frequent first), every other token <unk>
    train = _stream(tmp_path / "ds", "train", manifest.vocab)
    counts = Counter(train)
    assert manifest.vocab[len(SPECIALS)] == counts.most_common(1)[0][0]
    held_out = _stream(tmp_path / "ds", "test", manifest.vocab)
    assert held_out.count("<unk>") == manifest.task_params["unknown_tokens"]["test"]
    assert SPECIALS.index("<unk>") == UNK_ID
