"""`recur predict` as a recorded workflow step, with its own MLflow run.

The step's record (see `records.py`) is keyed by what a prediction depends on: the model version
the spec resolves to, the input's data hash, the output location and the options (splits, batch
size, params). Predicting again with the same model on the same data into the same place is
skipped while that output's summary file is still there; a new champion, new data or other
options predict again. `force` predicts even then.

Each prediction that runs is an MLflow run (`recur.kind` predict) in the config's experiment:
the model version, data hash and output as params, rows in/out/failed and rows/s as metrics,
the output's summary as an artifact, and the step's status as `recur.step.predict` tags, so
`recur runs show RUN` shows it like a training's steps.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.config import RecurConfig
from pipeline.workflow.records import (
    FAILED,
    PREDICT,
    STEP_TAG,
    SUCCEEDED,
    StepRecord,
    StepStore,
    hash_json,
    new_record,
)

log = logging.getLogger(__name__)


@dataclass
class PredictOutcome:
    record: StepRecord
    status: str  # succeeded | skipped
    result: Any = None  # pipeline.inference.job.PredictResult when the step ran
    mlflow_run_id: str | None = None

    def format(self) -> str:
        if self.result is not None:
            return (self.result.format() + f"\n  MLflow run    {self.mlflow_run_id}"
                    f"\n  step record   {self.record.key}")
        out = self.record.outputs
        return "\n".join([
            "recur predict: skipped, nothing changed since the recorded prediction",
            f"  model         {out['model']} (data version {self.record.data_hash[:12]})",
            f"  output        {out['out']} ({out['rows_out']} rows, {out['failed']} failed, "
            f"written {self.record.started_at})",
            f"  MLflow run    {out.get('mlflow_run_id')}",
            f"  step record   {self.record.key}  (--force predicts again)",
        ])


def _location(path: str) -> str:
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def _output_is_there(out: str) -> bool:
    from pyarrow import fs as pafs

    from pipeline.inference.job import SUMMARY_FILE
    from pipeline.inference.preflight import resolve_output

    try:
        filesystem, path = resolve_output(out)
        return filesystem.get_file_info(f"{path}/{SUMMARY_FILE}").type == pafs.FileType.File
    except Exception:  # unreachable or gone: predict again
        return False


def run_predict(cfg: RecurConfig, model_text: str, data: str, out: str, *, tracking_uri: str,
                splits: list[str] | None, batch_size: int, concurrency: int | None, gpu: bool | None,
                params: dict[str, Any], overwrite: bool, force: bool, started_at: float,
                connect: Callable[[], str] | None) -> PredictOutcome:
    """Check, skip when recorded, else predict (see `pipeline.inference.job.predict_dataset`)."""
    from pipeline.data.dataset import SPLITS, files_fingerprint, read_manifest
    from pipeline.inference.job import predict_dataset
    from pipeline.inference.model import load_registered
    from pipeline.inference.preflight import (
        check_compatible,
        check_input_types,
        check_options,
        check_output,
        predict_params,
        resolve_output,
        split_files,
    )
    from pipeline.storage import filesystem_for
    from pipeline.tracking.model_ref import ModelSpec, resolve_version
    from pipeline.tracking.store import check_reachable

    check_options(batch_size=batch_size, concurrency=concurrency)  # the cheap checks first, before Ray
    spec = ModelSpec.parse(model_text)
    manifest = read_manifest(data)
    files = split_files(data, list(dict.fromkeys(splits or [s for s in SPLITS if s in manifest.splits])))
    check_input_types(files, manifest.feature.kind, filesystem_for(data)[0])
    check_reachable(tracking_uri)
    version, _ = resolve_version(spec, tracking_uri)
    # the input as it is on disk now, not only as its manifest says: data changed in place predicts again
    inputs = {"model": f"{spec.name}/{version}", "data": manifest.data_hash, "files": files_fingerprint(data),
              "out": _location(out),
              "options": hash_json({"splits": sorted(splits or []), "batch_size": batch_size,
                                    "params": params})}
    store = StepStore(cfg.tracking.runs_dir)
    record = new_record(PREDICT, {}, inputs, manifest.data_hash)
    found = store.get(record.key)
    if not force and found is not None and found.status == SUCCEEDED and _output_is_there(out):
        log.info("step predict: skipped, recorded %s (record %s)", found.started_at, found.key)
        return PredictOutcome(record=found, status="skipped")

    model = load_registered(spec, tracking_uri)
    check_compatible(model, manifest)  # refused before a record or an MLflow run exists
    predict_params(model, dict(params))
    filesystem, path = resolve_output(out)
    check_output(filesystem, path, overwrite=overwrite)
    if model.version != version:  # the alias moved in between: key the record on what runs
        record = new_record(PREDICT, {}, {**inputs, "model": f"{spec.name}/{model.version}"},
                            manifest.data_hash)
    run = _PredictRun(cfg, tracking_uri, model, data, out)
    store.put(record)  # status running: a crash leaves it so
    start = time.perf_counter()
    try:
        result = predict_dataset(model, data, out, splits=splits, batch_size=batch_size,
                                 concurrency=concurrency, gpu=gpu, params=params, overwrite=overwrite,
                                 reserve_cpus=cfg.resources.reserve_cpus_for_data, started_at=started_at,
                                 connect=connect)
    except BaseException as exc:
        from pipeline.tracking.redact import redact_text

        record.status, record.error = FAILED, redact_text(f"{type(exc).__name__}: {exc}")[:4000]
        record.seconds = round(time.perf_counter() - start, 2)
        store.put(record)
        run.finish(record, None)
        raise
    record.status, record.seconds = SUCCEEDED, round(time.perf_counter() - start, 2)
    record.outputs = {"model": model.describe(), "out": out, "rows_in": result.total_in,
                      "rows_out": result.total_out, "failed": result.failed, "mlflow_run_id": run.run_id}
    store.put(record)
    run.finish(record, result)
    return PredictOutcome(record=record, status=SUCCEEDED, result=result, mlflow_run_id=run.run_id)


class _PredictRun:
    """The MLflow run of one prediction; recording problems are warnings, never a lost output."""

    def __init__(self, cfg: RecurConfig, tracking_uri: str, model: Any, data: str, out: str) -> None:
        from mlflow import MlflowClient

        from pipeline.tracking.redact import redact_text
        from pipeline.tracking.store import ensure_experiment

        self.client = MlflowClient(tracking_uri)
        experiment = ensure_experiment(cfg, tracking_uri)
        run = self.client.create_run(experiment, run_name=f"predict-{model.spec.name}-v{model.version}",
                                     tags={"recur.kind": "predict", "recur.model": model.uri,
                                           **({"recur.model_run_id": model.run_id} if model.run_id else {})})
        self.run_id = run.info.run_id
        for key, value in {"model": model.uri, "model.spec": str(model.spec), "model.task": model.task,
                           "data": redact_text(data), "out": redact_text(out)}.items():
            self.client.log_param(self.run_id, key, value)

    def finish(self, record: StepRecord, result: Any) -> None:
        from dataclasses import asdict

        from pipeline.tracking.redact import redact_mapping, redact_text

        try:
            tags = {STEP_TAG + PREDICT: record.status, f"{STEP_TAG}{PREDICT}.key": record.key,
                    f"{STEP_TAG}{PREDICT}.seconds": str(record.seconds)}
            if record.error:
                tags[f"{STEP_TAG}{PREDICT}.error"] = record.error[:5000]
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, value)
            if result is not None:
                self.client.log_param(self.run_id, "data_hash", result.data_hash)
                rate = result.total_in / result.seconds["predict"] if result.seconds.get("predict") else 0.0
                for key, value in {"rows_in": result.total_in, "rows_out": result.total_out,
                                   "failed_rows": result.failed, "rows_per_second": rate,
                                   **{f"seconds_{k}": v for k, v in result.seconds.items()}}.items():
                    self.client.log_metric(self.run_id, key, float(value))
                summary = redact_mapping({**asdict(result), "out": redact_text(result.out),
                                          "data": redact_text(result.data)})
                self.client.log_dict(self.run_id, summary, "predict/summary.json")
            self.client.set_terminated(self.run_id, "FINISHED" if result is not None else "FAILED")
        except Exception as exc:  # the predictions are written; only their record on MLflow is short
            log.warning("could not record prediction run %s on MLflow: %s", self.run_id, exc)
