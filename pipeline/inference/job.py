"""Batch inference with Ray Data: a registered model over a dataset's splits, to Parquet.

The plan (Ray must be connected; the entry point does that):

    read_parquet(split files)  ->  + split column  ->  blocks of --batch-size rows
      ->  map_batches(PredictActor, actor pool)  ->  write_parquet(--out, pyarrow filesystem)

Every actor loads the model once (shipped as bytes by the driver), checks each row with the
dataset contract's row checks, predicts the valid rows through the model's pyfunc `predict` and
returns every row (`rows.BatchPredictor`). Ray Data runs with `preserve_order`, but the row
order of the output is not promised: rows are matched to inputs by `id`. The output folder is
then read back (only `split` and `error`) to count the rows written and the failures, and
`_recur_predict.json` records what ran; it is written last, so a folder without it holds an
interrupted run.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.datasource import FilenameProvider

from pipeline.inference.model import PredictError, RegisteredModel, load_from_blob
from pipeline.inference.preflight import (
    check_compatible,
    check_input_types,
    check_options,
    check_output,
    plan_actors,
    predict_params,
    prepare_output,
    probe,
    resolve_output,
    split_files,
)
from pipeline.inference.rows import (
    ERROR_COLUMN,
    ID_COLUMN,
    SPLIT_COLUMN,
    BatchPredictor,
    InputSpec,
    error_kind,
)

log = logging.getLogger(__name__)

SUMMARY_FILE = "_recur_predict.json"  # "_" prefix: Parquet readers skip it
ROWS_PER_FILE = 100_000  # a hint: fewer, larger output files
EXAMPLES_PER_KIND = 1


# ---------------------------------------------------------------------------------- Ray Data


def add_split(batch: pa.Table, split: str) -> pa.Table:
    return batch.append_column(SPLIT_COLUMN, pa.array([split] * batch.num_rows, pa.string()))


class PartFiles(FilenameProvider):
    """part-00000-<write uuid>.parquet, part-00001-..., in row order (Ray Data wants the uuid)."""

    def __init__(self) -> None:
        super().__init__(file_format="parquet")

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"part-{task_index:05d}-{write_uuid}.parquet"


class PredictActor(BatchPredictor):
    """The Ray Data actor: loads the model from the driver's bytes once, then predicts batches."""

    def __init__(self, model_blob: list[Any], spec: InputSpec, params: dict[str, Any],
                 schema: pa.Schema, num_cpus: float, use_gpu: bool) -> None:
        import ray
        import torch

        torch.set_num_threads(max(1, int(num_cpus)))
        model = load_from_blob(ray.get(model_blob[0]))
        if use_gpu:
            if torch.cuda.is_available():
                from pipeline.inference.device import place_on_device

                place_on_device(model, "cuda")
            else:
                log.warning("this actor holds a GPU but torch sees no CUDA: predicting on the CPU")
        super().__init__(model, spec, params, schema)


