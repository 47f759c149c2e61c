"""Pipeline steps: ingest -> validate -> train -> evaluate -> register/promote.

Each step takes the config and earlier steps' outputs and returns its own. They assume Ray is
already connected (entry points do that, see `pipeline.workflow.session`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import RecurConfig
from pipeline.data import contract
from pipeline.data.preprocess import table_batches

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ ingest


def _source_fingerprint(cfg: RecurConfig) -> dict[str, Any]:
    """What an import depends on: source files (size + sha256) and import options."""
    from pipeline.data.importers import resolve_source

    source = cfg.data.source
    resolved = [resolve_source(p) for p in source.paths]
    return {
        "sources": [s.model_dump() for s in contract.sources_for(resolved)],
        "params": _import_kwargs(cfg),
    }


def _import_kwargs(cfg: RecurConfig) -> dict[str, Any]:
    source = cfg.data.source
    kwargs: dict[str, Any] = dict(
        task="classify", name=cfg.data.name, val_fraction=cfg.data.val_fraction,
        test_fraction=cfg.data.test_fraction, seed=cfg.data.seed, on_invalid=cfg.data.on_invalid,
    )
    if source.format == "ts":
        kwargs["missing"] = source.missing
    else:
        kwargs.update(x_column=source.x_column, y_column=source.y_column, id_column=source.id_column,
                      split_column=source.split_column)
    return kwargs


def ingest(cfg: RecurConfig) -> contract.Manifest:
    """Import `data.source` into `data.root` unless an identical import is already there."""
    from pipeline.data.importers import import_dataset, resolve_source

    root = cfg.data.root
    if cfg.data.source is None:
        return contract.read_manifest(root)  # names the folder when there is no dataset
    fingerprint = _source_fingerprint(cfg)
    marker = Path(root) / "import.json"
    up_to_date = marker.exists() and (Path(root) / "manifest.json").exists()
    if up_to_date and json.loads(marker.read_text()) == fingerprint:
        log.info("dataset at %s is up to date with its sources; not re-importing", root)
        return contract.read_manifest(root)
    paths = [resolve_source(p) for p in cfg.data.source.paths]
    manifest = import_dataset(cfg.data.source.format, paths, root, **_import_kwargs(cfg))
    marker.write_text(json.dumps(fingerprint, indent=2))
    return manifest


def validate(cfg: RecurConfig) -> None:
    """Recheck every row and the data hash; raise with row ids when anything is wrong."""
    from pipeline.data.validate import DataValidationError, validate_dataset

    report = validate_dataset(cfg.data.root)
    if report.problems:
        raise DataValidationError(report.problems, header=f"dataset {cfg.data.root} breaks the contract")
    if not report.ok:
        raise contract.DatasetError(report.format())


# ------------------------------------------------------------------------------------- train


@dataclass
class TrainOutput:
    checkpoint_dir: str  # best checkpoint by train.monitor
    storage_dir: str  # Ray Train run folder (all checkpoints)
    epochs_run: int
    best_epoch: int
    final_metrics: dict[str, Any] = field(default_factory=dict)


def train(cfg: RecurConfig, manifest: contract.Manifest, *, tracker: Any, name: str) -> TrainOutput:
    """Data-parallel training on Ray Train; metrics stream into the tracker's MLflow run."""
    import ray

    from pipeline.training.trainer import build_trainer, check_resources

    check_resources(cfg, ray.cluster_resources())
    rows = manifest.splits["train"].rows
    workers = max(cfg.resources.num_workers, 1)
    if rows % workers:
        # Ray Data's equal split keeps every rank on the same number of steps (unequal step counts
        # hang DDP) by giving each worker floor(rows / workers) rows per epoch.
        log.warning("train split has %d rows for %d workers: each epoch trains on %d rows, %d row(s) "
                    "unseen per epoch", rows, workers, rows - rows % workers, rows % workers)
    tracker.log_params({"train.rows_per_epoch": rows - rows % workers})
    storage = os.path.join(cfg.tracking.runs_dir, "ray")
    trainer = build_trainer(cfg, manifest, storage_path=storage, name=name,
                            mlflow_run_id=tracker.run_id, callbacks=[tracker.epoch_logger()])
    result = trainer.fit()
    best = result.get_best_checkpoint(metric=cfg.train.monitor, mode=cfg.train.monitor_mode)
    best = best or result.checkpoint
    if best is None:
        raise RuntimeError(f"training finished without a checkpoint; see {result.path}")
    best_metrics = next((m for c, m in result.best_checkpoints or [] if c.path == best.path), {})
    return TrainOutput(
        checkpoint_dir=best.path,
        storage_dir=result.path,
        epochs_run=int(result.metrics.get("epoch", -1)) + 1,
        best_epoch=int(best_metrics.get("epoch", -1)),
        final_metrics=dict(result.metrics),
    )


