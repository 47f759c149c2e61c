"""Tokens: the seq2seq pair tokenizer and vocabularies (pipeline.data.tokens); the lm corpus
tokenizer is tested with its importer (importers/test_text.py)."""

from __future__ import annotations

import pytest

from pipeline.data.dataset import SPECIALS
from pipeline.data.tokens import build_vocab, detokenize, tokenize


def test_tokenize_levels_and_round_trip():
    # given text at both levels, when it is tokenized and joined back, then it reads the same
    assert tokenize("  ab c ", "char") == ["a", "b", " ", "c"]
    assert tokenize("The  cat\tsat ", "word", lowercase=True) == ["the", "cat", "sat"]
    assert detokenize(tokenize("3rd of May", "char"), "char") == "3rd of May"
    # and a literal <unk> is the unknown token, so decoded text with unknowns reads back the same
    assert tokenize("a<unk>b", "char") == ["a", "<unk>", "b"]
    with pytest.raises(ValueError, match="level"):
        tokenize("x", "byte")


def test_wordpunct_splits_punctuation_off_words_and_round_trips():
    # given texts whose words touch punctuation
    tokens = tokenize(" Great value.Works!! <unk> it's", "wordpunct", lowercase=True)
    # then words and runs of punctuation are separate tokens, and a literal <unk> stays one token
    assert tokens == ["great", "value", ".", "works", "!!", "<unk>", "it", "'", "s"]
    assert tokenize("great!", "wordpunct") == [*tokenize("great", "wordpunct"), "!"]
    # and text joined back from the tokens splits into the same tokens (the served model's input)
    assert tokenize(detokenize(tokens, "wordpunct"), "wordpunct") == tokens


def test_build_vocab_orders_by_count_then_cuts():
    # given token lists with counts c:3, a:2, b:2, d:1
    lists = [["c", "a", "b"], ["c", "a", "b"], ["c", "d"]]
    tokens = [t for tokens in lists for t in tokens]
    # then specials come first, then count order with ties in code-point order
    assert build_vocab(tokens) == [*SPECIALS, "c", "a", "b", "d"]
    assert build_vocab(tokens, min_count=2) == [*SPECIALS, "c", "a", "b"]
    assert build_vocab(tokens, max_vocab=5) == [*SPECIALS, "c"]
