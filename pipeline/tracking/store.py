"""Where MLflow lives: tracking URI, reachability, experiment."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.config import RecurConfig
from pipeline.errors import UserError


class TrackingUnavailable(UserError, RuntimeError):
    """The MLflow tracking server cannot be reached: before anything is trained, or after
    training (the checkpoint is kept, and `recur runs sync` finishes what MLflow did not take)."""


class TrackingRefused(TrackingUnavailable):
    """The tracking server answers, but refuses recur's credentials (HTTP 401 or 403)."""


def default_tracking_uri(runs_dir: str) -> str:
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(cfg: RecurConfig) -> str:
    """Config first, then MLFLOW_TRACKING_URI, then a sqlite file under `tracking.runs_dir`."""
    return (
        cfg.tracking.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or default_tracking_uri(cfg.tracking.runs_dir)
    )


def resolve_registry_uri(tracking_uri: str) -> str:
    """MLFLOW_REGISTRY_URI, else the tracking URI: MLflow's own rule, for recur's records and
    messages (MlflowClient and the fluent API resolve it the same way themselves)."""
    return os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri


def local_artifact_root(cfg: RecurConfig, tracking_uri: str) -> str | None:
    """Artifacts next to a local sqlite store; a server decides for itself (None)."""
    if tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:"):
        return (Path(cfg.tracking.runs_dir).resolve() / "artifacts").as_uri()
    return None


def check_not_file_store(tracking_uri: str) -> None:
    """A folder (`./mlruns`, `file:...`) as the tracking URI is MLflow's file store, which MLflow 3
    refuses with a traceback unless MLFLOW_ALLOW_FILE_STORE is true: say so in one line, with the
    sqlite URI to use instead."""
    from urllib.parse import urlparse

    if tracking_uri in ("databricks", "databricks-uc", "uc"):  # MLflow's names without a scheme
        return
    if urlparse(tracking_uri).scheme not in ("", "file"):
        return
    from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE  # MLflow's own reading of it

    if MLFLOW_ALLOW_FILE_STORE.get():
        return
    folder = Path(tracking_uri.removeprefix("file://").removeprefix("file:")).expanduser()
    raise TrackingUnavailable(
        f"MLflow tracking URI {tracking_uri} is a folder (MLflow's file store), which this MLflow "
        f"refuses: give a database, e.g. sqlite:///{folder.resolve()}.db (tracking.tracking_uri or "
        "MLFLOW_TRACKING_URI), or a server's http:// address, or leave both unset for sqlite under "
        "tracking.runs_dir (MLFLOW_ALLOW_FILE_STORE=true keeps the file store)")


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming the URI, when an HTTP tracking server does not answer its health check,
    or refuses recur's credentials (MLFLOW_TRACKING_USERNAME/PASSWORD or the URI's user:password).

    The credentials are sent as a header, never as part of the host name (urllib would look up
    `user:password@host` in DNS), and no message holds the password."""
    if not tracking_uri.startswith(("http://", "https://")):
        check_not_file_store(tracking_uri)
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return
    from pipeline.tracking.redact import redact_text

    shown = redact_text(tracking_uri)
    try:
        base, headers = _without_userinfo(tracking_uri)
    except ValueError:  # a port that is not a number: often a password holding '/' or '#'
        raise TrackingUnavailable(  # (ValueError's text would quote the password as the "port")
            f"MLflow tracking URI {shown} is not a valid URL (its port is not a number); percent-encode "
            "special characters "
            "of a user or password (/ as %2F, # as %23), or better, give them in "
            "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD") from None
    try:
        with urllib.request.urlopen(base + "/health", timeout=timeout_s) as response:
            if response.status != 200:
                raise TrackingUnavailable(f"MLflow tracking server {shown} answered {response.status}")
        # /health needs no login; one small read that does (404 for a missing experiment is fine)
        probe = urllib.request.Request(
            base + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default", headers=headers)
        try:
            urllib.request.urlopen(probe, timeout=timeout_s).close()
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                who = "no credentials were given" if not headers else "with the credentials given"
                raise TrackingRefused(
                    f"MLflow tracking server {shown} refused recur ({exc.code} "
                    f"{'Unauthorized' if exc.code == 401 else 'Forbidden'}, {who}): set "
                    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of that server "
                    "(keep the password out of the URI)") from None
    except (urllib.error.URLError, OSError) as exc:
        why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise TrackingUnavailable(
            f"MLflow tracking server {shown} is not reachable ({redact_text(str(why))}). Start it, or "
            "unset MLFLOW_TRACKING_URI / tracking.tracking_uri to use the local store."
        ) from exc


def _without_userinfo(uri: str) -> tuple[str, dict[str, str]]:
    """(the URI without `user:password@`, its basic-auth header): the URI's own credentials,
    else MLFLOW_TRACKING_USERNAME/PASSWORD, as MLflow's client sends them."""
    import base64
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    user, password = parts.username, parts.password
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    if user is None:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    else:
        user, password = unquote(user), unquote(password or "")
    if not user:
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        return base, ({"Authorization": f"Bearer {token}"} if token else {})
    pair = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
    return base, {"Authorization": f"Basic {pair}"}


def reachable(tracking_uri: str, policy: Any = None) -> bool:
    """Whether the tracking server answers its health check now (a local store always does);
    one try, waiting at most the policy's request timeout."""
    try:
        check_reachable(tracking_uri, policy.request_timeout_s if policy is not None else 5.0)
    except TrackingUnavailable:
        return False
    return True


def server_command(uri: str, *, port: int, runs_dir: Path) -> tuple[list[str], dict[str, str]]:
    """`recur ui`'s `mlflow server` over the store `uri`: (argv, environment).

    The store URI goes in the environment (MLFLOW_BACKEND_STORE_URI, which `mlflow server` reads),
    never on the command line: a database URI holds its password, and every user of the machine
    can read a process's command line (`ps`), not its environment."""
    import sys

    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]  # one local user; MLflow's default 4 take ~30 s to start on 2 cores
    if uri.startswith("sqlite:"):
        command += ["--default-artifact-root", (runs_dir / "artifacts").as_uri()]
    return command, {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri}


@contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` for the block, then restore what was there.

    `mlflow.set_tracking_uri` also sets MLFLOW_TRACKING_URI in the environment; without the
    restore, a later run in the same process would silently log to this run's server. An active
    experiment (`mlflow.set_experiment` by the caller, perhaps on another server) is set aside for
    the block: recur names its experiment and runs itself, and MLflow refuses to reopen a run of
    another experiment than the active one ("active experiment ID does not match").
    """
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    previous = tracking_utils._tracking_uri  # None when never set explicitly
    previous_experiment = fluent._active_experiment_id, os.environ.get("MLFLOW_EXPERIMENT_ID")
    mlflow.set_tracking_uri(uri)
    fluent._active_experiment_id = None
    try:
        yield
    finally:
        # set_experiment in the block set both; the caller gets its own back
        fluent._active_experiment_id = previous_experiment[0]
        if previous_experiment[1] is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = previous_experiment[1]
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
