"""Encoder-decoder with attention: shapes, masking, teacher forcing, greedy and beam search."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from pipeline.data.dataset import BOS_ID, EOS_ID
from pipeline.models import model_from_args
from pipeline.models.seq2seq import Seq2Seq

CELLS = ["lstm", "gru", "rnn"]
KINDS = ["additive", "dot", "general"]
SOURCE_VOCAB, TARGET_VOCAB = 9, 7


def make_model(seed: int = 0, **kwargs) -> Seq2Seq:
    torch.manual_seed(seed)
    args = dict(vocab_size=SOURCE_VOCAB, target_vocab_size=TARGET_VOCAB, hidden_size=8, embedding_size=6)
    return Seq2Seq(**{**args, **kwargs}).eval()


def batch(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random source ids (4..vocab-1) padded with 0, and their lengths."""
    g = torch.Generator().manual_seed(seed)
    x_BS = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for b, n in enumerate(lengths):
        x_BS[b, :n] = torch.randint(4, SOURCE_VOCAB, (n,), generator=g)
    return x_BS, torch.tensor(lengths)


def targets(batch_size: int, steps: int, seed: int = 2) -> torch.Tensor:
    """y_in: <bos> then random target ids."""
    g = torch.Generator().manual_seed(seed)
    y_in_BT = torch.randint(4, TARGET_VOCAB, (batch_size, steps), generator=g)
    y_in_BT[:, 0] = BOS_ID
    return y_in_BT


