"""The seq2seq task: batches, loss, metrics (sacrebleu), report, predict on raw text, gate scores."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from matplotlib.figure import Figure
from torch.nn import functional as F

from pipeline.config import RecurConfig, load_config
from pipeline.data.dataset import BOS_ID, EOS_ID, read_split
from pipeline.data.importers.tsv import import_pairs
from pipeline.data.preprocess import Preprocessing
from pipeline.tasks import build_task, metric_names
from pipeline.tasks.seq2seq import IGNORE, Seq2SeqTask, text_scores, token_hits
from pipeline.tracking.plots import close
from pipeline.training.loop import evaluate_batches, train_epoch
from pipeline.training.optimizer import make_optimizer

REPO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "seq2seq-dates.yaml"


@pytest.fixture(scope="module")
def copy_dataset(tmp_path_factory):
    """Copy task: a few letters -> the same letters (learnable in seconds with attention)."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("copy")
    lines = []
    for _ in range(240):
        text = "".join(rng.choice("abcdef") for _ in range(rng.randint(2, 6)))
        lines.append(f"{text}\t{text}\n")
    (root / "copy.tsv").write_text("".join(lines))
    manifest = import_pairs(str(root / "copy.tsv"), str(root / "ds"))
    return str(root / "ds"), manifest


def make_task(manifest, **model) -> Seq2SeqTask:
    cfg = RecurConfig.model_validate({"data": {"task": "seq2seq"}, "model": {
        "cell": "gru", "hidden_size": 16, "bidirectional": True, "max_decode_length": 10, **model}})
    return build_task(cfg, Preprocessing.from_manifest(manifest))


# --------------------------------------------------------------------------------------------
# metric functions


def test_text_scores_on_a_hand_example():
    # given identical outputs, then exact match is 1 and BLEU and chrF are 100
    refs = ["1998-03-03", "2001-12-31", "1950-01-01"]
    perfect = text_scores(refs, refs, level="char")
    assert perfect["exact_match"] == 1.0
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    # given one of three wrong by one character, then exact match is 2/3 (counted by hand)
    hyps = ["1998-03-03", "2001-12-30", "1950-01-01"]
    scores = text_scores(hyps, refs, level="char")
    assert scores["exact_match"] == pytest.approx(2 / 3)
    assert 50.0 < scores["bleu"] < 100.0 and 50.0 < scores["chrf"] < 100.0
    # and BLEU follows the level: characters for char data, words (13a) for word data
    # (one wrong word of one: no n-gram matches; one wrong character of seven: most match)
    assert text_scores(["abcdefg"], ["abcdefh"], level="word")["bleu"] == pytest.approx(0.0)
    assert text_scores(["abcdefg"], ["abcdefh"], level="char")["bleu"] > 50.0
    assert text_scores([], [], level="char") == {"exact_match": 0.0, "bleu": 0.0, "chrf": 0.0}
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        text_scores(["a", "b"], ["a"])


def test_token_hits_ignore_padding():
    # given logits whose argmax is known and targets padded with IGNORE
    y_out_BT = torch.tensor([[5, 6, EOS_ID], [7, EOS_ID, IGNORE]])
    guesses_BT = torch.tensor([[5, 4, EOS_ID], [7, EOS_ID, 9]])  # one miss, one pad "hit" on 9
    logits_BTV = F.one_hot(guesses_BT, 10).float()
    # then 4 of the 5 real target tokens are right, and the pad position is not counted
    assert token_hits(logits_BTV, y_out_BT) == (4, 5)


# --------------------------------------------------------------------------------------------
# batches, loss and metrics


def test_collate_adds_bos_and_eos(copy_dataset):
    root, manifest = copy_dataset
    task = make_task(manifest)
    table = pa.table({"id": ["a", "b"], "x": pa.array([[4, 5, 6], [7]], pa.list_(pa.int32())),
                      "y": pa.array([[8, 9], [10, 11, 12]], pa.list_(pa.int32()))})
    # when rows are collated
    batch = task.collate(table)
    # then y_in starts with <bos>, y_out ends with <eos>, padded with 0 and IGNORE
    assert batch["x"].tolist() == [[4, 5, 6], [7, 0, 0]] and batch["lengths"].tolist() == [3, 1]
    assert batch["y_in"].tolist() == [[BOS_ID, 8, 9, 0], [BOS_ID, 10, 11, 12]]
    assert batch["y_out"].tolist() == [[8, 9, EOS_ID, IGNORE], [10, 11, 12, EOS_ID]]
    assert batch["target_lengths"].tolist() == [3, 4] and task.loss_weight(batch) == 7


def test_loss_and_metrics_of_a_batch(copy_dataset):
    root, manifest = copy_dataset
    task = make_task(manifest, beam_size=2)
    torch.manual_seed(0)
    model = task.build_model().eval()
    table = read_split(root, "val")
    batch = task.collate(table)
    # when one evaluation batch is scored
    with torch.no_grad():
        outputs = task.forward(model, batch, train=False)
    state = task.new_state()
    task.update(state, outputs, batch)
    metrics = task.compute(state)
    # then the loss is the mean cross-entropy per target token (<eos> included, padding skipped)
    logits_BTV = outputs["logits"]
    per_token = [F.cross_entropy(logits_BTV[b, :n], batch["y_out"][b, :n], reduction="sum")
                 for b, n in enumerate(batch["target_lengths"].tolist())]
    assert metrics["loss"] == pytest.approx(float(sum(per_token)) / task.loss_weight(batch), rel=1e-5)
    assert float(task.loss(outputs, batch)) == pytest.approx(metrics["loss"], rel=1e-5)
    # and the text metrics compare the beam-decoded outputs with the references
    references = [task.to_text(y) for y in table.column("y").to_pylist()]
    assert state["references"] == references
    decoded = model.decode(batch["x"], batch["lengths"], beam_size=2)
    assert state["hypotheses"] == [task.to_text(t) for t in decoded.tokens]
    assert {k: metrics[k] for k in ("exact_match", "bleu", "chrf")} == pytest.approx(
        text_scores(state["hypotheses"], references, level="char"))
    assert set(metrics) == set(Seq2SeqTask.metrics)
    assert {"val_bleu", "val_exact_match", "val_chrf", "val_token_accuracy"} <= metric_names("seq2seq")


