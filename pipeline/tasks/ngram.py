"""Count models of a token stream, the references a language model must beat.

Both are fit on the train stream's token ids and smoothed with add-one (Laplace) over the whole
vocabulary V (the model's output space, specials included), so no test token has probability 0:

* unigram: p(t) = (count(t) + 1) / (N + V), N the train tokens;
* bigram: p(t | s) = (count(s, t) + 1) / (count(s, .) + V), count(s, .) the train pairs whose first
  token is s (so a context never seen in train gives the uniform 1 / V).

Shape suffixes: N train tokens, M scored tokens, V vocabulary.
"""

from __future__ import annotations

import math

import numpy as np


def unigram_nll(train_N: np.ndarray, targets_M: np.ndarray, vocab_size: int) -> float:
    """Total negative log-likelihood (nats) of `targets_M` under the add-one unigram of `train_N`."""
    counts_V = np.bincount(np.asarray(train_N, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    log_p_V = np.log(counts_V + 1.0) - math.log(counts_V.sum() + vocab_size)
    return -float(log_p_V[np.asarray(targets_M, dtype=np.int64)].sum())


def bigram_nll(train_N: np.ndarray, contexts_M: np.ndarray, targets_M: np.ndarray, vocab_size: int) -> float:
    """Total negative log-likelihood (nats) of each `targets_M[i]` after `contexts_M[i]` under the
    add-one bigram of the consecutive pairs of `train_N`. Pairs are counted sparsely (a word-level
    vocabulary of 50,000 would need 2.5e9 cells as a matrix)."""
    train = np.asarray(train_N, dtype=np.int64)
    context, target = np.asarray(contexts_M, dtype=np.int64), np.asarray(targets_M, dtype=np.int64)
    pair_codes, pair_counts = np.unique(train[:-1] * vocab_size + train[1:], return_counts=True)
    context_counts_V = np.bincount(train[:-1], minlength=vocab_size).astype(np.float64)
    codes_M = context * vocab_size + target
    at = np.searchsorted(pair_codes, codes_M).clip(max=max(len(pair_codes) - 1, 0))
    seen = pair_codes[at] == codes_M if len(pair_codes) else np.zeros(len(codes_M), dtype=bool)
    counts_M = np.where(seen, pair_counts[at] if len(pair_counts) else 0, 0).astype(np.float64)
    log_p_M = np.log(counts_M + 1.0) - np.log(context_counts_V[context] + vocab_size)
    return -float(log_p_M.sum())


def stream_perplexities(train_N: np.ndarray, streams_BL: np.ndarray, vocab_size: int) -> dict[str, float]:
    """Unigram and bigram perplexity of every token of `streams_BL` after its stream's first (the
    tokens the lm task's evaluation predicts over the same streams), each from the one before."""
    contexts_M, targets_M = streams_BL[:, :-1].ravel(), streams_BL[:, 1:].ravel()
    n = max(len(targets_M), 1)
    return {"unigram_perplexity": _exp(unigram_nll(train_N, targets_M, vocab_size) / n),
            "bigram_perplexity": _exp(bigram_nll(train_N, contexts_M, targets_M, vocab_size) / n)}


def _exp(nats: float) -> float:
    try:
        return math.exp(nats)
    except OverflowError:
        return math.inf
