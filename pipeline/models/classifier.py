"""Sequence classification: a recurrent encoder and a linear head over the last valid step."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.models.recurrent import RecurrentEncoder


class SequenceClassifier(nn.Module):
    """x_BTC, lengths_B -> logits_BK over K classes.

    `model_args` holds exactly the constructor keywords, so a checkpoint can rebuild the model.
    """

    def __init__(
        self,
        *,
        input_size: int,
        num_classes: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        cell: str = "lstm",
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        encoder_args: dict[str, Any] = dict(
            input_size=input_size, hidden_size=hidden_size, num_layers=num_layers, cell=cell,
            nonlinearity=nonlinearity, bidirectional=bidirectional, dropout=dropout,
        )
        self.model_args = {**encoder_args, "num_classes": num_classes}
        self.encoder = RecurrentEncoder(**encoder_args)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.output_size, num_classes)

    def forward(self, x_BTC: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
        _, last_BH = self.encoder(x_BTC, lengths_B)
        return self.head(self.dropout(last_BH))


def build_model(model_cfg: Any, *, input_size: int, num_classes: int) -> SequenceClassifier:
    """Build from a `ModelConfig` (its fields are the encoder's keywords) and the dataset's shape."""
    return SequenceClassifier(input_size=input_size, num_classes=num_classes, **model_cfg.model_dump())


def model_from_args(model_args: dict[str, Any]) -> SequenceClassifier:
    """Rebuild from the `model_args` a checkpoint stored."""
    return SequenceClassifier(**model_args)
