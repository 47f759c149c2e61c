"""Recurrent encoders over padded, variable-length batches.

Shape suffixes: B batch, T time steps (padded), C input channels, H hidden size,
D directions (1 or 2), L layers, I the RNN's input size (C, or H with `input_layer_norm`).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# The RNN's recurrent state: h_n, or (h_n, c_n) for an LSTM, each (layers * directions, B, hidden).
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

# The one table that maps a config name to a cell; every model is built through it.
CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

# `forward` runs a batch padded (not packed) when at most this fraction of its steps is padding.
# Both give the same outputs, but packed kernels are slow: PyTorch's packed LSTM backward on the
# CPU (pytorch/pytorch#149194) and cuDNN's packed path. Measured by `benchmarks/bucketing.py` on
# a long-tailed set's random batches (80% padding), padded ran x2.8 the speed of packed on 2 CPU
# cores and x1.0 (hidden 256) to x21 (hidden 64) on an H100, so only a batch that is nearly all
# padding, where padded would compute ten times the valid steps or more, is packed.
PADDED_UP_TO = 0.9


class RecurrentEncoder(nn.Module):
    """Stacked, optionally bidirectional RNN/LSTM/GRU that ignores padding.

    Pad steps never reach a valid step: the forward direction stops at each sequence's last
    valid step and the backward direction starts there. `run` packs the batch by length;
    `forward`, which needs only the outputs and the top layer's final state, runs a batch padded
    instead unless it is nearly all padding (`PADDED_UP_TO`): layer by layer, each sequence
    reversed within its length for the backward direction, the final state taken at each
    length. The same result with the faster unpacked kernels.

    With `input_layer_norm`, each step is first projected to `hidden_size` and layer-normalized
    (Linear then LayerNorm), so the RNN sees inputs on one scale whatever the raw channels' units.
    That acts on each step alone, so pad steps still cannot affect valid ones.

    With `vocab_size > 0` the inputs are token ids (x_BT int64, 0 = padding) looked up in an
    embedding of `embedding_size` (default `hidden_size`); `input_size` is then ignored.
    `embedding_dropout` drops embedding features in training (0: none; not a model argument to
    save, as it does nothing at inference).
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
        embedding_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.cell: unknown cell {cell!r}; choose one of {sorted(CELLS)}")
        self.embedding: nn.Embedding | None = None
        if vocab_size > 0:
            input_size = embedding_size or hidden_size
            self.embedding = nn.Embedding(vocab_size, input_size, padding_idx=0)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
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
        self.padded_up_to = PADDED_UP_TO  # not saved with the model: it changes speed, not results

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs as the RNN sees them: token ids embedded, then the optional projection + norm."""
        inputs = x if self.embedding is None else self.embedding_dropout(self.embedding(x))
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
        lengths_B = lengths_B.cpu()
        steps = x.shape[0] * x.shape[1]
        if 0 < steps - int(lengths_B.sum()) <= self.padded_up_to * steps:
            return self._forward_padded(x, lengths_B)
        outputs_BTH, final = self.run(x, lengths_B)
        return outputs_BTH, self.top_layer(final)

    def _forward_padded(self, x: torch.Tensor, lengths_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` without packing (see the class docstring); pad steps come out as zeros."""
        inputs_BTI = self.embed(x)
        B, T = inputs_BTI.shape[:2]
        lengths_B = lengths_B.to(inputs_BTI.device)
        steps_BT = torch.arange(T, device=inputs_BTI.device).expand(B, T)
        valid_BT = steps_BT < lengths_B.unsqueeze(1)
        last_B11 = (lengths_B - 1).view(B, 1, 1)
        if self.num_directions == 1:
            # Causal: every valid output is what packing gives; the final state is at length - 1.
            outputs_BTH, _ = self.rnn(inputs_BTI.contiguous())
            last_BH = outputs_BTH.gather(1, last_B11.expand(B, 1, outputs_BTH.shape[2])).squeeze(1)
            return outputs_BTH.masked_fill(~valid_BT.unsqueeze(-1), 0.0), last_BH
        # Reversing each sequence within its length keeps its pads at the end, so the backward
        # direction is causal too: run it forward over the reversed sequence, reverse back.
        reverse_BT = torch.where(valid_BT, lengths_B.unsqueeze(1) - 1 - steps_BT, steps_BT)

        def flip(seq_BTX: torch.Tensor) -> torch.Tensor:
            return seq_BTX.gather(1, reverse_BT.unsqueeze(-1).expand_as(seq_BTX))

        layer_BTX = inputs_BTI
        for layer in range(self.rnn.num_layers):
            if layer > 0 and self.training and self.rnn.dropout > 0:
                layer_BTX = F.dropout(layer_BTX, self.rnn.dropout, training=True)
            forward_BTH = self._one_direction(layer_BTX, layer, 0)
            backward_BTH = flip(self._one_direction(flip(layer_BTX), layer, 1))
            layer_BTX = torch.cat([forward_BTH, backward_BTH], dim=2)
        hidden = self.rnn.hidden_size
        last_BH = torch.cat([forward_BTH.gather(1, last_B11.expand(B, 1, hidden)).squeeze(1),
                             backward_BTH[:, 0]], dim=1)  # the backward direction ends at step 0
        return layer_BTX.masked_fill(~valid_BT.unsqueeze(-1), 0.0), last_BH

    def _one_direction(self, x_BTI: torch.Tensor, layer: int, direction: int) -> torch.Tensor:
        """One layer, one direction of `self.rnn` over x_BTI from zero state: outputs_BTH."""
        rnn = self.rnn
        per = len(rnn._flat_weights) // (rnn.num_layers * self.num_directions)  # w_ih, w_hh[, b_ih, b_hh]
        first = (layer * self.num_directions + direction) * per
        weights = rnn._flat_weights[first : first + per]
        h0 = x_BTI.new_zeros(1, x_BTI.shape[0], rnn.hidden_size)
        args = (rnn.bias, 1, 0.0, self.training, False, True)  # layers, dropout, train, bidir, batch_first
        with warnings.catch_warnings():
            # cuDNN copies a direction's weights out of the module's flat buffer: expected here
            warnings.filterwarnings("ignore", message=".*not part of single contiguous chunk.*")
            if self.cell == "lstm":
                return torch._VF.lstm(x_BTI.contiguous(), (h0, h0), weights, *args)[0]
            if self.cell == "gru":
                return torch._VF.gru(x_BTI.contiguous(), h0, weights, *args)[0]
            kernel = torch._VF.rnn_tanh if rnn.nonlinearity == "tanh" else torch._VF.rnn_relu
            return kernel(x_BTI.contiguous(), h0, weights, *args)[0]

    def top_layer(self, final: State) -> torch.Tensor:
        """The top layer's final hidden state, directions concatenated: (B, hidden * D)."""
        h_n = final[0] if isinstance(final, tuple) else final  # LSTM: (hidden, cell) -> hidden
        # h_n is (L*D, B, H) ordered layer-major; the top layer's directions are the last D rows.
        last_DBH = h_n[-self.num_directions :]
        return last_DBH.transpose(0, 1).reshape(h_n.shape[1], -1)


