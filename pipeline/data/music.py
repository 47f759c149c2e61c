"""Music as tokens: a score <-> one line of note-event tokens, for the music importer
(``importers/music.py``) and the lm task that renders generated tokens as MIDI and piano rolls.

The tokens (whitespace-free, so a piece is a line of word-level lm text):

=========  ==================================================================================
``n<M>``   a pitch, as its MIDI number (``n60`` is middle C); a chord is its pitches low to high
``r``      a rest
``d<q>``   the duration that ends an event, in quarter notes as a fraction: ``d1`` a quarter,
           ``d1/2`` an eighth, ``d3/2`` a dotted quarter, ``d1/3`` a triplet eighth
``|``      a bar line (the end of a measure)
``/``      the end of a part: the piece's next part follows, from the piece's start
``\\n``    the end of a piece (the newline token of word-level lm text)
=========  ==================================================================================

An event is one or more ``n`` tokens, or ``r``, then one ``d`` token: ``n60 n64 n67 d2`` is a C
major chord held for a half note. Parts (voices) are written one after the other, each from the
piece's start, in score order, with ``/`` between them. Tied notes are merged into one event
(music21's ``stripTies``), so a note held over a bar line comes before that bar's ``|`` with its
whole length. A part holding several voices (two on a staff, a piano's hands on one part) is
chordified first: each time slice of its voices becomes one event. Grace notes (no duration) are
left out and counted.

Reading a score needs music21 (the ``music`` extra), imported when used; ``events`` (tokens ->
timed notes) does not, so a piano roll can be drawn without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

BAR = "|"
PART = "/"
REST = "r"
PIECE_END = "\n"  # the newline token of pipeline.data.tokens
MAX_DENOMINATOR = 96  # durations are kept as fractions of a quarter note up to 1/96


class MusicError(ValueError):
    """A score that cannot be turned into tokens (no such part, no notes)."""


def duration_token(quarter_length: Any) -> str:
    """``d`` + the duration in quarter notes as an exact fraction (``d1``, ``d1/2``, ``d1/3``)."""
    q = Fraction(quarter_length).limit_denominator(MAX_DENOMINATOR)
    return f"d{q.numerator}" if q.denominator == 1 else f"d{q.numerator}/{q.denominator}"


def token_duration(token: str) -> Fraction | None:
    """The quarter notes of a ``d`` token; None for any other token (or a malformed one)."""
    if not token.startswith("d"):
        return None
    try:
        q = Fraction(token[1:])
    except (ValueError, ZeroDivisionError):
        return None
    return q if q > 0 else None


def token_pitch(token: str) -> int | None:
    """The MIDI number of an ``n`` token (0-127); None for any other token."""
    if token.startswith("n") and token[1:].isdigit() and 0 <= int(token[1:]) <= 127:
        return int(token[1:])
    return None


# ------------------------------------------------------------------------------ score -> tokens


def read_score(path: str) -> Any:
    """A MusicXML (.musicxml/.xml/.mxl) or MIDI (.mid/.midi) file as a music21 Score; MusicError
    saying what music21 could not read."""
    from music21 import converter, stream

    try:
        score = converter.parse(path)
    except Exception as e:  # music21 raises many types (its own, XML, zip, MIDI, index errors)
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise MusicError(f"not a readable score (music21: {detail})") from None
    if isinstance(score, stream.Opus):  # several scores in one file: their parts in turn
        raise MusicError("holds several scores (an opus); give each score its own file")
    return score


def score_tokens(score: Any, parts: list[str] | None = None) -> tuple[list[str], int]:
    """The tokens of one piece (without its ``\\n``) and the grace notes left out.

    ``parts``: the part names to keep, in this order (case-insensitive; MusicError naming the
    missing ones and those there are); None keeps every part in score order."""
    from music21 import stream

    found = list(score.parts) if hasattr(score, "parts") and len(score.parts) else [score]
    if parts:
        by_name = {}
        for part in found:
            by_name.setdefault((part.partName or "").strip().lower(), part)
        missing = [p for p in parts if p.strip().lower() not in by_name]
        if missing:
            there = [part.partName or "(unnamed)" for part in found]
            raise MusicError(f"has no part named {', '.join(map(repr, missing))} (its parts: "
                             f"{', '.join(there)}); see data.source.parts")
        found = [by_name[p.strip().lower()] for p in parts]
    tokens: list[str] = []
    grace = 0
    for k, part in enumerate(found):
        if k:
            tokens.append(PART)
        part = part.stripTies(inPlace=False)
        if part.recurse().getElementsByClass(stream.Voice):
            part = part.chordify()
        measures = list(part.getElementsByClass(stream.Measure))
        for measure in measures or [part.flatten()]:
            for element in measure.recurse().notesAndRests:
                if element.duration.quarterLength == 0:
                    grace += 1
                    continue
                if element.isRest:
                    tokens.append(REST)
                else:
                    midis = sorted({int(round(p.ps)) for p in element.pitches})
                    tokens.extend(f"n{m}" for m in midis if 0 <= m <= 127)
                tokens.append(duration_token(element.duration.quarterLength))
            if measures:  # a part without measures (some MIDI files) has no bar lines
                tokens.append(BAR)
    if not any(token_pitch(t) is not None for t in tokens):
        raise MusicError("has no notes")
    return tokens, grace


# ------------------------------------------------------------------------------ tokens -> music


@dataclass(frozen=True)
class Event:
    """One sounding event decoded from tokens: its part (0-based, across pieces), pitches (MIDI
    numbers; empty for a rest), start and length in quarter notes."""

    part: int
    pitches: tuple[int, ...]
    start: Fraction
    length: Fraction


def events(tokens: list[str]) -> list[Event]:
    """Timed events of a token sequence, as ``tokens_score`` plays them.

    Each part starts at its piece's start; the next piece starts where the longest part of the
    one before ended. Tokens that do not fit the grammar (pitches with no duration before a bar
    line, a duration with nothing before it, specials like ``<unk>``) are skipped, so any
    sampled sequence plays."""
    out: list[Event] = []
    piece_start, part, now, end = Fraction(0), 0, Fraction(0), Fraction(0)
    pending: list[int] = []
    rest = False
    for token in tokens:
        q = token_duration(token)
        if q is not None:
            if pending or rest:
                out.append(Event(part, tuple(sorted(set(pending))), piece_start + now, q))
                now += q
                end = max(end, now)
            pending, rest = [], False
            continue
        pitch = token_pitch(token)
        if pitch is not None:
            pending.append(pitch)
            rest = False
        elif token == REST:
            pending, rest = [], True
        elif token in (PART, PIECE_END):
            pending, rest = [], False
            part = part + 1 if token == PART else 0
            if token == PIECE_END:
                piece_start, end = piece_start + end, Fraction(0)
            now = Fraction(0)
        elif token == BAR:
            pending, rest = [], False
    return out


def tokens_score(tokens: list[str]) -> Any:
    """A music21 Score of the events of ``tokens`` (one part per voice, notes and chords at their
    offsets, rests left implicit), ready to write as MIDI: ``score.write("midi", fp=path)``."""
    from music21 import chord, note, stream, tempo

    timed = [e for e in events(tokens) if e.pitches]
    score = stream.Score()
    parts: dict[int, Any] = {}
    for index in sorted({e.part for e in timed}) or [0]:
        parts[index] = stream.Part(id=f"part{index}")
        parts[index].partName = f"part {index + 1}"
        score.insert(0, parts[index])
    parts[min(parts)].insert(0, tempo.MetronomeMark(number=80))
    for e in timed:
        sound = note.Note(e.pitches[0]) if len(e.pitches) == 1 else chord.Chord(list(e.pitches))
        sound.quarterLength = e.length
        parts[e.part].insert(e.start, sound)
    return score


def write_midi(tokens: list[str], path: str) -> str:
    """Write the tokens as a MIDI file (music21) at ``path``; returns the path."""
    tokens_score(tokens).write("midi", fp=path)
    return path
