"""Plain-text corpora -> the canonical lm dataset: a vocabulary and one contiguous token stream.

The text of every source file (read as strict UTF-8, files joined in the given order with a
newline between them when a file does not end in one) becomes one token stream:

* ``level="char"``: every character is a token, newlines included;
* ``level="word"``: words are the runs of non-whitespace; each newline is kept as the token
  ``"\\n"`` so that generated text has lines (other whitespace only separates words).

The stream is cut into three contiguous blocks, train first, then val, then test
(``val_fraction`` / ``test_fraction`` of the tokens; never shuffled, so no text of the val or
test block is seen in training). The vocabulary comes from the train block only (``min_count``,
``max_vocab``, most frequent first, ties by token), after ``SPECIALS``; tokens unseen in train
become ``<unk>`` and are counted per split in ``task_params["unknown_tokens"]``.

Each split is stored as consecutive rows of ``chunk_length`` token ids (the last row shorter)
with ids ``"<split>:<row number>"`` in stream order, zero-padded to one width, so ordering the
rows by id rebuilds the stream (``stream_from_rows``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from pipeline.data.contract import (
    SPECIALS,
    SPLITS,
    TOKEN_TYPE,
    UNK_ID,
    DatasetError,
    Manifest,
    read_text_file,
    sources_for,
    write_dataset,
)
from pipeline.data.importers import _base_name, _check_fractions, _expand
from pipeline.data.vocab import build_vocab
from pipeline.progress import source_read

NEWLINE = "\n"
_WORD = re.compile(r"\n|[^\s]+")
MIN_SPLIT_TOKENS = 2  # one input token and its next-token target


def tokenize(text: str, level: str) -> list[str]:
    """Characters (every one, newlines included) or words plus newline tokens."""
    if level == "char":
        return list(text)
    if level == "word":
        return _WORD.findall(text)
    raise ValueError(f"level must be 'char' or 'word', got {level!r}")


def join_tokens(tokens: list[str], level: str, *, after: str = "") -> str:
    """The text of `tokens`: characters concatenated; words joined by one space, with no space
    next to a newline token. `after` is the text the tokens follow (a prompt), so the first word
    gets its separating space when the prompt does not end in whitespace."""
    if level == "char":
        return "".join(tokens)
    parts: list[str] = []
    previous = after[-1:] if after else ""
    for token in tokens:
        if token != NEWLINE and previous and not previous.isspace():
            parts.append(" ")
        parts.append(token)
        previous = token[-1:]
    return "".join(parts)


def read_text(path: str, shown: str) -> str:
    """A file's text as strict UTF-8 (`contract.read_text_file`: a bad byte is named with its file,
    line and byte offset)."""
    return read_text_file(path, shown)


def encode(tokens: list[str], index: dict[str, int]) -> np.ndarray:
    """Token strings -> int32 ids; tokens not in `index` (and the special strings) -> UNK_ID."""
    return np.fromiter((index.get(t, UNK_ID) for t in tokens), dtype=np.int32, count=len(tokens))


def token_index(vocab: list[str]) -> dict[str, int]:
    """Token -> id for encoding text; the special strings map to <unk> (never to padding)."""
    return {t: (i if i >= len(SPECIALS) else UNK_ID) for i, t in enumerate(vocab)}


def stream_rows(ids: np.ndarray, split: str, chunk_length: int) -> pa.Table:
    """One split's stream as rows of `chunk_length` ids, ids `<split>:<row>` in stream order."""
    starts = list(range(0, len(ids), chunk_length))
    width = max(6, len(str(len(starts) - 1)))
    offsets = np.array([*starts, len(ids)], dtype=np.int32)
    x = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids, pa.int32())).cast(TOKEN_TYPE)
    row_ids = pa.array([f"{split}:{k:0{width}d}" for k in range(len(starts))], pa.string())
    return pa.Table.from_arrays([row_ids, x], names=["id", "x"])


