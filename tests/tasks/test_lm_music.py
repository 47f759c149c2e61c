"""Music language models: tokens -> MIDI and back, piano rolls, n-gram references, the test report.

Given note-event tokens written here, when they become a music21 score, a MIDI file and a piano
roll, then the MIDI file parses back (music21) to the same timed notes and the roll draws one bar
per note. Given tiny token streams, the add-one unigram and bigram perplexities are the
hand-computed ones. Given a dataset imported from hand-written MusicXML, the lm task's test report
holds both references and, per sample, a MIDI file that parses back and a piano roll.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from pipeline.config import RecurConfig
from pipeline.data.dataset import SPECIALS, read_split
from pipeline.data.importers.music import import_music
from pipeline.data.music import Event, events, score_tokens, tokens_score, write_midi
from pipeline.data.preprocess import Preprocessing
from pipeline.data.tokens import stream_rows
from pipeline.tasks.lm import LanguageModelTask
from pipeline.tasks.music import piano_roll, sample_tokens
from pipeline.tasks.ngram import bigram_nll, stream_perplexities, unigram_nll
from pipeline.tracking.plots import close

music21 = pytest.importorskip("music21", reason="the music extra: pip install 'recur[music]'")

# two parts of one piece, then a second piece of one part: a chord, rests, dotted and short notes
def _split(text: str) -> list[str]:
    return text.split(" ")


TOKENS = _split("n60 d1 r d1 n64 n67 d2 | n65 d3/2 n62 d1/2 n60 d2 | / n48 d2 r d1 n43 d1 | n41 d4 | \n "
                "n72 d1/2 n71 d1/2 n69 d3 |")


def _timed(tokens: list[str]) -> list[tuple[int, tuple[int, ...], Fraction, Fraction]]:
    return [(e.part, e.pitches, e.start, e.length) for e in events(tokens) if e.pitches]


def test_events_time_each_part_from_its_piece_start():
    timed = _timed(TOKENS)
    assert timed[:3] == [(0, (60,), 0, 1), (0, (64, 67), 2, 2), (0, (65,), 4, Fraction(3, 2))]
    assert (1, (48,), 0, 2) in timed and (1, (43,), 3, 1) in timed
    # the second piece starts where the first's longest part ended (8 quarters), in part 1 again
    assert timed[-3:] == [(0, (72,), 8, Fraction(1, 2)), (0, (71,), Fraction(17, 2), Fraction(1, 2)),
                          (0, (69,), 9, 3)]
    # tokens off the grammar are skipped: a duration with nothing before it, pitches cut by a bar
    assert events(_split("d1 n60 | <unk> n62 d1")) == [Event(0, (62,), Fraction(0), Fraction(1))]


def test_tokens_round_trip_through_a_music21_score_and_a_midi_file(tmp_path):
    # given the tokens as a music21 score with one part per voice
    score = tokens_score(TOKENS)
    assert len(score.parts) == 2

    # when the score is written as MIDI and parsed back by music21
    path = write_midi(TOKENS, str(tmp_path / "sample.mid"))
    back = music21.converter.parse(path)

    # then the parsed file holds the same notes at the same times, part by part
    tokens, _ = score_tokens(back)
    assert sorted(_timed(tokens)) == sorted(_timed(TOKENS))


def test_piano_roll_draws_one_bar_per_sounding_pitch():
    fig = piano_roll(TOKENS, title="t")
    try:
        (ax,) = fig.axes
        bars = sum(len(c.get_paths()) for c in ax.collections)
        assert bars == sum(len(p) for _, p, _, _ in _timed(TOKENS)) == 12
        assert ax.get_xlabel() == "time (quarter notes)" and "MIDI pitch" in ax.get_ylabel()
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["part 1", "part 2"]
    finally:
        close(fig)
    # generated text keeps its piece ends as newline tokens
    assert sample_tokens("n60 d1 |\nn62 d1") == ["n60", "d1", "|", "\n", "n62", "d1"]


# ------------------------------------------------------------------------------------ n-grams


def test_add_one_unigram_and_bigram_perplexities_of_a_tiny_stream():
    # given V = 6 (4 specials, a = 4, b = 5) and the train stream a a b a
    a, b, vocab_size = 4, 5, 6
    train = np.array([a, a, b, a])
    # unigram: p(a) = (3 + 1) / (4 + 6) = 0.4, p(b) = (1 + 1) / 10 = 0.2
    assert unigram_nll(train, np.array([a, b]), vocab_size) == pytest.approx(-math.log(0.4) - math.log(0.2))
    # bigram: pairs aa, ab, ba; p(b | a) = (1 + 1) / (2 + 6), p(b | b) = (0 + 1) / (1 + 6),
    # p(a | b) = (1 + 1) / (1 + 6); a context never seen in train (3, <bos>) gives 1 / 6
    assert bigram_nll(train, np.array([a, b, b, 3]), np.array([b, b, a, a]), vocab_size) == pytest.approx(
        -math.log(2 / 8) - math.log(1 / 7) - math.log(2 / 7) - math.log(1 / 6))

    # when a test stream b b (one stream: its second token is predicted from its first) is scored
    scores = stream_perplexities(train, np.array([[a, b, b]]), vocab_size)
    # then perplexity is exp(mean nats) of the predicted tokens b (after a) and b (after b)
    assert scores["unigram_perplexity"] == pytest.approx(5.0)  # 1 / 0.2
    assert scores["bigram_perplexity"] == pytest.approx(math.sqrt(4 * 7))


def test_the_lm_baseline_adds_the_bigram_reference_on_the_gate_pieces():
    vocab = [*SPECIALS, "a", "b"]
    cfg = RecurConfig.model_validate({"data": {"task": "lm", "batch_size": 1}, "train": {"bptt": 4}})
    task = LanguageModelTask(Preprocessing(mean=[], std=[], task="lm", feature_kind="token", vocab=vocab,
                                           task_params={"level": "char"}), cfg)
    train = stream_rows(np.array([4, 4, 5, 4], dtype=np.int32), "train", 16)
    test = stream_rows(np.array([4, 5, 5, 4, 4, 5, 5, 4], dtype=np.int32), "test", 16)
    # the gate scores 4 pieces "ab" "ba" "ab" "ba": b after a twice, a after b twice
    scores = task.baseline(train, test)
    nats = -2 * math.log(2 / 8) - 2 * math.log(2 / 7)
    assert scores["bigram_perplexity"] == pytest.approx(math.exp(nats / 4))
    assert scores["perplexity"] == pytest.approx(math.exp(-(2 * math.log(0.4) + 2 * math.log(0.2)) / 4))


# ------------------------------------------------------------------------------------ report


def test_music_report_logs_both_references_and_each_sample_as_midi_and_piano_roll(tmp_path):
    # given a dataset of MIDI files written from the tokens, and an untrained model
    for split in ("TRAIN", "VAL", "TEST"):
        write_midi(TOKENS, str(tmp_path / f"p_{split}.mid"))
    root = tmp_path / "ds"
    manifest = import_music([str(tmp_path)], str(root), chunk_length=16)
    cfg = RecurConfig.model_validate({
        "data": {"task": "lm", "root": str(root), "batch_size": 2}, "train": {"bptt": 8},
        "model": {"cell": "gru", "hidden_size": 8}, "generate": {"samples": 2, "length": 40},
    })
    pre = Preprocessing(mean=[], std=[], task="lm", feature_kind="token", vocab=manifest.vocab,
                        task_params=manifest.task_params)
    task = LanguageModelTask(pre, cfg)
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = task.build_model().eval()
    test = read_split(str(root), "test")

    # when the test report is made
    report = task.report(model, test, task.new_state())

    # then it holds the unigram and bigram perplexities of the test streams
    assert set(report.metrics) == {"unigram_perplexity", "bigram_perplexity"}
    assert report.metrics["bigram_perplexity"] < report.metrics["unigram_perplexity"]
    # and the samples as text (started from a piece's start), MIDI files and piano rolls
    assert "prompt ''" in report.texts["eval/samples.txt"]
    assert set(report.files) == {"eval/sample_1.mid", "eval/sample_2.mid"}
    assert set(report.figures) == {"plots/piano_roll_1.png", "plots/piano_roll_2.png"}
    for fig in report.figures.values():
        close(fig)
    path = tmp_path / "sample_1.mid"
    path.write_bytes(report.files["eval/sample_1.mid"])
    assert path.read_bytes()[:4] == b"MThd"
    assert isinstance(music21.converter.parse(str(path)), music21.stream.Score)
