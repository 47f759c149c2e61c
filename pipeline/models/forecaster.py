"""Direct multi-step forecasting: a recurrent encoder over the history, one linear head that
emits every horizon step at once.

Shape suffixes: B batch, T history steps (padded), C channels (the series' value columns, the
same for inputs and forecasts), H horizon steps.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.classifier import SequenceClassifier


class Forecaster(nn.Module):
    """x_BTC (normalized history), lengths_B -> y_BHC (normalized forecast of the next H steps).

    Direct rather than recursive: the head predicts all H x C values from one summary of the
    history, so errors do not compound step by step and training needs no decoding loop.
    The encoder, the pooling (last | mean | attention) and the linear head are exactly those of
    `SequenceClassifier`, whose K outputs are here the H * C forecast values.

    `model_args` holds exactly the constructor keywords, so a checkpoint can rebuild the model.
    """

    def __init__(
        self,
        *,
        input_size: int,
        horizon: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        cell: str = "lstm",
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        dropout: float = 0.0,
        pooling: str = "last",
        attention: str = "additive",
        input_layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.model_args = dict(
            input_size=input_size, horizon=horizon, hidden_size=hidden_size, num_layers=num_layers,
            cell=cell, nonlinearity=nonlinearity, bidirectional=bidirectional, dropout=dropout,
            pooling=pooling, attention=attention, input_layer_norm=input_layer_norm,
        )
        self.horizon = horizon
        self.num_channels = input_size
        self.pooling = pooling
        self.body = SequenceClassifier(
            input_size=input_size, num_classes=horizon * input_size, hidden_size=hidden_size,
            num_layers=num_layers, cell=cell, nonlinearity=nonlinearity, bidirectional=bidirectional,
            dropout=dropout, pooling=pooling, attention=attention, input_layer_norm=input_layer_norm,
        )

    def forward(self, x_BTC: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
        """Forecast a padded batch of histories.

        Args:
            x_BTC: normalized histories, padded after each one's end.
            lengths_B: valid steps per history (>= 1), on any device.

        Returns:
            y_BHC: the normalized forecast of the H steps after each history's last step.
        """
        flat_BK = self.body(x_BTC, lengths_B)
        return flat_BK.view(x_BTC.shape[0], self.horizon, self.num_channels)
