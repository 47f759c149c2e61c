"""Recurrent architectures and task heads. No Ray, no MLflow, no file I/O beyond saving itself.

Every model keeps its constructor keywords in `model_args`; a checkpoint stores them with the
class name, and `model_from_args` rebuilds any model from the two (classes are imported lazily).
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.models.attention import Attention, lengths_to_mask
from pipeline.models.classifier import SequenceClassifier, build_model
from pipeline.models.frontend import FRONTENDS, Frontend, MaskedBatchNorm1d
from pipeline.models.recurrent import CELLS, RecurrentEncoder

MODELS: dict[str, str] = {
    "SequenceClassifier": "pipeline.models.classifier",
    "SequenceTagger": "pipeline.models.tagger",
    "Forecaster": "pipeline.models.forecaster",
    "LanguageModel": "pipeline.models.language_model",
    "Seq2Seq": "pipeline.models.seq2seq",
}


def model_from_args(model_args: dict[str, Any], model_class: str = "SequenceClassifier") -> Any:
    """Rebuild a model from the class name and `model_args` a checkpoint stored."""
    if model_class not in MODELS:
        raise ValueError(f"unknown model class {model_class!r}; known: {sorted(MODELS)}")
    return getattr(importlib.import_module(MODELS[model_class]), model_class)(**model_args)


__all__ = ["CELLS", "FRONTENDS", "MODELS", "Attention", "Frontend", "MaskedBatchNorm1d", "RecurrentEncoder",
           "SequenceClassifier", "build_model", "lengths_to_mask", "model_from_args"]
