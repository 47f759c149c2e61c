"""The MLflow model: a pyfunc that takes raw variable-length sequences.

MLflow's default PyTorch format (`pt2`, torch.export) traces a fixed sequence length, which breaks
recurrent models on any other length. recur logs a pyfunc instead: the artifact is recur's own
checkpoint (model arguments, weights, normalization, label names) and `predict` normalizes and
pads each batch itself. Input: a DataFrame with column `x`, each value a time x channels nested
list (or a flat list for one channel). Output: `label`, `label_index`, `confidence`.
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

PREDICT_BATCH = 256  # sequences per forward pass in predict


class RecurSequenceModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from pipeline.training.worker import model_from_checkpoint

        self.model, self.pre = model_from_checkpoint(context.artifacts["checkpoint"])

    # No type hints on predict: MLflow would read them as the schema, and they cannot express
    # ragged nested sequences; the signature given to log_model describes the input.
    def predict(self, context, model_input, params=None):
        import torch

        from pipeline.data.preprocess import pad_steps, python_steps

        sequences = model_input["x"].tolist() if isinstance(model_input, pd.DataFrame) else list(model_input)
        probabilities = []
        with torch.no_grad():
            for start in range(0, len(sequences), PREDICT_BATCH):
                steps_NC, lengths_B = python_steps(sequences[start : start + PREDICT_BATCH])
                x_BTC, lengths_B = pad_steps(steps_NC, lengths_B, self.pre)
                probabilities.append(torch.softmax(self.model(x_BTC, lengths_B), dim=-1).numpy())
        probs = np.concatenate(probabilities) if probabilities else np.zeros((0, len(self.pre.labels)))
        index = probs.argmax(axis=1)
        return pd.DataFrame({
            "label": [self.pre.labels[i] for i in index],
            "label_index": index.astype(np.int64),
            "confidence": probs.max(axis=1) if len(probs) else np.zeros(0),
        })


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


def log_model(checkpoint_file: str, *, example_sequences: list[Any], name: str = "model"):
    """Log the pyfunc under the active run; returns MLflow's ModelInfo."""
    from mlflow.models import infer_signature

    example = pd.DataFrame({"x": [np.asarray(s, dtype=np.float64).tolist() for s in example_sequences]})
    output = pd.DataFrame({"label": ["a"], "label_index": np.array([0], dtype=np.int64),
                           "confidence": [1.0]})
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # MLflow hints that an int column cannot hold missing values: label_index never does.
        warnings.filterwarnings("ignore", message=".*integer column.*")
        return mlflow.pyfunc.log_model(
            name=name,
            # Models from code: MLflow stores this script instead of a pickled object.
            python_model=str(Path(__file__).with_name("model_code.py")),
            artifacts={"checkpoint": checkpoint_file},
            code_paths=[_code_dir(tmp)],
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=requirements(),
        )
