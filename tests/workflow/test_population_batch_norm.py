"""The workflow's batch-norm step: a checkpoint's conv front-end gets the statistics of the rows it
trained on (train, plus val with train.train_on_val), in a copy; Ray Train's checkpoint is kept.
No Ray here: the step reads the dataset folder and the checkpoint file like the driver does."""

from __future__ import annotations

import torch
from conftest import make_toy_dataset

from pipeline.config import RecurConfig
from pipeline.data.dataset import read_manifest, read_split
from pipeline.data.preprocess import Preprocessing
from pipeline.models import MaskedBatchNorm1d
from pipeline.models.frontend import population_statistics
from pipeline.tasks import build_task
from pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from pipeline.workflow.steps import population_batch_norm


def _norms(state):
    return {k: v for k, v in state["state_dict"].items() if k.endswith(("running_mean", "running_var"))}


def _setup(tmp_path, **train):
    dataset = make_toy_dataset(tmp_path / "toy", n_train=40, n_val=20, n_test=8)
    cfg = RecurConfig.model_validate({
        "data": {"root": str(dataset), "task": "classify", "batch_size": 4},
        "model": {"cell": "gru", "hidden_size": 8, "frontend": "conv", "frontend_channels": 4, "patch": 1},
        "train": train,
    })
    pre = Preprocessing.from_manifest(read_manifest(str(dataset)))
    task = build_task(cfg, pre)
    torch.manual_seed(0)
    model = task.build_model().train()
    with torch.no_grad():  # running averages of batches of 4
        for batch in task.table_batches(read_split(str(dataset), "train"), 4):
            task.forward(model, batch, train=True)
    folder = tmp_path / "ray-checkpoint"
    folder.mkdir()
    save_checkpoint(str(folder), model=model, preprocessing=pre)
    return cfg, task, model, folder


def _expected(task, model, dataset, splits):
    tables = [read_split(dataset, s) for s in splits]
    population_statistics(model, lambda: (b for t in tables for b in task.table_batches(t, 7)),
                          lambda m, b: task.forward(m, b, train=False))
    return _norms({"state_dict": model.state_dict()})


def test_the_checkpoint_to_register_holds_the_train_splits_statistics(tmp_path):
    # given a checkpoint whose batch norms hold running averages of batches of 4
    cfg, task, model, folder = _setup(tmp_path)
    as_trained = _norms(load_checkpoint(str(folder)))

    # when the step runs
    out, layers = population_batch_norm(cfg, str(folder), str(tmp_path / "registered"))

    # then a copy holds the train split's statistics and Ray Train's checkpoint is as it was
    assert layers == 3 and out == str(tmp_path / "registered")
    got = _norms(load_checkpoint(out))
    expected = _expected(task, model, cfg.data.root, ["train"])
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(got[key], as_trained[key], rtol=1e-3)
    for key, value in _norms(load_checkpoint(str(folder))).items():
        assert torch.equal(value, as_trained[key])
    # the weights themselves are untouched
    weights = {k: v for k, v in load_checkpoint(out)["state_dict"].items() if k not in got}
    assert all(torch.equal(v, load_checkpoint(str(folder))["state_dict"][k]) for k, v in weights.items())


def test_val_rows_count_when_trained_on_and_the_step_can_be_turned_off(tmp_path):
    cfg, task, model, folder = _setup(tmp_path, train_on_val=True, monitor="train_loss")
    out, _ = population_batch_norm(cfg, str(folder), str(folder))  # in place (a study's local copy)
    got = _norms(load_checkpoint(out))
    train_only = {k: v.clone() for k, v in _expected(task, model, cfg.data.root, ["train"]).items()}
    expected = _expected(task, model, cfg.data.root, ["train", "val"])
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got["frontend.blocks.0.norm.running_mean"],
                              train_only["frontend.blocks.0.norm.running_mean"], rtol=1e-3)

    off = cfg.model_copy(update={"train": cfg.train.model_copy(update={"population_batch_norm": False})})
    assert population_batch_norm(off, str(folder), str(tmp_path / "unused")) == (str(folder), 0)
    assert not (tmp_path / "unused").exists()


def test_models_without_batch_norm_are_returned_as_they_are(tmp_path):
    dataset = make_toy_dataset(tmp_path / "toy", n_train=8, n_val=4, n_test=4)
    cfg = RecurConfig.model_validate({
        "data": {"root": str(dataset), "task": "classify"},
        "model": {"cell": "gru", "hidden_size": 8, "frontend": "none", "patch": 1},
    })
    pre = Preprocessing.from_manifest(read_manifest(str(dataset)))
    model = build_task(cfg, pre).build_model()
    assert not any(isinstance(m, MaskedBatchNorm1d) for m in model.modules())
    save_checkpoint(str(tmp_path), model=model, preprocessing=pre)
    assert population_batch_norm(cfg, str(tmp_path), str(tmp_path / "copy")) == (str(tmp_path), 0)
