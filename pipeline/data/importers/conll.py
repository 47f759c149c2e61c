"""CoNLL-style column files -> the canonical ``tag`` dataset (one label per token).

The format (CoNLL-2003, WNUT, most NER and chunking corpora)::

    -DOCSTART- -X- -X- O          <- document separators are skipped

    EU NNP B-NP B-ORG             <- one token per line, whitespace-separated columns
    rejects VBZ B-VP O
    German JJ B-NP B-MISC
    .  .  O  O
                                  <- a blank (or whitespace-only) line ends a sentence

``token_column`` and ``tag_column`` pick the columns (negative counts from the end). Every line
of a file must have as many columns as its first token line. Tags must be ``O`` or a prefix
``B-``, ``I-``, ``E-``, ``S-`` followed by an entity type (IOB1, IOB2 and IOBES all qualify; an
``I-`` right after ``O`` is legal IOB1). A line that breaks this is a problem of its sentence:
``on_invalid="fail"`` raises naming every file:line, ``"quarantine"`` sets the sentence aside in
``<out>/quarantine`` with the reason.

Splits: a file named ``*_TRAIN``/``*_VAL``/``*_TEST`` (``-`` or ``.`` also separate), or
``train``/``dev``/``test`` files like CoNLL-2003's ``eng.train``, ``eng.testa`` (val) and
``eng.testb`` (test), goes to that split; sentences of other files are pooled and split at
random by ``test_fraction``/``val_fraction`` (seeded). If no val split results, ``val_fraction``
of train is carved out as val.

What is written (``pipeline.data.dataset``): ``x`` word ids (``Manifest.vocab``: SPECIALS, then every train
token seen at least ``min_count`` times, most frequent first; others are ``<unk>``), ``y`` tag
ids (``Manifest.labels``: ``O`` first, then the other tags of every split, sorted), and
``chars``: per token the ids of its characters (original case) in ``task_params["char_vocab"]``
(SPECIALS, then every character of the train tokens, most frequent first).
Row ids are ``"<file name>:<0-based sentence index>"``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from pipeline.config import BUILTIN_SCHEME
from pipeline.data.dataset import SPLITS, UNK_ID, DatasetError, Manifest, schema_for, write_dataset
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
    as_list,
    base_name,
    named_once,
    resolve_source,
    source_files,
    split_of,
)
from pipeline.data.tokens import build_vocab
from pipeline.data.validate import Problem
from pipeline.progress import source_read

DOCSTART = "-DOCSTART-"
# O, or B/I/E/S + "-" + a non-empty entity type.
TAG_PATTERN = re.compile(r"^(?:O|[BIES]-\S+)$")
# Name parts that pick a split beyond *_TRAIN/_VAL/_TEST (CoNLL-2003: testa is dev, testb test).
_SPLIT_PARTS = {"train": "train", "dev": "val", "devel": "val", "val": "val", "valid": "val",
                "validation": "val", "testa": "val", "test": "test", "testb": "test"}
CHARS_TYPE = pa.list_(pa.list_(pa.int32()))


@dataclass
class Sentence:
    """One sentence as read: raw tokens and tags, where it came from, and what is wrong with it."""

    id: str
    tokens: list[str]
    tags: list[str]
    source: str  # "file:first line"
    split: str | None  # from the file name; None: pooled
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (column, reason, file:line)


def conll_split_of(path: str) -> str | None:
    """The split a file's name gives: ``X_TRAIN.txt`` -> "train", ``eng.testa`` -> "val",
    ``eng.testb`` / ``test.txt`` -> "test", ``dev.conll`` -> "val"; None when it names none."""
    named = split_of(path)
    if named:
        return named
    parts = re.split(r"[._\-]", os.path.basename(path).lower())
    found = [_SPLIT_PARTS[p] for p in parts if p in _SPLIT_PARTS]
    return found[-1] if found else None


def _expand(paths: list[str] | str) -> list[tuple[str, str]]:
    """(name shown in errors and lineage, local file) per source; folders give every file in
    them (recursively, name order, hidden files skipped)."""
    out: list[tuple[str, str]] = []
    for p in as_list(paths):
        local = resolve_source(p)
        if os.path.isdir(local):
            found = []
            for folder, subfolders, names in os.walk(local):
                subfolders[:] = [d for d in subfolders if not d.startswith(".")]
                found.extend(os.path.join(folder, f) for f in names if not f.startswith("."))
            found.sort()
            if not found:
                raise FileNotFoundError(f"no files in {p} ({local})")
            out.extend((f, f) for f in found)
        else:
            out.append((p if p.startswith(BUILTIN_SCHEME) else local, local))
    out = named_once(out)
    names = Counter(os.path.basename(local) for _, local in out)
    clash = [n for n, k in names.items() if k > 1]
    if clash:
        raise DatasetError(f"two source files share the name(s) {clash}; row ids would collide")
    return out


def read_conll(shown: str, local: str, *, token_column: int = 0, tag_column: int = -1
               ) -> list[Sentence]:
    """Every sentence of one CoNLL file, with the problems of its lines (1-based numbers)."""
    base = os.path.basename(local)
    split = conll_split_of(local)
    sentences: list[Sentence] = []
    current: Sentence | None = None
    width: tuple[int, int] | None = None  # (column count, line it was set on)

    def close() -> None:
        nonlocal current
        if current is not None:
            sentences.append(current)
        current = None

    with open(local, encoding="utf-8") as fh:
        number = 0
        try:
            for number, line in enumerate(fh, start=1):
                columns = line.split()
                if not columns:
                    close()
                    continue
                if columns[0] == DOCSTART:
                    close()
                    continue
                if current is None:
                    current = Sentence(f"{base}:{len(sentences)}", [], [], f"{shown}:{number}", split)
                where = f"{shown}:{number}"
                if width is None:
                    width = (len(columns), number)
                    for what, index in (("token_column", token_column), ("tag_column", tag_column)):
                        if not -len(columns) <= index < len(columns):
                            raise DatasetError(
                                f"{where}: {what}={index}, but the line has {len(columns)} "
                                f"columns (expected an index in {-len(columns)}..{len(columns) - 1})"
                            )
                if len(columns) != width[0]:
                    current.problems.append((
                        "columns", f"line {number} has {len(columns)} whitespace-separated "
                        f"columns, expected {width[0]} (as on line {width[1]})", where))
                    current.tokens.append(line.strip())  # kept as read, for the quarantine
                    current.tags.append("")
                    continue
                token, tag = columns[token_column], columns[tag_column]
                if not TAG_PATTERN.match(tag):
                    current.problems.append((
                        "y", f"line {number}: tag {tag!r} is not O or B-/I-/E-/S- followed by "
                        "an entity type", where))
                current.tokens.append(token)
                current.tags.append(tag)
        except UnicodeDecodeError as e:
            raise DatasetError(f"{shown}:{number + 1}: not valid UTF-8 ({e.reason})") from None
    close()
    return sentences


def tag_sort_key(tag: str) -> tuple:
    """``O`` first, then by entity type, then by prefix (B, I, E, S)."""
    if tag == "O":
        return (0, "", "")
    prefix, _, kind = tag.partition("-")
    return (1, kind, prefix)


def char_ids(token: str, char_index: dict[str, int]) -> list[int]:
    """Ids of a token's characters; characters outside the vocabulary are ``<unk>``."""
    return [char_index.get(c, UNK_ID) for c in token]


