"""The book of one workflow's steps (a step's record: `records.py`): which steps are skipped and
which run again, each step's record kept as it runs and as it ends, and whether a record's results
are still where it says they are (the MLflow run, the registered version, the dataset).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.data.dataset import Manifest, files_fingerprint, read_manifest
from pipeline.tracking.redact import redact_text
from pipeline.workflow.records import (
    FAILED,
    INTERRUPTED,
    SKIPPED,
    STEP_TAG,
    SUCCEEDED,
    StepRecord,
    StepStore,
    new_record,
)

log = logging.getLogger(__name__)


class StepBook:
    """The records of one workflow's steps: `done` holds each step met so far, with how it went
    (succeeded | skipped | failed | interrupted)."""

    def __init__(self, steps: tuple[str, ...], config: dict[str, Any], runs_dir: str, *,
                 rerun_from: int) -> None:
        self.steps, self.config, self.rerun_from = steps, config, rerun_from
        self.store = StepStore(runs_dir)
        self.done: list[tuple[StepRecord, str]] = []  # (record, how: succeeded | skipped | failed)

    def step(self, name: str, inputs: dict[str, str], data_hash: str,
             run: Callable[[], dict[str, Any]], *, still_valid: Callable[[dict], bool] = lambda o: True,
             before: Callable[[], None] | None = None) -> StepRecord:
        """Step `name`: its finished record when one matches, comes before `rerun_from` and is
        `still_valid`; else `before()`, then `run()` (its outputs), recorded as it runs and ends."""
        record = new_record(name, self.config, inputs, data_hash)
        found = self.store.get(record.key)
        if (self.steps.index(name) < self.rerun_from and found is not None and found.status == SUCCEEDED
                and still_valid(found.outputs)):
            log.info("step %s: skipped, inputs unchanged since %s (record %s)", name, found.started_at,
                     found.key)
            self.done.append((found, SKIPPED))
            return found
        if before is not None:
            before()
        self.store.put(record)  # status running: a crash leaves it so
        start = time.perf_counter()
        try:
            record.outputs = run()
        except BaseException as exc:
            status = INTERRUPTED if isinstance(exc, KeyboardInterrupt) else FAILED
            record.status, record.error = status, redact_text(f"{type(exc).__name__}: {exc}")[:4000]
            record.seconds = round(time.perf_counter() - start, 2)
            self.store.put(record)
            self.done.append((record, status))
            raise
        record.status, record.seconds = SUCCEEDED, round(time.perf_counter() - start, 2)
        self.store.put(record)
        self.done.append((record, SUCCEEDED))
        return record

    def tag(self, tracking_uri: str, run_id: str) -> None:
        """Each step's status, record key, seconds and error as `recur.step.<name>...` tags on the run."""
        client = MlflowClient(tracking_uri)
        for record, how in self.done:
            client.set_tag(run_id, STEP_TAG + record.step, how)
            client.set_tag(run_id, f"{STEP_TAG}{record.step}.key", record.key)
            if how != SKIPPED:
                client.set_tag(run_id, f"{STEP_TAG}{record.step}.seconds", str(record.seconds))
            if record.error:  # an old record's error may predate redaction
                client.set_tag(run_id, f"{STEP_TAG}{record.step}.error", redact_text(record.error)[:5000])

    def plots(self) -> list[str]:
        """The PNGs logged to the run, in order, as the steps recorded them: a skipped step's
        record names what it logged when it ran (a record older than this list names none)."""
        return [path for record, _ in self.done for path in record.outputs.get("plots", [])]

    def rows(self) -> list[dict[str, Any]]:
        return [{"step": r.step, "status": how, "seconds": r.seconds, "key": r.key,
                 "config_hash": r.config_hash, "input_hashes": r.input_hashes, "data_hash": r.data_hash,
                 "started_at": r.started_at, "error": r.error} for r, how in self.done]


# ------------------------------------------------------- is a record's result in the store?


def holds_run(tracking_uri: str, run_id: str) -> bool:
    """Whether the tracking store holds MLflow run `run_id` (not deleted). A record of a run
    the store lacks (another server, a wiped or restored one) is no reason to skip a step."""
    try:
        run = MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        log.info("MLflow run %s of a step record is not at %s: running the step again", run_id,
                 redact_text(tracking_uri))
        return False
    return run.info.lifecycle_stage != "deleted"


def holds_version(tracking_uri: str, name: str, version: str, run_id: str, *, decided: bool = False) -> bool:
    """Whether the registry holds `version` of model `name`, registered from `run_id` (a store
    can have a version 1 of its own) and, when `decided`, judged by a gate (tagged)."""
    try:
        found = MlflowClient(tracking_uri).get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        found = None
    held = (found is not None and found.run_id == run_id
            and (not decided or "recur.decision" in (found.tags or {})))
    if not held:
        log.info("%s version %s of a step record is not in the registry as recorded: running the "
                 "step again", name, version)
    return held


def manifest_outputs(manifest: Manifest, root: str) -> dict[str, Any]:
    """The ingest step's outputs: the dataset's hash, version, rows per split and files."""
    return {"data_hash": manifest.data_hash, "data_version": manifest.data_version,
            "rows": {split: info.rows for split, info in manifest.splits.items()},
            "files": files_fingerprint(root)}


def dataset_is(root: str, data_hash: str, files: str | None = None) -> bool:
    """The dataset at `root` is the one a record names: the same data hash in its manifest and,
    for records that kept it, the same files on disk."""
    try:
        if read_manifest(root).data_hash != data_hash:
            return False
        return files is None or files_fingerprint(root) == files
    except Exception:  # missing or unreadable: import again
        return False
