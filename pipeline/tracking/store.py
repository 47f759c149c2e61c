"""Where MLflow lives: tracking URI, reachability, experiment."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.config import RecurConfig


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server cannot be reached; nothing has been trained yet."""


def default_tracking_uri(runs_dir: str) -> str:
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(cfg: RecurConfig) -> str:
    """Config first, then MLFLOW_TRACKING_URI, then a sqlite file under `tracking.runs_dir`."""
    return (
        cfg.tracking.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or default_tracking_uri(cfg.tracking.runs_dir)
    )


def local_artifact_root(cfg: RecurConfig, tracking_uri: str) -> str | None:
    """Artifacts next to a local sqlite store; a server decides for itself (None)."""
    if tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:"):
        return (Path(cfg.tracking.runs_dir).resolve() / "artifacts").as_uri()
    return None


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming the URI, when an HTTP tracking server does not answer its health check."""
    if not tracking_uri.startswith(("http://", "https://")):
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            if response.status != 200:
                raise TrackingUnavailable(f"MLflow tracking server {tracking_uri} answered {response.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingUnavailable(
            f"MLflow tracking server {tracking_uri} is not reachable ({exc}). Start it, or unset "
            "MLFLOW_TRACKING_URI / tracking.tracking_uri to use the local store."
        ) from exc


@contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` for the block, then restore what was there.

    `mlflow.set_tracking_uri` also sets MLFLOW_TRACKING_URI in the environment; without the
    restore, a later run in the same process would silently log to this run's server.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    previous = tracking_utils._tracking_uri  # None when never set explicitly
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def ensure_experiment(cfg: RecurConfig, tracking_uri: str) -> str:
    """Create the experiment on first use (artifacts under runs_dir for a local store)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(
        cfg.tracking.experiment, artifact_location=local_artifact_root(cfg, tracking_uri)
    )
