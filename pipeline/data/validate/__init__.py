"""Contract checks, reported per row id: on canonical tables (rows.py: ``find_row_problems``,
``check_rows``, the ``Problem`` and ``DataValidationError`` they report) and on a stored dataset
against its manifest (dataset.py: ``validate_dataset``, its ``ValidationReport``)."""

from pipeline.data.validate.dataset import ValidationReport, validate_dataset
from pipeline.data.validate.rows import DataValidationError, Problem, check_rows, find_row_problems

__all__ = ["DataValidationError", "Problem", "ValidationReport", "check_rows", "find_row_problems",
           "validate_dataset"]