# ---------------------------------------------------------------------------------- evaluate


@dataclass
class Evaluation:
    metrics: dict[str, float]
    confusion: np.ndarray
    labels: list[str]
    # attention pooling only: weights over the valid steps of the first few test sequences
    attention: list[np.ndarray] = field(default_factory=list)
    attention_titles: list[str] = field(default_factory=list)


def evaluate(cfg: RecurConfig, checkpoint_dir: str) -> Evaluation:
    """Test-split metrics of a checkpoint (loss, accuracy, macro-F1, confusion matrix)."""
    from pipeline.tasks import build_task
    from pipeline.training.loop import evaluate as evaluate_batches
    from pipeline.training.worker import model_from_checkpoint

    model, pre = model_from_checkpoint(checkpoint_dir)
    task = build_task(cfg, pre)
    table = contract.read_split(cfg.data.root, "test")
    state = evaluate_batches(model, table_batches(table, pre, 256), task)
    metrics = {f"test_{k}": v for k, v in task.compute(state).items()}
    evaluation = Evaluation(metrics=metrics, confusion=state["confusion"].numpy(), labels=pre.labels)
    if model.model_args.get("pooling") == "attention":
        _attach_attention(evaluation, model, table.slice(0, ATTENTION_EXAMPLES), pre)
    return evaluation


ATTENTION_EXAMPLES = 6  # test sequences drawn in the attention heatmap


def _attach_attention(evaluation: Evaluation, model: Any, table: Any, pre: Any) -> None:
    import torch

    batch = next(table_batches(table, pre, table.num_rows))
    with torch.no_grad():
        logits_BK, weights_BT = model(batch["x"], batch["lengths"], return_attention=True)
    predicted = logits_BK.argmax(dim=-1).tolist()
    for i, (row_id, length) in enumerate(zip(table.column("id").to_pylist(), batch["lengths"].tolist())):
        evaluation.attention.append(weights_BT[i, :length].numpy())
        true, guess = pre.labels[int(batch["y"][i])], pre.labels[predicted[i]]
        evaluation.attention_titles.append(f"{row_id}: true {true}, predicted {guess}")


def held_out_sequences(cfg: RecurConfig) -> tuple[list[Any], list[str]]:
    """Raw test sequences (as nested lists) and their label names, for the registry gate."""
    manifest = contract.read_manifest(cfg.data.root)
    table = contract.read_split(cfg.data.root, "test")
    labels = [manifest.labels[i] for i in table.column("y").to_pylist()]
    return table.column("x").to_pylist(), labels


def checkpoint_file(checkpoint_dir: str) -> str:
    from pipeline.training.worker import CHECKPOINT_FILE

    return os.path.join(checkpoint_dir, CHECKPOINT_FILE)


@contextmanager
def timed(phase: str, timings: dict[str, float]) -> Iterator[None]:
    """Record the block's wall seconds as `timings[phase]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = round(time.perf_counter() - start, 2)
