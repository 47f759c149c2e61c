"""lm end to end against a real `mlflow server` and a real local Ray with 2 Train workers.

Given a small text written here (a repeated line a model learns in a few epochs), when `recur run`
imports it at char level and trains with truncated backpropagation through time on 2 workers,
then MLflow holds the per-epoch perplexity and bits per character, the test metrics and generated
samples, the model is registered as version 1 @champion, and `recur generate` continues a prompt
with the pattern the model learned.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.cli import main

pytestmark = pytest.mark.slow

MODEL = "e2e-lm"
LINE = "abcdefgh\n"


def test_lm_run_logs_samples_registers_and_generates(ray_local, mlflow_server, tmp_path, capsys):
    corpus = tmp_path / "pattern.txt"
    corpus.write_text(LINE * 600)  # 5400 characters: 4320 train, 540 val, 540 test
    config = tmp_path / "lm.yaml"
    config.write_text(
        "data:\n"
        "  task: lm\n"
        f"  source: {{format: text, paths: [{corpus}], level: char, chunk_length: 100}}\n"
        "  val_fraction: 0.1\n"
        "  test_fraction: 0.1\n"
        "  batch_size: 4\n"  # 2 workers x 4 streams of 540 characters
        "model: {cell: gru, hidden_size: 16}\n"
        "train: {epochs: 8, lr: 0.02, bptt: 32, early_stopping_patience: 0, monitor: val_bits_per_char}\n"
        "generate: {samples: 2, length: 30, top_k: 1}\n"
        f"registry: {{model_name: {MODEL}}}\n"
        "tracking: {experiment: e2e-lm}\n"
    )

    # when the pipeline runs
    code = main(["run", str(config), "--set", f"data.root={tmp_path / 'ds'}",
                 "--set", f"tracking.tracking_uri={mlflow_server}",
                 "--set", f"tracking.runs_dir={tmp_path / 'runs'}"])
    assert code == 0
    out = capsys.readouterr().out
    assert "test bits per char" in out and "became @champion" in out
    assert "  plots           learning_curves.png, perplexity.png, gate.png\n" in out

    # then the run has one point per epoch of the lm metrics, and the loss went down
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("e2e-lm")
    (run,) = client.search_runs([experiment.experiment_id])
    for key in ("train_loss", "val_loss", "val_perplexity", "val_bits_per_char"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == list(range(8)), key
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert losses[-1] < 0.5 * losses[0]
    # each character follows from the one before it: the model gets well below log2(9) bits
    metrics = run.data.metrics
    assert metrics["test_bits_per_char"] < 0.5
    assert metrics["test_perplexity"] == pytest.approx(2 ** metrics["test_bits_per_char"], rel=1e-6)

    # the perplexity curve and the gate's picture were logged
    assert {"plots/learning_curves.png", "plots/perplexity.png", "plots/gate.png"} <= {
        f.path for f in client.list_artifacts(run.info.run_id, "plots")}

    # generated samples were logged, starting from the first complete test line
    path = client.download_artifacts(run.info.run_id, "eval/samples.txt", str(tmp_path))
    samples = Path(path).read_text()
    assert samples.count("----- sample") == 2 and f"-----\n{LINE}{LINE * 3}" in samples

    # the model is version 1 and @champion, gated on perplexity (the task's default)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "1" and champion.run_id == run.info.run_id
    decision_path = client.download_artifacts(run.info.run_id, "registry/decision.json", str(tmp_path))
    assert json.loads(Path(decision_path).read_text())["metric"] == "perplexity"

    # `recur generate` continues a prompt greedily with the learned pattern
    assert main(["generate", f"{MODEL}@champion", "--prompt", "abc", "--length", "20", "--top-k", "1",
                 "--tracking-uri", mlflow_server]) == 0
    printed = capsys.readouterr().out
    assert printed.strip("\n") == ("abc" + "defgh\n" + LINE * 2)[:23].strip("\n")
    # and by version number, sampling with a seed, the same text twice
    args = ["generate", f"{MODEL}/1", "--prompt", "abc", "--length", "20", "--seed", "3",
            "--tracking-uri", mlflow_server]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first and first.startswith("abc")
