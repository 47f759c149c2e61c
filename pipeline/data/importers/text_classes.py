"""Labelled texts (sentiment, topic, intent) -> the canonical classify dataset of token ids.

Sources: CSV (``.csv``), TSV (``.tsv``, ``.tab``) with a header row, or JSON Lines (``.jsonl``,
``.ndjson``: one object per line); ``file_type`` names the type when the extension does not.
``text_column`` and ``label_column`` name the columns (CSV/TSV header names, JSON keys); other
columns are ignored. Blank lines are skipped. A label is kept as its text (``1`` and ``"1"`` are
the same class).

Each text is stripped, optionally lowercased, and split into characters (``level="char"``),
whitespace-separated words (``level="word"``) or words with punctuation split off
(``level="wordpunct"``: "great!" is "great" "!", so it shares its token with "great") by
``pipeline.data.tokens.tokenize``, exactly as the served model splits the ``text`` it is given.
With ``max_length`` a longer text keeps its first ``max_length`` tokens
(``on_too_long="truncate"``, counted per split in ``import_params["truncated"]``) or is a bad
row (``"reject"``); without it, a text of more than ``DEFAULT_MAX_LENGTH`` tokens stops the
import, naming it. A cut text loses whitespace at the cut's end (``tokens.truncate_tokens``), as
the served model cuts it.

Splits: a file whose stem ends in ``_TRAIN``/``_VAL``/``_TEST`` goes to that split; rows of other
files are pooled and split stratified by label (seeded); with no val rows after that,
``val_fraction`` of train becomes val. Labels (``Manifest.labels``): the sorted labels of the
train split (numeric-aware, as the other classify importers). Vocabulary (``Manifest.vocab``):
SPECIALS, then the train tokens seen at least ``min_count`` times, most frequent first, at most
``max_vocab`` entries; other tokens are ``<unk>``, counted per split in
``task_params["unknown_tokens"]``.

Bad rows name file and line: a missing or empty text, a missing label, a line that is not JSON
(or not an object), a CSV/TSV row with another number of fields than the header, a label unseen
in train. ``on_invalid="fail"`` stops the import listing every one; ``"quarantine"`` writes them
to ``<out>/quarantine/`` with the reason and the raw text and label. Row ids are
``"<file stem>:<line>"``; the manifest's feature kind is ``token``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from pipeline.config import DEFAULT_MAX_LENGTH
from pipeline.data.dataset import SPECIALS, SPLITS, TOKEN_TYPE, DatasetError, Manifest, write_dataset
from pipeline.data.importers.common import (
    assign_splits,
    check_fractions,
    check_no_empty_split,
    check_on_invalid,
    label_sort_key,
    quarantine_table,
    reason_text,
    stop_import,
)
from pipeline.data.importers.sources import (
    base_name,
    check_unique_stems,
    expand,
    read_text_file,
    source_files,
    split_of,
    stem,
)
from pipeline.data.tokens import JOINERS, build_vocab, encode, token_index, tokenize, truncate_tokens
from pipeline.data.validate import Problem
from pipeline.progress import source_read

FILE_TYPES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_DELIMITERS = {"csv": ",", "tsv": "\t"}


@dataclass
class _Rows:
    """Every non-blank record of every file, in file order, with its problems (if any)."""

    ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # "file:line"
    splits: list[str | None] = field(default_factory=list)  # from the file name; None: pooled
    texts: list[str | None] = field(default_factory=list)  # as read, for the quarantine
    labels: list[str | None] = field(default_factory=list)
    tokens: list[list[str]] = field(default_factory=list)
    reasons: list[list[tuple[str, str]]] = field(default_factory=list)  # (column, reason)


def file_type_of(path: str, file_type: str) -> str:
    """csv, tsv or jsonl: `file_type` unless "auto", else from the file's extension."""
    if file_type != "auto":
        return file_type
    ext = os.path.splitext(path)[1].lower()
    if ext not in FILE_TYPES:
        raise DatasetError(f"{path}: cannot tell the file type from the extension {ext or '(none)'!r} "
                           f"(known: {', '.join(FILE_TYPES)}); set file_type (--file-type) to csv, tsv "
                           "or jsonl")
    return FILE_TYPES[ext]


