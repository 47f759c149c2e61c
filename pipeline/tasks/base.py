"""What differs between tasks, behind one interface; everything else is shared.

The loop, the Ray Train worker, evaluation, the MLflow model and the registry gate only talk to
a `Task`: it builds the task's model, turns Arrow rows into tensors, runs the forward pass,
computes the loss and the metrics, draws the task's pictures, serves predictions on raw inputs
and scores them for the gate. Tasks are looked up by name (`pipeline.tasks.TASKS`).

Metric state is a dict of tensors holding SUMS, so data-parallel workers combine theirs with one
`all_reduce` each and derive identical numbers. (Validation runs whole on every rank, so a task
may also keep plain Python lists in its state, e.g. decoded strings for BLEU.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from pipeline.config import RecurConfig
    from pipeline.data.preprocess import Preprocessing

MetricState = dict[str, Any]
Batch = dict[str, torch.Tensor]


@dataclass
class Report:
    """What evaluation on the test split adds to the MLflow run besides metrics.

    Keys are artifact paths inside the run (`plots/forecast.png`, `eval/samples.txt`).
    """

    metrics: dict[str, float] = field(default_factory=dict)  # extra test metrics (baselines)
    figures: dict[str, Any] = field(default_factory=dict)  # path -> matplotlib Figure
    texts: dict[str, str] = field(default_factory=dict)
    dicts: dict[str, Any] = field(default_factory=dict)  # path -> JSON-able
    files: dict[str, bytes] = field(default_factory=dict)  # path -> file content (a MIDI file)


class Task:
    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]  # what `compute` returns, "loss" first
    higher_is_better: ClassVar[dict[str, bool]]  # every name in `metrics` and `gate_metrics`
    # Metrics `score` computes from `predict` outputs: what registry.metric may name.
    gate_metrics: ClassVar[tuple[str, ...]]
    default_gate_metric: ClassVar[str]
    # False: every rank reads the whole train split and takes its own part (`train_batches`),
    # e.g. contiguous token streams for truncated backpropagation through time.
    split_train: ClassVar[bool] = True
    # Parameters `predict` accepts, with defaults (they go into the MLflow model's signature).
    predict_params: ClassVar[dict[str, Any]] = {}
    # What `recur predict` (batch inference) passes to `predict`, e.g. class probabilities.
    batch_predict_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, pre: Preprocessing, cfg: RecurConfig | None = None) -> None:
        from pipeline.config import RecurConfig

        self.pre = pre
        self.cfg = cfg if cfg is not None else RecurConfig(data={"task": self.name})

    # ------------------------------------------------------------------ model
    def build_model(self) -> torch.nn.Module:
        """The task's model for `self.cfg.model` and the dataset's shape (`self.pre`)."""
        raise NotImplementedError

    def word_embedding(self, model: torch.nn.Module) -> torch.nn.Embedding | None:
        """The embedding of `self.pre.vocab`'s words in `model`, which `model.embeddings` (pretrained
        word vectors) starts from; None where the task's inputs are no words."""
        return None

    # ------------------------------------------------------------------ data
    def collate(self, table: pa.Table) -> Batch:
        """Arrow rows of the dataset contract -> tensors; `x` and `lengths` always present."""
        raise NotImplementedError

    @property
    def loss_floor(self) -> float:
        """The least the training loss can be, in its units: 0 unless the loss has an entropy it can
        never go below (label smoothing). `train.max_epochs` measures fit from it (`FitPlan`)."""
        return 0.0

    def loss_weight(self, batch: Batch) -> int:
        """How many units the batch's mean loss averages over (sequences; tokens for token losses)."""
        return int(batch["x"].shape[0])

    def train_batches(self, shard: Any, *, batch_size: int, epoch: int, seed: int) -> Iterable[Batch]:
        """One epoch of training batches from this worker's Ray Data shard: ceil(rows / batch_size)
        batches, bucketed by length when `data.bucket_by_length` (`pipeline.data.bucketing`).

        A shard that fits `train.cache_train_mb` is kept in memory after the first epoch and later
        epochs shuffle and batch it here, without a Ray Data execution per epoch (about a second
        each, which dominates the epochs of a small set). The worker keeps the same rows every
        epoch (the split is equal, so step counts stay equal across ranks)."""
        from pipeline.data.bucketing import bucketed_batches
        from pipeline.data.loading import TaskCollate  # pinned host memory when training on a GPU

        data = self.cfg.data
        source = getattr(self, "_train_cache", None)
        keep: list[Any] | None = None
        if source is None:
            source = shard
            limit = int(self.cfg.train.cache_train_mb * 2**20)
            keep = [] if limit > 0 else None
        batches = bucketed_batches(source, TaskCollate(self), batch_size=batch_size,
                                   bucket_batches=data.bucket_batches, epoch=epoch, seed=seed, keep=keep,
                                   bucket=data.bucket_by_length in (True, "auto"))
        return batches if keep is None else self._keeping_train(batches, keep, limit)

    def _keeping_train(self, batches: Iterable[Batch], keep: list[Any], limit: int) -> Iterator[Batch]:
        import pyarrow as pa

        yield from batches  # the epoch ran to its end: every pool of the shard is in `keep`
        if keep and sum(t.nbytes for t in keep) <= limit:
            self._train_cache = pa.concat_tables(keep)

    def eval_batches(self, iterator: Any, *, batch_size: int) -> Iterable[Batch]:
        """Validation batches from a (whole, unsplit) Ray Data iterator, in order.

        The first pass keeps the batches when they fit `train.cache_val_mb`; later epochs reuse
        them instead of starting a Ray Data execution, which costs about a second per epoch
        even on a small split.
        """
        from pipeline.data.loading import TaskCollate

        cached = getattr(self, "_val_cache", None)
        if cached is not None:
            return cached
        batches = iterator.iter_torch_batches(batch_size=batch_size, collate_fn=TaskCollate(self))
        limit = int(self.cfg.train.cache_val_mb * 2**20)
        return self._keeping(batches, limit) if limit > 0 else batches

    def _keeping(self, batches: Iterable[Batch], limit: int) -> Iterator[Batch]:
        kept: list[Batch] | None = []
        size = 0
        for batch in batches:
            if kept is not None:
                size += sum(v.element_size() * v.nelement() for v in batch.values() if torch.is_tensor(v))
                if size <= limit:
                    kept.append(batch)
                else:
                    kept = None  # too big to keep: stream it every epoch
            yield batch
        if kept is not None:
            self._val_cache = kept

    def table_batches(self, table: pa.Table, batch_size: int = 256) -> Iterator[Batch]:
        """Batches from an in-memory table in row order (driver-side evaluation)."""
        for start in range(0, table.num_rows, batch_size):
            yield self.collate(table.slice(start, batch_size))

    # ------------------------------------------------------------------ loop
    def start_epoch(self, train: bool) -> None:
        """Called before each pass over training or evaluation batches (reset carried state)."""

    def forward(self, model: torch.nn.Module, batch: Batch, *, train: bool) -> Any:
        return model(batch["x"], batch["lengths"])

    def loss(self, outputs: Any, batch: Batch) -> torch.Tensor:
        """Mean training loss of a batch (the value backpropagated)."""
        raise NotImplementedError

    def new_state(self, device: torch.device | str = "cpu") -> MetricState:
        raise NotImplementedError

    def update(self, state: MetricState, outputs: Any, batch: Batch) -> None:
        raise NotImplementedError

    def compute(self, state: MetricState) -> dict[str, float]:
        raise NotImplementedError

    def at_chance(self, state: MetricState) -> str:
        """Whether validation metrics (`state` from `evaluate_batches`) are no better than a trivial
        predictor's on the same rows: a sentence saying so, or "" (also when the task cannot tell).
        The loop says so while it runs after a few such epochs in a row."""
        return ""

    # ------------------------------------------------------------------ after training
    def report(self, model: torch.nn.Module, table: pa.Table, state: MetricState) -> Report:
        """Pictures, examples and extra metrics for the test split (`state` from `evaluate_batches`)."""
        return Report()

    def curves(self, history: dict[str, list[tuple[int, float]]]) -> Report:
        """Pictures drawn from the run's per-epoch metrics, next to the learning curves.

        `history[name]` is [(epoch, value)] as MLflow holds it, for train_loss, val_loss and the
        learning curves' metric.
        """
        return Report()

    # ------------------------------------------------------------------ serving and gate
    def predict(self, model: torch.nn.Module, inputs: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        """The MLflow model's `predict`: raw inputs (tokens as strings, values in raw units)."""
        raise NotImplementedError

    def raw_inputs(self, table: pa.Table) -> pd.DataFrame:
        """Rows of the dataset contract -> the raw inputs `predict` takes, one per row, in order
        (batch inference). The default serves float features: column `x`, time x channels lists."""
        import pandas as pd

        return pd.DataFrame({"x": table.column("x").to_pylist()})

    def gate_data(self, table: pa.Table) -> tuple[pd.DataFrame, Any]:
        """Raw model inputs for the test rows and the truth `score` compares predictions with."""
        raise NotImplementedError

    def score(self, outputs: pd.DataFrame, truth: Any) -> dict[str, float]:
        """Gate metrics from `predict` outputs (names, not ids, so vocabularies may differ)."""
        raise NotImplementedError

    def baseline(self, train: pa.Table, test: pa.Table) -> dict[str, float]:
        """The trivial baseline's scores on the test split: the bar a model must beat to be promoted.

        The baseline is fit on `train` only (majority class, most frequent tag per word, unigram
        counts; none for the seasonal naive forecast and the copy of the source) and scored on
        `test` under the SAME names and by the SAME code (`gate_data`, `score`) as the gate scores
        a model, so the gate compares like for like: every name in `gate_metrics` is present.

        A task may add reference scores that are not gate bars (a stronger, cheap model, e.g.
        classify's 1-NN Euclidean accuracy) under names outside `gate_metrics`.
        """
        raise NotImplementedError

    def baseline_name(self) -> str:
        """The trivial baseline in a few words, for the gate's reason (e.g. "majority-class")."""
        raise NotImplementedError
