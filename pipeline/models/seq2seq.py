"""Encoder-decoder with attention: a recurrent encoder over source tokens, a recurrent decoder
that attends over the encoder's steps while it writes target tokens.

Shape suffixes: B batch, S source steps (padded), T target steps (padded), V target vocabulary,
E embedding size, H decoder hidden size (= encoder hidden * directions), L layers, K beam size.

The decoder (Bahdanau-style ordering): at step t the top layer of the previous decoder state
s_{t-1} queries the encoder outputs (additive, dot or general attention; pad steps get weight 0),
giving context c_t; the RNN reads [embed(y_{t-1}); c_t] and gives s_t; the output layer reads
[s_t; c_t; embed(y_{t-1})] and scores the next token. The decoder starts from the encoder's final
state, both directions of each layer concatenated, so it needs no bridge parameters and its
hidden size H equals the encoder's output size (which also lets `dot` attention compare them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pipeline.data.dataset import BOS_ID, EOS_ID, PAD_ID
from pipeline.models.attention import Attention, lengths_to_mask
from pipeline.models.recurrent import CELLS, RecurrentEncoder, State


@dataclass
class Decoded:
    """Decoded outputs of a batch, one entry per row.

    tokens: target ids without <bos>/<eos>.
    scores: sum of the tokens' log-probabilities (nats, <eos> included) divided by the number of
        decoded steps (tokens + 1 for <eos>; `max_length` when no <eos> came): length-normalized.
    attention: per row (decoded steps, source length) weights, when asked for.
    """

    tokens: list[list[int]]
    scores: list[float]
    attention: list[np.ndarray] | None = None


class Seq2Seq(nn.Module):
    """Recurrent encoder-decoder with attention, teacher forcing, greedy and beam-search decoding."""

    def __init__(
        self,
        *,
        vocab_size: int,
        target_vocab_size: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        cell: str = "gru",
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        dropout: float = 0.0,
        input_layer_norm: bool = False,
        embedding_size: int | None = None,
        attention: str = "additive",
        beam_size: int = 1,
        max_decode_length: int = 64,
    ) -> None:
        """`beam_size` and `max_decode_length` are the decoding defaults of `decode` (and of
        the served model); `embedding_size` (default `hidden_size`) is used on both sides."""
        super().__init__()
        if beam_size < 1 or max_decode_length < 1:
            raise ValueError(f"model.beam_size and model.max_decode_length must be >= 1, got "
                             f"{beam_size} and {max_decode_length}")
        self.model_args = dict(
            vocab_size=vocab_size, target_vocab_size=target_vocab_size, hidden_size=hidden_size,
            num_layers=num_layers, cell=cell, nonlinearity=nonlinearity, bidirectional=bidirectional,
            dropout=dropout, input_layer_norm=input_layer_norm, embedding_size=embedding_size,
            attention=attention, beam_size=beam_size, max_decode_length=max_decode_length,
        )
        self.encoder = RecurrentEncoder(
            input_size=1, hidden_size=hidden_size, num_layers=num_layers, cell=cell,
            nonlinearity=nonlinearity, bidirectional=bidirectional, dropout=dropout,
            input_layer_norm=input_layer_norm, vocab_size=vocab_size, embedding_size=embedding_size,
        )
        self.cell = cell
        self.num_layers = num_layers
        self.beam_size = beam_size
        self.max_decode_length = max_decode_length
        self.target_vocab_size = target_vocab_size
        embed = embedding_size or hidden_size
        decoder_size = self.encoder.output_size  # H = encoder hidden * directions
        self.embedding = nn.Embedding(target_vocab_size, embed, padding_idx=PAD_ID)
        self.attention = Attention(attention, query_size=decoder_size, key_size=decoder_size)
        kwargs = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.decoder = CELLS[cell](
            input_size=embed + decoder_size, hidden_size=decoder_size, num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0, batch_first=True, **kwargs,
        )
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(2 * decoder_size + embed, target_vocab_size)

    # ------------------------------------------------------------------ building blocks
    def encode(self, x_BS: torch.Tensor, lengths_B: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """Source ids -> (memory_BSH encoder outputs, mask_BS valid steps, decoder start state).

        The start state is the encoder's final state per layer with both directions concatenated:
        (L, B, H), or an (h, c) pair of those for an LSTM.
        """
        memory_BSH, final = self.encoder.run(x_BS, lengths_B)
        mask_BS = lengths_to_mask(lengths_B.to(memory_BSH.device), x_BS.shape[1])
        return memory_BSH, mask_BS, _join_directions(final, self.encoder.num_directions)

    def step(self, y_prev_B: torch.Tensor, state: State, memory_BSH: torch.Tensor,
             mask_BS: torch.Tensor) -> tuple[torch.Tensor, State, torch.Tensor]:
        """One decoder step: previous token ids -> (logits_BV, new state, attention weights_BS)."""
        query_BH = (state[0] if isinstance(state, tuple) else state)[-1]  # top layer of s_{t-1}
        context_BH, weights_BS = self.attention(query_BH, memory_BSH, mask_BS)
        embedded_BE = self.dropout(self.embedding(y_prev_B))
        out_B1H, state = self.decoder(torch.cat([embedded_BE, context_BH], dim=-1).unsqueeze(1), state)
        features = torch.cat([out_B1H.squeeze(1), context_BH, embedded_BE], dim=-1)
        return self.output(self.dropout(features)), state, weights_BS

    # ------------------------------------------------------------------ training
    def forward(self, x_BS: torch.Tensor, lengths_B: torch.Tensor, y_in_BT: torch.Tensor,
                teacher_forcing: float = 1.0, return_attention: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Score every target step.

        Args:
            x_BS: source ids (0 = padding); lengths_B: valid source steps (>= 1).
            y_in_BT: decoder inputs, <bos> then the target tokens (padded with 0).
            teacher_forcing: per row and step t >= 1, the probability of feeding the true token
                y_in_BT[:, t]; otherwise the model's own argmax from step t - 1 is fed.
                1.0 always feeds the truth, 0.0 never does (step 0 always reads <bos>).

        Returns:
            logits_BTV, and weights_BTS (attention per target step) with `return_attention`.
        """
        memory_BSH, mask_BS, state = self.encode(x_BS, lengths_B)
        batch, steps = y_in_BT.shape
        logits, weights = [], []
        y_prev_B = y_in_BT[:, 0]
        for t in range(steps):
            if t > 0:
                guess_B = logits[-1].detach().argmax(dim=-1)
                if teacher_forcing >= 1.0:
                    y_prev_B = y_in_BT[:, t]
                elif teacher_forcing <= 0.0:
                    y_prev_B = guess_B
                else:
                    truth_B = torch.rand(batch, device=y_in_BT.device) < teacher_forcing
                    y_prev_B = torch.where(truth_B, y_in_BT[:, t], guess_B)
            logits_BV, state, weights_BS = self.step(y_prev_B, state, memory_BSH, mask_BS)
            logits.append(logits_BV)
            weights.append(weights_BS)
        logits_BTV = torch.stack(logits, dim=1)
        return (logits_BTV, torch.stack(weights, dim=1)) if return_attention else logits_BTV

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def decode(self, x_BS: torch.Tensor, lengths_B: torch.Tensor, *, beam_size: int | None = None,
               max_length: int | None = None, return_attention: bool = False) -> Decoded:
        """Greedy (beam size 1) or beam-search decoding; defaults from the constructor."""
        beam_size = beam_size or self.beam_size
        max_length = max_length or self.max_decode_length
        if beam_size == 1:
            return self.greedy(x_BS, lengths_B, max_length=max_length, return_attention=return_attention)
        return self.beam_search(x_BS, lengths_B, beam_size=beam_size, max_length=max_length,
                                return_attention=return_attention)

    @torch.no_grad()
    def greedy(self, x_BS: torch.Tensor, lengths_B: torch.Tensor, *, max_length: int,
               return_attention: bool = False) -> Decoded:
        """Feed the argmax token back each step until every row has written <eos> (or max_length)."""
        memory_BSH, mask_BS, state = self.encode(x_BS, lengths_B)
        batch = x_BS.shape[0]
        y_prev_B = torch.full((batch,), BOS_ID, dtype=torch.long, device=memory_BSH.device)
        score_B = torch.zeros(batch, device=memory_BSH.device)
        done_B = torch.zeros(batch, dtype=torch.bool, device=memory_BSH.device)
        steps_B = torch.full((batch,), max_length, dtype=torch.long)
        chosen, weights = [], []
        for t in range(max_length):
            logits_BV, state, weights_BS = self.step(y_prev_B, state, memory_BSH, mask_BS)
            best_logp_B, best_B = F.log_softmax(logits_BV.float(), dim=-1).max(dim=-1)
            score_B = torch.where(done_B, score_B, score_B + best_logp_B)
            ends_B = (best_B == EOS_ID) & ~done_B
            steps_B[ends_B.cpu()] = t + 1
            done_B |= ends_B
            chosen.append(best_B)
            weights.append(weights_BS)
            if bool(done_B.all()):
                break
            y_prev_B = best_B
        tokens_BT = torch.stack(chosen, dim=1).cpu()
        weights_BTS = torch.stack(weights, dim=1).float().cpu() if return_attention else None
        out = Decoded(tokens=[], scores=[], attention=[] if return_attention else None)
        for b, steps in enumerate(steps_B.tolist()):
            out.tokens.append([t for t in tokens_BT[b, :steps].tolist() if t != EOS_ID])
            out.scores.append(float(score_B[b]) / steps)
            if weights_BTS is not None:
                out.attention.append(weights_BTS[b, :steps, : int(lengths_B[b])].numpy())
        return out

    @torch.no_grad()
    def beam_search(self, x_BS: torch.Tensor, lengths_B: torch.Tensor, *, beam_size: int,
                    max_length: int, return_attention: bool = False) -> Decoded:
        """Keep the `beam_size` best partial outputs per row (by summed log-probability).

        Each step ranks the 2k best extensions; an <eos> among the k best finishes its hypothesis,
        the best k others stay alive. A row stops once k hypotheses have finished and none alive
        scores better per token so far than the k-th best finished one (Hugging Face's rule), or
        at `max_length`, where the unfinished ones join the finished. It returns the hypothesis
        with the best length-normalized score. With beam_size 1 this is exactly greedy decoding.
        """
        k = beam_size
        memory_BSH, mask_BS, state = self.encode(x_BS, lengths_B)
        batch, device = x_BS.shape[0], memory_BSH.device
        rows_N = torch.arange(batch, device=device).repeat_interleave(k)  # N = B * K
        memory_NSH, mask_NS, state = memory_BSH[rows_N], mask_BS[rows_N], _select(state, rows_N)
        # Only beam 0 is real at the start; the others would repeat it.
        scores_BK = torch.full((batch, k), float("-inf"), device=device)
        scores_BK[:, 0] = 0.0
        y_prev_N = torch.full((batch * k,), BOS_ID, dtype=torch.long, device=device)
        history_NT = torch.zeros((batch * k, 0), dtype=torch.long)
        attention_NTS = torch.zeros((batch * k, 0, x_BS.shape[1])) if return_attention else None
        finished: list[list[tuple[float, list[int], np.ndarray | None]]] = [[] for _ in range(batch)]
        done = [False] * batch

        def seen(n: int, b: int) -> np.ndarray | None:
            """Hypothesis n's attention so far, cut to row b's source length."""
            return None if attention_NTS is None else attention_NTS[n, :, : int(lengths_B[b])].numpy()

        for t in range(max_length):
            logits_NV, state, weights_NS = self.step(y_prev_N, state, memory_NSH, mask_NS)
            vocab = logits_NV.shape[-1]
            logp_BKV = F.log_softmax(logits_NV.float(), dim=-1).view(batch, k, vocab)
            total_BKV = scores_BK.unsqueeze(-1) + logp_BKV
            top_scores, top_index = total_BKV.view(batch, -1).topk(2 * k, dim=-1)
            top_scores, top_index = top_scores.tolist(), top_index.tolist()
            if attention_NTS is not None:
                attention_NTS = torch.cat([attention_NTS, weights_NS.float().cpu().unsqueeze(1)], dim=1)
            source_N, token_N, score_N = [], [], []
            for b in range(batch):
                kept: list[tuple[int, int, float]] = []
                for rank, (score, index) in enumerate(zip(top_scores[b], top_index[b])):
                    if done[b] or score == float("-inf") or len(kept) == k:
                        break
                    beam, token = divmod(index, vocab)
                    if token == EOS_ID:
                        if rank >= k:
                            # An <eos> ranked below the k best extensions is a poor hypothesis;
                            # finishing it would count towards k and end the row too early.
                            continue
                        n = b * k + beam
                        finished[b].append((score / (t + 1), history_NT[n].tolist(), seen(n, b)))
                    else:
                        kept.append((beam, token, score))
                if not done[b]:
                    done[b] = _row_done(finished[b], kept, k, t + 1)
                kept += [(0, PAD_ID, float("-inf"))] * (k - len(kept))  # dead beams stay -inf
                for beam, token, score in kept:
                    source_N.append(b * k + beam)
                    token_N.append(token)
                    score_N.append(score)
            if all(done):
                break
            select_N = torch.tensor(source_N, dtype=torch.long)
            state = _select(state, select_N.to(device))
            tokens_N = torch.tensor(token_N, dtype=torch.long)
            history_NT = torch.cat([history_NT[select_N], tokens_N.unsqueeze(1)], dim=1)
            if attention_NTS is not None:
                attention_NTS = attention_NTS[select_N]
            scores_BK = torch.tensor(score_N, device=device).view(batch, k)
            y_prev_N = tokens_N.to(device)
        else:  # max_length reached: unfinished hypotheses compete too
            for b in range(batch):
                if done[b]:
                    continue
                for beam, score in enumerate(scores_BK[b].tolist()):
                    if score > float("-inf"):
                        n = b * k + beam
                        finished[b].append((score / max_length, history_NT[n].tolist(), seen(n, b)))
        out = Decoded(tokens=[], scores=[], attention=[] if return_attention else None)
        for b in range(batch):
            # max() keeps the first of equal scores: the one found first (earlier or higher-ranked).
            score, tokens, seen = max(finished[b], key=lambda item: item[0])
            out.tokens.append(tokens)
            out.scores.append(score)
            if out.attention is not None:
                out.attention.append(seen)
        return out


