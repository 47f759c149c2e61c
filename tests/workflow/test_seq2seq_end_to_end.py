"""seq2seq end to end against a real `mlflow server` and a real local Ray (2 DDP workers).

Given a tab-separated letter-substitution task (a..f written as u..z, which copying the source
cannot score on), when `recur run` imports it,
trains and evaluates, then MLflow holds the per-epoch seq2seq metrics, example translations and
an attention heatmap, the model is registered as v1 @champion, and the registered pyfunc
translates raw strings exactly as the checkpoint does in process.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.tracking.store import use_tracking_uri

pytestmark = pytest.mark.slow

MODEL = "e2e-seq2seq"


def test_seq2seq_run_logs_registers_and_serves(ray_local, mlflow_server, tmp_path, capsys):
    import mlflow

    # given 240 pairs in a tsv file, each letter a..f written as u..z: as easy to learn as a copy
    # (source and target embeddings are apart), but copying the source, the trivial baseline the
    # gate asks a model to beat, shares no character with the target (BLEU 0)
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdef") for _ in range(rng.randint(2, 6))) for _ in range(240)]
    source = tmp_path / "letters.tsv"
    source.write_text("".join(f"{w}\t{w.translate(str.maketrans('abcdef', 'uvwxyz'))}\n" for w in words))
    config = tmp_path / "s2s.yaml"
    config.write_text(
        "data:\n"
        "  task: seq2seq\n"
        f"  source: {{format: tsv, paths: ['{source}'], level: char}}\n"
        "  batch_size: 8\n"
        "model: {cell: gru, hidden_size: 16, bidirectional: true, attention: additive,\n"
        "        teacher_forcing: 0.9, beam_size: 2, max_decode_length: 10}\n"
        "train: {epochs: 6, lr: 0.01, early_stopping_patience: 0}\n"
        f"registry: {{model_name: {MODEL}}}\n"
        "tracking: {experiment: e2e-seq2seq}\n"
    )
    # when `recur run` imports, trains on 2 workers, evaluates and registers
    assert main(["run", str(config), "--set", f"data.root={tmp_path / 'ds'}",
                 "--set", f"tracking.tracking_uri={mlflow_server}",
                 "--set", f"tracking.runs_dir={tmp_path / 'runs'}"]) == 0
    out = capsys.readouterr().out
    assert "test bleu" in out and "became @champion" in out

    # then the run has per-epoch seq2seq metrics, and training improved them
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("e2e-seq2seq").experiment_id])
    for key in ("train_loss", "val_loss", "val_token_accuracy", "val_exact_match", "val_bleu", "val_chrf"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(range(6)), key
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert losses[-1] < losses[0] / 2
    bleu = [m.value for m in client.get_metric_history(run.info.run_id, "val_bleu")]
    assert bleu[-1] > bleu[0] + 20
    metrics = run.data.metrics
    assert {"test_loss", "test_token_accuracy", "test_exact_match", "test_bleu", "test_chrf"} <= set(metrics)
    assert metrics["test_bleu"] > 30

    # and the artifacts hold example translations and the attention heatmap
    artifacts = {f.path for d in ("plots", "eval") for f in client.list_artifacts(run.info.run_id, d)}
    assert {"plots/attention.png", "plots/learning_curves.png", "eval/translations.txt"} <= artifacts
    png = client.download_artifacts(run.info.run_id, "plots/attention.png", str(tmp_path))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = Path(client.download_artifacts(run.info.run_id, "eval/translations.txt", str(tmp_path)))
    text = text.read_text()
    assert "source:" in text and "reference:" in text and "hypothesis:" in text

    # and version 1 is the champion, gated on BLEU (the task's default), scored through the pyfunc
    mv = client.get_model_version_by_alias(MODEL, "champion")
    assert mv.version == "1" and mv.run_id == run.info.run_id
    assert float(mv.tags["recur.test_bleu"]) == pytest.approx(metrics["test_bleu"], abs=1e-4)

    # and the registered model translates raw strings (unseen lengths, an unknown character)
    with use_tracking_uri(mlflow_server):
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    raw = pd.DataFrame({"source": ["abc", "fedcba", "a", "abz"]})
    served = model.predict(raw)
    assert list(served.columns) == ["target", "score"] and served["target"].map(type).eq(str).all()
    assert (served["score"] <= 0).all()
    greedy = model.predict(raw, params={"beam_size": 1, "max_length": 3})
    assert greedy["target"].map(len).le(3).all()

