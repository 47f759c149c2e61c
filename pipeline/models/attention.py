"""Attention of one query over a padded sequence of keys (pooling now, encoder-decoder later).

Shape suffixes: B batch, T key steps (padded), Q query size, K key size, A attention size.
Masks are boolean and True at valid steps.
"""

from __future__ import annotations

import torch
from torch import nn

KINDS = ("additive", "dot", "general")


def lengths_to_mask(lengths_B: torch.Tensor, max_len: int) -> torch.Tensor:
    """Valid-step mask from lengths.

    Args:
        lengths_B: valid steps per sequence (integer tensor); the mask lives on its device.
        max_len: T, the padded length.

    Returns:
        mask_BT: bool, True at steps t < lengths_B[b].
    """
    steps_T = torch.arange(max_len, device=lengths_B.device)
    return steps_T.unsqueeze(0) < lengths_B.unsqueeze(1)


class Attention(nn.Module):
    """Scores each key against a query, softmaxes over valid steps, returns the weighted keys.

    kinds:
        additive (Bahdanau): score = v^T tanh(W_q q + W_k k), with an attention size A.
        dot (Luong): score = q . k; needs query_size == key_size and has no parameters.
        general (Luong): score = q^T W k.

    The query can come from anywhere (a learned vector for pooling, a decoder state for
    seq2seq), so the module knows nothing about where q and the keys come from.
    """

    def __init__(self, kind: str, query_size: int, key_size: int, attention_size: int | None = None) -> None:
        """`attention_size` (A) is used by `additive` only; it defaults to `key_size`."""
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"model.attention: unknown kind {kind!r}; choose one of {list(KINDS)}")
        if kind == "dot" and query_size != key_size:
            raise ValueError(
                f"model.attention: 'dot' scores q . k, so it needs query_size == key_size "
                f"(got {query_size} and {key_size}); use 'general' or 'additive' instead"
            )
        self.kind = kind
        self.query_size = query_size
        self.key_size = key_size
        if kind == "additive":
            attention_size = key_size if attention_size is None else attention_size
            # One bias is enough: W_q q + W_k k would otherwise carry two that add up to one.
            self.query_proj = nn.Linear(query_size, attention_size, bias=False)
            self.key_proj = nn.Linear(key_size, attention_size)
            self.score_proj = nn.Linear(attention_size, 1, bias=False)
        elif kind == "general":
            # Linear(K -> Q) applies W (Q x K) to each key, so the score is q . (W k).
            self.key_proj = nn.Linear(key_size, query_size, bias=False)

    def score(self, query_BQ: torch.Tensor, keys_BTK: torch.Tensor) -> torch.Tensor:
        """Unnormalized scores_BT, before any masking."""
        if self.kind == "additive":
            hidden_BTA = torch.tanh(self.query_proj(query_BQ).unsqueeze(1) + self.key_proj(keys_BTK))
            return self.score_proj(hidden_BTA).squeeze(-1)
        if self.kind == "general":
            keys_BTK = self.key_proj(keys_BTK)  # now (B, T, Q)
        return torch.bmm(keys_BTK, query_BQ.unsqueeze(-1)).squeeze(-1)

    def forward(
        self, query_BQ: torch.Tensor, keys_BTK: torch.Tensor, mask_BT: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend over the valid steps of each row.

        Args:
            query_BQ: one query per row.
            keys_BTK: padded keys (also the values).
            mask_BT: bool, True at valid steps; every row needs at least one.

        Returns:
            context_BK: sum_t weights_BT[b, t] * keys_BTK[b, t].
            weights_BT: softmax over valid steps; exactly 0 at pad steps, each row sums to 1.
        """
        mask_BT = mask_BT.to(torch.bool)
        # Zero the pad keys first: whatever they hold (huge values, inf, NaN) then cannot reach
        # the scores, the context, or the gradients, even through the 0 weights below.
        keys_BTK = keys_BTK.masked_fill(~mask_BT.unsqueeze(-1), 0.0)
        scores_BT = self.score(query_BQ, keys_BTK).masked_fill(~mask_BT, float("-inf"))
        # exp(-inf) is exactly 0, so pad steps get exactly zero weight.
        weights_BT = torch.softmax(scores_BT, dim=-1)
        context_BK = torch.bmm(weights_BT.unsqueeze(1), keys_BTK).squeeze(1)
        return context_BK, weights_BT
