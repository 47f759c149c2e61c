"""The tag task end to end against a real `mlflow server` and a real local Ray.

Given CoNLL files of a small synthetic NER corpus, when `recur run` imports them and trains a
bidirectional LSTM with character features on 2 workers, then MLflow holds the run with entity
metrics and the task's artifacts, version 1 is @champion on entity F1, and the registered model
tags raw token lists, unknown words included.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.tracking.store import use_tracking_uri

pytestmark = pytest.mark.slow

MODEL = "e2e-tagger"
# Names that are also places: only the context tells a person from a place, so the trivial
# baseline the gate asks a model to beat (each word's most frequent train tag) gets some wrong.
BOTH = ["Jordan", "Georgia", "Florence", "Austin", "Sydney"]
FIRST = ["John", "Mary", "Anna", "Peter", "Maria", "David", "Laura", "Tom", *BOTH]
LAST = ["Smith", "Jones", "Brown", "Miller", "Garcia"]
PLACES = ["Paris", "Berlin", "London", "Madrid", "Rome", "Vienna", "Oslo", *BOTH]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli"]
TEMPLATES = [
    "{PER} visited {LOC} yesterday .",
    "{PER} works for {ORG} in {LOC} .",
    "the {ORG} office in {LOC} opened today .",
    "{PER} met {PER} at {ORG} .",
    "we flew to {LOC} with {PER} .",
]


def synthetic_conll(rng: np.random.Generator, sentences: int) -> str:
    """CoNLL text (token, tag) of template sentences with 1-2 word person names, places and
    companies in IOB2."""
    lines = []
    for _ in range(sentences):
        for word in TEMPLATES[int(rng.integers(len(TEMPLATES)))].split():
            if word == "{PER}":
                name = [str(rng.choice(FIRST))] + ([str(rng.choice(LAST))] if rng.random() < 0.5 else [])
                lines += [f"{w} {'B' if i == 0 else 'I'}-PER" for i, w in enumerate(name)]
            elif word == "{LOC}":
                lines.append(f"{rng.choice(PLACES)} B-LOC")
            elif word == "{ORG}":
                lines.append(f"{rng.choice(COMPANIES)} B-ORG")
            else:
                lines.append(f"{word} O")
        lines.append("")
    return "\n".join(lines)


def test_tag_run_tracks_registers_and_serves(ray_local, mlflow_server, tmp_path, capsys):
    import mlflow

    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    for name, n in (("ner_TRAIN.txt", 96), ("ner_VAL.txt", 24), ("ner_TEST.txt", 32)):
        (src / name).write_text(synthetic_conll(rng, n))
    config = tmp_path / "tag.yaml"
    config.write_text(
        "data:\n"
        "  task: tag\n"
        "  batch_size: 8\n"
        f"  source: {{format: conll, paths: ['{src / 'ner_TRAIN.txt'}', '{src / 'ner_VAL.txt'}', "
        f"'{src / 'ner_TEST.txt'}']}}\n"
        "model: {cell: lstm, bidirectional: true, hidden_size: 16, embedding_size: 16, char_features: true,"
        " char_embedding_size: 8}\n"
        "train: {epochs: 6, lr: 0.02, early_stopping_patience: 0, monitor: val_f1, monitor_mode: max}\n"
        f"registry: {{model_name: {MODEL}}}\n"
        "tracking: {experiment: e2e-tag}\n"
    )
    client = MlflowClient(mlflow_server)

    # when the run imports, trains, evaluates, logs and registers
    assert main(["run", str(config), "--set", f"data.root={tmp_path / 'ds'}",
                 "--set", f"tracking.tracking_uri={mlflow_server}",
                 "--set", f"tracking.runs_dir={tmp_path / 'runs'}"]) == 0
    out = capsys.readouterr().out
    assert "became @champion" in out

    experiment = client.get_experiment_by_name("e2e-tag")
    (run,) = client.search_runs([experiment.experiment_id])
    # then every epoch has the loss and entity metrics; the loss went down
    for key in ("train_loss", "val_loss", "val_token_accuracy", "val_precision", "val_recall", "val_f1"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == list(range(6)), key
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert losses[-1] < losses[0]
    metrics = run.data.metrics
    assert metrics["test_f1"] > 0.8 and metrics["test_token_accuracy"] > 0.9
    assert run.data.params["model.char_features"] == "True"
    # the task's artifacts: per-entity table, tagged examples, F1 bars
    artifacts = {f.path for d in ("eval", "plots") for f in client.list_artifacts(run.info.run_id, d)}
    assert {"eval/entity_report.json", "eval/tagged_examples.txt", "plots/entity_f1.png"} <= artifacts
    report = json.loads(Path(client.download_artifacts(run.info.run_id, "eval/entity_report.json",
                                                       str(tmp_path))).read_text())
    assert {"PER", "LOC", "ORG"} <= set(report)
    assert report["micro avg"]["f1"] == pytest.approx(metrics["test_f1"])

    # version 1 is champion, judged on entity F1 (the tag task's default gate metric)
    mv = client.get_model_version_by_alias(MODEL, "champion")
    assert mv.version == "1" and mv.run_id == run.info.run_id
    decision = json.loads(Path(client.download_artifacts(run.info.run_id, "registry/decision.json",
                                                         str(tmp_path))).read_text())
    assert decision["metric"] == "f1" and decision["promoted"] is True
    assert decision["baseline_name"] == "most-frequent-tag-per-word"
    assert decision["baseline_score"] < decision["candidate_score"]
    # the pyfunc's f1 on raw tokens recovered from the test split matches the evaluation
    assert decision["candidate_score"] == pytest.approx(metrics["test_f1"])

    # the champion tags raw token lists: known words as trained, unknown words get a tag too
    with use_tracking_uri(mlflow_server):
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    sentences = [["Mary", "visited", "Paris", "yesterday", "."],
                 ["Zorblax", "Quux", "works", "for", "Hooli", "in", "Oslo", "."],
                 ["we", "flew", "to", "Rome"]]
    tags = model.predict(pd.DataFrame({"tokens": sentences}))["tags"].tolist()
    assert [len(t) for t in tags] == [5, 8, 4]
    assert list(tags[0]) == ["B-PER", "O", "B-LOC", "O", "O"]
    assert list(tags[1][2:]) == ["O", "O", "B-ORG", "O", "B-LOC", "O"]
    assert tags[1][0] in {"O", "B-PER", "I-PER", "B-LOC", "B-ORG"}
    assert list(tags[2]) == ["O", "O", "O", "B-LOC"]
