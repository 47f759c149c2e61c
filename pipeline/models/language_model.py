"""Next-token language model: embedded tokens, a unidirectional recurrent encoder, a linear head.

Shape suffixes: B batch (streams), T time steps, H hidden size, E embedding size, V vocabulary,
L layers.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.recurrent import RecurrentEncoder, State


class LanguageModel(nn.Module):
    """x_BT token ids, lengths_B, state -> logits_BTV over the next token, and the final state.

    The state goes in and comes out so that truncated backpropagation through time can carry it
    from one chunk of a stream to the next. Unidirectional only: a backward direction would see
    the tokens it is asked to predict.

    With `tie_weights` the output layer shares the embedding matrix (Press & Wolf, 2017): fewer
    parameters and usually a lower perplexity; it needs embedding_size == hidden_size.

    `model_args` holds exactly the constructor keywords, so a checkpoint can rebuild the model.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        cell: str = "lstm",
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        dropout: float = 0.0,
        input_layer_norm: bool = False,
        embedding_size: int | None = None,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        if bidirectional:
            raise ValueError("model.bidirectional must be false for the lm task: a language model reads "
                             "left to right, and a backward direction would see the tokens it predicts")
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        embedding_size = embedding_size or hidden_size
        if tie_weights and embedding_size != hidden_size:
            raise ValueError(
                f"model.tie_weights needs model.embedding_size == model.hidden_size (got {embedding_size} "
                f"and {hidden_size}); set model.tie_weights: false or make them equal"
            )
        self.model_args = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_layers=num_layers,
                               cell=cell, nonlinearity=nonlinearity, bidirectional=bidirectional,
                               dropout=dropout, input_layer_norm=input_layer_norm,
                               embedding_size=embedding_size, tie_weights=tie_weights)
        self.vocab_size = vocab_size
        self.encoder = RecurrentEncoder(input_size=embedding_size, hidden_size=hidden_size,
                                        num_layers=num_layers, cell=cell, nonlinearity=nonlinearity,
                                        bidirectional=False, dropout=dropout,
                                        input_layer_norm=input_layer_norm, vocab_size=vocab_size,
                                        embedding_size=embedding_size)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            self.head.weight = self.encoder.embedding.weight

    def forward(self, x_BT: torch.Tensor, lengths_B: torch.Tensor, state: State | None = None
                ) -> tuple[torch.Tensor, State]:
        """Next-token logits for every step of a padded batch.

        Args:
            x_BT: token ids (int64), padded with 0 after each sequence's end.
            lengths_B: valid steps per sequence (>= 1), on any device.
            state: the recurrent state to start from (h (L, B, H), or (h, c) for an LSTM); zeros
                when None.

        Returns:
            logits_BTV (pad steps give the head's bias) and the state at each sequence's last
            valid step.
        """
        outputs_BTH, final = self.encoder.run(x_BT, lengths_B, state)
        return self.head(self.dropout(outputs_BTH)), final