def _records(text: str, kind: str, shown: str, text_column: str, label_column: str):
    """(line, text or None, label or None, problems) per non-blank record of one file's text;
    a CSV/TSV record's line is the one it starts on."""
    if kind == "jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield number, None, None, [("x", f"not valid JSON ({e.msg} at column {e.colno})")]
                continue
            if not isinstance(obj, dict):
                yield number, None, None, [("x", f"expected a JSON object, got {type(obj).__name__}")]
                continue
            yield (number, *_pair(obj.get(text_column), obj.get(label_column), text_column, label_column))
        return
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_DELIMITERS[kind])
    header = next(reader, None)
    while header is not None and not any(c.strip() for c in header):
        header = next(reader, None)  # blank lines before the header
    if header is None:
        return
    header = [c.strip() for c in header]
    missing = [c for c in (text_column, label_column) if c not in header]
    if missing:
        raise DatasetError(f"{shown}:{reader.line_num}: the header has no column(s) {missing} "
                           f"(columns: {header}); set text_column / label_column (--text-column, "
                           "--label-column)")
    at_text, at_label = header.index(text_column), header.index(label_column)
    start = reader.line_num + 1
    for fields in reader:
        number, start = start, reader.line_num + 1  # a quoted field may span lines: its first
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            yield number, None, None, [("x", f"{len(fields)} fields, but the header has {len(header)} "
                                             f"(an unquoted {'comma' if kind == 'csv' else 'tab'} "
                                             "inside a text?)")]
            continue
        yield (number, *_pair(fields[at_text], fields[at_label], text_column, label_column))


def _pair(text: Any, label: Any, text_column: str, label_column: str):
    """(text or None, label or None, problems) of one record's cells."""
    text, text_problems = _cell(text, text_column, "x")
    label, label_problems = _cell(label, label_column, "y")
    return text, label, [*text_problems, *label_problems]


