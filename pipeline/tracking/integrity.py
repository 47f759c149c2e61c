"""A registered model's content digest: recorded by registration, checked before every load.

Loading a model runs the code it carries, so recur loads a version only when its files are the
ones it registered (`download_verified`).
"""

from __future__ import annotations

import logging

import mlflow
from mlflow import MlflowClient

from pipeline.errors import UserError

log = logging.getLogger(__name__)


class ModelTampered(UserError, ValueError):
    """A registered version's files are not the ones recur registered (its content digest differs):
    it is not loaded, since loading runs the code it carries."""


# A registered model carries code (models from code) and weights that loading runs and unpickles.
# register_version (pipeline.tracking.registry) records a digest of every file of the model in the
# registry (the tracking database, not the artifact store); every load of a version by recur checks
# the files against it before MLflow imports anything, so write access to the artifact store alone
# cannot plant code.
CONTENT_TAG = "recur.model_sha256"


def model_digest(path: str) -> str:
    """sha256 over every file under `path` (its relative path, then its bytes), in sorted order;
    not the `registered_model_meta` file MLflow writes beside a registered version it downloads
    (the name and version, on the client: not from the store)."""
    import hashlib
    from pathlib import Path

    from mlflow.store.artifact.models_artifact_repo import REGISTERED_MODEL_META_FILE_NAME

    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()
                       and p.relative_to(root).as_posix() != REGISTERED_MODEL_META_FILE_NAME):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def model_dir() -> str:
    """A folder for one loaded model, kept until the process exits: the model's bundled code
    (`recur_model_<hash>`, pipeline.tracking.pyfunc) imports some of its modules only when it
    first predicts, from the folder the first model of that code was loaded from."""
    import atexit
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix="recur-model-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return tmp


def download_verified(model_name: str, version: str, dst: str, *, tracking_uri: str | None = None) -> str:
    """Version `version` of `model_name` downloaded into `dst` and checked against the digest its
    registration recorded (`CONTENT_TAG`); returns the local model folder, to load from.

    `tracking_uri`: the store (default: MLflow's current one); the registry is MLFLOW_REGISTRY_URI,
    else that store. ModelTampered when the files differ. A version registered without a digest
    (by an older recur, or by hand) is loaded with a warning."""
    from contextlib import nullcontext

    from pipeline.tracking.store import resolve_registry_uri, use_tracking_uri

    # models:/ downloads ask MLflow's current registry, whatever tracking_uri says: point it there
    with use_tracking_uri(tracking_uri) if tracking_uri else nullcontext():
        uri = mlflow.get_tracking_uri()
        found = MlflowClient(uri, registry_uri=resolve_registry_uri(uri)).get_model_version(
            model_name, str(version))
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}",
                                                    dst_path=dst)
    recorded = (found.tags or {}).get(CONTENT_TAG)
    if recorded is None:
        log.warning("%s version %s has no %s tag (registered without recur's content digest): its "
                    "files cannot be checked before loading", model_name, version, CONTENT_TAG)
        return local
    actual = model_digest(local)
    if actual != recorded:
        raise ModelTampered(
            f"{model_name} version {version}: its files in the artifact store ({found.source}) are not "
            f"the ones registered (sha256 {actual[:16]}... instead of {recorded[:16]}...): not loaded, "
            "since loading runs the code a model carries. Someone with write access to the artifact "
            "store changed them; register the model again from a trusted run")
    return local
