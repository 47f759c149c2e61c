"""Scores (MusicXML, MIDI, the music21 corpus) -> the canonical lm dataset of note-event tokens.

Every source file is one piece, read with music21 (the ``music`` extra) and written as one line
of the tokens of ``pipeline.data.music``: pitches (MIDI numbers), durations (quarter notes), rests,
bar lines, ``/`` between parts and a newline token at the end of the piece. ``parts`` keeps the
named parts, in that order (the chorales' ``[Soprano, Alto, Tenor, Bass]``, leaving out their
occasional instrument parts); without it every part is kept, in score order.

Pieces, never tokens, are split: a file whose name ends in ``_TRAIN``/``_VAL``/``_TEST`` goes to
that split, the others are drawn at random (``seed``) by ``val_fraction`` / ``test_fraction``, so
no piece is partly in two splits. Each split's stream is its pieces in file order, stored as the
text importer stores its stream (rows of ``chunk_length`` ids, ``<split>:<row>`` ids), and the lm
task reads it the same way. The vocabulary comes from the train pieces only (``min_count``,
``max_vocab``); tokens unseen in train become ``<unk>``, counted in ``task_params``.

``music21:NAME`` sources name the corpus that ships inside music21 (``music21:bach``: its Bach
chorales; ``music21:bach/bwv66.6.mxl``: one file), resolved by ``sources.resolve_source``; a
folder gives its .mxl, .musicxml, .xml, .mid and .midi files.

A file music21 cannot read, or that lacks one of ``parts`` or has no notes, stops the import
naming the file and the reason (``on_invalid="fail"``), or is set aside in ``<out>/quarantine/``
with the reason (``"quarantine"``), counted in the manifest.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

import numpy as np

from pipeline.data.dataset import SPECIALS, SPLITS, DatasetError, Manifest, write_dataset
from pipeline.data.importers.common import (
    assign_splits,
    check_fractions,
    check_no_empty_split,
    check_on_invalid,
    quarantine_table,
    stop_import,
)
from pipeline.data.importers.sources import as_list, base_name, expand, source_files, split_of, stem
from pipeline.data.music import PIECE_END, MusicError, read_score, score_tokens
from pipeline.data.tokens import build_vocab, encode_corpus, join_tokens, stream_rows, token_index
from pipeline.data.validate import Problem
from pipeline.progress import source_read

EXTENSIONS = ("mxl", "musicxml", "xml", "mid", "midi")  # what a folder contributes


def read_piece(path: str, parts: list[str] | None) -> tuple[list[str], int]:
    """One file's tokens, ending in the piece's newline token, and its grace notes left out;
    MusicError saying why it cannot be read. Needs music21."""
    try:
        import music21  # noqa: F401
    except ImportError:
        raise DatasetError("format music reads scores with music21: pip install 'recur[music]' "
                           "(or pip install music21)") from None
    tokens, grace = score_tokens(read_score(path), parts)
    return [*tokens, PIECE_END], grace


def import_music(
    paths: list[str] | str,
    out: str,
    *,
    name: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    on_invalid: Literal["fail", "quarantine"] = "fail",
    parts: list[str] | None = None,
    min_count: int = 1,
    max_vocab: int | None = None,
    chunk_length: int = 1024,
) -> Manifest:
    """Import score files (or folders of them) into the lm dataset at ``out``: one piece per file,
    split by piece, vocabulary from the train pieces."""
    if chunk_length < 2:
        raise ValueError(f"chunk_length must be >= 2 tokens, got {chunk_length}")
    check_fractions(val_fraction, test_fraction)
    check_on_invalid(on_invalid)
    files = expand(paths, EXTENSIONS)
    split = assign_splits([split_of(local) for _, local in files], None, val_fraction, test_fraction, seed)

    pieces: list[list[str]] = []
    bad = np.zeros(len(files), dtype=bool)
    problems: list[Problem] = []
    grace = 0
    for index, (shown, local) in enumerate(files, start=1):
        try:
            tokens, skipped = read_piece(local, parts)
        except MusicError as e:
            bad[index - 1] = True
            problems.append(Problem(str(split[index - 1]), stem(local), "x", str(e), shown))
            pieces.append([])
            continue
        grace += skipped
        pieces.append(tokens)
        source_read(shown, len(tokens), index=index, files=len(files), unit="tokens")
    if problems and on_invalid == "fail":
        stop_import(out, problems, f"{len(problems)} of {len(files)} score file(s) cannot be read",
                    "fix or remove the file(s), or import with --on-invalid quarantine")
    check_no_empty_split(split, bad, unit="pieces")

    streams: dict[str, list[str]] = {s: [] for s in SPLITS}
    names: dict[str, list[str]] = {s: [] for s in SPLITS}
    for (_, local), piece, s, broken in zip(files, pieces, split.tolist(), bad.tolist()):
        if not broken:
            streams[s].extend(piece)
            names[s].append(stem(local))

    vocab = build_vocab(Counter(streams["train"]), min_count=min_count, max_vocab=max_vocab)
    index_of = token_index(vocab)
    known = set(vocab[len(SPECIALS):])
    tables = {s: stream_rows(encode_corpus(streams[s], index_of), s, chunk_length) for s in SPLITS}
    quarantine = None
    if problems:
        quarantine = quarantine_table([p.row_id for p in problems], [p.split for p in problems],
                                      [f"{p.column}: {p.reason}" for p in problems],
                                      [p.source or "" for p in problems])
    task_params: dict[str, Any] = {
        "level": "word",  # a piece is a line of whitespace-separated tokens: the lm task's word level
        "lowercase": False,
        "join": " ",
        "tokens": {s: len(streams[s]) for s in SPLITS},
        "characters": {s: len(join_tokens(streams[s], "word")) for s in SPLITS},
        "unknown_tokens": {s: sum(1 for t in streams[s] if t not in known) for s in SPLITS},
        "chunk_length": chunk_length,
        # what makes this lm dataset music: the task renders samples as MIDI and piano rolls
        "music": {"parts": list(parts) if parts else None, "pieces": names, "grace_notes_left_out": grace},
    }
    return write_dataset(
        out, tables, name=name or base_name(as_list(paths)[0].rstrip("/")), task="lm", labels=[],
        sources=source_files(files),
        import_params={
            "format": "music", "parts": list(parts) if parts else None, "min_count": min_count,
            "max_vocab": max_vocab, "chunk_length": chunk_length, "val_fraction": val_fraction,
            "test_fraction": test_fraction, "seed": seed, "on_invalid": on_invalid,
        },
        quarantine=quarantine, feature_kind="token", vocab=vocab, task_params=task_params,
    )