def word_ids(tokens: list[str], word_index: dict[str, int], *, lowercase: bool) -> list[int]:
    """Ids of raw tokens (lowercased first when the dataset was); unknown words are ``<unk>``."""
    return [word_index.get(t.lower() if lowercase else t, UNK_ID) for t in tokens]


def import_conll(
    paths: list[str] | str,
    out: str,
    *,
    name: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    on_invalid: Literal["fail", "quarantine"] = "fail",
    token_column: int = 0,
    tag_column: int = -1,
    lowercase: bool = False,
    min_count: int = 1,
    max_vocab: int | None = None,
) -> Manifest:
    """Import CoNLL column files (or folders of them) into the ``tag`` dataset at ``out``.

    ``lowercase``: words are lowercased before the vocabulary (characters keep their case).
    ``min_count``: train tokens seen fewer times become ``<unk>`` (so the model learns it).
    ``max_vocab``: at most this many vocabulary entries, the 4 specials included.
    """
    check_on_invalid(on_invalid)
    check_fractions(val_fraction, test_fraction)
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    files = _expand(paths)
    sentences = []
    for index, (shown, local) in enumerate(files, start=1):
        read = read_conll(shown, local, token_column=token_column, tag_column=tag_column)
        source_read(shown, len(read), index=index, files=len(files), unit="sentences")
        sentences += read
    if not sentences:
        raise DatasetError(f"no sentences in {[shown for shown, _ in files]}")
    # one pool, not stratified: a plain seeded split of the sentences
    split = assign_splits([s.split for s in sentences], None, val_fraction, test_fraction, seed)

    bad = np.array([bool(s.problems) for s in sentences])
    if bad.any() and on_invalid == "fail":
        problems = [Problem(str(split[i]), s.id, column, reason, where)
                    for i, s in enumerate(sentences) for column, reason, where in s.problems]
        stop_import(out, problems, f"{int(bad.sum())} of {len(sentences)} sentences have malformed lines "
                                   f"({len(problems)} problems)",
                    "pass on_invalid='quarantine' to set these sentences aside instead")

    good = [i for i in range(len(sentences)) if not bad[i]]
    train = [sentences[i] for i in good if split[i] == "train"]
    vocab = build_vocab(Counter(t.lower() if lowercase else t for s in train for t in s.tokens),
                        min_count=min_count, max_vocab=max_vocab)
    char_vocab = build_vocab(Counter(c for s in train for t in s.tokens for c in t))
    labels = sorted({t for i in good for t in sentences[i].tags}, key=tag_sort_key)
    if "O" not in labels:
        labels.insert(0, "O")
    word_index = {t: i for i, t in enumerate(vocab)}
    char_index = {c: i for i, c in enumerate(char_vocab)}
    tag_index = {t: i for i, t in enumerate(labels)}

    check_no_empty_split(split, bad, unit="sentences", names="*_TRAIN / *_VAL / *_TEST (or train/dev/test)")
    tables: dict[str, pa.Table] = {}
    for s in SPLITS:
        rows = [sentences[i] for i in good if split[i] == s]
        tables[s] = pa.Table.from_arrays(
            [pa.array([r.id for r in rows], pa.string()),
             pa.array([word_ids(r.tokens, word_index, lowercase=lowercase) for r in rows],
                      pa.list_(pa.int32())),
             pa.array([[tag_index[t] for t in r.tags] for r in rows], pa.list_(pa.int64())),
             pa.array([[char_ids(t, char_index) for t in r.tokens] for r in rows], CHARS_TYPE)],
            schema=schema_for("tag", "token", ["chars"]),
        )

    quarantine = None
    if bad.any():
        q = [i for i in range(len(sentences)) if bad[i]]
        quarantine = quarantine_table(
            [sentences[i].id for i in q], [str(split[i]) for i in q],
            [reason_text([(c, r) for c, r, _ in sentences[i].problems]) for i in q],
            [sentences[i].source for i in q],
            tokens=pa.array([sentences[i].tokens for i in q], pa.list_(pa.string())),
            tags=pa.array([sentences[i].tags for i in q], pa.list_(pa.string())))

    scheme = "IOBES" if any(t[:2] in ("E-", "S-") for t in labels) else "IOB"
    options: dict[str, Any] = {"token_column": token_column, "tag_column": tag_column,
                               "lowercase": lowercase, "min_count": min_count,
                               "max_vocab": max_vocab}
    return write_dataset(
        out, tables, name=name or base_name(files[0][1]), task="tag", labels=labels,
        sources=source_files(files), quarantine=quarantine, feature_kind="token", vocab=vocab,
        import_params={"format": "conll", **options, "val_fraction": val_fraction,
                       "test_fraction": test_fraction, "seed": seed, "on_invalid": on_invalid},
        task_params={**options, "char_vocab": char_vocab, "scheme": scheme},
    )
