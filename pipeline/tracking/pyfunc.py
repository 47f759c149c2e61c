"""The MLflow model: a pyfunc that takes raw variable-length sequences.

MLflow's default PyTorch format (`pt2`, torch.export) traces a fixed sequence length, which breaks
recurrent models on any other length. recur logs a pyfunc instead: the artifact is recur's own
checkpoint (model arguments, weights, normalization, label names, vocabularies) and `predict`
hands raw inputs to the task (`Task.predict`), which normalizes or tokenizes and pads each batch
itself. Inputs and outputs per task are in the README (classify: column `x` of time x channels
nested lists -> `label`, `label_index`, `confidence`).
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd


class RecurSequenceModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from pipeline.tasks import build_task
        from pipeline.training.worker import model_from_checkpoint

        self.model, self.pre = model_from_checkpoint(context.artifacts["checkpoint"])
        self.task = build_task(None, self.pre)

    # No type hints on predict: MLflow would read them as the schema, and they cannot express
    # ragged nested sequences; the signature given to log_model describes the input.
    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.task.predict(self.model, frame, dict(params or {}))


def _code_dir(tmp: str) -> str:
    """A copy of the `pipeline` package without the shipped datasets, bundled with the model."""
    import pipeline

    source = Path(pipeline.__file__).parent
    target = Path(tmp) / "pipeline"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("builtin", "__pycache__", "*.pyc"))
    return str(target)


def requirements() -> list[str]:
    import pyarrow
    import pydantic
    import torch
    import yaml

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"pyarrow=={pyarrow.__version__}",
        f"pydantic=={pydantic.__version__}",
        f"pyyaml=={yaml.__version__}",
    ]


def log_model(checkpoint_file: str, *, example: pd.DataFrame, name: str = "model"):
    """Log the pyfunc under the active run; returns MLflow's ModelInfo.

    The signature comes from the task's real output on `example` (a few raw test inputs).
    """
    from mlflow.models import infer_signature

    from pipeline.tasks import build_task
    from pipeline.training.worker import model_from_checkpoint

    model, pre = model_from_checkpoint(checkpoint_file)
    task = build_task(None, pre)
    output = task.predict(model, example, {})
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # MLflow hints that an int column cannot hold missing values: recur's never do.
        warnings.filterwarnings("ignore", message=".*integer column.*")
        return mlflow.pyfunc.log_model(
            name=name,
            # Models from code: MLflow stores this script instead of a pickled object.
            python_model=str(Path(__file__).with_name("model_code.py")),
            artifacts={"checkpoint": checkpoint_file},
            code_paths=[_code_dir(tmp)],
            signature=infer_signature(example, output, params=dict(task.predict_params) or None),
            input_example=example,
            pip_requirements=requirements(),
        )