def start_from_vectors(embedding: nn.Embedding, vectors_VD: np.ndarray, found_V: np.ndarray, *,
                       freeze: bool = False) -> None:
    """Start `embedding` from pretrained word vectors (`pipeline.data.embeddings`): rows whose word
    was found take its vector; the others (padding aside, which stays 0) are drawn again from a
    normal of the found vectors' std, so unknown words start on the same scale as known ones
    (Kim, 2014). `freeze`: the whole table keeps these values (no gradient)."""
    weight = embedding.weight
    if tuple(vectors_VD.shape) != tuple(weight.shape):
        raise ValueError(f"word vectors of shape {tuple(vectors_VD.shape)} for an embedding of shape "
                         f"{tuple(weight.shape)}: the vocabulary or model.embedding_size differ")
    found = torch.from_numpy(np.asarray(found_V, dtype=bool))
    with torch.no_grad():
        if bool(found.any()):
            known = torch.from_numpy(np.asarray(vectors_VD, dtype=np.float32)[found.numpy()])
            weight[found] = known.to(weight)
            unknown = ~found
            if embedding.padding_idx is not None:
                unknown[embedding.padding_idx] = False
            weight[unknown] = torch.randn(int(unknown.sum()), weight.shape[1]).to(weight) * known.std()
    weight.requires_grad_(not freeze)