def test_training_learns_to_copy_then_serves_raw_text(copy_dataset):
    # given the copy task and the plain training loop (no Ray)
    root, manifest = copy_dataset
    task = make_task(manifest, beam_size=2, teacher_forcing=0.9)
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = make_optimizer("adam", model.parameters(), lr=0.01)
    train, val = read_split(root, "train"), read_split(root, "val")
    before = task.compute(evaluate_batches(model, task.table_batches(val), task))
    # when it trains for a few epochs
    for _ in range(8):
        train_epoch(model, task.table_batches(train, 16), optimizer, task, grad_clip=1.0)
    after = task.compute(evaluate_batches(model, task.table_batches(val), task))
    # then the loss went down and the decoded outputs got much better
    assert after["loss"] < before["loss"] / 2
    assert after["exact_match"] > before["exact_match"] + 0.3 and after["bleu"] > before["bleu"] + 30

    # and predict takes raw strings (lengths never seen, an unknown character) and writes strings
    model.eval()
    out = task.predict(model, pd.DataFrame({"source": ["abc", "fed", "a", "abz"]}), {})
    assert list(out.columns) == ["target", "score"] and out["target"].map(type).eq(str).all()
    assert (out["score"] <= 0).all()
    x_BS, lengths_B = task.encode_sources(["abz"])
    assert x_BS.tolist()[0][2] == 1  # "z" never appeared in train: <unk>
    greedy = task.predict(model, pd.DataFrame({"source": ["abc", "fed"]}), {"beam_size": 1, "max_length": 2})
    assert greedy["target"].map(len).le(2).all()
    with pytest.raises(ValueError, match="row 1: empty source"):
        task.predict(model, pd.DataFrame({"source": ["ab", "   "]}), {})
    with pytest.raises(ValueError, match="`source` column"):
        task.predict(model, pd.DataFrame({"x": ["ab"]}), {})

    # and the gate scores predictions on the raw test sources against the reference strings
    test = read_split(root, "test")
    inputs, truth = task.gate_data(test)
    lines = Path(manifest.sources[0].path).read_text().splitlines()
    originals = {line.split("\t")[0] for line in lines}
    assert set(inputs["source"]) <= originals and truth == inputs["source"].tolist()  # copy task
    scores = task.score(task.predict(model, inputs, {}), truth)
    state = evaluate_batches(model, task.table_batches(test), task)
    assert scores == pytest.approx({k: v for k, v in task.compute(state).items() if k in scores})

    # and the report holds example translations and an attention heatmap (target x source)
    report = task.report(model, test, state)
    text = report.texts["eval/translations.txt"]
    assert text.count("reference:") == min(20, test.num_rows) and "hypothesis:" in text
    figure = report.figures["plots/attention.png"]
    assert isinstance(figure, Figure)
    heatmaps = [ax for ax in figure.axes if ax.images]
    first = test.column("x")[0].as_py()
    assert heatmaps[0].images[0].get_array().shape[1] == len(first)
    close(figure)


def test_shipped_config_is_a_seq2seq_run():
    # given the dates config, then it validates and asks for what the example documents
    cfg = load_config([REPO_CONFIG])
    assert cfg.data.task == "seq2seq" and cfg.data.source.format == "tsv"
    assert cfg.data.source.paths == ["builtin://dates/dates.tsv"] and cfg.data.source.level == "char"
    assert cfg.model.bidirectional and cfg.model.cell == "gru" and cfg.model.attention == "additive"
    assert cfg.model.beam_size == 3 and cfg.gate_metric == "exact_match"
    assert np.isclose(cfg.model.teacher_forcing, 0.9)


# --------------------------------------------------------------------------------------------
# baseline


def test_baseline_copies_the_source_and_scores_it_like_the_gate():
    from pipeline.data.dataset import SPECIALS

    chars = list("abc")
    pre = Preprocessing(mean=[], std=[], task="seq2seq", feature_kind="token", vocab=[*SPECIALS, *chars],
                        target_vocab=[*SPECIALS, *chars], task_params={"level": "char"})
    task = Seq2SeqTask(pre, RecurConfig(data={"task": "seq2seq"}))
    ids = {c: i for i, c in enumerate(pre.vocab)}
    # Given sources "abcabc", "abcab" with references "abcabc", "abcba"
    sources, references = ["abcabc", "abcab"], ["abcabc", "abcba"]
    test = pa.table({"id": ["p0", "p1"],
                     "x": pa.array([[ids[c] for c in s] for s in sources], pa.list_(pa.int32())),
                     "y": pa.array([[ids[c] for c in r] for r in references], pa.list_(pa.int32()))})

    scores = task.baseline(test.slice(0, 0), test)  # nothing is fit: train is never read

    # then the copies match one reference of two exactly, and BLEU/chrF are those of the copies
    assert scores["exact_match"] == 0.5
    assert scores == text_scores(sources, references, level="char")
    assert 0 < scores["bleu"] < 100 and 0 < scores["chrf"] < 100
