"""The lm task: metrics, TBPTT streams and carried state, sampling, scoring, the model.

Given tiny vocabularies and models, when the task's functions run on plain tensors (no Ray), then
the numbers match hand-computed values and the state carried between chunks is the detached state
the previous chunk left.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from torch.nn import functional as F

from pipeline.config import RecurConfig
from pipeline.data.dataset import BOS_ID, EOS_ID, PAD_ID, SPECIALS
from pipeline.data.preprocess import Preprocessing
from pipeline.data.tokens import stream_rows
from pipeline.models.language_model import LanguageModel
from pipeline.tasks.lm import LanguageModelTask, bits_per_char, perplexity, sample_next
from pipeline.tasks.lm_streams import chunk_spans, rank_streams, split_streams, stream_batches
from pipeline.tracking.plots import close
from pipeline.training.loop import evaluate_batches, train_epoch
from pipeline.training.optimizer import make_optimizer

CHARS = list("abcdefgh\n")
VOCAB = [*SPECIALS, *CHARS]


def _task(level="char", *, bptt=8, batch_size=4, vocab=VOCAB, task_params=None, **model) -> LanguageModelTask:
    cfg = RecurConfig.model_validate({
        "data": {"task": "lm", "batch_size": batch_size},
        "train": {"bptt": bptt},
        "model": {"cell": "gru", "hidden_size": 16, **model},
        "generate": {"samples": 2, "length": 12},
    })
    pre = Preprocessing(mean=[], std=[], task="lm", feature_kind="token", vocab=list(vocab),
                        task_params=task_params or {"level": level})
    return LanguageModelTask(pre, cfg)


def _pattern_table(text: str, split: str = "train", chunk: int = 16) -> pa.Table:
    index = {t: i for i, t in enumerate(VOCAB)}
    return stream_rows(np.array([index[c] for c in text], dtype=np.int32), split, chunk)


# ------------------------------------------------------------------------------------ metrics


def test_perplexity_and_bits_per_char_of_known_losses():
    assert perplexity(math.log(4.0)) == pytest.approx(4.0)
    assert perplexity(0.0) == 1.0
    assert perplexity(1e6) == math.inf
    # 100 characters at 1 bit each: 100 ln 2 nats
    assert bits_per_char(100 * math.log(2), 100) == pytest.approx(1.0)
    # word level: 50 tokens of 2 nats over 250 characters
    assert bits_per_char(50 * 2.0, 250) == pytest.approx(100 / 250 / math.log(2))


def test_uniform_logits_give_log_vocab_loss_perplexity_and_bits():
    # given logits that are uniform over V tokens, for 3 streams x 5 targets
    task = _task()
    v = len(VOCAB)
    logits = torch.zeros(3, 5, v)
    batch = {"y": torch.randint(4, v, (3, 5)), "characters": torch.tensor(15.0, dtype=torch.float64)}
    state = task.new_state()
    task.update(state, logits, batch)
    task.update(state, logits, batch)
    metrics = task.compute(state)
    # then loss = ln V nats per token, perplexity = V, bits per character = log2 V
    assert metrics["loss"] == pytest.approx(math.log(v))
    assert metrics["perplexity"] == pytest.approx(v)
    assert metrics["bits_per_char"] == pytest.approx(math.log2(v))
    assert int(state["tokens"]) == 30 and task.loss_weight(batch) == 15
    assert float(task.loss(logits, batch)) == pytest.approx(math.log(v))


def test_word_level_bits_per_char_divides_by_the_split_characters():
    # given a word split of 10 tokens over 45 characters, batches carry 4.5 characters per target
    task = _task("word", vocab=[*SPECIALS, "ab", "cde", "\n"], bptt=4, batch_size=1,
                 task_params={"level": "word", "tokens": {"test": 10}, "characters": {"test": 45}})
    table = stream_rows(np.array([4, 5, 6, 4, 5, 6, 4, 5, 6, 4], dtype=np.int32), "test", 4)
    batches = list(task.table_batches(table))
    assert sum(b["y"].numel() for b in batches) == 9
    assert sum(float(b["characters"]) for b in batches) == pytest.approx(9 * 4.5)


# ------------------------------------------------------------------------------ token streams


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("n", [97, 1000, 1001])
def test_every_rank_gets_the_same_number_of_batches(world_size, n):
    stream = np.arange(n)
    batch_size, bptt = 4, 7
    per_rank = [rank_streams(stream, world_size=world_size, rank=r, batch_size=batch_size)
                for r in range(world_size)]
    counts = {len(list(stream_batches(s, bptt))) for s in per_rank}
    assert len(counts) == 1 and counts.pop() == len(chunk_spans(n // (world_size * batch_size), bptt))
    # the ranks' streams are disjoint contiguous blocks covering all but a tail < one stream per rank
    together = np.concatenate([s.reshape(-1) for s in per_rank])
    assert np.array_equal(together, stream[: len(together)])
    assert n - len(together) < world_size * batch_size
    for s in per_rank:
        assert s.shape[0] == batch_size and np.all(np.diff(s, axis=1) == 1)


def test_chunks_are_inputs_and_targets_one_token_apart():
    streams = split_streams(np.arange(2 * 20), 2)  # [[0..19], [20..39]]
    batches = list(stream_batches(streams, 8))
    assert [b["x"].shape[1] for b in batches] == [8, 8, 3]  # 19 targets per stream
    assert batches[0]["x"][1].tolist() == list(range(20, 28))
    assert batches[0]["y"][1].tolist() == list(range(21, 29))
    assert batches[2]["y"][0].tolist() == [17, 18, 19]
    assert batches[2]["lengths"].tolist() == [3, 3]


def test_train_split_too_short_for_the_streams_fails_clearly():
    task = _task(bptt=8, batch_size=4)
    table = _pattern_table("abcdefgh\n" * 5)  # 45 tokens; 2 x 4 streams of 9 need 72
    with pytest.raises(ValueError, match=r"train split: 45 tokens cannot make 2 worker\(s\) x "
                                         r"data.batch_size=4 streams .*72 tokens needed"):
        task.streams(table, what="train", world_size=2, rank=0, batch_size=4)
    # evaluation takes fewer streams instead (45 // 9 = 5 > 4: all 4)
    assert task.streams(table, what="val", world_size=1, rank=0, batch_size=4).shape == (4, 11)
    assert task.streams(table.slice(0, 1), what="val", world_size=1, rank=0, batch_size=4).shape == (1, 16)


# ------------------------------------------------------------------------- carried state


class Recorder(torch.nn.Module):
    """Wraps a model and records the state each call receives and returns."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.received, self.returned = [], []

    def forward(self, x, lengths, state=None):
        self.received.append(state)
        logits, new = self.model(x, lengths, state)
        self.returned.append(new)
        return logits, new


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_state_entering_a_chunk_is_the_detached_state_leaving_the_previous_one(cell):
    torch.manual_seed(0)
    task = _task(cell=cell, bptt=5, batch_size=3)
    model = Recorder(task.build_model())
    streams = split_streams(np.random.default_rng(0).integers(4, len(VOCAB), 3 * 16), 3)
    batches = list(stream_batches(streams, 5))

    task.start_epoch(train=True)
    outputs = [task.forward(model, b, train=True) for b in batches]
    assert model.received[0] is None  # a new epoch starts from zeros
    for k in range(1, len(batches)):
        entering, leaving = model.received[k], model.returned[k - 1]
        for a, b in zip(*(s if isinstance(s, tuple) else (s,) for s in (entering, leaving))):
            assert torch.equal(a, b) and not a.requires_grad and b.requires_grad
    # carrying the state makes the chunks equal to one pass over the whole streams
    whole, _ = model.model(torch.from_numpy(streams[:, :-1]), torch.full((3,), 15))
    assert torch.allclose(torch.cat(outputs, dim=1), whole, atol=1e-5)
    # gradients stop at the chunk boundary: the loss of chunk 2 reaches no earlier chunk's graph
    task.loss(outputs[1], batches[1]).backward()

    # a new epoch resets the state
    task.start_epoch(train=True)
    task.forward(model, batches[0], train=True)
    assert model.received[-1] is None
    # a batch of another size does not take the carried state
    task.forward(model, {k: (v[:2] if v.dim() else v) for k, v in batches[1].items()}, train=True)
    assert model.received[-1] is None