@dataclass
class PredictResult:
    model: str
    model_uri: str
    run_id: str | None
    task: str
    data: str
    data_hash: str
    out: str
    splits: list[str]
    rows_in: dict[str, int]
    rows_out: dict[str, int]
    failed: int
    failures: list[dict[str, Any]]  # kind, rows, example id, example reason
    columns: list[str]
    params: dict[str, Any]
    batch_size: int
    actors: str
    # prepare (model, checks, first rows), connect (Ray), predict (read, predict, write), total
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total_in(self) -> int:
        return sum(self.rows_in.values())

    @property
    def total_out(self) -> int:
        return sum(self.rows_out.values())

    def format(self) -> str:
        per_split = ", ".join(f"{s} {n}" for s, n in self.rows_in.items())
        lines = ["recur predict finished",
                 f"  model         {self.model}, task {self.task}",
                 f"  data          {self.data} (data version {self.data_hash[:12]})",
                 f"  rows in       {self.total_in} ({per_split})",
                 f"  rows out      {self.total_out}",
                 f"  failed rows   {self.failed}"
                 + (" (null prediction, the reason in column `error`)" if self.failed else "")]
        width = max([len(f["kind"]) for f in self.failures] + [0])
        for f in self.failures:
            lines.append(f"    {f['kind']:<{width}}  {f['rows']:>6}  e.g. {f['example_split']} row "
                         f"{f['example_id']!r}: {f['example_reason']}")
        lines.append(f"  output        {self.out}")
        lines.append(f"  columns       {', '.join(self.columns)}")
        sec = {k: self.seconds.get(k, 0.0) for k in ("prepare", "connect", "predict", "total")}
        start = f", start Ray {sec['connect']:.1f}" if sec["connect"] >= 0.05 else ""
        run = sec["predict"]
        lines.append(f"  wall time     {sec['total']:.1f} s (model and checks {sec['prepare']:.1f}{start}, "
                     f"read, predict and write {run:.1f}) on {self.actors}")
        rate = self.total_in / run if run > 0 else float("nan")
        lines.append(f"  rows/s        {rate:.1f} (read, predict and write)")
        return "\n".join(lines)


def predict_dataset(model: RegisteredModel, data: str, out: str, *, splits: list[str] | None = None,
                    batch_size: int = 256, concurrency: int | None = None, gpu: bool | None = None,
                    params: dict[str, Any] | None = None, overwrite: bool = False,
                    reserve_cpus: float = 0.5, started_at: float | None = None,
                    connect: Callable[[], str] | None = None) -> PredictResult:
    """Predict every row of `splits` (default: all) of the dataset at `data`; write Parquet to `out`.

    `connect` (from the entry point, which owns `ray.init`) is called once the checks that need
    no Ray have passed (data, model fit, first rows predicted, output folder); without it Ray
    must be connected. `started_at` (`time.perf_counter()`) is when the command started, for the
    wall time. Raises PredictError (or DatasetError) for what the user can fix.
    """
    import ray
    import torch

    from pipeline.data.dataset import SPLITS, read_manifest
    from pipeline.data.loading import verified_scan, with_footer_readers
    from pipeline.storage import filesystem_for

    started_at = time.perf_counter() if started_at is None else started_at
    check_options(batch_size=batch_size, concurrency=concurrency)
    manifest = read_manifest(data)
    splits = list(dict.fromkeys(splits or [s for s in SPLITS if s in manifest.splits]))
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise PredictError(f"unknown split(s) {unknown}: expected some of {list(SPLITS)}")
    check_compatible(model, manifest)
    files = split_files(data, splits)
    data_fs, _ = filesystem_for(data)
    check_input_types(files, manifest.feature.kind, data_fs)
    rows_in = {s: sum(pq.ParquetFile(f, filesystem=data_fs).metadata.num_rows for f in files[s])
               for s in splits}
    spec = InputSpec.from_manifest(manifest, num_channels=model.python_model.pre.num_channels)
    columns = [ID_COLUMN, "x", *manifest.columns]
    params = predict_params(model, dict(params or {}))
    schema = probe(model, spec, params, files, columns, data_fs)
    filesystem, path = resolve_output(out)
    check_output(filesystem, path, overwrite=overwrite)

    connect_started = time.perf_counter()
    if connect is not None:
        log.info("using %s", connect())
    connect_seconds = time.perf_counter() - connect_started
    resources = ray.cluster_resources()
    plan = plan_actors(resources.get("CPU", 0.0), resources.get("GPU", 0.0), concurrency=concurrency,
                       gpu=gpu, cuda_available=torch.cuda.is_available(), reserve_cpus=reserve_cpus)
    prepare_output(filesystem, path, overwrite=overwrite)
    log.info("predicting %d rows (%s) of %s with %s on %s", sum(rows_in.values()), ", ".join(splits),
             data, model.describe(), plan.describe())

    started = time.perf_counter()
    context = ray.data.DataContext.get_current()
    preserve_order = context.execution_options.preserve_order
    context.execution_options.preserve_order = True  # mostly input order; `id` is the key
    blob_ref = ray.put(model.blob)  # once, for every actor
    try:
        data_args = {"num_cpus": plan.data_cpus}
        parts = [with_footer_readers(len(files[s]), lambda s=s: ray.data.read_parquet(
                     files[s], filesystem=data_fs, fragment_scan_options=verified_scan(), **data_args))
                 .select_columns(columns)
                 .map_batches(add_split, fn_kwargs={"split": s}, batch_format="pyarrow", batch_size=None,
                              **data_args)
                 for s in splits]
        ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
        ds = ds.repartition(target_num_rows_per_block=batch_size)
        ds = ds.map_batches(
            PredictActor,
            fn_constructor_kwargs={"model_blob": [blob_ref], "spec": spec, "params": params,
                                   "schema": schema, "num_cpus": plan.num_cpus,
                                   "use_gpu": plan.num_gpus > 0},
            batch_size=batch_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=plan.concurrency),
            num_cpus=plan.num_cpus, num_gpus=plan.num_gpus or None,
        )
        ds.write_parquet(path, filesystem=filesystem, filename_provider=PartFiles(),
                         min_rows_per_file=ROWS_PER_FILE, ray_remote_args=data_args,
                         compression="zstd")
    finally:
        context.execution_options.preserve_order = preserve_order
    seconds = time.perf_counter() - started

    rows_out, failures, failed = read_back(filesystem, path, splits)
    result = PredictResult(
        model=model.describe(), model_uri=model.uri, run_id=model.run_id, task=model.task, data=data,
        data_hash=manifest.data_hash, out=out, splits=splits, rows_in=rows_in,
        rows_out=rows_out, failed=failed, failures=failures,
        columns=[ID_COLUMN, SPLIT_COLUMN, *schema.names, ERROR_COLUMN], params=params,
        batch_size=batch_size, actors=plan.describe(),
        seconds={"prepare": round(connect_started - started_at, 3), "connect": round(connect_seconds, 3),
                 "predict": round(seconds, 3), "total": round(time.perf_counter() - started_at, 3)},
    )
    if result.total_out != result.total_in:  # never expected: every row is written
        raise RuntimeError(f"batch inference wrote {result.total_out} rows for {result.total_in} "
                           f"input rows ({rows_out} vs {rows_in}) to {out}")
    write_summary(filesystem, path, result)
    return result