def _cell(value: Any, name: str, column: str) -> tuple[str | None, list[tuple[str, str]]]:
    """A text or label cell as a string, or None with the problem (missing, empty, not scalar)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        what = "text" if column == "x" else "label"
        return None, [(column, f"missing or empty {what} ({name!r})")]
    if isinstance(value, (dict, list)) or (column == "x" and not isinstance(value, str)):
        return None, [(column, f"{name!r} is {type(value).__name__}, expected a "
                               f"{'string' if column == 'x' else 'string or number'}")]
    return (value if isinstance(value, str) else json.dumps(value)).strip(), []


def read_rows(files: list[tuple[str, str]], *, file_type: str, text_column: str, label_column: str,
          level: str, lowercase: bool) -> _Rows:
    rows = _Rows()
    for index, (shown, local) in enumerate(files, start=1):
        before = len(rows.ids)
        kind = file_type_of(local, file_type)
        text = read_text_file(local, shown)
        file_stem, file_split = stem(local), split_of(local)
        for number, value, label, reasons in _records(text, kind, shown, text_column, label_column):
            tokens = tokenize(value, level, lowercase) if value is not None else []
            if value is not None and not tokens:
                reasons.append(("x", "the text has no tokens"))
            rows.ids.append(f"{file_stem}:{number}")
            rows.sources.append(f"{shown}:{number}")
            rows.splits.append(file_split)
            rows.texts.append(value)
            rows.labels.append(label)
            rows.tokens.append(tokens)
            rows.reasons.append(reasons)
        source_read(shown, len(rows.ids) - before, index=index, files=len(files))
    return rows


def import_text_classes(
    paths: list[str] | str,
    out: str,
    *,
    name: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    on_invalid: Literal["fail", "quarantine"] = "fail",
    text_column: str = "text",
    label_column: str = "label",
    file_type: Literal["auto", "csv", "tsv", "jsonl"] = "auto",
    level: Literal["char", "word", "wordpunct"] = "char",
    lowercase: bool = False,
    min_count: int = 1,
    max_vocab: int | None = None,
    max_length: int | None = None,
    on_too_long: Literal["truncate", "reject"] = "truncate",
) -> Manifest:
    """Import labelled text files (or folders of them) into the classify dataset at ``out``.

    Returns the written Manifest. Raises DataValidationError listing every bad row (file:line,
    why) with ``on_invalid="fail"``; DatasetError for a file that cannot be read as its type.
    """
    check_fractions(val_fraction, test_fraction)
    check_on_invalid(on_invalid)
    if level not in JOINERS:
        raise ValueError(f"level must be one of {list(JOINERS)}, got {level!r}")
    if on_too_long not in ("truncate", "reject"):
        raise ValueError(f"on_too_long must be 'truncate' or 'reject', got {on_too_long!r}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 token, got {max_length}")
    if text_column == label_column:
        raise ValueError(f"text_column and label_column are both {text_column!r}")
    files = expand(paths, ("csv", "tsv", "tab", "jsonl", "ndjson"))
    check_unique_stems(files)
    rows = read_rows(files, file_type=file_type, text_column=text_column, label_column=label_column,
                 level=level, lowercase=lowercase)
    if not rows.ids:
        raise DatasetError(f"no rows in {[shown for shown, _ in files]}: the files hold no records")
    bad_label = [lab if not rs else None for lab, rs in zip(rows.labels, rows.reasons)]
    split = assign_splits(rows.splits, bad_label, val_fraction, test_fraction, seed)

    too_long = _limit_length(rows, max_length, on_too_long)
    labels = sorted({rows.labels[i] for i in np.flatnonzero(split == "train")
                     if not rows.reasons[i] and rows.labels[i] is not None}, key=label_sort_key)
    if not labels:
        raise DatasetError("no labels: the train split has no valid labelled rows")
    label_index = {label: i for i, label in enumerate(labels)}
    for i, label in enumerate(rows.labels):
        if label is not None and label not in label_index and not rows.reasons[i]:
            rows.reasons[i].append(("y", f"label {label!r} is not among the train split's labels "
                                         f"({', '.join(labels[:20])})"))
    bad = np.array([bool(r) for r in rows.reasons], dtype=bool)
    if bad.any() and on_invalid == "fail":
        problems = [Problem(str(split[i]), rows.ids[i], column, reason, rows.sources[i])
                    for i in np.flatnonzero(bad) for column, reason in rows.reasons[i]]
        stop_import(out, problems, f"{int(bad.sum())} of {len(bad)} rows are not labelled texts "
                                   f"({len(problems)} problems)",
                    "pass on_invalid='quarantine' to set these rows aside instead")
    check_no_empty_split(split, bad)

    train = np.flatnonzero((split == "train") & ~bad)
    vocab = build_vocab(Counter(t for i in train for t in rows.tokens[i]), min_count=min_count,
                        max_vocab=max_vocab)
    index = token_index(vocab)
    known = set(vocab[len(SPECIALS):])
    tables, unknown = {}, {}
    for s in SPLITS:
        take = np.flatnonzero((split == s) & ~bad)
        tables[s] = pa.table({
            "id": pa.array([rows.ids[i] for i in take], pa.string()),
            "x": pa.array([encode(rows.tokens[i], index) for i in take], TOKEN_TYPE),
            "y": pa.array([label_index[rows.labels[i]] for i in take], pa.int64()),
        })
        unknown[s] = sum(1 for i in take for t in rows.tokens[i] if t not in known)
    quarantine = None
    if bad.any():
        q = np.flatnonzero(bad)
        quarantine = quarantine_table(
            [rows.ids[i] for i in q], [str(split[i]) for i in q], [reason_text(rows.reasons[i]) for i in q],
            [rows.sources[i] for i in q], text=pa.array([rows.texts[i] for i in q], pa.string()),
            label=pa.array([rows.labels[i] for i in q], pa.string()))

    options: dict[str, Any] = {"text_column": text_column, "label_column": label_column,
                               "file_type": file_type, "level": level, "lowercase": lowercase,
                               "min_count": min_count, "max_vocab": max_vocab}
    import_params = {"format": "text-classes", **options, "val_fraction": val_fraction,
                     "test_fraction": test_fraction, "seed": seed, "on_invalid": on_invalid}
    if max_length is not None:
        import_params.update(max_length=max_length, on_too_long=on_too_long)
        if on_too_long == "truncate":
            import_params["truncated"] = {s: int(((split == s) & too_long & ~bad).sum()) for s in SPLITS}
    return write_dataset(
        out, tables, name=name or base_name(files[0][1]), task="classify", labels=labels,
        sources=source_files(files), quarantine=quarantine, feature_kind="token", vocab=vocab,
        import_params=import_params,
        # what the served model needs to split a raw `text` exactly as this import did
        task_params={"input": "text", "level": level, "lowercase": lowercase, "joiner": JOINERS[level],
                     "max_length": max_length, "unknown_tokens": unknown},
    )


def _limit_length(rows: _Rows, max_length: int | None, on_too_long: str) -> np.ndarray:
    """Cut texts longer than ``max_length`` tokens (truncate) or mark them bad (reject); which
    rows were too long. Without a limit, a text over ``DEFAULT_MAX_LENGTH`` stops the import."""
    lengths = np.array([len(t) for t in rows.tokens], dtype=np.int64)
    if max_length is None:
        if len(lengths) and lengths.max() > DEFAULT_MAX_LENGTH:
            r = int(np.argmax(lengths))
            raise DatasetError(
                f"{rows.sources[r]}: the text has {lengths[r]} tokens, more than data.max_length's "
                f"default {DEFAULT_MAX_LENGTH}; set data.max_length (--max-length) with "
                "data.on_too_long truncate or reject (--on-too-long)")
        return np.zeros(len(lengths), dtype=bool)
    too_long = lengths > max_length
    for r in np.flatnonzero(too_long):
        if on_too_long == "truncate":
            rows.tokens[r] = truncate_tokens(rows.tokens[r], max_length)
        else:
            rows.reasons[r].append(("x", f"{lengths[r]} tokens, longer than max_length {max_length} "
                                         f"(on_too_long='truncate' keeps the first {max_length})"))
    return too_long
