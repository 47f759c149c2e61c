"""Connecting to Ray. Only entry points (cli.py, jobs/) call this; library code never starts Ray."""

from __future__ import annotations

import logging
import os

from pipeline.config import RecurConfig

log = logging.getLogger(__name__)


def connect_ray(cfg: RecurConfig, address: str | None = None) -> str:
    """Join the cluster at `address`, `resources.ray_address` or RAY_ADDRESS; else start a local Ray.

    Returns a short description of what it connected to.
    """
    import ray

    if ray.is_initialized():
        return "already connected"
    target = address or cfg.resources.ray_address or os.environ.get("RAY_ADDRESS")
    # The package itself travels to workers through the installed environment; silence the
    # per-task log prefixes that would interleave with recur's progress lines.
    if target:
        ray.init(address=target, log_to_driver=True)
        return f"Ray cluster at {target}"
    ray.init(num_cpus=cfg.resources.num_cpus, log_to_driver=True)
    cpus = ray.cluster_resources().get("CPU", 0)
    return f"local Ray ({cpus:g} CPUs)"