def _row_done(finished: list[tuple[float, list[int], np.ndarray | None]],
              alive: list[tuple[int, int, float]], k: int, length: int) -> bool:
    """Whether a beam-search row can stop: k finished hypotheses (normalized scores), and the best
    alive one (sorted first; summed score over `length` tokens) no better per token than the k-th
    best of them. Without the second test, k poor hypotheses that end early would stop the row
    before a good, longer one finishes."""
    if not alive:
        return True
    if len(finished) < k:
        return False
    kth_best = sorted((score for score, _, _ in finished), reverse=True)[k - 1]
    return kth_best >= alive[0][2] / length


def _join_directions(final: State, num_directions: int) -> State:
    """Encoder final state (L*D, B, hidden) -> (L, B, D*hidden), directions side by side."""
    if isinstance(final, tuple):
        return tuple(_join_directions(part, num_directions) for part in final)  # type: ignore[return-value]
    layers_directions, batch, hidden = final.shape
    layers = layers_directions // num_directions
    return (final.view(layers, num_directions, batch, hidden).permute(0, 2, 1, 3)
            .reshape(layers, batch, num_directions * hidden).contiguous())


def _select(state: State, index_N: torch.Tensor) -> State:
    """Rows `index_N` of a decoder state (batch is dimension 1)."""
    if isinstance(state, tuple):
        return tuple(part.index_select(1, index_N) for part in state)  # type: ignore[return-value]
    return state.index_select(1, index_N)
