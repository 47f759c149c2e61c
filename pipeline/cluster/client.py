"""Ray Jobs API client: submit, watch, list and stop jobs on a Ray cluster's dashboard.

A thin layer over `ray.job_submission.JobSubmissionClient` that

- takes the address the caller gives, else RAY_API_SERVER_ADDRESS, else RAY_ADDRESS, else
  http://127.0.0.1:8265 (Ray's own client lets RAY_ADDRESS override even an explicit address;
  here an explicit address always wins);
- uploads the working dir without the virtualenv, git, caches, run stores and data files;
- forwards the MLflow and S3 settings of the submitting shell to the job (names are shown,
  values never are);
- sends this machine's Ray auth token to a cluster on this machine (127.0.0.1) when
  RAY_AUTH_MODE is not set, as `ray start --head` does when it finds a token;
- turns "cannot connect" and "unauthorized" into a `ClusterError` that says what to do.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import shlex
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from pipeline.errors import CommandError
from pipeline.tracking.redact import redact_text

DEFAULT_ADDRESS = "http://127.0.0.1:8265"

# Shell settings a job needs to reach the same tracking server and artifact store as the
# submitter. Their values go into the job's runtime env and are never printed.
FORWARDED_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_S3_ENDPOINT_URL",
)
FORWARDED_ENV_PREFIXES = ("AWS_",)

# Not uploaded with the working dir (gitignore syntax; `.gitignore` and `.rayignore` apply too).
# Data stays where it is: recur submit passes absolute paths for data.root and friends.
WORKING_DIR_EXCLUDES = [
    ".git/", ".venv/", "venv/", "__pycache__/", "*.pyc", ".pytest_cache/", ".ruff_cache/",
    "*.egg-info/", "recur-runs/", "mlruns/", "mlartifacts/", "/data/", "/datasets/",
    "*.parquet", "*.db", "*.ckpt", "*.pt", "*.pth",
]

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class ClusterError(CommandError):
    """The Jobs API cannot be reached, refused the request, or does not know the job."""


def resolve_address(address: str | None = None) -> str:
    """The Jobs API address: `address`, else RAY_API_SERVER_ADDRESS, RAY_ADDRESS, 127.0.0.1:8265."""
    return (address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
            or DEFAULT_ADDRESS).rstrip("/")


def address_host(address: str) -> str:
    """Host part of an http(s)://, ray:// or host:port address ('auto' is this machine)."""
    parsed = urllib.parse.urlsplit(address if "://" in address else f"//{address}")
    return parsed.hostname or address


def is_local_address(address: str) -> bool:
    """True when the address names this machine's loopback (127.0.0.0/8, ::1, localhost, auto)."""
    host = address_host(address)
    if host in ("localhost", "auto"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def forwarded_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The MLflow/S3 settings of `environ` (default os.environ) that are set and non-empty."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in sorted(environ.items())
            if v and (k in FORWARDED_ENV or k.startswith(FORWARDED_ENV_PREFIXES))}


