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
        self.model_args: dict[str, Any] = dict(
            input_size=input_size,
            num_classes=num_classes,
            hidden_size=hidden_size,
            num_layers=num_layers,
            cell=cell,
            nonlinearity=nonlinearity,
            bidirectional=bidirectional,
            dropout=dropout,
        )
        self.encoder = RecurrentEncoder(
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            cell=cell,
            nonlinearity=nonlinearity,
            bidirectional=bidirectional,
            dropout=dropout,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.output_size, num_classes)

    def forward(self, x_BTC: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
        _, last_BH = self.encoder(x_BTC, lengths_B)
        return self.head(self.dropout(last_BH))


def build_model(model_cfg: Any, *, input_size: int, num_classes: int) -> SequenceClassifier:
    """Build from a `ModelConfig` (or any object with the same fields) and the dataset's shape."""
    return SequenceClassifier(
        input_size=input_size,
        num_classes=num_classes,
        hidden_size=model_cfg.hidden_size,
        num_layers=model_cfg.num_layers,
        cell=model_cfg.cell,
        nonlinearity=model_cfg.nonlinearity,
        bidirectional=model_cfg.bidirectional,
        dropout=model_cfg.dropout,
    )


def model_from_args(model_args: dict[str, Any]) -> SequenceClassifier:
    """Rebuild from the `model_args` a checkpoint stored."""
    return SequenceClassifier(**model_args)
