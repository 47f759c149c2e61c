"""End to end against a real `mlflow server` (sqlite backend) and a real local Ray.

Given a tiny dataset, when `recur run` trains twice (a good model, then one that beats its
majority-class baseline but not the champion by the required margin), then MLflow holds both runs
with their metrics and artifacts, the first version is @champion and the second is kept as
@challenger, and the champion loads with `mlflow.pyfunc` and predicts raw sequences of any length.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.tracking.store import use_tracking_uri

pytestmark = pytest.mark.slow

MODEL = "e2e-toy"


def _run(tmp_path, dataset, uri, *extra, quiet=False):
    config = tmp_path / "e2e.yaml"
    config.write_text(
        "model: {cell: gru, hidden_size: 16}\n"
        "train: {epochs: 5, lr: 0.01, early_stopping_patience: 0}\n"
        "data: {batch_size: 16}\n"
        # one rank in this process: the workflow is the subject; 2-worker DDP of the classify task is
        # tested in tests/training/test_distributed.py and by the quick start in tests/test_readme.py
        "resources: {num_workers: 0}\n"
        f"registry: {{model_name: {MODEL}, metric: accuracy, min_improvement: 0.0}}\n"
        "tracking: {experiment: e2e}\n"
    )
    return main([*(["-q"] if quiet else []), "run", str(config), "--set", f"data.root={dataset}",
                 "--set", f"tracking.tracking_uri={uri}", "--set", f"tracking.runs_dir={tmp_path / 'runs'}",
                 *extra])


def test_run_tracks_registers_and_gates(ray_local, mlflow_server, toy_dataset, tmp_path, capsys):
    import mlflow

    client = MlflowClient(mlflow_server)
    env_before = os.environ.get("MLFLOW_TRACKING_URI")

    # when a good model is trained
    assert _run(tmp_path, toy_dataset, mlflow_server) == 0
    out, err = capsys.readouterr()
    assert "test accuracy" in out and "became @champion" in out and mlflow_server in out
    # progress on a stderr that is not a terminal: plain lines, rendered by this driver from what
    # rank 0 puts on the progress board
    shown = [line for line in err.splitlines() if line.startswith("[recur]")]
    assert "\r" not in err and not any("\x1b" in line for line in shown)
    # (a loaded machine may say first what it waits for: `[recur] waiting for ...`)
    progress = [line for line in shown if not line.startswith("[recur] waiting for ")]
    assert progress[0].startswith("[recur] epoch 1/5  step 1/6 (16%)  loss "), shown  # the first step
    epochs = [line for line in shown if "train_loss" in line]
    assert [line.split("  ")[0] for line in epochs] == [f"[recur] epoch {e}/5" for e in range(1, 6)]
    assert "val_accuracy" in epochs[-1] and epochs[-1].endswith("seq/s")
    # the summary lists the pictures logged to the run
    assert "  plots           learning_curves.png, confusion_matrix.png, per_class_f1.png, gate.png\n" in out

    experiment = client.get_experiment_by_name("e2e")
    (run,) = client.search_runs([experiment.experiment_id])
    # then the run has the per-epoch curves, one point per epoch, in order
    for key in ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "grad_norm",
                "epoch_seconds", "sequences_per_second", "data_wait_fraction", "worker_peak_rss_mib"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == list(range(5)), key
    # the share of each epoch spent waiting for batches, and the workers' peak memory (a Python
    # process with torch and Ray holds well over 100 MiB)
    assert all(0.0 <= m.value < 1.0 for m in client.get_metric_history(run.info.run_id, "data_wait_fraction"))
    assert all(m.value > 100 for m in client.get_metric_history(run.info.run_id, "worker_peak_rss_mib"))
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert losses[-1] < losses[0]
    # test metrics, flattened config as params, data hash as tag and dataset input
    assert run.data.metrics["test_accuracy"] > 0.8
    assert "test_macro_f1" in run.data.metrics
    assert run.data.params["train.lr"] == "0.01" and run.data.params["model.cell"] == "gru"
    assert run.data.params["train.rows_per_epoch"] == "96"  # every train row, once per epoch
    manifest = json.loads((toy_dataset / "manifest.json").read_text())
    assert run.data.tags["recur.data_hash"] == manifest["data_hash"]
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == manifest["data_hash"][:32]
    # artifacts: resolved config, manifest, plots, confusion matrix, gate decision and its picture
    artifacts = {f.path for d in ("config", "data", "plots", "registry", "eval")
                 for f in client.list_artifacts(run.info.run_id, d)}
    assert {"config/resolved.yaml", "data/manifest.json", "plots/learning_curves.png",
            "plots/confusion_matrix.png", "plots/per_class_f1.png", "plots/gate.png",
            "registry/decision.json", "eval/confusion_matrix.json"} <= artifacts
    png = client.download_artifacts(run.info.run_id, "plots/learning_curves.png", str(tmp_path))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the registry has version 1 as champion, tagged with data hash, metric and run id
    mv = client.get_model_version_by_alias(MODEL, "champion")
    assert mv.version == "1" and mv.run_id == run.info.run_id
    assert mv.tags["recur.data_hash"] == manifest["data_hash"]
    assert float(mv.tags["recur.test_accuracy"]) == pytest.approx(run.data.metrics["test_accuracy"])

    # the champion takes raw variable-length sequences (lengths never seen in training)
    with use_tracking_uri(mlflow_server):
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    rng = np.random.default_rng(1)
    seqs = [(rng.normal(size=(n, 3)) + [[3.0 * sign, 0, 0]]).tolist()
            for n, sign in ((2, 1), (40, -1), (7, 1))]
    predicted = model.predict(pd.DataFrame({"x": seqs}))
    assert predicted["label"].tolist() == ["pos", "neg", "pos"]
    assert ((predicted["confidence"] > 0.5) & (predicted["confidence"] <= 1.0)).all()

    # when a second model is trained (attention pooling, the conv front-end) that must beat the
    # champion by a margin it cannot reach (an untrained model would now be refused outright: it
    # does not beat the majority-class baseline, see tests/tracking/test_gate_end_to_end.py)
    assert _run(tmp_path, toy_dataset, mlflow_server, "--set", "model.pooling=attention",
                "--set", "model.frontend=conv", "--set", "registry.min_improvement=0.5", quiet=True) == 0
    out, err = capsys.readouterr()
    assert "kept as @challenger" in out
    # -q: the summary, and no progress or INFO line of recur's, MLflow's or the registry's
    assert "[recur]" not in err and "INFO " not in err and "Successfully registered" not in err, err
    assert "confusion_matrix.png, per_class_f1.png, attention.png, gate.png\n" in out
    # then version 1 stays champion and version 2 is the challenger, with the reason recorded
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    assert challenger.version == "2" and challenger.tags["recur.decision"] == "challenger"
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    # its three batch norms were given the train split's statistics before it was evaluated
    assert runs[0].data.metrics["population_batch_norm_layers"] == 3
    assert "population_batch_norm_layers" not in runs[1].data.metrics  # no batch norm in a plain GRU
    decision_path = client.download_artifacts(runs[0].info.run_id, "registry/decision.json", str(tmp_path))
    decision = json.loads(Path(decision_path).read_text())
    attention_png = client.download_artifacts(runs[0].info.run_id, "plots/attention.png", str(tmp_path))
    assert Path(attention_png).read_bytes()[:4] == b"\x89PNG"  # heatmap of a few test examples
    gate_png = client.download_artifacts(runs[0].info.run_id, "plots/gate.png", str(tmp_path))
    assert Path(gate_png).read_bytes()[:4] == b"\x89PNG"  # champion against challenger
    assert decision["promoted"] is False and decision["champion_version"] == "1"
    assert decision["decision"] == "challenger" and decision["candidate_score"] > decision["baseline_score"]
    assert decision["candidate_score"] <= decision["champion_score"] + decision["min_improvement"]

    # `recur models list` shows both; `recur models promote` rolls the champion by hand
    assert main(["models", "list", MODEL, "--tracking-uri", mlflow_server, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["aliases"]) for r in rows] == [(2, "challenger"), (1, "champion")]
    assert main(["models", "promote", MODEL, "2", "--tracking-uri", mlflow_server]) == 0
    assert "replaced version 1" in capsys.readouterr().out
    assert client.get_model_version_by_alias(MODEL, "champion").version == "2"
    # and nothing leaked: the next run in this process does not inherit this server
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before