def test_training_on_a_pattern_lowers_the_loss():
    torch.manual_seed(0)
    task = _task(bptt=8, batch_size=4)
    table = _pattern_table("abcdefgh\n" * 40)
    model = task.build_model()
    optimizer = make_optimizer("adam", model.parameters(), lr=0.03)

    class Rows:  # what a Ray Data iterator offers the task
        def iter_batches(self, batch_size=None, batch_format="pyarrow"):
            yield table

    before = task.compute(evaluate_batches(model, task.eval_batches(Rows(), batch_size=4), task))
    for epoch in range(6):
        train_epoch(model, task.train_batches(Rows(), batch_size=4, epoch=epoch, seed=0), optimizer, task)
    after = task.compute(evaluate_batches(model, task.eval_batches(Rows(), batch_size=4), task))
    assert after["loss"] < 0.5 * before["loss"]
    assert after["bits_per_char"] == pytest.approx(after["loss"] / math.log(2))


# ------------------------------------------------------------------- sampling and scoring


def test_top_k_1_is_greedy_and_specials_are_never_sampled():
    generator = torch.Generator().manual_seed(0)
    for seed in range(20):
        logits = torch.randn(len(VOCAB), generator=torch.Generator().manual_seed(seed))
        allowed = logits.clone()
        allowed[[PAD_ID, BOS_ID, EOS_ID]] = -math.inf
        assert sample_next(logits, top_k=1, generator=generator) == int(allowed.argmax())
    peaked = torch.zeros(len(VOCAB))
    peaked[[PAD_ID, BOS_ID, EOS_ID]] = 50.0
    draws = {sample_next(peaked, generator=generator) for _ in range(50)}
    assert not draws & {PAD_ID, BOS_ID, EOS_ID}
    # top_k keeps only the k most likely
    ranked = torch.arange(len(VOCAB), dtype=torch.float32)
    assert {sample_next(ranked, top_k=2, generator=generator) for _ in range(50)} <= {len(VOCAB) - 1,
                                                                                      len(VOCAB) - 2}