def runtime_env(working_dir: str = ".", env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runtime env of a job: the working dir to upload and the environment variables to set."""
    path = Path(working_dir).expanduser()
    if not path.is_dir():
        raise ClusterError(f"working dir {working_dir} is not a folder")
    env_vars = {**forwarded_env(), **(env or {})}
    result: dict[str, Any] = {"working_dir": str(path.resolve()), "excludes": list(WORKING_DIR_EXCLUDES)}
    if env_vars:
        result["env_vars"] = env_vars
    return result


def _local_token() -> str | None:
    """This machine's Ray auth token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)."""
    try:
        from ray._raylet import AuthenticationTokenLoader

        loader = AuthenticationTokenLoader.instance()
        if loader.has_token(ignore_auth_mode=True):
            return loader.get_raw_token(ignore_auth_mode=True).strip() or None
        return None
    except (ImportError, AttributeError):  # Ray without token auth: look where it documents
        if os.environ.get("RAY_AUTH_TOKEN"):
            return os.environ["RAY_AUTH_TOKEN"].strip()
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        if not path.is_file():
            return None
        return path.read_text().strip() or None


def auth_headers(address: str) -> dict[str, str]:
    """HTTP headers for the dashboard at `address` that Ray's client would not add by itself.

    With RAY_AUTH_MODE set, Ray's client decides (token: it sends the token; disabled: nothing).
    Unset, Ray's client sends nothing, although `ray start --head` turns token auth on whenever a
    token exists on the machine (~/.ray/auth_token is written by any local `ray.init()`); for a
    cluster on this machine the local token is then the cluster's, so it is sent. A remote
    cluster never gets it implicitly: export RAY_AUTH_MODE=token and its token instead.
    """
    if os.environ.get("RAY_AUTH_MODE") is not None or not is_local_address(address):
        return {}
    token = _local_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextmanager
def _address_env_cleared() -> Iterator[None]:
    """Ray's client lets RAY_API_SERVER_ADDRESS/RAY_ADDRESS override the address it is given."""
    saved = {k: os.environ.pop(k) for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _unreachable(address: str, why: str) -> ClusterError:
    return ClusterError(
        f"no Ray Jobs API at {address} ({why}). Start a cluster on this machine with "
        "`ray start --head --dashboard-host 127.0.0.1` (its dashboard serves the Jobs API on "
        "http://127.0.0.1:8265), or point --address or RAY_ADDRESS at the head node's dashboard, "
        "e.g. http://HEAD:8265."
    )


def _auth_failed(address: str, message: str) -> ClusterError:
    if "Authentication failed" in message:
        reason = "the token sent was not accepted"
    elif os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        reason = "RAY_AUTH_MODE=disabled keeps recur from sending a token (unset it)"
    else:
        reason = "no token was sent"
    return ClusterError(
        f"the Ray cluster at {address} uses token authentication and {reason}. Make the cluster's "
        "token available here (RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH, or "
        "~/.ray/auth_token; `ray get-auth-token` on the head node prints it) and, for a cluster "
        "that is not on 127.0.0.1, export RAY_AUTH_MODE=token."
    )


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at an http(s) address."""
    parsed = urllib.parse.urlsplit(address)
    if parsed.scheme not in ("http", "https"):
        return  # a GCS or ray:// address: Ray's client resolves it
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError as exc:
        raise ClusterError(f"invalid Ray address {address!r}: {exc}") from None
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise _unreachable(address, exc.strerror or str(exc)) from None


def _client(address: str | None):
    """A connected JobSubmissionClient for `address` (see resolve_address), or ClusterError."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    target = resolve_address(address)
    _probe(target)
    try:
        with _address_env_cleared():
            return JobSubmissionClient(target, headers=auth_headers(target) or None)
    except AuthenticationError as exc:
        raise _auth_failed(target, str(exc)) from None
    except (ConnectionError, OSError) as exc:
        raise _unreachable(target, str(exc)) from None
    except RuntimeError as exc:  # e.g. the address answers but is no Ray dashboard
        raise ClusterError(f"Ray Jobs API at {target}: {exc}") from None


@contextmanager
def _requests(address: str | None, job_id: str | None = None) -> Iterator[Any]:
    """A client, with Ray's errors turned into ClusterError naming the address and job."""
    from ray.exceptions import AuthenticationError

    target = resolve_address(address)
    client = _client(target)
    try:
        yield client
    except BrokenPipeError:  # the reader of `out` went away (`| head`): not the cluster's fault
        raise
    except AuthenticationError as exc:
        raise _auth_failed(target, str(exc)) from None
    except (ConnectionError, OSError) as exc:
        raise _unreachable(target, str(exc)) from None
    except RuntimeError as exc:
        text = str(exc)
        if job_id is not None and ("404" in text or "does not exist" in text):
            raise ClusterError(f"no job {job_id} on the Ray cluster at {target} "
                               "(`recur jobs list` shows its jobs)") from None
        raise ClusterError(f"Ray Jobs API at {target}: {text}") from None


@contextmanager
def _quiet_upload_logs() -> Iterator[None]:
    """Ray logs every ignore file and the package upload at INFO, and that .git/.venv are now
    excluded by default (recur excludes them anyway) at WARNING; real problems still show."""
    levels = {"ray._private.runtime_env.packaging": logging.WARNING,
              "ray._private.runtime_env.working_dir": logging.ERROR,
              "ray.dashboard.modules.dashboard_sdk": logging.WARNING}
    saved = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def submit_job(entrypoint: list[str], *, address: str | None = None, working_dir: str = ".",
               env: dict[str, str] | None = None, submission_id: str | None = None,
               metadata: dict[str, str] | None = None) -> str:
    """Submit `entrypoint` (argv, run in the uploaded working dir) as a Ray job; returns its id.

    `env` is set in the job on top of the forwarded MLflow/S3 settings (FORWARDED_ENV, AWS_*).
    Do not put RAY_DATA_LOG_LEVEL in it: the entry points set that through `ray.init`, and Ray
    refuses a job whose runtime env and driver set the same variable.
    """
    if not entrypoint:
        raise ClusterError("submit_job: empty entrypoint")
    renv = runtime_env(working_dir, env)
    with _requests(address) as client, _quiet_upload_logs():
        try:
            return client.submit_job(entrypoint=shlex.join(entrypoint), runtime_env=renv,
                                     submission_id=submission_id, metadata=metadata or None)
        except ValueError as exc:  # e.g. the working dir is over Ray's upload size limit
            raise ClusterError(f"cannot submit the job: {exc}") from None


def job_status(job_id: str, *, address: str | None = None) -> str:
    """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED (Ray's JobStatus name)."""
    with _requests(address, job_id) as client:
        return _status_name(client.get_job_status(job_id))


def job_info(job_id: str, *, address: str | None = None) -> dict[str, Any]:
    """Everything the Jobs API knows about one job, as in `list_jobs` (env var values hidden)."""
    with _requests(address, job_id) as client:
        return _details(client.get_job_info(job_id))


def stop_job(job_id: str, *, address: str | None = None) -> bool:
    """Ask the job to stop; True if it was still running, False if it had already ended."""
    with _requests(address, job_id) as client:
        return bool(client.stop_job(job_id))


def list_jobs(*, address: str | None = None) -> list[dict[str, Any]]:
    """Every job the cluster knows, oldest first; `runtime_env.env_vars` values are hidden."""
    with _requests(address) as client:
        jobs = [_details(j) for j in client.list_jobs()]
    return sorted(jobs, key=lambda j: (j.get("start_time") or 0, j.get("submission_id") or ""))


def job_logs(job_id: str, *, address: str | None = None) -> str:
    """The job's whole log so far."""
    with _requests(address, job_id) as client:
        return client.get_job_logs(job_id)


def follow_logs(job_id: str, *, address: str | None = None, out: TextIO = sys.stdout) -> str:
    """Write the job's log to `out` as it grows, until the job ends; returns its final status."""

    async def tail(client: Any) -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(redact_text(chunk))  # the job's env holds the secrets this one forwarded
            out.flush()

    with _requests(address, job_id) as client:
        # after Ray's import, which configures its loggers: no "WebSocket closed" line at the end
        logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)
        _status_name(client.get_job_status(job_id))  # an unknown id fails here, clearly
        try:
            asyncio.run(tail(client))
        except RuntimeError as exc:
            if "closed unexpectedly" not in str(exc):
                raise
            out.write(f"\n[recur] log stream from {resolve_address(address)} broke ({exc}); "
                      "waiting for the job to end\n")
        # The stream ends when the driver exits; the status can lag behind by a moment.
        deadline = time.monotonic() + 60
        while True:
            status = _status_name(client.get_job_status(job_id))
            if status in TERMINAL or time.monotonic() > deadline:
                return status
            time.sleep(1)


def _status_name(status: Any) -> str:
    return str(getattr(status, "value", status))


def _details(job: Any) -> dict[str, Any]:
    data = job.model_dump() if hasattr(job, "model_dump") else dict(job.dict())
    data["status"] = _status_name(data.get("status"))
    if data.get("type") is not None:
        data["type"] = _status_name(data["type"])
    if isinstance(data.get("entrypoint"), str):
        data["entrypoint"] = redact_text(data["entrypoint"])
    renv = dict(data.get("runtime_env") or {})
    if renv.get("env_vars"):
        renv["env_vars"] = {k: "***" for k in renv["env_vars"]}
    data["runtime_env"] = renv
    return data
