"""Text classification end to end: `recur run` on a hand-written JSON Lines file with a real local
Ray and a real `mlflow server`, then the registered model on raw `text` and `recur predict` on the
dataset."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.data.dataset import read_split
from pipeline.tracking.store import use_tracking_uri

pytestmark = pytest.mark.slow

MODEL = "e2e-text-classes"
GOOD = ["great", "lovely", "superb", "fun", "brilliant"]
BAD = ["awful", "boring", "dull", "terrible", "weak"]
FILLER = ["the", "film", "plot", "was", "really", "quite", "acting", "story"]


def test_text_run_registers_a_model_that_takes_text_and_predicts_a_dataset(ray_local, mlflow_server,
                                                                            tmp_path, capsys):
    import mlflow

    # given 160 hand-made reviews: filler words and one telling word (plus one empty line)
    rng = random.Random(0)
    lines = []
    for k in range(160):
        label = "pos" if k % 2 else "neg"
        words = rng.sample(FILLER, 4) + [rng.choice(GOOD if label == "pos" else BAD)]
        rng.shuffle(words)
        lines.append(json.dumps({"review": " ".join(words).capitalize(), "sentiment": label}))
    lines.insert(7, json.dumps({"review": "", "sentiment": "pos"}))
    source = tmp_path / "reviews.jsonl"
    source.write_text("\n".join(lines) + "\n")
    # and 16-wide pretrained vectors (GloVe's text format) for its telling words (the first
    # number says which side), two filler words and a word it lacks
    pretrained = {w: [1.0 if w in GOOD else -1.0 if w in BAD else 0.0]
                  + [round(rng.uniform(-0.5, 0.5), 3) for _ in range(15)]
                  for w in [*GOOD, *BAD, "film", "plot", "unseen"]}
    vectors = tmp_path / "vectors.16d.txt"
    vectors.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in pretrained.items()))
    sets = [f"data.source.paths=[{source}]", "data.source.text_column=review",
            "data.source.label_column=sentiment", "data.on_invalid=quarantine", "data.batch_size=16",
            f"data.root={tmp_path / 'ds'}", "model.hidden_size=16",
            # the embedding starts from the vectors (their width) and keeps them (frozen)
            f"model.embeddings={vectors}", "model.freeze_embeddings=true",
            "train.epochs=12", "train.lr=0.01", "train.early_stopping_patience=0",
            "model.pooling=attention",  # the shipped max pooling draws no heatmap; this one does
            "resources.num_workers=0", f"registry.model_name={MODEL}", "tracking.experiment=e2e-text",
            f"tracking.tracking_uri={mlflow_server}", f"tracking.runs_dir={tmp_path / 'runs'}"]
    config = Path(__file__).resolve().parents[2] / "configs" / "classify-text.yaml"
    # when the shipped config runs on it (with attention pooling)
    assert main(["run", str(config), *[a for s in sets for a in ("--set", s)]]) == 0
    assert "became @champion" in capsys.readouterr().out

    # then the bad line was set aside, the run learned the telling words, and the attention
    # heatmap is among the artifacts
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("e2e-text").experiment_id])
    assert run.data.metrics["test_accuracy"] >= 0.9
    assert pq.read_table(str(tmp_path / "ds" / "quarantine")).column("source").to_pylist()[0].endswith(
        "reviews.jsonl:8")
    assert "plots/attention.png" in {f.path for f in client.list_artifacts(run.info.run_id, "plots")}

    # and the registered model takes raw text (new sentences, an unknown word, any case)
    with use_tracking_uri(mlflow_server):
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    served = model.predict(pd.DataFrame({"text": ["What a SUPERB story", "the plot was dull zzz"]}),
                           params={"probabilities": True})
    assert served["label"].tolist() == ["pos", "neg"]
    assert list(served.columns) == ["label", "label_index", "confidence", "prob_neg", "prob_pos"]

    # and its embedding holds the pretrained vectors of the words found, unchanged by training
    assert run.data.params["embeddings.words_found"] == "12"
    assert run.data.params["embeddings.dimensions"] == "16"
    assert run.data.params["model.embedding_size"] == "16"  # the vectors' width, not the config's 128
    served_model = model.unwrap_python_model()
    embedding = served_model.model.encoder.embedding.weight.detach()
    index = {word: i for i, word in enumerate(served_model.pre.vocab)}
    for word in [*GOOD, *BAD, "film", "plot"]:
        assert embedding[index[word]].tolist() == pytest.approx(pretrained[word])

    # and `recur predict` on the dataset predicts every row as the model does on its text
    out = tmp_path / "predictions"
    assert main(["predict", f"{MODEL}@champion", "--data", str(tmp_path / "ds"), "--out", str(out),
                 "--tracking-uri", mlflow_server, "--runs-dir", str(tmp_path / "runs")]) == 0
    result = pq.read_table(out).to_pandas()
    test = read_split(str(tmp_path / "ds"), "test")
    assert len(result) == 160 and result["error"].isna().all()
    by_id = result.set_index("id")
    truth = ["neg", "pos"]
    correct = [by_id.loc[i, "label"] == truth[y] for i, y in zip(test.column("id").to_pylist(),
                                                                 test.column("y").to_pylist())]
    assert sum(correct) / len(correct) == pytest.approx(run.data.metrics["test_accuracy"])