def test_generate_with_top_k_1_follows_argmax_and_seeds_repeat():
    torch.manual_seed(0)
    task = _task()
    model = task.build_model().eval()
    out = task.predict(model, pd.DataFrame({"text": ["abc", "h\n"]}),
                       {"max_new_tokens": 10, "top_k": 1, "temperature": 0.5})
    # the greedy continuation, step by step
    for prompt, text in zip(["abc", "h\n"], out["text"]):
        ids = [VOCAB.index(c) for c in prompt]
        with torch.no_grad():
            for _ in range(10):
                logits, _ = model(torch.tensor([ids]), torch.tensor([len(ids)]))
                last = logits[0, -1].clone()
                last[[PAD_ID, BOS_ID, EOS_ID]] = -math.inf
                ids.append(int(last.argmax()))
        expected = "".join("\ufffd" if i < len(SPECIALS) else VOCAB[i] for i in ids)
        assert text == expected
    assert out["generated"].tolist() == [t[len(p):] for t, p in zip(out["text"], ["abc", "h\n"])]
    # sampling: the same seed gives the same text, another seed (very likely) another
    params = {"max_new_tokens": 30, "temperature": 1.0, "seed": 7}
    first = task.predict(model, pd.DataFrame({"text": ["a"]}), params)["text"][0]
    assert task.predict(model, pd.DataFrame({"text": ["a"]}), params)["text"][0] == first
    assert task.predict(model, pd.DataFrame({"text": ["a"]}), {**params, "seed": 8})["text"][0] != first


def test_scoring_text_equals_one_pass_over_it_and_gate_scores_it():
    torch.manual_seed(0)
    task = _task()
    model = task.build_model().eval()
    text = "abcdefgh\n" * 70  # 630 tokens: more than one PREDICT_CHUNK
    out = task.predict(model, pd.DataFrame({"text": [text, "a", ""]}), {})
    ids = torch.tensor([[VOCAB.index(c) for c in text]])
    with torch.no_grad():
        logits, _ = model(ids[:, :-1], torch.tensor([len(text) - 1]))
    nats = float(F.cross_entropy(logits[0], ids[0, 1:], reduction="sum"))
    assert out["nll"][0] == pytest.approx(nats, rel=1e-5)
    assert out["tokens"].tolist() == [len(text) - 1, 0, 0]
    assert out["characters"].tolist() == [len(text) - 1, 0, 0]

    # gate: the test text in pieces, scored to perplexity and bits per character
    table = _pattern_table(text, "test", chunk=50)
    inputs, truth = task.gate_data(table)
    assert "".join(inputs["text"]) == text and len(inputs) == 4
    scores = task.score(task.predict(model, inputs, {}), truth)
    assert scores["bits_per_char"] == pytest.approx(math.log2(scores["perplexity"]))


