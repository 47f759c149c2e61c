"""Music language models (an lm dataset from ``recur data import --format music``): what the lm
task adds for them after training, and how generated tokens become something to listen to.

* ``music_report``: the test split's unigram and bigram perplexities (``pipeline.tasks.ngram``,
  on exactly the tokens the model's test perplexity covers) as ``test_unigram_perplexity`` and
  ``test_bigram_perplexity``, and for each generated sample ``eval/samples.txt`` (the tokens),
  ``eval/sample_<i>.mid`` (MIDI, written by music21) and ``plots/piano_roll_<i>.png``.
* ``write_sample``: the same MIDI file and piano roll on disk, for ``recur generate``.

Samples start from a piece's start (an empty prompt: the newline token that ends a piece), unless
``generate.prompt`` gives tokens to continue. Token grammar: ``pipeline.data.music``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from pipeline.data.dataset import read_split
from pipeline.data.music import events, write_midi
from pipeline.data.tokens import stream_from_rows, tokenize_corpus
from pipeline.tasks.base import Report
from pipeline.tasks.ngram import stream_perplexities


def is_music(task_params: dict[str, Any]) -> bool:
    """Whether an lm dataset's (or model's) tokens are note events (the music importer's)."""
    return bool(task_params.get("music"))


def sample_tokens(text: str) -> list[str]:
    """Generated text (tokens joined as word-level lm text) -> its tokens, piece ends included."""
    return tokenize_corpus(text, "word")


def piano_roll(tokens: list[str], title: str = "piano roll") -> Figure:
    """One bar per sounding note: time in quarter notes across, MIDI pitch up, a colour per part."""
    timed = [e for e in events(tokens) if e.pitches]
    fig, ax = plt.subplots(figsize=(10, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for part in sorted({e.part for e in timed}):
        mine = [(e, p) for e in timed if e.part == part for p in e.pitches]
        for k, (e, pitch) in enumerate(mine):
            ax.broken_barh([(float(e.start), float(e.length))], (pitch - 0.4, 0.8),
                           facecolors=colours[part % len(colours)],
                           label=f"part {part + 1}" if k == 0 else None)
    ax.set(xlabel="time (quarter notes)", ylabel="MIDI pitch (60 = middle C)", title=title)
    ax.grid(alpha=0.3)
    if timed:
        ax.legend(loc="upper right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no notes in the sample", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    return fig


def midi_bytes(tokens: list[str]) -> bytes:
    """The MIDI file music21 writes for the tokens, as bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_midi(tokens, os.path.join(tmp, "sample.mid"))
        with open(path, "rb") as fh:
            return fh.read()


def write_sample(text: str, midi_path: str) -> tuple[str, str]:
    """Write generated text as a MIDI file at `midi_path` and its piano roll beside it (same name,
    .png); returns both paths."""
    tokens = sample_tokens(text)
    write_midi(tokens, midi_path)
    png = os.path.splitext(midi_path)[0] + ".png"
    fig = piano_roll(tokens, title=os.path.basename(midi_path))
    try:
        fig.savefig(png, dpi=100)
    finally:
        plt.close(fig)
    return midi_path, png


def music_report(task: Any, model: Any, table: Any) -> Report:
    """The lm task's test report for a music dataset (`task` a LanguageModelTask whose
    `cfg.data.root` holds the dataset): n-gram references, samples as text, MIDI and piano roll."""
    train_N = stream_from_rows(read_split(task.cfg.data.root, "train"))
    streams_BL = task.streams(table, what="test", world_size=1, rank=0, batch_size=task.cfg.data.batch_size)
    report = Report(metrics=stream_perplexities(train_N, streams_BL, len(task.vocab)))
    texts, generated = task.samples(model, table, default_prompt="")
    report.texts.update(texts)
    for i, text in enumerate(generated, start=1):
        tokens = sample_tokens(text)
        report.files[f"eval/sample_{i}.mid"] = midi_bytes(tokens)
        report.figures[f"plots/piano_roll_{i}.png"] = piano_roll(tokens, title=f"sample {i}: piano roll")
    return report
