"""What a run's worker group asks of Ray, checked against the cluster before training starts."""

from __future__ import annotations

from pipeline.config import RecurConfig
from pipeline.errors import UserError


class ResourceError(UserError, RuntimeError):
    """The cluster cannot fit the requested workers plus Ray Data's read tasks."""


def worker_resources(cfg: RecurConfig) -> dict[str, float]:
    res: dict[str, float] = {"CPU": cfg.resources.cpus_per_worker}
    if cfg.resources.use_gpu:
        res["GPU"] = 1.0
    return res


def check_resources(cfg: RecurConfig, cluster: dict[str, float]) -> None:
    """Fail before training, naming the keys to change, when the workers cannot all be placed.

    Ray Data's read and listing tasks need CPU that the Train workers do not hold; if workers take
    every CPU the data pipeline waits forever, so `resources.reserve_cpus_for_data` (at least one
    whole CPU, what the file listing asks for: `cpus_kept_for_data`) must stay free.
    """
    from pipeline.data.loading import cpus_kept_for_data

    r = cfg.resources
    total_cpu = float(cluster.get("CPU", 0.0))
    kept = cpus_kept_for_data(r.reserve_cpus_for_data)
    need_cpu = r.num_workers * r.cpus_per_worker + kept
    if need_cpu > total_cpu + 1e-9:
        raise ResourceError(
            f"resources.num_workers={r.num_workers} x resources.cpus_per_worker={r.cpus_per_worker} "
            f"+ {kept:g} kept for Ray Data (resources.reserve_cpus_for_data={r.reserve_cpus_for_data}, "
            f"at least the 1 CPU its file listing asks for) needs {need_cpu:g} CPUs, "
            f"but the Ray cluster has {total_cpu:g}. Lower num_workers or cpus_per_worker "
            f"(fractions are fine), or add nodes."
        )
    if cfg.train.precision in ("fp16", "bf16") and not r.use_gpu:
        raise ResourceError(
            f"train.precision={cfg.train.precision} needs resources.use_gpu=true (CPU kernels of "
            "recurrent layers run in fp32): set train.precision=auto or fp32, or train on GPUs."
        )
    if r.use_gpu and float(cluster.get("GPU", 0.0)) < r.num_workers:
        raise ResourceError(
            f"resources.use_gpu=true with resources.num_workers={r.num_workers} needs "
            f"{r.num_workers} GPUs, but the Ray cluster has {cluster.get('GPU', 0):g}. "
            "Set resources.use_gpu=false or lower num_workers."
        )
