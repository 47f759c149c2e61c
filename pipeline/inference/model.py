"""Which registered model to run, fetched once by the driver and shipped to the workers.

`NAME@alias`, `NAME/version` or `NAME` (its `@champion`) is resolved to one concrete version
before anything runs, so every worker predicts with the same model even if the alias moves
while the job runs. The driver downloads that version's MLflow model folder and ships it as
bytes through Ray's object store: workers need no access to the tracking server.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import UserError
from pipeline.tracking.model_ref import ModelSpec, resolve_version


class PredictError(UserError, ValueError):
    """A problem with what batch inference was asked to do (model, data, output, resources)."""


@dataclass
class RegisteredModel:
    """One resolved model version, downloaded and loaded on the driver."""

    spec: ModelSpec
    version: str
    run_id: str | None
    blob: bytes  # the MLflow model folder as an uncompressed tar
    pyfunc: Any  # the loaded mlflow.pyfunc model (driver-side checks and the output probe)
    params_schema: dict[str, Any] = field(default_factory=dict)  # param name -> default

    @property
    def uri(self) -> str:
        return f"models:/{self.spec.name}/{self.version}"

    @property
    def python_model(self) -> Any:
        return self.pyfunc.unwrap_python_model()

    @property
    def task(self) -> str:
        return self.python_model.pre.task

    def describe(self) -> str:
        via = f" (@{self.spec.alias})" if self.spec.alias else ""
        return f"{self.spec.name} version {self.version}{via}"


def load_registered(spec: ModelSpec, tracking_uri: str) -> RegisteredModel:
    """Resolve `spec`, download that version, load it, and keep its folder as bytes."""
    from pipeline.tracking.integrity import download_verified, model_dir
    from pipeline.tracking.store import use_tracking_uri

    version, run_id = resolve_version(spec, tracking_uri)
    tmp = model_dir()
    with use_tracking_uri(tracking_uri):  # the files checked against the registered digest first
        local = download_verified(spec.name, version, tmp)
    pyfunc = _load(local)
    blob = pack_dir(local)
    python_model = pyfunc.unwrap_python_model()
    if not (hasattr(python_model, "pre") and hasattr(python_model, "task")):
        raise PredictError(f"{spec} (version {version}) is not a recur model "
                           f"(its python model is {type(python_model).__name__})")
    params = pyfunc.metadata.get_params_schema()
    schema = {p.name: p.default for p in params.params} if params is not None else {}
    return RegisteredModel(spec=spec, version=version, run_id=run_id, blob=blob, pyfunc=pyfunc,
                           params_schema=schema)


def pack_dir(path: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for entry in sorted(os.listdir(path)):
            tar.add(os.path.join(path, entry), arcname=entry)
    return buffer.getvalue()


def unpack_dir(blob: bytes, target: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
            tar.extractall(target, filter="data")
        else:  # pragma: no cover - the archive comes from our own driver
            tar.extractall(target)
    return target


def load_from_blob(blob: bytes) -> Any:
    """Load the pyfunc from `pack_dir` bytes (in a worker)."""
    from pipeline.tracking.integrity import model_dir

    return _load(unpack_dir(blob, model_dir()))


def _load(path: str) -> Any:
    import mlflow

    return mlflow.pyfunc.load_model(path)
