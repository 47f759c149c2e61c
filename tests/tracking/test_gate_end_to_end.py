"""The registry gate refuses a model trained on shuffled labels (a real local Ray, one rank in the
driver process, a real `mlflow server`, the whole `recur run` pipeline).

Given a tiny classify dataset whose train labels are shuffled (they say nothing about the
sequences) and whose test split is 3/4 "neg" with every test sequence the same, when `recur run`
trains, evaluates, registers and gates, then the model, which can only give every test row the same
label, scores at most the majority-class baseline's 0.75 and so is NOT promoted although there is
no champion: version 1 has no alias, its tags and `registry/decision.json` give the reason with
both scores, the run logs the baseline's scores, and the summary says so in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from pipeline.config import load_config
from pipeline.workflow.runner import run_pipeline

pytestmark = pytest.mark.slow

MODEL = "e2e-shuffled"


def shuffled_label_dataset(root: Path, seed: int = 0) -> Path:
    """train 64 rows (48 neg, 16 pos) of noise with the labels shuffled; val 16 rows alike; test 16
    rows, 12 neg and 4 pos, all one sequence: whatever a model predicts for it, it predicts for
    every test row, so its accuracy is 0.75 or 0.25, never above the majority-class 0.75."""
    from pipeline.data.dataset import make_table, write_dataset

    rng = np.random.default_rng(seed)

    def noise_split(prefix: str, n: int) -> object:
        labels = rng.permutation([0] * (3 * n // 4) + [1] * (n // 4))  # shuffled: no signal in x
        xs = [rng.normal(0, 1, size=(int(rng.integers(4, 10)), 2)).astype(np.float32) for _ in range(n)]
        return make_table([f"{prefix}:{i}" for i in range(n)], xs, labels.tolist())

    same = rng.normal(0, 1, size=(6, 2)).astype(np.float32)
    test = make_table([f"test:{i}" for i in range(16)], [same] * 16, [0] * 12 + [1] * 4)
    write_dataset(str(root), {"train": noise_split("train", 64), "val": noise_split("val", 16), "test": test},
                  name="shuffled", task="classify", labels=["neg", "pos"], sources=[],
                  import_params={"generator": "shuffled labels"})
    return root


def test_the_gate_refuses_a_model_trained_on_shuffled_labels(ray_local, mlflow_server, tmp_path):
    dataset = shuffled_label_dataset(tmp_path / "ds")
    config = tmp_path / "shuffled.yaml"
    config.write_text(
        "model: {cell: gru, hidden_size: 8}\n"
        "train: {epochs: 2, lr: 0.01, early_stopping_patience: 0}\n"
        "resources: {num_workers: 0}\n"  # one rank in the driver, no worker group
        "data: {batch_size: 16}\n"
        f"registry: {{model_name: {MODEL}, metric: accuracy, min_improvement: 0.0}}\n"
        "tracking: {experiment: e2e-shuffled}\n"
    )
    cfg = load_config([config], [f"data.root={dataset}", f"tracking.tracking_uri={mlflow_server}",
                                 f"tracking.runs_dir={tmp_path / 'runs'}"])

    summary = run_pipeline(cfg)

    # then version 1 is registered, with no alias although there is no champion
    d = summary.decision
    assert d is not None and d["version"] == "1"
    assert (d["decision"], d["alias"], d["promoted"]) == ("rejected", None, False)
    assert d["champion_version"] is None and d["baseline_name"] == "majority-class"
    assert d["baseline_score"] == 0.75 and d["candidate_score"] in (0.75, 0.25)
    assert d["reason"] == (f"test accuracy {d['candidate_score']:.4f} does not beat the majority-class "
                           "baseline 0.7500 (higher is better)")
    client = MlflowClient(mlflow_server)
    assert client.get_registered_model(MODEL).aliases == {}
    tags = client.get_model_version(MODEL, "1").tags
    assert tags["recur.decision"] == "rejected" and tags["recur.reason"] == d["reason"]
    assert tags["recur.baseline_accuracy"] == "0.750000"

    # and the run holds the baseline's scores and the decision
    run = client.get_run(summary.run_id)
    assert run.data.metrics["test_baseline_accuracy"] == 0.75
    assert run.data.metrics["test_baseline_macro_f1"] == pytest.approx((2 * 12 / 28 + 0) / 2)
    # identical test rows have one nearest train row: 1-NN is right on 12 or on 4 of them
    assert run.data.metrics["test_baseline_nn1_euclidean_accuracy"] in (0.75, 0.25)
    recorded = json.loads(Path(client.download_artifacts(summary.run_id, "registry/decision.json",
                                                         str(tmp_path))).read_text())
    assert recorded["decision"] == "rejected" and recorded["baselines"]["accuracy"] == 0.75

    # and the summary says so in one line that no reader misses
    text = summary.format()
    (alert,) = [line for line in text.splitlines() if "NOT PROMOTED" in line]
    assert alert.startswith("  !! NOT PROMOTED  test accuracy") and "majority-class baseline 0.7500" in alert
    assert "vs champion none, majority-class baseline 0.7500" in text
