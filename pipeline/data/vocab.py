"""Token vocabularies, shared by every importer of token data (conll, text, tsv)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pipeline.data.contract import SPECIALS


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
