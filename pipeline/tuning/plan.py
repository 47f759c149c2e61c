"""How many trials fit the cluster at once: decided before the study starts, never by waiting.

A trial is a Tune function trainable (it holds `TRIAL_DRIVER_CPU`) that runs a TorchTrainer: a
controller (no CPU) and `resources.num_workers` workers at `resources.cpus_per_worker` CPUs (and
a GPU each with `resources.use_gpu`). Ray Data's read tasks need CPU no worker holds, so
`resources.reserve_cpus_for_data` is kept free across the whole cluster. If even one trial
cannot fit, the study fails before it starts, naming the keys to change; if fewer trials fit
than `tune.max_concurrent_trials` asks for, concurrency is lowered with a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.training.trainer import ResourceError

TRIAL_DRIVER_CPU = 0.01  # the trainable only waits on its TorchTrainer (Tune needs > 0)


@dataclass(frozen=True)
class TrialPlan:
    concurrency: int
    cpus_per_trial: float
    gpus_per_trial: float
    warning: str | None = None


def plan_trials(*, num_workers: int, cpus_per_worker: float, use_gpu: bool, reserve_cpus_for_data: float,
                cluster: dict[str, float], requested: int | None, num_samples: int) -> TrialPlan:
    """Trials that can run at once on `cluster` (Ray's cluster_resources()) for this resource config."""
    workers = max(num_workers, 1)  # local mode (0) still runs one worker function
    cpus = TRIAL_DRIVER_CPU + workers * cpus_per_worker
    gpus = float(workers) if use_gpu else 0.0
    total_cpu = float(cluster.get("CPU", 0.0))
    total_gpu = float(cluster.get("GPU", 0.0))
    free_cpu = total_cpu - reserve_cpus_for_data
    fit = math.floor((free_cpu + 1e-9) / cpus) if cpus > 0 else num_samples
    if use_gpu:
        fit = min(fit, math.floor((total_gpu + 1e-9) / gpus))
    if fit < 1:
        need = f"{cpus:g} CPUs" + (f" and {gpus:g} GPUs" if use_gpu else "")
        have = f"{total_cpu:g} CPUs" + (f" and {total_gpu:g} GPUs" if use_gpu else "")
        raise ResourceError(
            f"one trial needs {need} (resources.num_workers={num_workers} x resources.cpus_per_worker="
            f"{cpus_per_worker}{', one GPU each' if use_gpu else ''}) plus resources.reserve_cpus_for_data="
            f"{reserve_cpus_for_data} for Ray Data, but the Ray cluster has {have}. Lower num_workers or "
            "cpus_per_worker (fractions are fine), or add nodes."
        )
    wanted = min(requested or fit, num_samples)
    concurrency = min(wanted, fit)
    warning = None
    if requested is not None and requested > fit:
        warning = (f"tune.max_concurrent_trials={requested} but only {fit} trial(s) of {cpus:g} CPUs fit the "
                   f"cluster's {total_cpu:g} CPUs with {reserve_cpus_for_data:g} kept for Ray Data; running "
                   f"{concurrency} at a time")
    return TrialPlan(concurrency=max(concurrency, 1), cpus_per_trial=cpus, gpus_per_trial=gpus,
                     warning=warning)
