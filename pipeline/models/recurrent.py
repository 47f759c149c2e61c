"""Recurrent encoders over padded, variable-length batches.

Shape suffixes: B batch, T time steps (padded), C input channels, H hidden size,
D directions (1 or 2), L layers, I the RNN's input size (C, or H with `input_layer_norm`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# The one table that maps a config name to a cell; every model is built through it.
CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RecurrentEncoder(nn.Module):
    """Stacked, optionally bidirectional RNN/LSTM/GRU that ignores padding.

    Sequences are packed by length, so pad steps never enter the recurrence: the forward
    direction stops at each sequence's last valid step and the backward direction starts there.

    With `input_layer_norm`, each step is first projected to `hidden_size` and layer-normalized
    (Linear then LayerNorm), so the RNN sees inputs on one scale whatever the raw channels' units.
    That acts on each step alone, so pad steps still cannot affect valid ones.
    """

    def __init__(
        self,
        *,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "lstm",
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        dropout: float = 0.0,
        input_layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.cell: unknown cell {cell!r}; choose one of {sorted(CELLS)}")
        self.input_norm: nn.Module | None = None
        if input_layer_norm:
            self.input_norm = nn.Sequential(nn.Linear(input_size, hidden_size), nn.LayerNorm(hidden_size))
        kwargs = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn = CELLS[cell](
            input_size=hidden_size if input_layer_norm else input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            # torch applies this dropout between stacked layers only, and warns when there are none.
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
            **kwargs,
        )
        self.cell = cell
        self.num_directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.num_directions

    def forward(self, x_BTC: torch.Tensor, lengths_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a padded batch.

        Args:
            x_BTC: float inputs, padded after each sequence's end.
            lengths_B: valid steps per sequence (>= 1), on any device.

        Returns:
            outputs_BTH: per-step outputs (H = hidden * directions); zeros at pad steps.
            last_BH: the final state of the top layer, both directions concatenated.
        """
        # Per step, so projecting pad steps too is harmless: packing drops them right after.
        inputs_BTI = x_BTC if self.input_norm is None else self.input_norm(x_BTC)
        packed = pack_padded_sequence(inputs_BTI, lengths_B.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, h_n = self.rnn(packed)
        if self.cell == "lstm":
            h_n = h_n[0]  # (hidden, cell) -> hidden
        outputs_BTH, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x_BTC.shape[1])
        # h_n is (L*D, B, H) ordered layer-major; the top layer's directions are the last D rows.
        last_DBH = h_n[-self.num_directions :]
        last_BH = last_DBH.transpose(0, 1).reshape(x_BTC.shape[0], -1)
        return outputs_BTH, last_BH