def read_back(filesystem: Any, path: str,
              splits: list[str]) -> tuple[dict[str, int], list[dict[str, Any]], int]:
    """Rows written per split, and the failures by kind (count, one example each)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    written = pads.dataset(path, filesystem=filesystem, format="parquet")
    counts = Counter(written.to_table(columns=[SPLIT_COLUMN]).column(SPLIT_COLUMN).to_pylist())
    rows_out = {s: counts.get(s, 0) for s in splits}
    failed = written.to_table(columns=[ID_COLUMN, SPLIT_COLUMN, ERROR_COLUMN],
                              filter=pc.field(ERROR_COLUMN).is_valid())
    kinds: dict[str, dict[str, Any]] = {}
    for row in failed.to_pylist():
        kind = error_kind(row[ERROR_COLUMN])
        entry = kinds.setdefault(kind, {"kind": kind, "rows": 0, "example_id": row[ID_COLUMN],
                                        "example_split": row[SPLIT_COLUMN],
                                        "example_reason": row[ERROR_COLUMN]})
        entry["rows"] += 1
    failures = sorted(kinds.values(), key=lambda k: (-k["rows"], k["kind"]))
    return rows_out, failures, failed.num_rows


def write_summary(filesystem: Any, path: str, result: PredictResult) -> None:
    record = {**asdict(result), "rows_in_total": result.total_in, "rows_out_total": result.total_out,
              "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with filesystem.open_output_stream(f"{path}/{SUMMARY_FILE}") as stream:
        stream.write((json.dumps(record, indent=2, default=str) + "\n").encode())
