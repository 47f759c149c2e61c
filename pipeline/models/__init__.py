"""Recurrent architectures and task heads. No Ray, no MLflow, no file I/O beyond saving itself."""

from pipeline.models.attention import Attention, lengths_to_mask
from pipeline.models.classifier import SequenceClassifier, build_model
from pipeline.models.recurrent import CELLS, RecurrentEncoder

__all__ = ["CELLS", "Attention", "RecurrentEncoder", "SequenceClassifier", "build_model", "lengths_to_mask"]
