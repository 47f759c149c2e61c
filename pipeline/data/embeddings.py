"""Pretrained word vectors for a dataset's vocabulary (`model.embeddings`).

A text classifier trained on a few thousand labelled texts learns each word's vector from the few
texts it is in; vectors learned from billions of words of other text (GloVe, word2vec, fastText)
start every known word where its meaning is, and training moves them from there. The file is
read in the text format those projects publish: one word per line followed by its numbers,
separated by single spaces (GloVe's `glove.6B.100d.txt`); a first line of two integers (word
count and dimensions, word2vec's and fastText's `.vec`) is skipped. `.gz` files are read
compressed; `s3://` URIs are downloaded first.

Only the vocabulary's words are parsed (341,479 words of 100-wide vectors in under a second). A
word is looked up as the vocabulary has it, then lowercased (GloVe's 6B vectors are lowercase);
words found neither way and the special tokens keep their random start. A line whose numbers are
not `dimensions` floats fails naming the file and line.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.data.dataset import SPECIALS, DatasetError


@dataclass(frozen=True)
class WordVectors:
    """vectors_VD (float32; rows of words not found are 0) and found_V (bool) for a vocabulary."""

    path: str
    vectors: np.ndarray
    found: np.ndarray

    @property
    def dimensions(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def words_found(self) -> int:
        return int(self.found.sum())

    def describe(self) -> str:
        words = len(self.found) - len(SPECIALS)
        return (f"{self.words_found:,} of {words:,} vocabulary words found in {self.path} "
                f"({self.dimensions} dimensions); the others start random")


def _lines(path: str) -> Iterator[str]:
    from pipeline.storage import download, is_s3

    local = download(path) if is_s3(path) else os.path.expanduser(path)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"model.embeddings: no file {path}")
    raw = gzip.open(local, "rb") if local.endswith(".gz") else open(local, "rb")  # noqa: SIM115
    with io.TextIOWrapper(raw, encoding="utf-8", errors="strict") as text:
        yield from text


def _vector_lines(path: str) -> Iterator[tuple[int, str, str]]:
    """(line number, word, its numbers as text) of each vector line; a word2vec header skipped."""
    for number, line in enumerate(_lines(path), start=1):
        word, _, rest = line.rstrip("\n").rstrip(" ").partition(" ")
        if number == 1 and word.isdigit() and rest.isdigit():
            continue  # word2vec / fastText header: words dimensions
        yield number, word, rest


def _no_vectors(path: str) -> DatasetError:
    return DatasetError(f"{path}: no word vectors in it (expected a word and its numbers per line)")


def vector_width(path: str) -> int:
    """The dimensions of the vectors in `path`: the numbers on its first vector line."""
    for _, _, rest in _vector_lines(path):
        return len(rest.split(" "))
    raise _no_vectors(path)


def read_word_vectors(path: str, vocab: Sequence[str]) -> WordVectors:
    """The vectors of `vocab`'s words (see the module docstring) from the text-format file `path`."""
    rows: dict[str, list[int]] = {}
    for i, word in enumerate(vocab):
        if i >= len(SPECIALS):
            rows.setdefault(word, []).append(i)
    lowered: dict[str, list[int]] = {}
    for word, ids in rows.items():
        if word.lower() != word:
            lowered.setdefault(word.lower(), []).extend(ids)
    vectors = found = None
    exact = np.zeros(len(vocab), dtype=bool)
    dims = 0
    try:
        for number, word, rest in _vector_lines(path):
            if not dims:
                dims = len(rest.split(" "))
                vectors = np.zeros((len(vocab), dims), dtype=np.float32)
                found = np.zeros(len(vocab), dtype=bool)
            exact_ids, lower_ids = rows.get(word, ()), lowered.get(word, ())
            if not exact_ids and not lower_ids:
                continue
            try:
                values = np.array(rest.split(" "), dtype=np.float32)
            except ValueError:
                values = None
            if values is None or values.shape != (dims,):
                raise DatasetError(f"{path}, line {number}: expected the word {word!r} and {dims} numbers "
                                   f"separated by single spaces (as the first vector line has), got "
                                   f"{rest[:60]!r}")
            for i in exact_ids:
                vectors[i], found[i], exact[i] = values, True, True
            for i in lower_ids:
                if not exact[i]:  # the word as the vocabulary has it wins over its lowercase form
                    vectors[i], found[i] = values, True
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc}); expected word vectors in text format "
                           f"(GloVe's .txt, word2vec's or fastText's .vec)") from exc
    if vectors is None:
        raise _no_vectors(path)
    return WordVectors(path=path, vectors=vectors, found=found)
