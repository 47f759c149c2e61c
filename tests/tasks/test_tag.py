"""The tag task: entity metrics against hand-computed values, padding never counts, the tagger's
shapes for every cell, serving raw token lists, and the test report."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pytest
import torch
from torch.nn import functional as F

from pipeline.config import RecurConfig
from pipeline.data.dataset import UNK_ID, read_manifest, read_split
from pipeline.data.importers.conll import import_conll
from pipeline.data.preprocess import Preprocessing
from pipeline.models.tagger import SequenceTagger
from pipeline.tasks import build_task
from pipeline.tasks.tag import IGNORE, MAX_WORD_CHARS, entity_scores, pad_chars, tag_scores

CORPUS = """Peter B-PER
Blackburn I-PER
visited O
Paris B-LOC
. O

the O
EU B-ORG
met O
in O
Bonn B-LOC

Mary B-PER
left O
"""


@pytest.fixture
def dataset(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "toy_TRAIN.txt").write_text(CORPUS)
    (src / "toy_VAL.txt").write_text("Mary B-PER\nvisited O\nZurich B-LOC\n")
    (src / "toy_TEST.txt").write_text("Peter B-PER\nmet O\nZoe B-PER\n\nthe O\nEU B-ORG\n")
    import_conll([str(src)], str(tmp_path / "ds"), lowercase=True)
    return tmp_path / "ds"


def _task(root, **model):
    pre = Preprocessing.from_manifest(read_manifest(str(root)))
    cfg = RecurConfig(data={"task": "tag"}, model={"hidden_size": 8, "embedding_size": 6,
                                                    "bidirectional": True, **model})
    return build_task(cfg, pre)


# ---------------------------------------------------------------------------- metrics


def test_entity_scores_match_hand_computed_values():
    # true entities: PER(0-1), LOC(3) in sentence 1, ORG(0) in sentence 2 -> 3
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    # predicted: PER(0-1) right, ORG(3) wrong type, ORG(0) right, LOC(1) spurious -> 4, 2 right
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-LOC"]]
    scores = tag_scores(true, predicted)
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))  # 4/7
    assert scores["token_accuracy"] == pytest.approx(4 / 6)


def test_entity_boundaries_must_match_and_iob1_reads_like_conlleval():
    # a truncated entity is wrong as a whole, though 1 of its 2 tokens is right
    assert entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])["f1"] == 0.0
    # IOB1: an entity may start with I- (conlleval reads it as a chunk start)
    assert entity_scores([["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]])["f1"] == 1.0
    # IOBES tags read too; nothing to find and nothing found is 0, not an error
    assert entity_scores([["S-LOC", "B-PER", "E-PER"]], [["S-LOC", "B-PER", "E-PER"]])["f1"] == 1.0
    assert entity_scores([["O", "O"]], [["O", "O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match="sentence 0: 2 true tags but 1 predicted"):
        tag_scores([["O", "O"]], [["O"]])


def test_token_accuracy_and_loss_ignore_padding(dataset):
    task = _task(dataset)
    labels = task.pre.labels
    batch = task.collate(read_split(str(dataset), "train"))  # lengths 5, 5, 2
    assert batch["lengths"].tolist() == [5, 5, 2]
    assert (batch["y"][2, 2:] == IGNORE).all()
    # given logits that are right on every valid word except one, and wrong on every pad step
    torch.manual_seed(0)
    logits_BTK = torch.randn(3, 5, len(labels))
    target = batch["y"].clamp(min=0)
    logits_BTK.scatter_(-1, target.unsqueeze(-1), 10.0)
    wrong = (target[0, 2] + 1) % len(labels)
    logits_BTK[0, 2, wrong] = 20.0
    logits_BTK[2, 2:] = 0.0
    logits_BTK[2, 2:, (target[2, 0] + 1) % len(labels)] = 50.0
    state = task.new_state()
    task.update(state, logits_BTK, batch)
    metrics = task.compute(state)
    # then accuracy counts 11 of 12 valid words and the loss is the mean over those 12 only
    assert metrics["token_accuracy"] == pytest.approx(11 / 12)
    valid = batch["y"] != IGNORE
    expected = F.cross_entropy(logits_BTK[valid], batch["y"][valid])
    assert metrics["loss"] == pytest.approx(float(expected), rel=1e-6)
    assert float(task.loss(logits_BTK, batch)) == pytest.approx(float(expected), rel=1e-6)
    assert task.loss_weight(batch) == 12
    # and the wrong tag on "visited" (B-LOC) makes one spurious entity: 5 of 6 predicted are right
    assert labels[wrong] == "B-LOC"
    assert state["predicted"][2] == [labels[i] for i in batch["y"][2, :2].tolist()]
    assert metrics["precision"] == pytest.approx(5 / 6) and metrics["recall"] == pytest.approx(1.0)


def test_pad_steps_never_change_valid_outputs(dataset):
    # given a tagger with char features, and one short sentence
    task = _task(dataset, char_features=True, cell="lstm", num_layers=2)
    torch.manual_seed(0)
    model = task.build_model().eval()
    table = read_split(str(dataset), "train")
    alone = task.collate(table.slice(2, 1))  # "mary left"
    batch = task.collate(table)  # the same sentence padded to 5 words
    # when the pad steps hold garbage words and characters
    batch["x"][2, 2:] = 5
    batch["chars"][2, 2:] = 7
    with torch.no_grad():
        short = task.forward(model, alone, train=False)
        padded = task.forward(model, batch, train=False)
    # then the valid steps' logits, and so the loss and predictions, are unchanged
    torch.testing.assert_close(padded[2, :2], short[0], rtol=1e-5, atol=1e-6)
    state_alone, state_batch = task.new_state(), task.new_state()
    task.update(state_alone, short, alone)
    task.update(state_batch, padded, batch)
    assert state_batch["predicted"][2] == state_alone["predicted"][0]
    torch.testing.assert_close(task.loss(padded[2:], {"y": batch["y"][2:]}), task.loss(short, alone))


# ---------------------------------------------------------------------------- model


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("chars", [False, True])
def test_tagger_shapes(cell, bidirectional, chars):
    model = SequenceTagger(vocab_size=12, num_tags=5, embedding_size=6, hidden_size=8, cell=cell,
                           bidirectional=bidirectional, num_layers=2, dropout=0.1,
                           char_vocab_size=9 if chars else 0, char_embedding_size=4)
    x_BT = torch.tensor([[4, 5, 6, 7], [8, 9, 0, 0]])
    chars_BTW = torch.randint(1, 9, (2, 4, 3)) * (x_BT != 0).unsqueeze(-1)
    logits_BTK = model(x_BT, torch.tensor([4, 2]), chars_BTW if chars else None)
    assert logits_BTK.shape == (2, 4, 5)
    assert model.encoder.rnn.input_size == 6 + (4 if chars else 0)
    assert model.encoder.output_size == 8 * (2 if bidirectional else 1)
    # the constructor keywords rebuild the same architecture (checkpoints rely on it)
    rebuilt = SequenceTagger(**model.model_args)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]
    if chars:
        with pytest.raises(ValueError, match="pass chars_BTW"):
            model(x_BT, torch.tensor([4, 2]))


def test_pad_chars_cuts_long_words():
    long_word = list(range(1, MAX_WORD_CHARS + 11))
    chars_BTW = pad_chars(torch.tensor([5, 6] + long_word).numpy(), [2, len(long_word)], [1, 1])
    assert chars_BTW.shape == (2, 1, MAX_WORD_CHARS)
    assert chars_BTW[0, 0].tolist() == [5, 6] + [0] * (MAX_WORD_CHARS - 2)
    assert chars_BTW[1, 0].tolist() == long_word[:MAX_WORD_CHARS]


# ---------------------------------------------------------------------------- serving


def test_predict_tags_raw_token_lists(dataset):
    task = _task(dataset, char_features=True)
    torch.manual_seed(0)
    model = task.build_model().eval()
    sentences = [["PETER", "visited", "Zxqwv"], [], "the EU met", ["Mary"]]
    out = task.predict(model, pd.DataFrame({"tokens": sentences}), {})
    # one tag per token, tag names the dataset knows, an empty sentence has no tags
    assert [len(t) for t in out["tags"]] == [3, 0, 3, 1]
    assert all(t in task.pre.labels for tags in out["tags"] for t in tags)
    # words are lowercased like the import; unknown words are <unk>; characters keep their case
    encoded = task.encode([["PETER", "Zxqwv"]], chars=True)
    assert encoded["x"].tolist() == [[task.pre.vocab.index("peter"), UNK_ID]]
    char_vocab = task.pre.task_params["char_vocab"]
    p, e = char_vocab.index("P"), char_vocab.index("E")  # from "Peter" and "EU"; no T or R in train
    assert encoded["chars"][0, 0].tolist() == [p, e, UNK_ID, e, UNK_ID]
    # a sentence is tagged the same alone and in a batch
    alone = task.predict(model, pd.DataFrame({"tokens": [["Mary"]]}), {})
    assert alone["tags"][0] == out["tags"][3]
    with pytest.raises(ValueError, match="column `tokens`"):
        task.predict(model, pd.DataFrame({"x": [[1]]}), {})


def test_gate_data_recovers_raw_tokens_and_scores(dataset):
    task = _task(dataset, char_features=True)
    inputs, truth = task.gate_data(read_split(str(dataset), "test"))
    # the original tokens (case kept, unseen words included) come back from the character ids;
    # "Zoe" has a character train never saw, so it falls back to its vocabulary entry
    assert inputs["tokens"].tolist() == [["Peter", "met", "<unk>"], ["the", "EU"]]
    assert truth == [["B-PER", "O", "B-PER"], ["O", "B-ORG"]]
    perfect = task.score(pd.DataFrame({"tags": truth}), truth)
    assert perfect == {"token_accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    half = task.score(pd.DataFrame({"tags": [["B-PER", "O", "O"], ["O", "O"]]}), truth)
    assert half["recall"] == pytest.approx(1 / 3) and half["precision"] == 1.0


def test_report_has_entity_table_examples_and_plot(dataset):
    from pipeline.training.loop import evaluate_batches

    task = _task(dataset, char_features=True)
    torch.manual_seed(0)
    model = task.build_model()
    table = read_split(str(dataset), "test")
    state = evaluate_batches(model, task.table_batches(table, 1), task)
    report = task.report(model, table, state)
    per_entity = report.dicts["eval/entity_report.json"]
    assert {"PER", "ORG", "micro avg"} <= set(per_entity)
    assert per_entity["PER"]["support"] == 2 and 0.0 <= per_entity["PER"]["f1"] <= 1.0
    assert per_entity["micro avg"]["f1"] == pytest.approx(task.compute(state)["f1"])
    text = report.texts["eval/tagged_examples.txt"]
    assert "# toy_TEST.txt:0" in text and "Peter" in text and "B-PER" in text
    assert report.figures["plots/entity_f1.png"].axes[0].get_xlabel() == "F1 (entity level)"
    assert math.isfinite(task.compute(state)["loss"])


# ---------------------------------------------------------------------------- baseline

BASE_WORDS = ["the", "bank", "paris", "rome", "acme", "zurich"]
BASE_TAGS = ["O", "B-LOC", "B-ORG"]


def _tag_table(sentences: list[list[tuple[str, str]]]) -> pa.Table:
    from pipeline.data.dataset import SPECIALS

    vocab = [*SPECIALS, *BASE_WORDS]
    return pa.table({
        "id": [f"s{i}" for i in range(len(sentences))],
        "x": pa.array([[vocab.index(w) for w, _ in s] for s in sentences], pa.list_(pa.int32())),
        "y": pa.array([[BASE_TAGS.index(t) for _, t in s] for s in sentences], pa.list_(pa.int64())),
    })


def test_baseline_tags_each_word_with_its_most_frequent_train_tag():
    from pipeline.data.dataset import SPECIALS

    pre = Preprocessing(mean=[], std=[], labels=BASE_TAGS, task="tag", feature_kind="token",
                        vocab=[*SPECIALS, *BASE_WORDS])
    task = build_task(RecurConfig(data={"task": "tag"}), pre)
    # Given train counts: B-LOC 4, B-ORG 3, O 3 (overall B-LOC); bank B-ORG 2 : O 1;
    # acme O 1 : B-ORG 1 (a tie: the tag first in the tag map, O)
    train = _tag_table([[("paris", "B-LOC"), ("rome", "B-LOC"), ("bank", "B-ORG")],
                        [("bank", "B-ORG"), ("bank", "O"), ("the", "O")],
                        [("rome", "B-LOC")],
                        [("acme", "O"), ("acme", "B-ORG")],
                        [("rome", "B-LOC")]])
    # and test words: <unk> and zurich (in the vocabulary, never in train) are unknown
    test = _tag_table([[("the", "O"), ("bank", "B-ORG"), ("acme", "B-ORG"), ("<unk>", "O")],
                       [("zurich", "B-LOC"), ("paris", "B-LOC")]])

    scores = task.baseline(train, test)

    # then the tags O B-ORG O B-LOC | B-LOC B-LOC: 4 of 6 words right; entities ORG@1 LOC@3 |
    # LOC@0 LOC@1 predicted, ORG@1 ORG@2 | LOC@0 LOC@1 true: 3 of 4 right each way
    assert scores["token_accuracy"] == pytest.approx(4 / 6)
    assert scores["precision"] == pytest.approx(0.75) and scores["recall"] == pytest.approx(0.75)
    assert scores["f1"] == pytest.approx(0.75)
    predicted = pd.DataFrame({"tags": [["O", "B-ORG", "O", "B-LOC"], ["B-LOC", "B-LOC"]]})
    assert scores == task.score(predicted, task.gate_data(test)[1])


def test_pretrained_vectors_start_the_taggers_word_embedding(dataset):
    # model.embeddings starts the word table (not the character one) of the vocabulary's size
    task = _task(dataset, char_features=True)
    model = task.build_model()
    assert task.word_embedding(model) is model.embedding
    assert task.word_embedding(model).num_embeddings == len(task.pre.vocab)
