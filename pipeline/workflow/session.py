"""Connecting to Ray. Only entry points (cli.py, jobs/) call this; library code never starts Ray."""

from __future__ import annotations

import logging
import os

from pipeline import progress
from pipeline.config import RecurConfig
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
    quiet = {"logging_level": logging.WARNING} if display.quiet else {}  # no "Started a local Ray"
    if target:
        display.line(f"{progress.TAG} connecting to Ray at {redact_text(target)}...")
        ray.init(address=target, runtime_env=runtime_env, **quiet)
        install_log_redaction()  # Ray's own log handlers, now that Ray has set them up
        return f"Ray cluster at {redact_text(target)}"
    cpus = cfg.resources.num_cpus or os.cpu_count()
    display.line(f"{progress.TAG} starting a local Ray ({cpus} CPUs)...")
    ray.init(num_cpus=cfg.resources.num_cpus, runtime_env=runtime_env, **quiet)
    install_log_redaction()
    cpus = ray.cluster_resources().get("CPU", 0)
    return f"local Ray ({cpus:g} CPUs)"
