"""The MLflow model: a pyfunc that takes raw variable-length sequences.

MLflow's default PyTorch format (`pt2`, torch.export) traces a fixed sequence length, which breaks
recurrent models on any other length. recur logs a pyfunc instead: the artifact is recur's own
checkpoint (model arguments, weights, normalization, label names, vocabularies) and `predict`
hands raw inputs to the task (`Task.predict`), which normalizes or tokenizes and pads each batch
itself. Inputs and outputs per task are in docs/tasks.md (classify: column `x` of time x channels
nested lists -> `label`, `label_index`, `confidence`).

The model carries recur's code with it, under a top-level name of its own (`recur_model_<hash
of the code>`, see `bundle_code`), never as `pipeline`: an application that has a module named
`pipeline` of its own loads the model, and keeps its module. Two models logged by different
recur versions load side by side in one process.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
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
        from pipeline.training.checkpoint import model_from_checkpoint

        self.model, self.pre = model_from_checkpoint(context.artifacts["checkpoint"])
        self.task = build_task(None, self.pre)

    # pd.DataFrame is a hint MLflow infers no schema from (the signature given to log_model
    # describes the input); without a hint MLflow warns on every log and load.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        check_inputs(frame, self.pre)
        return self.task.predict(self.model, frame, dict(params or {}))


def check_inputs(frame: pd.DataFrame, pre: Any) -> None:
    """Refuse float sequences that break the contract with recur's own row checks
    (`pipeline.data.validate`, as `recur predict` reports them per row), as an MLflow error
    that a model server answers with status 400 and this message, not a stack trace.
    Integers are numbers: a JSON body of all-integer values is taken as floats."""
    if pre.feature_kind == "token" or "x" not in frame:
        return  # text inputs: the task's tokenizer takes any string
    import pyarrow as pa
    from mlflow.exceptions import MlflowException

    from pipeline.data.validate import find_row_problems

    try:
        values = [None if v is None else (v.tolist() if isinstance(v, np.ndarray) else v) for v in frame["x"]]
        values = [[s.tolist() if isinstance(s, np.ndarray) else s for s in v] if isinstance(v, list) else v
                  for v in values]
        nested = any(isinstance(v, list) and v and isinstance(v[0], list) for v in values)
        column = pa.array(values, type=pa.list_(pa.list_(pa.float32())) if nested else pa.list_(pa.float32()))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise MlflowException.invalid_parameter_value(
            f"column x: expected one sequence per row, time x channels numbers "
            f"({pre.num_channels} per step): {str(exc).splitlines()[0]}") from None
    problems = find_row_problems(pa.table({"x": column}), split="", num_channels=pre.num_channels,
                                 num_labels=None, columns=("x",), task=pre.task,
                                 feature_kind=pre.feature_kind, vocab_size=None)
    if problems:
        shown = "; ".join(f"{'column x' if row < 0 else f'row {row}'}: {problem.reason}"
                          for row, problem in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise MlflowException.invalid_parameter_value(
            f"{len(problems)} input row(s) break recur's data contract: {shown}{more}")


BUNDLE_PREFIX = "recur_model_"
# The model's "models from code" script: MLflow runs it when the model is logged and loaded.
MODEL_SCRIPT = '''"""recur's MLflow model (models from code), written by pipeline.tracking.pyfunc."""
import mlflow

from {package}.tracking.pyfunc import RecurSequenceModel

mlflow.models.set_model(RecurSequenceModel())
'''


def bundle_code(tmp: str) -> tuple[str, str]:
    """recur's package copied under a name of its own, and the script that loads the model
    from it; returns (package folder, script path), both in `tmp`.

    The name is `recur_model_` and a hash of the code, and every import of `pipeline` in the copy
    is renamed to it (`import` statements and the module paths recur looks up by name). The
    shipped datasets are left out."""
    import pipeline

    source = Path(pipeline.__file__).parent
    files = sorted(p for p in source.rglob("*.py") if "builtin" not in p.relative_to(source).parts)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
    package = BUNDLE_PREFIX + digest.hexdigest()[:12]
    target = Path(tmp) / "code" / package
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("builtin", "__pycache__", "*.pyc"))
    for path in target.rglob("*.py"):
        path.write_text(rename_package(path.read_text(), package))
    script = Path(tmp) / "recur_model.py"
    script.write_text(MODEL_SCRIPT.format(package=package))
    return str(target), str(script)


# `from pipeline...` at the start of a line, and module paths as whole string
# literals ("pipeline.tasks.classify:ClassifyTask", "pipeline.data"): what names the package
_IMPORT = re.compile(r"^(\s*)from pipeline\b", re.MULTILINE)
_BARE_IMPORT = re.compile(r"^([ \t]*)import pipeline[ \t]*$", re.MULTILINE)
_MODULE_STRING = re.compile(r"""(["'])pipeline((?:\.\w+)+(?::\w+)?)\1""")


def rename_package(text: str, package: str) -> str:
    """Python source of recur's package with `pipeline` renamed to `package` where it names the
    package; `import pipeline` becomes `import <package> as pipeline`."""
    text = _BARE_IMPORT.sub(rf"\1import {package} as pipeline", text)
    text = _IMPORT.sub(rf"\1from {package}", text)
    text = _MODULE_STRING.sub(rf"\1{package}\2\1", text)
    left = re.search(r"^\s*(from|import) pipeline\b", text, re.MULTILINE)
    if left:  # a form of import this does not rename: the model would load the wrong package
        raise RuntimeError(f"cannot bundle recur's code: {left.group(0).strip()!r} is not renamed")
    return text


def any_numbers(signature: Any) -> Any:
    """The signature with float sequence columns declared as any type: MLflow's schema check
    refuses integers for float arrays ("Can not safely convert int64 to float64"), and cannot
    say why a sequence is wrong; `check_inputs` checks them instead, with recur's messages."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, DataType, Schema

    def is_float_array(kind: Any) -> bool:
        while isinstance(kind, Array):
            kind = kind.dtype
            if kind in (DataType.float, DataType.double):
                return True
        return False

    columns = [ColSpec(AnyType(), c.name, required=c.required) if is_float_array(c.type) else c
               for c in signature.inputs.inputs]
    return ModelSignature(inputs=Schema(columns), outputs=signature.outputs, params=signature.params)


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
    from pipeline.training.checkpoint import model_from_checkpoint

    model, pre = model_from_checkpoint(checkpoint_file)
    task = build_task(None, pre)
    output = task.predict(model, example, {})
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # MLflow hints that an int column cannot hold missing values: recur's never do.
        warnings.filterwarnings("ignore", message=".*integer column.*")
        code, script = bundle_code(tmp)
        # MLflow runs the script while logging: the bundle must be importable here too (a
        # loaded model puts its own copy on the path)
        sys.path.insert(0, str(Path(code).parent))
        try:
            return mlflow.pyfunc.log_model(
                name=name,
                # Models from code: MLflow stores this script instead of a pickled object.
                python_model=script,
                artifacts={"checkpoint": checkpoint_file},
                code_paths=[code],
                signature=any_numbers(infer_signature(example, output,
                                                      params=dict(task.predict_params) or None)),
                input_example=example,
                pip_requirements=requirements(),
            )
        finally:  # and forgotten again: a later load imports the model's own copy, not this temp dir
            sys.path.remove(str(Path(code).parent))
            package = Path(code).name
            for module in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
                del sys.modules[module]