def stream_from_rows(table: pa.Table) -> np.ndarray:
    """Rebuild a split's token stream (int64) from its rows, in any order: ordered by row number."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    numbers = [int(i.rsplit(":", 1)[1]) for i in table.column("id").to_pylist()]
    x = table.column("x").combine_chunks().take(pa.array(np.argsort(numbers, kind="stable")))
    return x.flatten().to_numpy(zero_copy_only=False).astype(np.int64)


def import_text(
    paths: list[str] | str,
    out: str,
    *,
    name: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    on_invalid: Literal["fail", "quarantine"] = "fail",
    level: Literal["char", "word"] = "char",
    lowercase: bool = False,
    min_count: int = 1,
    max_vocab: int | None = None,
    chunk_length: int = 1024,
) -> Manifest:
    """Import plain-text files (or folders of ``*.txt``) into the lm dataset at ``out``.

    ``seed`` and ``on_invalid`` are accepted for the common importer interface: the split is
    contiguous (no randomness) and every character of valid UTF-8 is a valid token, so no row can
    break the contract. Errors (DatasetError) name the file: undecodable bytes (byte offset and
    line), an empty file, or a split with fewer than ``MIN_SPLIT_TOKENS`` tokens (with the sizes).
    """
    if level not in ("char", "word"):
        raise ValueError(f"level must be 'char' or 'word', got {level!r}")
    if chunk_length < 2:
        raise ValueError(f"chunk_length must be >= 2 tokens, got {chunk_length}")
    _check_fractions(val_fraction, test_fraction)
    files = _expand(paths, "txt")
    shown_names = ", ".join(shown for shown, _ in files)

    tokens: list[str] = []
    for index, (shown, local) in enumerate(files, start=1):
        text = read_text(local, shown)
        if lowercase:
            text = text.lower()
        file_tokens = tokenize(text, level)
        if not file_tokens:
            what = "0 bytes" if not text else f"{len(text)} characters, all whitespace"
            raise DatasetError(f"{shown}: the file is empty ({what}); an lm corpus needs text")
        if tokens and tokens[-1] != NEWLINE:
            tokens.append(NEWLINE)  # files never run into each other mid-line
        tokens.extend(file_tokens)
        source_read(shown, len(file_tokens), index=index, files=len(files), unit=f"{level} tokens")

    # Contiguous blocks: train, then val, then test.
    n = len(tokens)
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    n_train = n - n_val - n_test
    bounds = {"train": (0, n_train), "val": (n_train, n - n_test), "test": (n - n_test, n)}
    sizes = {s: b - a for s, (a, b) in bounds.items()}
    short = [s for s in SPLITS if sizes[s] < MIN_SPLIT_TOKENS]
    if short:
        raise DatasetError(
            f"{shown_names}: {n} {level} tokens give split sizes {sizes} (val_fraction={val_fraction}, "
            f"test_fraction={test_fraction}); split(s) {short} need at least {MIN_SPLIT_TOKENS} tokens "
            "each. Use a longer text or change the fractions."
        )
    pieces = {s: tokens[a:b] for s, (a, b) in bounds.items()}

    vocab = build_vocab(pieces["train"], min_count=min_count, max_vocab=max_vocab)
    index = token_index(vocab)
    known = set(vocab[len(SPECIALS):])
    tables, unknown, characters = {}, {}, {}
    for s in SPLITS:
        ids = encode(pieces[s], index)
        tables[s] = stream_rows(ids, s, chunk_length)
        unknown[s] = sum(1 for t in pieces[s] if t not in known)
        characters[s] = len(join_tokens(pieces[s], level))

    sources = [src.model_copy(update={"path": shown})
               for src, (shown, _) in zip(sources_for([f for _, f in files]), files)]
    task_params: dict[str, Any] = {
        "level": level,
        "lowercase": lowercase,
        "join": "" if level == "char" else " ",  # between tokens when decoding (none next to "\n")
        "tokens": sizes,
        "characters": characters,  # of each split's text: bits per character on word level
        "unknown_tokens": unknown,  # tokens stored as <unk> (unseen in train, or cut by the vocab)
        "chunk_length": chunk_length,
    }
    return write_dataset(
        out, tables, name=name or _base_name(files[0][1]), task="lm", labels=[], sources=sources,
        import_params={
            "format": "text", "level": level, "lowercase": lowercase, "min_count": min_count,
            "max_vocab": max_vocab, "chunk_length": chunk_length, "val_fraction": val_fraction,
            "test_fraction": test_fraction, "seed": seed, "on_invalid": on_invalid,
        },
        feature_kind="token", vocab=vocab, task_params=task_params,
    )
