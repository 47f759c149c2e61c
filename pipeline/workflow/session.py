"""Connecting to Ray. Only entry points (cli.py, jobs/) call this; library code never starts Ray."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pipeline import progress
from pipeline.config import RecurConfig
from pipeline.errors import Failure, UserError
from pipeline.tracking.redact import install_log_redaction, redact_text

log = logging.getLogger(__name__)


def connect_ray(cfg: RecurConfig, address: str | None = None) -> str:
    """Join the cluster at `address`, `resources.ray_address` or RAY_ADDRESS; else start a local Ray.

    Returns a short description of what it connected to.
    """
    import ray

    if ray.is_initialized():
        return "already connected"
    target = address or cfg.resources.ray_address or os.environ.get("RAY_ADDRESS")
    # Ray Data logs every dataset execution at INFO, which would bury recur's progress lines;
    # its level comes from this variable, in the driver and (through runtime_env) in workers.
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", cfg.train.ray_log_level)
    logging.getLogger("ray.data").setLevel(os.environ["RAY_DATA_LOG_LEVEL"])  # already imported here
    # The driver's progress mode reaches what Ray runs for it (the Train controller, Tune trials).
    runtime_env = {"env_vars": {"RAY_DATA_LOG_LEVEL": os.environ["RAY_DATA_LOG_LEVEL"],
                                progress.ENV: progress.mode()}}
    display = progress.Display()
    # quiet: no "Started a local Ray", and none of Ray's warnings (recur's own still show)
    quiet = {"logging_level": logging.ERROR} if display.quiet else {}
    if target:
        given = _given(cfg, address)
        check_ray_address(target, given)  # seconds, before ray.init's retries and C++ warnings
        display.line(f"{progress.TAG} connecting to Ray at {redact_text(target)}...")
        try:
            ray.init(address=target, runtime_env=runtime_env, **quiet)
        except ConnectionError as exc:
            raise RayAddressError(f"could not join the Ray cluster at {redact_text(target)} ({given}): "
                                  f"{str(exc).splitlines()[0]}") from None
        install_log_redaction()  # Ray's own log handlers, now that Ray has set them up
        return f"Ray cluster at {redact_text(target)}"
    cpus = cfg.resources.num_cpus or os.cpu_count()
    display.line(f"{progress.TAG} starting a local Ray ({cpus} CPUs)...")
    try:
        start_local_ray(num_cpus=cfg.resources.num_cpus, runtime_env=runtime_env, **quiet)
    except Exception as exc:  # Ray's own start-up failure, e.g. its 30 s node time-out on a busy machine
        raise RayStartFailed(f"could not start a local Ray: {str(exc).splitlines()[0]} "
                             "(run again when the machine is less busy; `recur --debug` shows Ray's "
                             "traceback, its logs are under /tmp/ray/session_latest/logs)") from exc
    install_log_redaction()
    cpus = ray.cluster_resources().get("CPU", 0)
    return f"local Ray ({cpus:g} CPUs)"


class RayStartFailed(Failure, RuntimeError):
    """A local Ray did not start (exit 1: nothing the config could fix)."""


class RayAddressError(UserError, ConnectionError):
    """A Ray address recur cannot join (a dashboard URL, nothing there, a token missing)."""


def _given(cfg: RecurConfig, address: str | None) -> str:
    """Where the Ray address came from, for messages."""
    return "--address" if address else "resources.ray_address" if cfg.resources.ray_address else "RAY_ADDRESS"


def refuse_dashboard_address(cfg: RecurConfig, address: str | None = None) -> None:
    """The address check that needs no cluster (a dashboard URL), for entry points to make before
    any work; `connect_ray` makes all of `check_ray_address` when Ray is needed."""
    target = address or cfg.resources.ray_address or os.environ.get("RAY_ADDRESS")
    if target and target.startswith(("http://", "https://")):
        check_ray_address(target, _given(cfg, address))


def check_ray_address(target: str, given: str) -> None:
    """Refuse at once, saying what to do, an address `ray.init` would fail on slowly or with a
    traceback: a dashboard URL (http://HEAD:8265, the form `recur submit` and `recur jobs` take),
    a GCS address where nothing answers, or a token-auth cluster that would not accept what Ray
    sends from here (no token unless RAY_AUTH_MODE=token; Ray retries that for 20 s).

    `given`: where the address came from (--address, resources.ray_address, RAY_ADDRESS).
    ray:// (Ray Client) addresses and "auto" are left to Ray.
    """
    shown = redact_text(target)
    if target.startswith(("http://", "https://")):
        raise RayAddressError(
            f"{given}={shown} is a Ray dashboard (Jobs API) address: `recur submit` and `recur jobs` take "
            "it, `recur run` does not. To run on that cluster, `recur submit CONFIG`; to join it from "
            "here, give its GCS address (HEAD:6379) or ray://HEAD:10001; to train on a local Ray, "
            f"unset {given if given == 'RAY_ADDRESS' else 'it'}")
    if target.startswith("ray://") or target in ("auto", "local") or ":" not in target:
        return
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    try:  # exactly the metadata Ray's own client would send (a token only with RAY_AUTH_MODE=token)
        from ray._private.authentication.grpc_authentication_client_interceptor import (
            _get_authentication_metadata_tuple,
        )

        metadata = _get_authentication_metadata_tuple()
    except ImportError:  # a Ray without token authentication
        metadata = ()
    channel = grpc.insecure_channel(target)
    try:
        gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
            gcs_service_pb2.GetClusterIdRequest(), timeout=10, metadata=metadata or None)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            sent = ("the token sent was not accepted" if metadata
                    else "Ray sends no token unless RAY_AUTH_MODE=token")
            raise RayAddressError(
                f"the Ray cluster at {shown} ({given}) uses token authentication and {sent}: export "
                "RAY_AUTH_MODE=token and make the cluster's token available here (RAY_AUTH_TOKEN, a file "
                "named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token; `ray get-auth-token` on the head "
                "node prints it)") from None
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            raise RayAddressError(
                f"no Ray cluster answers at {shown} ({given}): start one (`ray start --head`), correct "
                f"the address, or unset {given if given == 'RAY_ADDRESS' else 'it'} to train on a local "
                "Ray") from None
        # anything else (slow to answer): ray.init decides
    finally:
        channel.close()


def start_local_ray(**init_args: Any) -> str:
    """A new local Ray that is this run's alone, whatever else runs on the machine; returns its
    GCS address.

    `address="local"`: never join another Ray found on the machine (a `ray start` of another user,
    a notebook's); joining a cluster is only ever asked for, by RAY_ADDRESS or --address.
    RAY_ADDRESS naming this instance is in the environment while Ray starts, so every process
    it starts (they inherit the raylet's environment) finds this one: Ray Train's
    PlacementGroupCleaner otherwise looks for "the" cluster by its GCS processes, gives up for good
    on seeing two ("Found multiple active Ray instances"), and a Tune trial stopped by its
    scheduler keeps its workers' CPUs forever. This process's own environment is left as it was.
    """
    import ray

    from pipeline.environ import temporary_environ
    from pipeline.ports import free_port

    port = free_port()
    pinned = {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"127.0.0.1:{port}"}
    with temporary_environ(pinned):
        private_token_file()  # before Ray would write it world-readable
        ray.init(address="local", **init_args)
    return pinned["RAY_ADDRESS"]


def private_token_file(path: Path | None = None) -> None:
    """~/.ray/auth_token readable by its owner only.

    A local `ray.init` turns token authentication on and, when there is no token yet, writes one
    there with the process umask: usually 0644, so any user of the machine could read the token
    that guards Ray's ports. recur writes it first, 0600, as Ray would (64 hex characters), and
    tightens one already there that this user owns. A token given in RAY_AUTH_TOKEN or
    RAY_AUTH_TOKEN_PATH, or RAY_AUTH_MODE=disabled, is left to the user."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") \
            or os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return
    import secrets

    path = path or Path.home() / ".ray" / "auth_token"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        elif path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError as exc:  # a read-only home: Ray decides, as before
        log.warning("could not make %s private: %s", path, exc)

