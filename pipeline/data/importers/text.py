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
rows by id rebuilds the stream (``tokens.stream_from_rows``). Tokenizing: ``pipeline.data.tokens``.
"""

from __future__ import annotations

from typing import Any, Literal

from pipeline.data.dataset import SPECIALS, SPLITS, DatasetError, Manifest, write_dataset
from pipeline.data.importers.common import check_fractions
from pipeline.data.importers.sources import base_name, expand, read_text_file, source_files
from pipeline.data.tokens import (
    NEWLINE,
    build_vocab,
    encode_corpus,
    join_tokens,
    stream_rows,
    token_index,
    tokenize_corpus,
)
from pipeline.progress import source_read

MIN_SPLIT_TOKENS = 2  # one input token and its next-token target


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
    check_fractions(val_fraction, test_fraction)
    files = expand(paths, "txt")
    shown_names = ", ".join(shown for shown, _ in files)

    tokens: list[str] = []
    for index, (shown, local) in enumerate(files, start=1):
        text = read_text_file(local, shown)
        if lowercase:
            text = text.lower()
        file_tokens = tokenize_corpus(text, level)
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
        ids = encode_corpus(pieces[s], index)
        tables[s] = stream_rows(ids, s, chunk_length)
        unknown[s] = sum(1 for t in pieces[s] if t not in known)
        characters[s] = len(join_tokens(pieces[s], level))

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
        out, tables, name=name or base_name(files[0][1]), task="lm", labels=[], sources=source_files(files),
        import_params={
            "format": "text", "level": level, "lowercase": lowercase, "min_count": min_count,
            "max_vocab": max_vocab, "chunk_length": chunk_length, "val_fraction": val_fraction,
            "test_fraction": test_fraction, "seed": seed, "on_invalid": on_invalid,
        },
        feature_kind="token", vocab=vocab, task_params=task_params,
    )
