"""Recurrent encoders over padded, variable-length batches.

Shape suffixes: B batch, T time steps (padded), C input channels, H hidden size,
D directions (1 or 2), L layers, I the RNN's input size (C, or H with `input_layer_norm`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# The RNN's recurrent state: h_n, or (h_n, c_n) for an LSTM, each (layers * directions, B, hidden).
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

# The one table that maps a config name to a cell; every model is built through it.
CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RecurrentEncoder(nn.Module):
    """Stacked, optionally bidirectional RNN/LSTM/GRU that ignores padding.

    Sequences are packed by length, so pad steps never enter the recurrence: the forward
    direction stops at each sequence's last valid step and the backward direction starts there.

    With `input_layer_norm`, each step is first projected to `hidden_size` and layer-normalized
    (Linear then LayerNorm), so the RNN sees inputs on one scale whatever the raw channels' units.
    That acts on each step alone, so pad steps still cannot affect valid ones.

    With `vocab_size > 0` the inputs are token ids (x_BT int64, 0 = padding) looked up in an
    embedding of `embedding_size` (default `hidden_size`); `input_size` is then ignored.
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
        vocab_size: int = 0,
        embedding_size: int | None = None,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.cell: unknown cell {cell!r}; choose one of {sorted(CELLS)}")
        self.embedding: nn.Embedding | None = None
        if vocab_size > 0:
            input_size = embedding_size or hidden_size
            self.embedding = nn.Embedding(vocab_size, input_size, padding_idx=0)
        self.input_size = input_size
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

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs as the RNN sees them: token ids embedded, then the optional projection + norm."""
        inputs = x if self.embedding is None else self.embedding(x)
        return inputs if self.input_norm is None else self.input_norm(inputs)

    def run(self, x: torch.Tensor, lengths_B: torch.Tensor, state: State | None = None
            ) -> tuple[torch.Tensor, State]:
        """Encode a padded batch from an initial `state` (zeros when None).

        Returns outputs_BTH (H = hidden * directions; zeros at pad steps) and the final state as
        the RNN gives it: h_n (L*D, B, hidden), or (h_n, c_n) for an LSTM, taken at each
        sequence's last valid step.
        """
        # Per step, so projecting pad steps too is harmless: packing drops them right after.
        inputs_BTI = self.embed(x)
        lengths_B = lengths_B.cpu()
        if bool((lengths_B == x.shape[1]).all()):
            # No padding (forecast windows, a length bucket of one length): the same result
            # without packing, whose kernels are slower (cuDNN's packed path; the CPU's backward)
            return self.rnn(inputs_BTI.contiguous(), state)
        packed = pack_padded_sequence(inputs_BTI, lengths_B, batch_first=True, enforce_sorted=False)
        packed_out, final = self.rnn(packed, state)
        outputs_BTH, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x.shape[1])
        return outputs_BTH, final

    def forward(self, x: torch.Tensor, lengths_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a padded batch.

        Args:
            x: float inputs x_BTC, or token ids x_BT with `vocab_size`; padded after each end.
            lengths_B: valid steps per sequence (>= 1), on any device.

        Returns:
            outputs_BTH: per-step outputs (H = hidden * directions); zeros at pad steps.
            last_BH: the final state of the top layer, both directions concatenated.
        """
        outputs_BTH, final = self.run(x, lengths_B)
        return outputs_BTH, self.top_layer(final)

    def top_layer(self, final: State) -> torch.Tensor:
        """The top layer's final hidden state, directions concatenated: (B, hidden * D)."""
        h_n = final[0] if isinstance(final, tuple) else final  # LSTM: (hidden, cell) -> hidden
        # h_n is (L*D, B, H) ordered layer-major; the top layer's directions are the last D rows.
        last_DBH = h_n[-self.num_directions :]
        return last_DBH.transpose(0, 1).reshape(h_n.shape[1], -1)
