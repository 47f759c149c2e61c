"""What the driver of `recur predict` checks and decides before the Ray Data job starts
(`pipeline.inference.job`): the options, the dataset's files and their column types, whether the
model fits the dataset, its params, the first rows predicted on the driver (fail fast, and the
output's types), the output folder, and how many model replicas (actors) the cluster holds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.inference.model import PredictError, RegisteredModel
from pipeline.inference.rows import ID_COLUMN, InputSpec, output_schema, row_errors

log = logging.getLogger(__name__)

PROBE_ROWS = 16  # rows the driver predicts before starting the job (fail fast, output types)


# ---------------------------------------------------------------------------------- resources


@dataclass(frozen=True)
class ActorPlan:
    """How many model replicas (actors) run, and what each one holds."""

    concurrency: int
    num_cpus: float
    num_gpus: float
    data_cpus: float  # per read/write task

    def describe(self) -> str:
        gpus = f", {self.num_gpus:g} GPU" if self.num_gpus else ""
        plural = "s" if self.concurrency != 1 else ""
        return f"{self.concurrency} actor{plural} ({self.num_cpus:g} CPU{gpus} each)"


def check_options(*, batch_size: int, concurrency: int | None) -> None:
    """`--batch-size` and `--concurrency`, refused before the model, Ray or an MLflow run."""
    if batch_size < 1:
        raise PredictError(f"--batch-size must be >= 1, got {batch_size}")
    if concurrency is not None and concurrency < 1:
        raise PredictError(f"--concurrency must be >= 1 (model replicas), got {concurrency}")


def check_input_types(files: dict[str, list[str]], feature_kind: str, filesystem: Any = None) -> None:
    """Every part file's `id` and `x` columns have the contract's types (read from the Parquet
    footers only): a column of strings is refused naming the file before Ray starts, instead of
    every row failing in the job."""
    for paths in files.values():
        for path in paths:
            schema = pq.read_schema(path, filesystem=filesystem)
            if "x" not in schema.names:
                raise PredictError(f"{path}: no column 'x'; the file has {schema.names}")
            t, depth = schema.field("x").type, 0
            while pa.types.is_list(t) or pa.types.is_large_list(t):
                t, depth = t.value_type, depth + 1
            numeric = pa.types.is_integer(t) if feature_kind == "token" else (
                pa.types.is_floating(t) or pa.types.is_integer(t))
            want = ("list<int32> token ids" if feature_kind == "token"
                    else "list<list<float32>> (time x channels)")
            if not numeric or depth < 1 or (feature_kind == "token" and depth != 1):
                raise PredictError(f"{path}: column 'x' has type {schema.field('x').type}; expected {want}, "
                                   "as recur data import writes it")
            if ID_COLUMN in schema.names and not (pa.types.is_string(schema.field(ID_COLUMN).type)
                                                   or pa.types.is_large_string(schema.field(ID_COLUMN).type)):
                raise PredictError(f"{path}: column {ID_COLUMN!r} has type {schema.field(ID_COLUMN).type}; "
                                   "expected strings (row ids)")


def plan_actors(cluster_cpus: float, cluster_gpus: float, *, concurrency: int | None = None,
                gpu: bool | None = None, cuda_available: bool = False,
                reserve_cpus: float = 0.5) -> ActorPlan:
    """Size the actor pool from the cluster.

    At least one whole CPU (more if `reserve_cpus` says so) stays free for Ray Data's own tasks:
    listing and repartitioning ask for a whole CPU each, and with every CPU held by actors the
    job would wait forever; the read and write tasks ask for `reserve_cpus` (at most 1). GPUs are
    used when `gpu` is True, or when it is None (auto) and the cluster has GPUs and torch sees
    CUDA here: one GPU per actor, one actor per GPU by default. On CPUs the default is one actor
    per whole CPU left; asking for more actors than fit gives each a fraction of a CPU.
    """
    check_options(batch_size=1, concurrency=concurrency)
    from pipeline.data.loading import cpus_kept_for_data

    kept = cpus_kept_for_data(reserve_cpus)
    usable = cluster_cpus - kept
    if usable <= 0:
        raise PredictError(f"the Ray cluster has {cluster_cpus:g} CPUs: none left for model replicas "
                           f"after {kept:g} kept free for Ray Data's read and write "
                           "tasks (at least 1; resources.reserve_cpus_for_data)")
    use_gpu = gpu if gpu is not None else (cluster_gpus >= 1 and cuda_available)
    if use_gpu:
        if cluster_gpus < 1:
            raise PredictError("--gpu: the Ray cluster has no GPUs")
        n = concurrency or int(cluster_gpus)
        if n > cluster_gpus:
            raise PredictError(f"--concurrency {n} with one GPU per actor, but the cluster has "
                               f"{cluster_gpus:g} GPUs")
    else:
        n = concurrency or max(1, int(math.floor(usable)))
    data_cpus = min(1.0, reserve_cpus) if reserve_cpus > 0 else 0.0
    return ActorPlan(concurrency=n, num_cpus=round(min(1.0, usable / n), 3),
                     num_gpus=1.0 if use_gpu else 0.0, data_cpus=data_cpus)


# ---------------------------------------------------------------------------------- output


def resolve_output(out: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) for a local folder, file://, s3:// (the environment's
    endpoint and credentials, the bucket checked first) or any other URI pyarrow knows."""
    import os

    from pyarrow import fs as pafs

    from pipeline import storage

    if storage.is_s3(out):
        try:
            storage.check_bucket(out, "write predictions")
        except storage.StorageError as exc:
            raise PredictError(f"--out {out}: {exc}") from None
        return storage.filesystem_for(out)
    target = out if "://" in out else os.path.abspath(os.path.expanduser(out))
    try:
        filesystem, path = pafs.FileSystem.from_uri(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise PredictError(f"--out {out}: {exc}") from None
    return filesystem, path.rstrip("/") or "/"


def check_output(filesystem: Any, path: str, *, overwrite: bool) -> bool:
    """Refuse a file, or a non-empty folder unless `overwrite`; True when there is something
    to clear."""
    from pyarrow import fs as pafs

    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.File:
        raise PredictError(f"--out {path} is a file; give a folder")
    if info.type != pafs.FileType.Directory:
        return False
    entries = filesystem.get_file_info(pafs.FileSelector(path, recursive=False))
    if entries and not overwrite:
        raise PredictError(f"--out {path} is not empty ({len(entries)} entries); "
                           "pass --overwrite to replace its contents")
    return bool(entries)


def prepare_output(filesystem: Any, path: str, *, overwrite: bool) -> None:
    """An empty output folder: created, or emptied when `overwrite` (`check_output` refuses
    anything else)."""
    if check_output(filesystem, path, overwrite=overwrite):
        filesystem.delete_dir_contents(path)
    filesystem.create_dir(path, recursive=True)


# ---------------------------------------------------------------------------------- checks


def check_compatible(model: RegisteredModel, manifest: Any) -> None:
    pre = model.python_model.pre
    where = f"{model.describe()} ({pre.task}) and dataset {manifest.name!r} ({manifest.task})"
    if pre.task != manifest.task:
        raise PredictError(f"{where}: the model's task differs from the dataset's")
    if pre.feature_kind != manifest.feature.kind:
        raise PredictError(f"{where}: the model reads {pre.feature_kind} features, the dataset "
                           f"holds {manifest.feature.kind}")
    if pre.feature_kind == "float" and pre.num_channels != manifest.feature.num_channels:
        raise PredictError(f"{where}: the model takes {pre.num_channels} channels per step, the "
                           f"dataset has {manifest.feature.num_channels}")


def predict_params(model: RegisteredModel, given: dict[str, Any]) -> dict[str, Any]:
    """The task's batch defaults (`Task.batch_predict_params`) the model's signature accepts,
    then `given` (every key must be one of the model's params)."""
    from pipeline.tasks import task_class

    accepted = model.params_schema
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        offered = ", ".join(f"{k} (default {v!r})" for k, v in accepted.items()) or "none"
        raise PredictError(f"--param {', '.join(unknown)}: {model.describe()} takes params: {offered}")
    defaults = task_class(model.task).batch_predict_params
    skipped = sorted(set(defaults) - set(accepted))
    if skipped:
        log.warning("%s predates the param(s) %s; its output will not have what they add",
                    model.describe(), ", ".join(skipped))
    return {**{k: v for k, v in defaults.items() if k in accepted}, **given}


def split_files(root: str, splits: list[str]) -> dict[str, list[str]]:
    from pipeline.data.dataset import DatasetError
    from pipeline.data.dataset import split_files as dataset_split_files

    # paths on the dataset's filesystem (`storage.filesystem_for`): s3:// URIs lose their scheme
    files = {s: [f.removeprefix("s3://") for f in dataset_split_files(root, s)] for s in splits}
    empty = [s for s, f in files.items() if not f]
    if empty:
        raise DatasetError(f"no part-*.parquet files for split(s) {empty} in {root}: the dataset is "
                           "incomplete")
    return files


def probe(model: RegisteredModel, spec: InputSpec, params: dict[str, Any],
          files: dict[str, list[str]], columns: list[str], filesystem: Any = None) -> pa.Schema:
    """Predict the first valid rows on the driver: the model can read this data at all (else fail
    before starting the job), and the Arrow types of its prediction columns."""
    first = pq.ParquetFile(next(f for fs in files.values() for f in fs), filesystem=filesystem)
    batch = next(first.iter_batches(batch_size=PROBE_ROWS, columns=columns), None)
    rows = pa.Table.from_batches([batch]) if batch is not None else None
    if rows is not None:
        valid = [i for i, e in enumerate(row_errors(rows, spec)) if e is None]
        if valid:
            rows = rows.take(pa.array(valid, pa.int64()))
            inputs = spec.build_task().raw_inputs(rows)
            try:
                predictions = model.pyfunc.predict(inputs, params=params or None)
            except Exception as exc:
                raise PredictError(f"{model.describe()} cannot predict the first rows of the data: "
                                   f"{type(exc).__name__}: {exc}") from exc
            return output_schema(predictions)
    example = model.pyfunc.input_example  # no valid row to try: the model's own example
    if example is None:
        raise PredictError("none of the first rows of the data is valid and the model has no input "
                           "example: cannot tell its output columns")
    return output_schema(model.pyfunc.predict(example, params=params or None))
