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

from pipeline.config import RecurConfig
from pipeline.data.dataset import (
    MANIFEST_FILE,
    DatasetError,
    Manifest,
    files_fingerprint,
    read_manifest,
    read_split,
    sources_for,
)
from pipeline.data.dataset import (
    folder as dataset_folder,
)
from pipeline.storage import check_bucket, is_s3

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ ingest


def source_fingerprint(cfg: RecurConfig) -> dict[str, Any]:
    """What an import depends on: source files (size + sha256) and import options."""
    from pipeline.data.importers import resolve_source

    source = cfg.data.source
    resolved = []
    for path in map(resolve_source, source.paths):  # a folder (or an S3 prefix): every file in it
        folder = Path(path)
        resolved += sorted(str(f) for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else [path]
    return {
        "sources": [s.model_dump() for s in sources_for(resolved)],
        "params": _import_kwargs(cfg),
    }


def _import_kwargs(cfg: RecurConfig) -> dict[str, Any]:
    data = cfg.data
    # only when set, so the fingerprint of an import without a limit stays what it was
    length = {"max_length": data.max_length, "on_too_long": data.on_too_long} if data.max_length else {}
    return dict(name=data.name, val_fraction=data.val_fraction, test_fraction=data.test_fraction,
                seed=data.seed, on_invalid=data.on_invalid, **length, **data.source.importer_options())


def ingest(cfg: RecurConfig) -> Manifest:
    """Import `data.source` into `data.root` unless an identical import is already there."""
    from pipeline.data.importers import import_dataset, resolve_source

    root = cfg.data.root
    check_bucket(root, "read the dataset (data.root)" if cfg.data.source is None
                 else "write the dataset (data.root)")
    if cfg.data.source is None:
        manifest = read_manifest(root)  # names the folder when there is no dataset
        check_max_length(manifest, root, cfg.data.max_length)
        return manifest
    fingerprint = source_fingerprint(cfg)
    store = dataset_folder(root)
    up_to_date = store.exists(IMPORT_MARKER) and store.exists(MANIFEST_FILE)
    if up_to_date:
        marker = json.loads(store.read_text(IMPORT_MARKER))
        files = marker.pop("dataset_files", None)
        # the sources and options are those of the last import, and its files are as it left them
        if marker == fingerprint and files == files_fingerprint(root):
            log.info("dataset at %s is up to date with its sources; not re-importing", root)
            return read_manifest(root)
        if marker == fingerprint:
            log.warning("dataset at %s changed since it was imported (its files are not as the import "
                        "wrote them); importing it again from its sources", root)
    paths = [resolve_source(p) for p in cfg.data.source.paths]
    manifest = import_dataset(cfg.data.source.format, paths, root, **_import_kwargs(cfg))
    store.write_text_atomic(IMPORT_MARKER, json.dumps(
        {**fingerprint, "dataset_files": files_fingerprint(root)}, indent=2))
    return manifest


IMPORT_MARKER = "import.json"  # the sources' fingerprint of the last import into data.root


def check_max_length(manifest: Manifest, root: str, max_length: int | None) -> None:
    """An imported dataset (`data.source: null`) must already fit `data.max_length`: it is applied
    when importing, never silently at training time."""
    from pipeline.config import DEFAULT_MAX_LENGTH

    longest = {s: info.max for s, info in manifest.lengths.items()}
    if max_length is None and manifest.task == "classify":  # the default limit of its importers
        over = {s: n for s, n in longest.items() if n > DEFAULT_MAX_LENGTH}
        if over:
            raise DatasetError(
                f"dataset {root}: sequences up to {over} time steps per split, longer than "
                f"data.max_length's default {DEFAULT_MAX_LENGTH}: a sequence that long needs gigabytes to "
                f"train. Set data.max_length to at least {max(over.values())} to train on them whole")
    over = {s: n for s, n in longest.items() if max_length is not None and n > max_length}
    if over:
        raise DatasetError(
            f"dataset {root}: sequences up to {over} time steps per split, longer than data.max_length "
            f"{max_length}; import it again with `recur data import ... --max-length {max_length}` "
            "(--on-too-long truncate or reject), or raise data.max_length")


def validate(cfg: RecurConfig) -> None:
    """Recheck every row and the data hash; raise with row ids when anything is wrong."""
    from pipeline.data.validate import DataValidationError, validate_dataset

    report = validate_dataset(cfg.data.root)
    if report.problems:
        raise DataValidationError(report.problems, header=f"dataset {cfg.data.root} breaks the contract")
    if not report.ok:
        raise DatasetError(report.format())


# ------------------------------------------------------------------------------------- train


@dataclass
class TrainOutput:
    checkpoint_dir: str  # best checkpoint by train.monitor
    storage_dir: str  # Ray Train run folder (all checkpoints)
    epochs_run: int
    best_epoch: int
    final_metrics: dict[str, Any] = field(default_factory=dict)
    batch_norm_layers: int = 0  # batch norms given the train split's statistics (population_batch_norm)
    naive_blend: dict[str, Any] | None = None  # the forecast's weights against seasonal naive (naive_blend)


@dataclass(frozen=True)
class FineTune:
    """A model to fine-tune from (`recur retrain`): its weights and preprocessing are taken, its
    optimizer and epoch are not."""

    source: str  # what it is, e.g. models:/recur-model/3 (part of the train step's record key)
    checkpoint_dir: str
    preprocessing: Any  # pipeline.data.preprocess.Preprocessing


def train(cfg: RecurConfig, manifest: Manifest, *, tracker: Any, name: str,
          fine_tune: FineTune | None = None) -> TrainOutput:
    """Data-parallel training on Ray Train; metrics stream into the tracker's MLflow run."""
    import ray
    from ray.train import TrainingFailedError

    from pipeline.storage import join as storage_join
    from pipeline.tasks import task_class
    from pipeline.training.resources import check_resources
    from pipeline.training.trainer import (
        best_checkpoint,
        build_trainer,
        diverged_failure,
        training_failure,
        word_vectors_for,
    )

    check_resources(cfg, ray.cluster_resources())
    rows = manifest.splits["train"].rows
    workers = max(cfg.resources.num_workers, 1)
    if task_class(cfg.data.task).split_train:
        if rows % workers:
            # Ray Data's equal split keeps every rank on the same number of steps (unequal step
            # counts hang DDP) by giving each worker floor(rows / workers) rows per epoch.
            log.warning("train split has %d rows for %d workers: each epoch trains on %d rows, %d "
                        "row(s) unseen per epoch", rows, workers, rows - rows % workers, rows % workers)
        tracker.log_params({"train.rows_per_epoch": rows - rows % workers})
    storage = storage_path(cfg)
    check_bucket(storage, "write checkpoints (tracking.storage_path)")
    weights = pre = None
    if fine_tune is not None:
        from pipeline.models.forecaster import without_naive_blend
        from pipeline.training.checkpoint import load_checkpoint

        # a forecaster's naive blend is weighed again after this training, on its val windows
        weights = ray.put(without_naive_blend(load_checkpoint(fine_tune.checkpoint_dir)["state_dict"]))
        pre = fine_tune.preprocessing
    from pipeline.data.preprocess import Preprocessing
    from pipeline.progress import Display, TrainView, tag
    from pipeline.training.step_board import TrainWatch, describe_wait, start_board

    display = Display()
    # a fine-tune starts from the model's own word table (its weights), not from model.embeddings
    vectors = None if fine_tune is not None else word_vectors_for(cfg, Preprocessing.from_manifest(manifest))
    if vectors is not None:
        if not display.quiet:
            display.line(f"{tag()} model.embeddings: {vectors.describe()}")
        tracker.log_params({"embeddings.words_found": vectors.words_found,
                            "embeddings.dimensions": vectors.dimensions})
    board = start_board()  # rank 0 and the Train controller publish here; this driver renders
    trainer = build_trainer(cfg, manifest, storage_path=storage, name=name,
                            mlflow_run_id=tracker.run_id,
                            callbacks=[tracker.epoch_logger(board=board, echo=not display.quiet)],
                            initial_weights=weights, preprocessing=pre, step_board=board,
                            word_vectors=vectors)
    r = cfg.resources
    view = TrainView(display, cfg.train.epochs)
    try:
        with TrainWatch(board, view, describe_wait=lambda: describe_wait(cfg),
                        starting=f"starting {r.num_workers} Train worker(s)"):
            result = trainer.fit()
    except TrainingFailedError as exc:
        raise training_failure(exc, cfg, storage_join(storage, name)) from exc
    diverged = getattr(result, "return_value", None)  # the workers stopped on NaN or inf (loop.fit)
    if isinstance(diverged, dict) and diverged.get("diverged"):
        raise diverged_failure(diverged, cfg, storage_join(storage, name))
    best, best_metrics = best_checkpoint(result, cfg)
    if best is None:
        raise RuntimeError(f"training finished without a checkpoint; see {result.path}")
    local = best.path
    # evaluation and registration read a local copy; the original stays on S3 (a run in this
    # process, resources.num_workers: 0, keeps its checkpoints in a local folder)
    copy_dir = os.path.join(os.path.abspath(cfg.tracking.runs_dir), "checkpoints", name)
    if is_s3(storage) and r.num_workers > 0:
        local = best.to_directory(copy_dir)
        log.info("best checkpoint s3://%s copied to %s", best.path, local)
    local, layers = population_batch_norm(cfg, local, copy_dir)
    local, blend = naive_blend(cfg, local, copy_dir)
    return TrainOutput(
        checkpoint_dir=local,
        batch_norm_layers=layers,
        naive_blend=blend,
        storage_dir=result.path,
        epochs_run=int(result.metrics.get("epoch", -1)) + 1,
        best_epoch=int(best_metrics.get("epoch", -1)),
        final_metrics=dict(result.metrics),
    )


def save_changed_copy(state: dict[str, Any], model: Any, checkpoint_dir: str, out_dir: str) -> None:
    """Write `state` with `model`'s weights as the checkpoint in `out_dir`, a copy of `checkpoint_dir`'s
    files (or that folder itself): what a step after training changed, Ray Train's copy left as it was."""
    import shutil

    import torch

    from pipeline.training.checkpoint import CHECKPOINT_FILE

    if os.path.abspath(out_dir) != os.path.abspath(checkpoint_dir):
        shutil.copytree(checkpoint_dir, out_dir, dirs_exist_ok=True)
    state["state_dict"] = model.state_dict()
    torch.save(state, os.path.join(out_dir, CHECKPOINT_FILE))


def population_batch_norm(cfg: RecurConfig, checkpoint_dir: str, out_dir: str) -> tuple[str, int]:
    """The checkpoint with its batch-norm statistics taken over the rows it trained on.

    When train.population_batch_norm is on and the model has batch-norm layers (model.frontend
    conv or resnet, in a resolved config), their running averages of training batches are replaced by the
    statistics of the train split (and the val split, with train.train_on_val) under the
    checkpoint's weights (`pipeline.models.frontend.population_statistics`, one pass over the rows
    per layer, part file by part file). The result is written to `out_dir` (which may be
    `checkpoint_dir` itself); Ray Train's copy stays as training left it, so a resumed run
    continues from that.

    Returns the checkpoint to evaluate and register, and how many layers were set (0: the
    checkpoint is returned as it was).
    """
    from pipeline.models.frontend import population_statistics
    from pipeline.tasks import build_task
    from pipeline.training.checkpoint import load_checkpoint, model_from_state

    # the conv front-end's blocks are the only batch norms: without them, no checkpoint is read
    if not cfg.train.population_batch_norm or cfg.model.frontend == "none":
        return checkpoint_dir, 0
    state = load_checkpoint(checkpoint_dir)
    model, pre = model_from_state(state)
    task = build_task(cfg, pre)
    store = dataset_folder(cfg.data.root)
    splits = ["train", "val"] if cfg.train.train_on_val is True else ["train"]

    def batches() -> Iterator[Any]:
        for split in splits:
            for part in store.parts(split):
                yield from task.table_batches(store.read_parquet(part), POPULATION_BATCH)

    started = time.perf_counter()
    layers = population_statistics(model, batches, lambda m, batch: task.forward(m, batch, train=False))
    save_changed_copy(state, model, checkpoint_dir, out_dir)
    log.info("batch-norm statistics of %d layer(s) taken over the %s split(s) in %.1f s: %s", layers,
             " + ".join(splits), time.perf_counter() - started, out_dir)
    return out_dir, layers


POPULATION_BATCH = 64  # rows per forward pass of population_batch_norm


def population_metric(layers: int) -> dict[str, float]:
    """What the run records of `population_batch_norm` (nothing when no layer was set): a run-level
    metric, kept on disk like best_epoch when MLflow does not answer at the end of training."""
    return {"population_batch_norm_layers": float(layers)} if layers else {}


# next to the checkpoint: the blend's weights and the val MASE of each candidate
NAIVE_BLEND_FILE = "naive_blend.json"


def naive_blend(cfg: RecurConfig, checkpoint_dir: str, out_dir: str) -> tuple[str, dict[str, Any] | None]:
    """The checkpoint with its forecast blended with seasonal naive, weighed on the val windows.

    When model.naive_blend is on (forecast), the model's blend weights (one per channel, 1 while it
    trained) are set to those whose mix of the model's forecast and the seasonal-naive forecast has
    the lowest MAE on the val split (`ForecastTask.fit_naive_blend`). The checkpoint, with the
    weights and NAIVE_BLEND_FILE beside it, is written to `out_dir` (which may be `checkpoint_dir`
    itself); Ray Train's copy stays as training left it.

    Returns the checkpoint to evaluate and register, and the blend's record (None: off).
    """
    from pipeline.tasks import build_task
    from pipeline.training.checkpoint import load_checkpoint, model_from_state

    if cfg.data.task != "forecast" or not cfg.model.naive_blend:
        return checkpoint_dir, None
    state = load_checkpoint(checkpoint_dir)
    model, pre = model_from_state(state)
    task = build_task(cfg, pre)
    table = read_split(cfg.data.root, "val")  # budget.resolve refused a val split without windows
    blend = task.fit_naive_blend(model, table)
    save_changed_copy(state, model, checkpoint_dir, out_dir)
    Path(out_dir, NAIVE_BLEND_FILE).write_text(json.dumps(blend, indent=1))

    def mase(name: str, w: float) -> str:  # None: seasonal naive was exact on val
        value = blend["val_mase"][name][blend["grid"].index(w)]
        return "n/a" if value is None else f"{value:.3f}"

    chosen = ", ".join(f"{name} {w:.2f} (val MASE {mase(name, w)}, model alone {mase(name, 1.0)})"
                       for name, w in blend["weights"].items())
    log.info("naive blend, the model's weight per channel on %d val windows: %s", blend["windows"], chosen)
    return out_dir, blend


def blend_metric(blend: dict[str, Any] | None) -> dict[str, float]:
    """What the run records of `naive_blend`: the mean of its weights on the model (1: the model's
    own forecast, 0: seasonal naive); nothing when it is off."""
    if not blend:
        return {}
    weights = list(blend["weights"].values())
    return {"naive_blend_weight": float(sum(weights) / len(weights))}


def storage_path(cfg: RecurConfig) -> str:
    """Where Ray Train keeps the run's checkpoints: tracking.storage_path, else <runs_dir>/ray."""
    return cfg.tracking.storage_path or os.path.join(cfg.tracking.runs_dir, "ray")


# ---------------------------------------------------------------------------------- evaluate


@dataclass
class Evaluation:
    metrics: dict[str, float]  # test_<metric>, plus the task's extra metrics (baselines)
    report: Any  # pipeline.tasks.Report: figures, texts and dicts to log


def evaluate_test_split(cfg: RecurConfig, checkpoint_dir: str) -> Evaluation:
    """Test-split metrics, pictures and examples of a checkpoint, from its task."""
    from pipeline.tasks import build_task
    from pipeline.training.checkpoint import model_from_checkpoint
    from pipeline.training.loop import evaluate_batches

    model, pre = model_from_checkpoint(checkpoint_dir)
    task = build_task(cfg, pre)
    table = read_split(cfg.data.root, "test")
    state = evaluate_batches(model, task.table_batches(table, 256), task)
    metrics = {f"test_{k}": v for k, v in task.compute(state).items()}
    report = task.report(model, table, state)
    metrics.update({f"test_{k}": v for k, v in report.metrics.items()})
    blend_file = Path(checkpoint_dir, NAIVE_BLEND_FILE)
    if blend_file.exists():  # how the naive blend chose its weights (naive_blend), beside the test's
        from pipeline.tasks.plots import naive_blend_curve

        record = json.loads(blend_file.read_text())
        report.dicts["eval/naive_blend.json"] = record
        report.figures["plots/naive_blend.png"] = naive_blend_curve(record)
    return Evaluation(metrics=metrics, report=report)


def check_finite(checkpoint_dir: str, metrics: dict[str, float] | None = None) -> None:
    """Refuse (TrainingFailed) a checkpoint whose weights, or an evaluation whose metrics, hold NaN
    or inf: such a model is never logged as a model, registered or promoted."""
    import math

    import torch

    from pipeline.training.checkpoint import load_checkpoint
    from pipeline.training.trainer import TrainingFailed

    weights = load_checkpoint(checkpoint_dir)["state_dict"]
    bad = [k for k, v in weights.items() if torch.is_floating_point(v) and not torch.isfinite(v).all()]
    bad_metrics = [f"{k} = {v}" for k, v in (metrics or {}).items()
                   if isinstance(v, (int, float)) and not math.isfinite(v)]
    if bad or bad_metrics:
        what = (f"weights {', '.join(bad[:3])} hold NaN or inf" if bad
                else f"its test metrics are not finite ({', '.join(bad_metrics[:3])})")
        raise TrainingFailed(f"the model in {checkpoint_dir} is not registered: {what}. Training "
                             "diverged or the test data holds extreme values: lower train.lr, keep "
                             "train.grad_clip on, and check the data (recur data validate)")


def gate_data(cfg: RecurConfig, checkpoint_dir: str) -> tuple[Any, Any, Any]:
    """The task, raw test inputs (a DataFrame the MLflow model takes) and the truth its `score`
    compares predictions with."""
    from pipeline.data.preprocess import Preprocessing
    from pipeline.tasks import build_task
    from pipeline.training.checkpoint import load_checkpoint

    pre = Preprocessing.from_dict(load_checkpoint(checkpoint_dir)["preprocessing"])
    task = build_task(cfg, pre)
    return task, *task.gate_data(read_split(cfg.data.root, "test"))


def checkpoint_file(checkpoint_dir: str) -> str:
    from pipeline.training.checkpoint import CHECKPOINT_FILE

    return os.path.join(checkpoint_dir, CHECKPOINT_FILE)


@contextmanager
def timed(phase: str, timings: dict[str, float]) -> Iterator[None]:
    """Record the block's wall seconds as `timings[phase]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = round(time.perf_counter() - start, 2)