def test_report_logs_samples_from_the_first_complete_test_line():
    torch.manual_seed(0)
    task = _task()
    model = task.build_model().eval()
    table = _pattern_table("cdefgh\nabc\nabcdefgh\n", "test")
    assert task.default_prompt(table) == "abc\n"
    report = task.report(model, table, task.new_state())
    samples = report.texts["eval/samples.txt"]
    assert samples.count("----- sample") == 2 and samples.count("-----\nabc\n") == 2


def test_curves_draw_train_and_val_perplexity_as_exp_of_the_per_token_losses():
    task = _task()
    history = {"train_loss": [(0, math.log(8.0)), (1, math.log(4.0)), (2, math.log(2.0))],
               "val_loss": [(0, math.log(6.0)), (1, math.log(3.0)), (2, math.log(3.5))],
               "val_perplexity": [(0, 6.0), (1, 3.0), (2, 3.5)]}
    report = task.curves(history)
    fig = report.figures["plots/perplexity.png"]
    try:
        (ax,) = fig.axes
        train, val = ax.lines
        assert train.get_label() == "train perplexity" and val.get_label() == "val perplexity"
        assert train.get_xdata().tolist() == [0, 1, 2] and val.get_xdata().tolist() == [0, 1, 2]
        assert train.get_ydata() == pytest.approx([8.0, 4.0, 2.0])
        assert val.get_ydata() == pytest.approx([6.0, 3.0, 3.5])
        (best,) = ax.texts
        assert best.get_text() == "best val 3.000 (epoch 1)" and best.xy == pytest.approx((1, 3.0))
        assert ax.get_xlabel() == "epoch" and "perplexity" in ax.get_ylabel()
    finally:
        close(fig)
    # a run without any epoch (nothing in MLflow) draws nothing
    assert task.curves({"train_loss": [], "val_loss": []}).figures == {}


# ------------------------------------------------------------------------------------ model


def test_model_refuses_bidirectional_and_ties_weights():
    with pytest.raises(ValueError, match="model.bidirectional must be false"):
        _task(bidirectional=True).build_model()
    tied = _task(tie_weights=True).build_model()
    assert tied.head.weight is tied.encoder.embedding.weight
    with pytest.raises(ValueError, match="model.tie_weights needs model.embedding_size == model.hidden_size"):
        _task(tie_weights=True, embedding_size=8).build_model()
    rebuilt = LanguageModel(**tied.model_args)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in tied.parameters())
    logits, state = rebuilt(torch.tensor([[4, 5, 6]]), torch.tensor([3]))
    assert logits.shape == (1, 3, len(VOCAB)) and state.shape == (1, 1, 16)


# ------------------------------------------------------------------------------------ baseline


def test_baseline_is_an_add_one_unigram_of_train_scored_like_the_gate():
    task = _task()
    # Given train "aaab": a 3, b 1 of 4 tokens, and V = 13 (4 specials, 9 characters)
    train = _pattern_table("aaab")
    assert len(VOCAB) == 13
    # and a test text of 8 tokens, which the gate scores as 4 pieces "aa" "bb" "aa" "bb"
    test = _pattern_table("aabbaabb", "test")
    assert task.gate_data(test)[0]["text"].tolist() == ["aa", "bb", "aa", "bb"]

    scores = task.baseline(train, test)

    # then p(a) = 4/17, p(b) = 2/17; each piece predicts its second token: a, b, a, b
    nats = -2 * math.log(4 / 17) - 2 * math.log(2 / 17)
    assert scores["perplexity"] == pytest.approx(math.exp(nats / 4))  # 17 / sqrt(8)
    assert scores["bits_per_char"] == pytest.approx(nats / 4 / math.log(2))
