"""Tab-separated source/target pairs -> a seq2seq dataset (``recur data import --format tsv``).

Every non-blank line of a source file is one example: tab-separated columns, the source text in
column ``source_column`` and the target text in ``target_column`` (0-based; negative counts from
the end). Both texts are stripped of surrounding whitespace, optionally lowercased, and split into
tokens: characters (``level="char"``) or whitespace-separated words (``level="word"``).
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

import re
from collections import Counter
from collections.abc import Iterable
from typing import Literal

import numpy as np
import pyarrow as pa

from pipeline.data.contract import (
    SPLITS,
    TOKEN_TYPE,
    UNK,
    UNK_ID,
    DatasetError,
    Manifest,
    sources_for,
    write_dataset,
)
from pipeline.data.importers import (
    _base_name,
    _check_fractions,
    _expand,
    _stem,
    _stratified,
    split_of,
)
from pipeline.data.validate import DataValidationError, Problem
from pipeline.data.vocab import build_vocab
from pipeline.progress import source_read

JOINERS = {"char": "", "word": " "}  # how tokens of each level join back into text
# Characters are single code points, except a literal "<unk>", which stands for the unknown token
# (so text decoded from ids with unknown tokens reads back to the same ids).
_CHAR_TOKENS = re.compile(re.escape(UNK) + "|.", re.DOTALL)


def tokenize(text: str, level: str, lowercase: bool = False) -> list[str]:
    """Text -> tokens, exactly as the importer and the served model split it.

    Surrounding whitespace is stripped; `level` "char" gives code points, "word" gives
    whitespace-separated words.
    """
    if level not in JOINERS:
        raise ValueError(f"level must be 'char' or 'word', got {level!r}")
    text = text.strip()
    if lowercase:
        text = text.lower()
    return _CHAR_TOKENS.findall(text) if level == "char" else text.split()


def detokenize(tokens: Iterable[str], level: str) -> str:
    """Tokens -> text (characters joined with "", words with " ")."""
    return JOINERS[level].join(tokens)


def encode(tokens: list[str], index: dict[str, int]) -> list[int]:
    """Tokens -> ids; anything not in the vocabulary is <unk>."""
    return [index.get(token, UNK_ID) for token in tokens]


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
    _check_fractions(val_fraction, test_fraction)
    if on_invalid not in ("fail", "quarantine"):
        raise ValueError(f"on_invalid must be 'fail' or 'quarantine', got {on_invalid!r}")
    if level not in JOINERS:
        raise ValueError(f"level must be 'char' or 'word', got {level!r}")
    if source_column == target_column:
        raise ValueError(f"source_column and target_column are both {source_column}; "
                         "they must name different columns")
    files = _expand(paths, "tsv")
    stems = Counter(_stem(f) for _, f in files)
    clash = [s for s, k in stems.items() if k > 1]
    if clash:
        raise DatasetError(f"two source files share the stem(s) {clash}; row ids would collide")

    rows = _read_rows(files, source_column=source_column, target_column=target_column,
                      level=level, lowercase=lowercase)
    if not rows.ids:
        raise DatasetError(f"no rows in {[shown for shown, _ in files]} (every line is blank)")
    split = _assign_splits(rows.splits, val_fraction, test_fraction, seed)
    bad = np.array([bool(r) for r in rows.reasons], dtype=bool)
    problems = [Problem(str(split[i]), rows.ids[i], column, reason, rows.sources[i])
                for i in np.flatnonzero(bad) for column, reason in rows.reasons[i]]
    if problems and on_invalid == "fail":
        raise DataValidationError(
            problems,
            header=f"import into {out} stopped: {int(bad.sum())} of {len(bad)} lines are not "
                   f"source<TAB>target pairs ({len(problems)} problems); nothing was written",
            hint="pass on_invalid='quarantine' to set these lines aside instead",
        )

    train = np.flatnonzero((split == "train") & ~bad)
    vocab = build_vocab((t for i in train for t in rows.source_tokens[i]), min_count=min_count,
                        max_vocab=max_vocab)
    target_vocab = build_vocab((t for i in train for t in rows.target_tokens[i]), min_count=min_count,
                               max_vocab=max_vocab)
    source_index = {t: i for i, t in enumerate(vocab)}
    target_index = {t: i for i, t in enumerate(target_vocab)}

    tables, counts = {}, {}
    for s in SPLITS:
        take = np.flatnonzero((split == s) & ~bad)
        counts[s] = len(take)
        tables[s] = pa.table({
            "id": pa.array([rows.ids[i] for i in take], pa.string()),
            "x": pa.array([encode(rows.source_tokens[i], source_index) for i in take], TOKEN_TYPE),
            "y": pa.array([encode(rows.target_tokens[i], target_index) for i in take], TOKEN_TYPE),
        })
    empty = [s for s in SPLITS if not counts[s]]
    if empty:
        raise DatasetError(
            f"split(s) {empty} would be empty (valid rows per split: {counts}); name source files "
            "*_TRAIN / *_VAL / *_TEST, or raise val_fraction / test_fraction, or add rows"
        )

    quarantine = None
    if bad.any():
        q = np.flatnonzero(bad)
        quarantine = pa.table({
            "id": pa.array([rows.ids[i] for i in q], pa.string()),
            "split": pa.array([str(split[i]) for i in q], pa.string()),
            "reason": pa.array(["; ".join(f"{c}: {r}" for c, r in rows.reasons[i]) for i in q],
                               pa.string()),
            "source": pa.array([rows.sources[i] for i in q], pa.string()),
            "line": pa.array([rows.lines[i] for i in q], pa.string()),
        })

    sources = [s.model_copy(update={"path": shown})
               for s, (shown, _) in zip(sources_for([f for _, f in files]), files)]
    return write_dataset(
        out, tables, name=name or _base_name(files[0][1]), task="seq2seq", labels=[],
        sources=sources, quarantine=quarantine, feature_kind="token", vocab=vocab,
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
        stem, file_split = _stem(local), split_of(local)
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
                rows.ids.append(f"{stem}:{number}")
                rows.sources.append(f"{shown}:{number}")
                rows.lines.append(line)
                rows.splits.append(file_split)
                rows.source_tokens.append(source_tokens)
                rows.target_tokens.append(target_tokens)
                rows.reasons.append(reasons)
        source_read(shown, len(rows.ids) - before, index=index, files=len(files))
    return rows


def _assign_splits(file_splits: list[str | None], val_fraction: float, test_fraction: float,
                   seed: int) -> np.ndarray:
    """Split per row: the file's split, else a seeded random split of the pooled rows by the
    fractions; val carved from train by `val_fraction` when there is none yet."""
    split = np.array([s or "" for s in file_splits], dtype=object)
    no_labels: list[str | None] = [None] * len(split)  # one stratum: a plain random split
    pooled = np.flatnonzero(split == "")
    if len(pooled):
        test, val, train = _stratified(pooled, no_labels, [test_fraction, val_fraction], seed)
        split[test], split[val], split[train] = "test", "val", "train"
    if not (split == "val").any():
        val, _ = _stratified(np.flatnonzero(split == "train"), no_labels, [val_fraction], seed)
        split[val] = "val"
    return split
