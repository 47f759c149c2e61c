"""A training checkpoint: one file with the model's arguments and weights, its preprocessing,
the optimizer and the loop's state (epoch, best value), written and read without pickled code."""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import torch

from pipeline.data.preprocess import Preprocessing
from pipeline.models import model_from_args
from pipeline.training.loop import FitState

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(directory: str, *, model: torch.nn.Module, preprocessing: Preprocessing,
                    optimizer: torch.optim.Optimizer | None = None, fit_state: FitState | None = None,
                    metrics: dict[str, float] | None = None, mlflow_run_id: str | None = None) -> str:
    """Write model arguments, weights and preprocessing (and training state) to one file.

    Only tensors and plain Python values (dicts, lists, str, numbers, None) go in, so that
    `load_checkpoint` reads it with `weights_only=True`, which runs no pickled code.
    """
    module = getattr(model, "module", model)  # unwrap DDP
    path = os.path.join(directory, CHECKPOINT_FILE)
    torch.save(
        {
            "model_class": type(module).__name__,
            "model_args": _plain(module.model_args),
            "state_dict": module.state_dict(),
            "preprocessing": _plain(preprocessing.to_dict()),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            # "progress": the key checkpoints have always used for the loop's FitState
            "progress": _plain(vars(fit_state)) if fit_state is not None else None,
            "metrics": _plain(metrics or {}),
            "mlflow_run_id": mlflow_run_id,
        },
        path,
    )
    return path


def _plain(value: Any) -> Any:
    """`value` with numpy scalars and arrays as Python numbers and lists (weights_only-safe)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read a checkpoint file (or a directory holding one) onto the CPU.

    Tensors and plain containers only (`weights_only=True`): a file holding any other pickled
    object is refused instead of run.
    """
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT_FILE)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message also says how to load it anyway; name only the offending object
        why = next((line.strip() for line in str(exc).splitlines() if "Unsupported global" in line), "")
        raise ValueError(f"{path} is not a recur checkpoint: it holds objects other than tensors and "
                         f"plain values, which recur does not unpickle ({why or 'see torch.load'})") from None


def model_from_checkpoint(path: str) -> tuple[torch.nn.Module, Preprocessing]:
    return model_from_state(load_checkpoint(path))


def model_from_state(state: dict[str, Any]) -> tuple[torch.nn.Module, Preprocessing]:
    """The model (in eval mode) and preprocessing of a checkpoint read by `load_checkpoint`."""
    model = model_from_args(state["model_args"], state.get("model_class", "SequenceClassifier"))
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model, Preprocessing.from_dict(state["preprocessing"])
