"""How many trials fit the cluster at once: decided before the study starts, never by waiting.

A trial is a Tune function trainable (it holds `TRIAL_DRIVER_RESOURCES`: no CPU) that runs a
TorchTrainer: a controller (no CPU) and `resources.num_workers` workers at
`resources.cpus_per_worker` CPUs (and a GPU each with `resources.use_gpu`). Ray Data's read and
listing tasks need CPU no worker holds, so `cpus_kept_for_data` (resources.reserve_cpus_for_data,
at least one whole CPU) is kept free across the whole cluster. If even one trial cannot fit, the
study fails before it starts, naming the keys to change; if fewer trials fit than
`tune.max_concurrent_trials` asks for, concurrency is lowered with a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.data.loading import cpus_kept_for_data
from pipeline.training.resources import ResourceError

# The trainable only waits on its TorchTrainer. Tune needs some resource per trial, and any CPU
# here (even 0.01) would be missing from the whole CPU Ray Data's file listing asks for once the
# workers hold the rest: on 2 CPUs, 2 workers at 0.5 leave exactly 1. One byte of memory is a
# resource every node has.
TRIAL_DRIVER_RESOURCES = {"CPU": 0.0, "memory": 1.0}


def trial_resources(*, num_workers: int, cpus_per_worker: float, use_gpu: bool) -> dict[str, float]:
    """What a trial's own actor asks Ray for: `TRIAL_DRIVER_RESOURCES` when its TorchTrainer
    starts workers (they hold the CPUs), one worker's share with resources.num_workers: 0, where
    the trial's actor itself trains (pipeline.training.local)."""
    if num_workers > 0:
        return dict(TRIAL_DRIVER_RESOURCES)
    return {**TRIAL_DRIVER_RESOURCES, "CPU": cpus_per_worker, **({"GPU": 1.0} if use_gpu else {})}


@dataclass(frozen=True)
class TrialPlan:
    concurrency: int
    cpus_per_trial: float
    gpus_per_trial: float
    warning: str | None = None


def plan_trials(*, num_workers: int, cpus_per_worker: float, use_gpu: bool, reserve_cpus_for_data: float,
                cluster: dict[str, float], requested: int | None, num_trials: int) -> TrialPlan:
    """Trials that can run at once on `cluster` (Ray's cluster_resources()) for this resource config;
    `num_trials`: how many the study has (`study_size`: samples times grid points)."""
    workers = max(num_workers, 1)  # 0: one rank in the trial's own actor
    cpus = TRIAL_DRIVER_RESOURCES["CPU"] + workers * cpus_per_worker
    gpus = float(workers) if use_gpu else 0.0
    total_cpu = float(cluster.get("CPU", 0.0))
    total_gpu = float(cluster.get("GPU", 0.0))
    kept = cpus_kept_for_data(reserve_cpus_for_data)
    free_cpu = total_cpu - kept
    fit = math.floor((free_cpu + 1e-9) / cpus) if cpus > 0 else num_trials
    if use_gpu:
        fit = min(fit, math.floor((total_gpu + 1e-9) / gpus))
    if fit < 1:
        need = f"{cpus:g} CPUs" + (f" and {gpus:g} GPUs" if use_gpu else "")
        have = f"{total_cpu:g} CPUs" + (f" and {total_gpu:g} GPUs" if use_gpu else "")
        raise ResourceError(
            f"one trial needs {need} (resources.num_workers={num_workers} x resources.cpus_per_worker="
            f"{cpus_per_worker}{', one GPU each' if use_gpu else ''}) plus {kept:g} kept for Ray Data "
            f"(resources.reserve_cpus_for_data={reserve_cpus_for_data}, at least the 1 CPU its file "
            f"listing asks for), but the Ray cluster has {have}. Lower num_workers or "
            "cpus_per_worker (fractions are fine), or add nodes."
        )
    wanted = min(requested or fit, num_trials)
    concurrency = min(wanted, fit)
    warning = None
    if requested is not None and requested > fit:
        warning = (f"tune.max_concurrent_trials={requested} but only {fit} trial(s) of {cpus:g} CPUs fit the "
                   f"cluster's {total_cpu:g} CPUs with {kept:g} kept for Ray Data; running "
                   f"{concurrency} at a time")
    return TrialPlan(concurrency=max(concurrency, 1), cpus_per_trial=cpus, gpus_per_trial=gpus,
                     warning=warning)


def study_size(num_samples: int, space: dict[str, tuple[str, list]]) -> int:
    """Trials a study runs: `tune.num_samples` for every combination of the grid values (Tune's
    variant generator repeats the grid in every sample)."""
    return num_samples * math.prod(len(args) for kind, args in space.values() if kind == "grid")
