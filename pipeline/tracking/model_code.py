"""MLflow "models from code" definition of recur's pyfunc model.

MLflow executes this file when the model is logged and loaded; `set_model` is its whole purpose.
Not imported by the library.
"""

import mlflow

from pipeline.tracking.pyfunc import RecurSequenceModel

mlflow.models.set_model(RecurSequenceModel())
