"""Recurrent architectures and task heads. No Ray, no MLflow, no file I/O beyond saving itself."""

from pipeline.models.recurrent import CELLS, RecurrentEncoder
from pipeline.models.classifier import SequenceClassifier, build_model

__all__ = ["CELLS", "RecurrentEncoder", "SequenceClassifier", "build_model"]