@pytest.mark.parametrize("attention", KINDS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_shapes_and_masked_attention(cell, bidirectional, attention):
    # given a model with this cell, direction and attention, and sources of different lengths
    model = make_model(cell=cell, bidirectional=bidirectional, attention=attention, num_layers=2)
    x_BS, lengths_B = batch([5, 2, 3])
    y_in_BT = targets(3, 4)
    # when it scores targets with teacher forcing and returns its attention
    logits_BTV, weights_BTS = model(x_BS, lengths_B, y_in_BT, return_attention=True)
    # then logits are (B, T, V) and weights (B, T, S), zero on pad source steps, rows summing to 1
    assert logits_BTV.shape == (3, 4, TARGET_VOCAB) and weights_BTS.shape == (3, 4, 5)
    for b, n in enumerate(lengths_B.tolist()):
        assert torch.all(weights_BTS[b, :, n:] == 0.0)
        assert torch.all(weights_BTS[b, :, :n] > 0.0)
    torch.testing.assert_close(weights_BTS.sum(-1), torch.ones(3, 4))
    # and both decoders give one output per row, each within max_length, with attention per step
    for beam_size in (1, 3):
        decoded = model.decode(x_BS, lengths_B, beam_size=beam_size, max_length=6, return_attention=True)
        assert len(decoded.tokens) == len(decoded.scores) == len(decoded.attention) == 3
        for b, (tokens, weights) in enumerate(zip(decoded.tokens, decoded.attention)):
            assert len(tokens) <= 6 and EOS_ID not in tokens
            assert weights.shape[1] == lengths_B[b] and weights.shape[0] in (len(tokens), len(tokens) + 1)
            torch.testing.assert_close(torch.from_numpy(weights).sum(-1), torch.ones(weights.shape[0]))


@pytest.mark.parametrize("cell,bidirectional,attention", [("lstm", True, "general"), ("gru", False, "dot"),
                                                          ("rnn", True, "additive")])
def test_padding_does_not_change_outputs(cell, bidirectional, attention):
    # given one short source, alone and batched with longer ones whose pad steps differ
    model = make_model(cell=cell, bidirectional=bidirectional, attention=attention)
    x_BS, lengths_B = batch([7, 3, 5])
    y_in_BT = targets(3, 5)
    alone_1TV = model(x_BS[1:2, :3], lengths_B[1:2], y_in_BT[1:2])
    # when it is scored and decoded in the batch
    batched_BTV = model(x_BS, lengths_B, y_in_BT)
    # then its logits and decoded output are the same
    torch.testing.assert_close(batched_BTV[1], alone_1TV[0], rtol=1e-5, atol=1e-6)
    for beam_size in (1, 2):
        together = model.decode(x_BS, lengths_B, beam_size=beam_size, max_length=8)
        single = model.decode(x_BS[1:2, :3], lengths_B[1:2], beam_size=beam_size, max_length=8)
        assert together.tokens[1] == single.tokens[0]


@pytest.mark.parametrize("cell", CELLS)
def test_beam_size_one_is_greedy(cell):
    # given an untrained model (many near-ties, long outputs) and a batch of sources
    model = make_model(seed=3, cell=cell, bidirectional=True)
    x_BS, lengths_B = batch([6, 1, 4, 9, 2, 5, 3, 7], seed=4)
    # when it decodes greedily and with a beam of one
    greedy = model.greedy(x_BS, lengths_B, max_length=12, return_attention=True)
    beam = model.beam_search(x_BS, lengths_B, beam_size=1, max_length=12, return_attention=True)
    # then tokens, scores and attention are exactly equal
    assert beam.tokens == greedy.tokens
    assert beam.scores == greedy.scores
    for a, b in zip(beam.attention, greedy.attention):
        assert (a == b).all()
    assert model.decode(x_BS, lengths_B, beam_size=1, max_length=12).tokens == greedy.tokens


def _normalized_logprob(model: Seq2Seq, x_1S, lengths_1, tokens: list[int], finished: bool) -> float:
    """Mean log-probability per step of `tokens` (+ <eos> when finished), by teacher forcing."""
    out = tokens + ([EOS_ID] if finished else [])
    y_in_1T = torch.tensor([[BOS_ID, *out[:-1]]])
    with torch.no_grad():
        logp_TV = F.log_softmax(model(x_1S, lengths_1, y_in_1T)[0].float(), dim=-1)
    return float(sum(logp_TV[t, token] for t, token in enumerate(out))) / len(out)


def test_beam_search_with_a_wide_beam_finds_the_best_sequence():
    # given a tiny target vocabulary, so every output of up to 3 steps can be enumerated
    model = make_model(seed=5, target_vocab_size=5, cell="gru")
    x_BS, lengths_B = batch([4, 2], seed=6)
    max_length = 3
    for b in range(2):
        x_1S, lengths_1 = x_BS[b : b + 1, : lengths_B[b]], lengths_B[b : b + 1]
        # when beam search keeps more hypotheses than exist (nothing is ever pruned)
        found = model.beam_search(x_1S, lengths_1, beam_size=200, max_length=max_length)
        # then it returns the output with the best length-normalized score of all of them
        outputs = [(list(p), True) for n in range(max_length) for p in itertools.product(
            [t for t in range(5) if t != EOS_ID], repeat=n)]
        outputs += [(list(p), False) for p in itertools.product([t for t in range(5) if t != EOS_ID],
                                                                repeat=max_length)]
        scored = [(_normalized_logprob(model, x_1S, lengths_1, tokens, fin), tokens)
                  for tokens, fin in outputs]
        best_score, best_tokens = max(scored, key=lambda s: s[0])
        assert found.tokens[0] == best_tokens
        assert math.isclose(found.scores[0], best_score, rel_tol=1e-5, abs_tol=1e-6)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_decoded_score_is_the_models_normalized_logprob(beam_size):
    # given a model and sources
    model = make_model(seed=7, cell="lstm", bidirectional=True, attention="general")
    x_BS, lengths_B = batch([5, 3, 6], seed=8)
    # when it decodes
    decoded = model.decode(x_BS, lengths_B, beam_size=beam_size, max_length=10)
    # then each score is the teacher-forced mean log-probability of what it returned (with <eos>
    # unless it ran to max_length)
    for b, (tokens, score) in enumerate(zip(decoded.tokens, decoded.scores)):
        x_1S, lengths_1 = x_BS[b : b + 1, : lengths_B[b]], lengths_B[b : b + 1]
        expected = _normalized_logprob(model, x_1S, lengths_1, tokens, finished=len(tokens) < 10)
        assert math.isclose(score, expected, rel_tol=1e-5, abs_tol=1e-6)


def test_teacher_forcing_ratio():
    model = make_model(seed=9, cell="gru", bidirectional=True)
    x_BS, lengths_B = batch([5, 4, 6], seed=10)
    y_in_BT = targets(3, 6)
    changed_BT = y_in_BT.clone()
    changed_BT[:, 2] = (changed_BT[:, 2] - 4 + 1) % (TARGET_VOCAB - 4) + 4  # another real token
    # ratio 1: the true tokens are fed, so changing the input at step 2 changes steps >= 2 only
    forced = model(x_BS, lengths_B, y_in_BT, teacher_forcing=1.0)
    forced_changed = model(x_BS, lengths_B, changed_BT, teacher_forcing=1.0)
    torch.testing.assert_close(forced[:, :2], forced_changed[:, :2])
    assert not torch.allclose(forced[:, 2:], forced_changed[:, 2:])
    # ratio 0: the model's own argmax is fed, so the inputs after <bos> do not matter at all ...
    free = model(x_BS, lengths_B, y_in_BT, teacher_forcing=0.0)
    torch.testing.assert_close(free, model(x_BS, lengths_B, changed_BT, teacher_forcing=0.0))
    # ... and what it writes is what greedy decoding writes (up to <eos>)
    greedy = model.greedy(x_BS, lengths_B, max_length=6)
    for b, tokens in enumerate(greedy.tokens):
        written = free[b].argmax(-1).tolist()
        assert written[: len(tokens)] == tokens
        if len(tokens) < 6:
            assert written[len(tokens)] == EOS_ID
    # ratio 0.4: per row and step, the truth with probability 0.4, else the argmax
    torch.manual_seed(11)
    mixed = model(x_BS, lengths_B, y_in_BT, teacher_forcing=0.4)
    torch.manual_seed(11)
    memory, mask, state = model.encode(x_BS, lengths_B)
    y_prev, expected, fed_truth = y_in_BT[:, 0], [], []
    for t in range(6):
        if t > 0:
            truth = torch.rand(3) < 0.4
            fed_truth.append(truth)
            y_prev = torch.where(truth, y_in_BT[:, t], expected[-1].argmax(-1))
        logits, state, _ = model.step(y_prev, state, memory, mask)
        expected.append(logits)
    torch.testing.assert_close(mixed, torch.stack(expected, dim=1))
    assert 0 < torch.stack(fed_truth).float().mean() < 1  # both kinds of input were fed


def test_model_args_rebuild_the_same_model():
    # given a trained-looking model with every option set
    model = make_model(cell="lstm", bidirectional=True, num_layers=2, dropout=0.1, attention="dot",
                       beam_size=3, max_decode_length=9)
    # when it is rebuilt from its arguments and weights
    clone = model_from_args(model.model_args, "Seq2Seq").eval()
    clone.load_state_dict(model.state_dict())
    # then it decodes the same, with the stored decoding defaults
    x_BS, lengths_B = batch([4, 6])
    expected = model.decode(x_BS, lengths_B, beam_size=3, max_length=9).tokens
    assert clone.decode(x_BS, lengths_B).tokens == expected
    assert clone.beam_size == 3 and clone.max_decode_length == 9
    with pytest.raises(ValueError, match=r"model\.attention"):
        make_model(attention="cosine")


def test_a_beam_row_waits_for_a_better_alive_hypothesis():
    from pipeline.models.seq2seq import _row_done

    # given three poor hypotheses that ended early (normalized scores) and a confident one alive
    poor = [(-0.74, [1], None), (-0.9, [2], None), (-1.2, [3], None)]
    # then the row goes on while the alive one scores better per token than the 3rd best finished
    assert not _row_done(poor, [(0, 5, -0.005)], k=3, length=10)
    # and stops once it does not, or when nothing is alive, but never before k have finished
    assert _row_done(poor, [(0, 5, -20.0)], k=3, length=10)
    assert _row_done(poor[:1], [], k=3, length=10)
    assert not _row_done(poor[:2], [(0, 5, -20.0)], k=3, length=10)
