"""Tokens: vocabularies and how text becomes token ids, for the importers of token data (conll,
text, tsv) and the tasks that serve them (lm, seq2seq), so a served model splits text exactly as
its dataset was split.

Two tokenizers, one per kind of dataset:

* lm corpora (``tokenize_corpus``): ``level="char"`` every character is a token, newlines
  included; ``level="word"`` the runs of non-whitespace, and each newline kept as the token
  ``"\\n"`` so that generated text has lines. ``join_tokens`` writes them back as text; the
  stream of a split is stored as rows of ids (``stream_rows`` / ``stream_from_rows``).
* seq2seq pairs and labelled texts (``tokenize``): surrounding whitespace stripped, then code
  points (``level="char"``), whitespace-separated words (``"word"``), or words with punctuation
  split off (``"wordpunct"``: runs of letters/digits/underscore and runs of other non-space
  characters, NLTK's WordPunctTokenizer rule, so "great!" is "great" "!", as "great" alone is);
  ``detokenize`` joins them back.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from pipeline.data.dataset import SPECIALS, TOKEN_TYPE, UNK, UNK_ID


def build_vocab(tokens: Iterable[str] | Counter, *, min_count: int = 1,
                max_vocab: int | None = None) -> list[str]:
    """SPECIALS, then the tokens seen at least `min_count` times, most frequent first (ties by
    token), at most `max_vocab` entries in all (specials included).

    `tokens` is every token occurrence (of the train split), or a Counter of them.
    """
    counts = tokens if isinstance(tokens, Counter) else Counter(tokens)
    kept = sorted((t for t, c in counts.items() if c >= min_count and t not in SPECIALS),
                  key=lambda t: (-counts[t], t))
    if max_vocab is not None:
        kept = kept[: max(max_vocab - len(SPECIALS), 0)]
    return [*SPECIALS, *kept]


# --------------------------------------------------------------------------------------------
# lm corpora: one contiguous token stream

NEWLINE = "\n"
_WORD = re.compile(r"\n|[^\s]+")


def tokenize_corpus(text: str, level: str) -> list[str]:
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


def encode_corpus(tokens: list[str], index: dict[str, int]) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------
# seq2seq pairs: a source text and a target text

JOINERS = {"char": "", "word": " ", "wordpunct": " "}  # how tokens of each level join back into text
# Characters are single code points, except a literal "<unk>", which stands for the unknown token
# (so text decoded from ids with unknown tokens reads back to the same ids); likewise in wordpunct,
# where "<unk>" would otherwise split into "<", "unk", ">".
_CHAR_TOKENS = re.compile(re.escape(UNK) + "|.", re.DOTALL)
_WORDPUNCT_TOKENS = re.compile(re.escape(UNK) + r"|\w+|[^\w\s]+")


def tokenize(text: str, level: str, lowercase: bool = False) -> list[str]:
    """Text -> tokens, exactly as the importer and the served model split it.

    Surrounding whitespace is stripped; `level` "char" gives code points, "word" gives
    whitespace-separated words, "wordpunct" runs of word characters (``\\w+``) and runs of
    punctuation (``[^\\w\\s]+``) as separate tokens ("good, cheap." -> good , cheap .).
    """
    if level not in JOINERS:
        raise ValueError(f"level must be one of {list(JOINERS)}, got {level!r}")
    text = text.strip()
    if lowercase:
        text = text.lower()
    if level == "char":
        return _CHAR_TOKENS.findall(text)
    return _WORDPUNCT_TOKENS.findall(text) if level == "wordpunct" else text.split()


def detokenize(tokens: Iterable[str], level: str) -> str:
    """Tokens -> text (characters joined with "", words with " ")."""
    return JOINERS[level].join(tokens)


def encode(tokens: list[str], index: dict[str, int]) -> list[int]:
    """Tokens -> ids; anything not in the vocabulary is <unk>."""
    return [index.get(token, UNK_ID) for token in tokens]


def truncate_tokens(tokens: list[str], max_length: int | None) -> list[str]:
    """A text's first `max_length` tokens (all of them when None), without whitespace tokens at
    the cut's end: a text is stripped before it is split, so a cut text reads back to the same
    tokens (labelled texts: the importer and the served classifier cut alike)."""
    if max_length is None or len(tokens) <= max_length:
        return tokens
    cut = tokens[:max_length]
    while len(cut) > 1 and cut[-1].isspace():
        cut.pop()
    return cut
