"""Same config, seed and data version: same model, on a real local Ray.

Given the toy dataset and one config (seeds for weights, dropout and shuffling), when it trains
twice with one worker, then the test metrics agree to 1e-6; when it trains twice with two DDP
workers (gloo, CPU), they agree within 1e-4 (the stated tolerance: gloo's all-reduce may sum
gradients in another order). One worker runs in this process (`num_workers=0`: the
same worker function and Ray Data input, one rank, without the ~10 s start of a worker
group); the two-worker case starts real workers.
"""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.data.dataset import read_manifest
from pipeline.training.trainer import build_trainer
from pipeline.workflow.steps import evaluate_test_split

pytestmark = pytest.mark.slow

TOLERANCE = {0: 1e-6, 2: 1e-4}  # num_workers -> largest difference allowed between two runs


def _train_and_test(root, tmp_path, name: str, workers: int) -> dict[str, float]:
    cfg = load_config([], [f"data.root={root}", f"resources.num_workers={workers}", "train.epochs=2",
                           "data.batch_size=16", "model.hidden_size=16", "model.dropout=0.2", "train.lr=0.01",
                           "train.early_stopping_patience=0", "train.seed=7", "data.seed=3"])
    trainer = build_trainer(cfg, read_manifest(str(root)), storage_path=str(tmp_path / "ray"), name=name)
    result = trainer.fit()
    with result.checkpoint.as_directory() as directory:
        return {**evaluate_test_split(cfg, directory).metrics, "train_loss": result.metrics["train_loss"]}


@pytest.mark.parametrize("workers", [0, 2])
def test_the_same_config_trains_the_same_model(ray_local, toy_dataset, tmp_path, workers):
    first = _train_and_test(toy_dataset, tmp_path, f"repro-{workers}-a", workers)
    second = _train_and_test(toy_dataset, tmp_path, f"repro-{workers}-b", workers)
    assert first.keys() == second.keys() and "test_loss" in first
    for key in first:
        assert abs(first[key] - second[key]) <= TOLERANCE[workers], (key, first[key], second[key])
