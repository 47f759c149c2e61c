"""Checkpoints hold tensors and plain values only, and recur reads weights with weights_only=True."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.data.preprocess import Preprocessing
from pipeline.models import build_model
from pipeline.training.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from pipeline.training.loop import FitState
from pipeline.training.optimizer import make_optimizer

REPO = Path(__file__).resolve().parents[2]


def test_checkpoint_round_trips_under_weights_only(tmp_path):
    # given a model, and preprocessing, progress and metrics holding numpy numbers
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", hidden_size=8), input_size=2, num_classes=3)
    pre = Preprocessing(mean=[np.float32(0.5), np.float64(1.0)], std=[1.0, 2.0], labels=["a", "b", "c"],
                        task_params={"counts": np.array([1, 2])})
    progress = FitState(next_epoch=3, best_value=np.float64(0.25), best_epoch=2)
    # when it is saved and read back
    save_checkpoint(str(tmp_path), model=model, preprocessing=pre,
                    optimizer=make_optimizer("adam", model.parameters(), lr=1e-3), fit_state=progress,
                    metrics={"val_loss": np.float64(0.7), "epoch": np.int64(2)}, mlflow_run_id="abc")
    state = load_checkpoint(str(tmp_path))
    rebuilt, rebuilt_pre = model_from_checkpoint(str(tmp_path))
    # then everything comes back as plain values, and the same weights
    assert state["metrics"] == {"val_loss": 0.7, "epoch": 2} and type(state["metrics"]["epoch"]) is int
    assert state["progress"]["best_value"] == 0.25
    assert rebuilt_pre.mean == [0.5, 1.0] and rebuilt_pre.task_params == {"counts": [1, 2]}
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[name], tensor)


def test_a_file_with_pickled_objects_is_refused(tmp_path):
    # given a file holding an arbitrary pickled object (what a malicious "checkpoint" would be)
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {}, "payload": Path("/")}, path)
    # when recur reads it, then it is refused, not unpickled
    with pytest.raises(ValueError, match="not a recur checkpoint"):
        load_checkpoint(str(tmp_path))


def _torch_load_calls_without_weights_only(source: str) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
        if name != "load" or owner != "torch":
            continue
        safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                   for k in node.keywords)
        if not safe:
            lines.append(node.lineno)
    return lines


def test_the_scan_finds_an_unsafe_torch_load():
    assert _torch_load_calls_without_weights_only("import torch\ntorch.load('x.pt')\n") == [2]
    assert _torch_load_calls_without_weights_only("torch.load(p, weights_only=False)") == [1]
    assert _torch_load_calls_without_weights_only("torch.load(p, weights_only=True)") == []


def test_every_torch_load_in_recur_passes_weights_only_true():
    # given every Python source of the package and the job entry points
    files = sorted([*(REPO / "pipeline").rglob("*.py"), *(REPO / "jobs").rglob("*.py")])
    assert files
    # when each is scanned for torch.load calls
    unsafe = {str(f.relative_to(REPO)): lines for f in files
              if (lines := _torch_load_calls_without_weights_only(f.read_text()))}
    # then none reads a file without weights_only=True
    assert unsafe == {}


def test_a_checkpoint_with_nan_weights_or_metrics_is_never_registered(tmp_path):
    # given a checkpoint whose weights hold a NaN (a diverged run), and one that is finite
    from pipeline.training.trainer import TrainingFailed
    from pipeline.workflow.steps import check_finite

    model = build_model(ModelConfig(cell="gru", hidden_size=8), input_size=2, num_classes=2)
    pre = Preprocessing(mean=[0.0, 0.0], std=[1.0, 1.0], labels=["a", "b"])
    finite, broken = tmp_path / "finite", tmp_path / "broken"
    finite.mkdir(), broken.mkdir()
    save_checkpoint(str(finite), model=model, preprocessing=pre)
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    save_checkpoint(str(broken), model=model, preprocessing=pre)
    # when the register step checks them, then the NaN one is refused naming the weights and what
    # to change, and so is a finite model whose test metrics are not finite
    check_finite(str(finite), {"test_accuracy": 0.5})
    with pytest.raises(TrainingFailed, match=r"is not registered: weights head\.weight hold NaN or inf.*"
                                             r"lower train\.lr"):
        check_finite(str(broken))
    with pytest.raises(TrainingFailed, match=r"test metrics are not finite \(test_loss = nan\)"):
        check_finite(str(finite), {"test_loss": float("nan"), "test_accuracy": 0.5})
