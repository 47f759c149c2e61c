"""Tab-separated source/target pairs -> a seq2seq dataset (``recur data import --format tsv``).

Every non-blank line of a source file is one example: tab-separated columns, the source text in
column ``source_column`` and the target text in ``target_column`` (0-based; negative counts from
the end). Both texts are stripped of surrounding whitespace, optionally lowercased, and split into
tokens: characters (``level="char"``) or whitespace-separated words (``level="word"``), by
``pipeline.data.tokens.tokenize`` as the served model splits them.
Blank lines are not examples and are skipped.

Splits: a file whose stem ends in ``_TRAIN``/``_VAL``/``_TEST`` goes to that split; rows of the
other files are shuffled with ``seed`` and split by ``test_fraction`` / ``val_fraction``; with
no val rows after that, ``val_fraction`` of train becomes val. Within a split rows keep file order.

Vocabularies: one for sources (``Manifest.vocab``) and one for targets (``target_vocab``), both
built from the TRAIN split only, ``SPECIALS`` first, then tokens by descending count (ties in
code-point order). Tokens seen fewer than ``min_count`` times in train, beyond ``max_vocab``
(total size, specials included), or absent from train become ``<unk>``.

Contract: ``x`` = source token ids, ``y`` = target token ids WITHOUT <bos>/<eos> (the task adds
them). Row ids are ``<file stem>:<line number>``. A malformed line (too few columns, or another
number of columns than the file's first line, as a tab inside a text gives; an empty source or
target; bytes that are not UTF-8) fails the import naming file, line and what was
expected, or, with ``on_invalid="quarantine"``, is written to ``<out>/quarantine/`` with its
reason and raw text. Same inputs and parameters give byte-identical Parquet and the same hash.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa

from pipeline.data.dataset import SPLITS, TOKEN_TYPE, DatasetError, Manifest, write_dataset
from pipeline.data.importers.common import (
    assign_splits,
    check_fractions,
    check_no_empty_split,
    check_on_invalid,
    quarantine_table,
    reason_text,
    stop_import,
)
from pipeline.data.importers.sources import (
    base_name,
    check_unique_stems,
    expand,
    source_files,
    split_of,
    stem,
)
from pipeline.data.tokens import JOINERS, build_vocab, encode, tokenize
from pipeline.data.validate import Problem
from pipeline.progress import source_read


def import_pairs(
    paths: list[str] | str,
    out: str,
    *,
    name: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    on_invalid: Literal["fail", "quarantine"] = "fail",
    source_column: int = 0,
    target_column: int = 1,
    level: Literal["char", "word"] = "char",
    lowercase: bool = False,
    min_count: int = 1,
    max_vocab: int | None = None,
) -> Manifest:
    """Import tab-separated pair files (or folders of ``*.tsv``, or ``builtin://...``) into ``out``.

    Returns the written dataset's Manifest. Raises DataValidationError listing every malformed
    line (file:line, what was expected) when ``on_invalid="fail"``.
    """
    check_fractions(val_fraction, test_fraction)
    check_on_invalid(on_invalid)
    if level not in JOINERS:
        raise ValueError(f"level must be 'char' or 'word', got {level!r}")
    if source_column == target_column:
        raise ValueError(f"source_column and target_column are both {source_column}; "
                         "they must name different columns")
    files = expand(paths, "tsv")
    check_unique_stems(files)

    rows = _read_rows(files, source_column=source_column, target_column=target_column,
                      level=level, lowercase=lowercase)
    if not rows.ids:
        raise DatasetError(f"no rows in {[shown for shown, _ in files]} (every line is blank)")
    # one stratum: a plain random split of the pooled rows
    split = assign_splits(rows.splits, None, val_fraction, test_fraction, seed)
    bad = np.array([bool(r) for r in rows.reasons], dtype=bool)
    problems = [Problem(str(split[i]), rows.ids[i], column, reason, rows.sources[i])
                for i in np.flatnonzero(bad) for column, reason in rows.reasons[i]]
    if problems and on_invalid == "fail":
        stop_import(out, problems, f"{int(bad.sum())} of {len(bad)} lines are not source<TAB>target pairs "
                                   f"({len(problems)} problems)",
                    "pass on_invalid='quarantine' to set these lines aside instead")

    train = np.flatnonzero((split == "train") & ~bad)
    vocab = build_vocab((t for i in train for t in rows.source_tokens[i]), min_count=min_count,
                        max_vocab=max_vocab)
    target_vocab = build_vocab((t for i in train for t in rows.target_tokens[i]), min_count=min_count,
                               max_vocab=max_vocab)
    source_index = {t: i for i, t in enumerate(vocab)}
    target_index = {t: i for i, t in enumerate(target_vocab)}

    check_no_empty_split(split, bad)
    tables = {}
    for s in SPLITS:
        take = np.flatnonzero((split == s) & ~bad)
        tables[s] = pa.table({
            "id": pa.array([rows.ids[i] for i in take], pa.string()),
            "x": pa.array([encode(rows.source_tokens[i], source_index) for i in take], TOKEN_TYPE),
            "y": pa.array([encode(rows.target_tokens[i], target_index) for i in take], TOKEN_TYPE),
        })
    quarantine = None
    if bad.any():
        q = np.flatnonzero(bad)
        quarantine = quarantine_table(
            [rows.ids[i] for i in q], [str(split[i]) for i in q], [reason_text(rows.reasons[i]) for i in q],
            [rows.sources[i] for i in q], line=pa.array([rows.lines[i] for i in q], pa.string()))

    return write_dataset(
        out, tables, name=name or base_name(files[0][1]), task="seq2seq", labels=[],
        sources=source_files(files), quarantine=quarantine, feature_kind="token", vocab=vocab,
        target_vocab=target_vocab,
        import_params={
            "format": "tsv", "source_column": source_column, "target_column": target_column,
            "level": level, "lowercase": lowercase, "min_count": min_count, "max_vocab": max_vocab,
            "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed,
            "on_invalid": on_invalid,
        },
        task_params={"level": level, "lowercase": lowercase, "joiner": JOINERS[level],
                     "columns": {"source": source_column, "target": target_column}},
    )


class _PairRows:
    """Every non-blank line of every file, in file order, with its problems (if any)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.sources: list[str] = []  # "file:line"
        self.lines: list[str] = []  # the raw line, for quarantine
        self.splits: list[str | None] = []  # from the file name; None: pooled
        self.source_tokens: list[list[str]] = []
        self.target_tokens: list[list[str]] = []
        self.reasons: list[list[tuple[str, str]]] = []  # (column, reason); empty when valid


def _read_rows(files: list[tuple[str, str]], *, source_column: int, target_column: int,
               level: str, lowercase: bool) -> _PairRows:
    rows = _PairRows()
    need = max(source_column if source_column >= 0 else -source_column - 1,
               target_column if target_column >= 0 else -target_column - 1) + 1
    for index, (shown, local) in enumerate(files, start=1):
        before = len(rows.ids)
        file_stem, file_split = stem(local), split_of(local)
        width: tuple[int, int] | None = None  # (columns, line) of the file's first pair
        with open(local, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                reasons: list[tuple[str, str]] = []
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    reasons.append(("x", f"line is not valid UTF-8 ({e.reason} at byte {e.start})"))
                if not line.strip():
                    continue  # blank lines separate nothing and hold no example
                columns = line.split("\t")
                source_tokens: list[str] = []
                target_tokens: list[str] = []
                width = width or (len(columns), number)
                if len(columns) != width[0] and len(columns) >= need:
                    # a tab inside a text (or a column lost): reading on would cut a text short
                    reasons.append(("x", f"{len(columns)} tab-separated columns, but line {width[1]} has "
                                         f"{width[0]}; every line of a file needs the same columns "
                                         "(a tab inside a text?)"))
                elif len(columns) < need:
                    reasons.append(("x", f"{len(columns)} tab-separated column(s); expected at least "
                                         f"{need} (source in column {source_column}, target in "
                                         f"column {target_column})"))
                else:
                    source_tokens = tokenize(columns[source_column], level, lowercase)
                    target_tokens = tokenize(columns[target_column], level, lowercase)
                    if not source_tokens:
                        reasons.append(("x", f"empty source text (column {source_column})"))
                    if not target_tokens:
                        reasons.append(("y", f"empty target text (column {target_column})"))
                rows.ids.append(f"{file_stem}:{number}")
                rows.sources.append(f"{shown}:{number}")
                rows.lines.append(line)
                rows.splits.append(file_split)
                rows.source_tokens.append(source_tokens)
                rows.target_tokens.append(target_tokens)
                rows.reasons.append(reasons)
        source_read(shown, len(rows.ids) - before, index=index, files=len(files))
    return rows
