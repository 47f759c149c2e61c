"""Sequence tagging: word embeddings (plus an optional character CNN per word), a recurrent
encoder over the sentence, and a linear head on every step.

Shape suffixes: B batch, T time steps (words, padded), W characters per word (padded),
E word embedding size, F character feature size, H encoder output size (hidden * directions),
K tags, N = B * T words.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.recurrent import RecurrentEncoder


class CharEncoder(nn.Module):
    """Each word's characters -> one vector: char embedding, a width-3 convolution, ReLU, and a
    max over the word's valid characters (Ma & Hovy 2016). Words are encoded independently, so
    padding words or characters never reach a valid word's vector."""

    def __init__(self, vocab_size: int, size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, size, padding_idx=0)
        self.conv = nn.Conv1d(size, size, kernel_size=3, padding=1)
        self.output_size = size

    def forward(self, chars_BTW: torch.Tensor) -> torch.Tensor:
        """chars_BTW int64 char ids (0 = padding) -> features_BTF (zeros for padding words)."""
        batch, steps, width = chars_BTW.shape
        chars_NW = chars_BTW.reshape(batch * steps, width)
        valid_NW = chars_NW != 0
        # Zero the embedded pad characters so the convolution at a word's edge sees only its chars.
        embedded_NFW = (self.embedding(chars_NW) * valid_NW.unsqueeze(-1)).transpose(1, 2)
        conv_NFW = torch.relu(self.conv(embedded_NFW))
        # Masked max: a pad position can never win; a word with no characters (padding) gets 0.
        conv_NFW = conv_NFW.masked_fill(~valid_NW.unsqueeze(1), float("-inf"))
        pooled_NF = conv_NFW.max(dim=-1).values
        pooled_NF = torch.where(valid_NW.any(dim=-1, keepdim=True), pooled_NF, torch.zeros_like(pooled_NF))
        return pooled_NF.reshape(batch, steps, -1)


class SequenceTagger(nn.Module):
    """x_BT word ids, lengths_B (, chars_BTW) -> logits_BTK, one tag distribution per word.

    The word embedding (E = `embedding_size`, default `hidden_size`) and, with
    `char_vocab_size > 0`, the character features (F = `char_embedding_size`) are concatenated
    and fed to a `RecurrentEncoder` taking float inputs of size E + F. Dropout acts on that
    input and before the head. Pad steps are packed away by the encoder; their logits are
    meaningless and the task's loss and metrics ignore them.

    `model_args` holds exactly the constructor keywords, so a checkpoint can rebuild the model.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        num_tags: int,
        embedding_size: int | None = None,
        hidden_size: int = 64,
        num_layers: int = 1,
        cell: str = "lstm",
        nonlinearity: str = "tanh",
        bidirectional: bool = True,
        dropout: float = 0.0,
        input_layer_norm: bool = False,
        char_vocab_size: int = 0,
        char_embedding_size: int = 16,
    ) -> None:
        super().__init__()
        if vocab_size < 1 or num_tags < 1:
            raise ValueError(f"SequenceTagger needs vocab_size >= 1 and num_tags >= 1, got "
                             f"{vocab_size} and {num_tags}")
        self.model_args = dict(
            vocab_size=vocab_size, num_tags=num_tags, embedding_size=embedding_size,
            hidden_size=hidden_size, num_layers=num_layers, cell=cell, nonlinearity=nonlinearity,
            bidirectional=bidirectional, dropout=dropout, input_layer_norm=input_layer_norm,
            char_vocab_size=char_vocab_size, char_embedding_size=char_embedding_size,
        )
        embedding_size = embedding_size or hidden_size
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=0)
        self.chars: CharEncoder | None = None
        input_size = embedding_size
        if char_vocab_size > 0:
            self.chars = CharEncoder(char_vocab_size, char_embedding_size)
            input_size += self.chars.output_size
        self.dropout = nn.Dropout(dropout)
        self.encoder = RecurrentEncoder(
            input_size=input_size, hidden_size=hidden_size, num_layers=num_layers, cell=cell,
            nonlinearity=nonlinearity, bidirectional=bidirectional, dropout=dropout,
            input_layer_norm=input_layer_norm,
        )
        self.head = nn.Linear(self.encoder.output_size, num_tags)

    @property
    def uses_chars(self) -> bool:
        return self.chars is not None

    def forward(self, x_BT: torch.Tensor, lengths_B: torch.Tensor,
                chars_BTW: torch.Tensor | None = None) -> torch.Tensor:
        """Tag a padded batch.

        Args:
            x_BT: word ids, 0 after each sentence's end.
            lengths_B: words per sentence (>= 1), on any device.
            chars_BTW: character ids per word (0 = padding); required with char features.

        Returns:
            logits_BTK (unnormalized; pad steps hold the head's bias and must be masked).
        """
        inputs_BTI = self.embedding(x_BT)
        if self.chars is not None:
            if chars_BTW is None:
                raise ValueError("this tagger uses character features: pass chars_BTW")
            inputs_BTI = torch.cat([inputs_BTI, self.chars(chars_BTW)], dim=-1)
        outputs_BTH, _ = self.encoder(self.dropout(inputs_BTI), lengths_B)
        return self.head(self.dropout(outputs_BTH))
