"""The classify task on texts: token ids embedded, an attention heatmap that names the tokens, and
a served model that takes raw `text` split exactly as the import split it."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import RecurConfig
from pipeline.data.dataset import UNK_ID, read_manifest, read_split
from pipeline.data.importers import import_dataset
from pipeline.data.preprocess import Preprocessing
from pipeline.tasks import build_task
from pipeline.tracking.pyfunc import RecurSequenceModel
from pipeline.training.budget import resolve
from pipeline.training.checkpoint import save_checkpoint

TRAIN = [("a great film", "pos"), ("Great fun", "pos"), ("loved it", "pos"), ("great great", "pos"),
         ("a bad film", "neg"), ("Bad acting", "neg"), ("hated it", "neg"), ("bad bad", "neg")]
VAL = [("great", "pos"), ("bad", "neg")]
TEST = [("a great  film", "pos"), ("a BAD zebra film", "neg"), ("great", "pos"),
        ("bad bad bad bad bad", "neg")]


@pytest.fixture(params=["word", "wordpunct", "char"])
def dataset(request, tmp_path):
    for split, rows in (("TRAIN", TRAIN), ("VAL", VAL), ("TEST", TEST)):
        (tmp_path / f"reviews_{split}.jsonl").write_text(
            "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    import_dataset("text-classes", [str(tmp_path / f"reviews_{s}.jsonl") for s in ("TRAIN", "VAL", "TEST")],
                   str(tmp_path / "ds"), level=request.param, lowercase=True, max_length=16)
    return tmp_path / "ds"


def _task(root, **model):
    manifest = read_manifest(str(root))
    cfg = RecurConfig(data={"task": "classify"}, model={"hidden_size": 8, "embedding_size": 6,
                                                         "pooling": "attention", **model})
    cfg = resolve(cfg, manifest).cfg  # the budget's auto settings, as a run decides them
    return build_task(cfg, Preprocessing.from_manifest(manifest))


def test_the_budget_keeps_float_only_settings_off_for_token_inputs(dataset):
    manifest = read_manifest(str(dataset))
    cfg = RecurConfig(data={"task": "classify", "batch_size": "auto"},
                      model={"frontend": "auto", "patch": "auto", "instance_norm": "auto"},
                      train={"min_steps": 10, "epochs": 1})
    resolved = resolve(cfg, manifest)
    assert resolved.cfg.model.frontend == "none" and resolved.cfg.model.patch == 1
    assert resolved.cfg.model.instance_norm is False
    assert resolved.cfg.data.batch_size == 4  # 8 train rows: the smallest auto batch
    # epochs raised so that the 8 rows give at least train.min_steps steps
    assert resolved.cfg.train.epochs == -(-10 // resolved.steps_per_epoch)


def test_model_embeds_token_ids_and_the_loss_trains(dataset):
    torch.manual_seed(0)
    task = _task(dataset)
    model = task.build_model()
    assert model.encoder.embedding.num_embeddings == len(task.pre.vocab)
    batch = task.collate(read_split(str(dataset), "train"))
    assert batch["x"].dtype == torch.int64 and batch["x"].shape[0] == 8
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        loss = task.loss(model(batch["x"], batch["lengths"]), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_attention_heatmap_names_the_tokens_of_test_examples(dataset):
    torch.manual_seed(0)
    task = _task(dataset)
    model = task.build_model().eval()
    test = read_split(str(dataset), "test")
    state = task.new_state()
    batch = task.collate(test)
    task.update(state, model(batch["x"], batch["lengths"]), batch)
    report = task.report(model, test, state)
    figure = report.figures["plots/attention.png"]
    first = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    level = task.level
    expected = ["a", "great", "film"] if level != "char" else list("a great  film".replace(" ", "␣"))
    assert first == expected
    assert "nn1_euclidean_accuracy" not in task.baseline(read_split(str(dataset), "train"), test)


def test_predict_takes_raw_text_tokenized_as_the_import_did(dataset):
    torch.manual_seed(0)
    task = _task(dataset)
    model = task.build_model().eval()
    test = read_split(str(dataset), "test")
    # the dataset's test rows turned back into text read back to the very same ids (the last one
    # cut at 16 characters: "bad bad bad bad", its trailing space dropped as the import did)
    inputs, truth = task.gate_data(test)
    assert list(inputs.columns) == ["text"] and truth == ["pos", "neg", "pos", "neg"]
    encoded = [task.encode_texts(inputs.iloc[[i]])[0] for i in range(len(inputs))]
    assert encoded == test.column("x").to_pylist()
    # unknown words (zebra) are <unk>, case folded as at import, surrounding space stripped
    raw = pd.DataFrame({"text": ["  A BAD zebra film ", "a bad zebra film"]})
    ids = task.encode_texts(raw)
    assert ids[0] == ids[1] and (task.level == "char" or UNK_ID in ids[0])
    if task.level == "wordpunct":  # punctuation split off as at import: "great!" starts as "great"
        great, exclaimed = task.encode_texts(pd.DataFrame({"text": ["great", "Great!"]}))
        assert exclaimed == [*great, UNK_ID]
    # predictions from raw text equal the model on the stored ids
    out = task.predict(model, inputs, {"probabilities": True})
    batch = task.collate(test)
    with torch.no_grad():
        expected = torch.softmax(model(batch["x"], batch["lengths"]), dim=-1).numpy()
    np.testing.assert_allclose(out[["prob_neg", "prob_pos"]].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert list(out.columns[:3]) == ["label", "label_index", "confidence"]
    with pytest.raises(ValueError, match="column `text`"):
        task.predict(model, pd.DataFrame({"x": [[1, 2]]}), {})
    with pytest.raises(ValueError, match="row 1: the text has no tokens"):
        task.predict(model, pd.DataFrame({"text": ["great", "   "]}), {})


def test_the_pyfunc_model_takes_a_text_column(dataset, tmp_path):
    # given a checkpoint of a text classifier, loaded as the registered model loads it
    torch.manual_seed(0)
    task = _task(dataset, pooling="mean")
    model = task.build_model().eval()
    path = save_checkpoint(str(tmp_path), model=model, preprocessing=task.pre)
    served = RecurSequenceModel()
    served.load_context(mlflow.pyfunc.PythonModelContext(artifacts={"checkpoint": path}, model_config=None))
    # when it is given raw strings
    frame = pd.DataFrame({"text": ["a great film", "a bad film", "never seen words"]})
    out = served.predict(None, frame, {"probabilities": True})
    # then one label, confidence and probabilities per row, as the task predicts them
    assert len(out) == 3 and set(out["label"]) <= {"neg", "pos"}
    np.testing.assert_allclose(out[["prob_neg", "prob_pos"]].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["confidence"], out[["prob_neg", "prob_pos"]].max(axis=1))
    pd.testing.assert_frame_equal(out, task.predict(model, frame, {"probabilities": True}))
    assert "prob_pos" not in served.predict(None, frame, None).columns


def test_pretrained_vectors_start_the_text_models_word_embedding(dataset):
    # the embedding model.embeddings starts from is the one the token ids are looked up in
    task = _task(dataset)
    model = task.build_model()
    assert task.word_embedding(model) is model.encoder.embedding
    assert task.word_embedding(model).num_embeddings == len(task.pre.vocab)
