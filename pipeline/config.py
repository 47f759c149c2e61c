"""Typed recur configuration: YAML files merged left to right, `--set` overrides, strict validation.

This is the one place where config text becomes a `RecurConfig`. Every section is a frozen
pydantic model with `extra="forbid"`, so an unknown or mistyped key is an error that names the
key and the file it came from. Config becomes a plain dict only at the Ray boundary
(`RecurConfig.model_dump()`), and back again with `RecurConfig.model_validate`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from pipeline.errors import UserError


class ConfigError(UserError, ValueError):
    """A config file or override is invalid; the message names the key and where it came from."""


class _Section(BaseModel):
    # NaN and inf are refused in every float key: `train.lr: .inf` would train on NaN weights
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


FORMAT_OPTIONS: dict[str, tuple[str, ...]] = {
    # Options that only mean something for some formats; anything else set is an error.
    "ts": ("missing",),
    "ucr": ("missing",),
    "parquet": ("x_column", "y_column", "id_column", "split_column"),
    "csv": ("time_column", "value_columns", "window", "horizon", "stride", "seasonal_period", "gaps",
            "missing"),
    "conll": ("token_column", "tag_column", "lowercase", "min_count", "max_vocab"),
    "text": ("level", "lowercase", "min_count", "max_vocab", "chunk_length"),
    "tsv": ("source_column", "target_column", "level", "lowercase", "min_count", "max_vocab"),
}
# Upper bounds of size keys: far above anything that trains, low enough that a typo (an extra
# zero or three) is refused with the key instead of allocating tens of GB.
MAX_WIDTH = 16_384  # hidden, embedding and channel widths
MAX_LENGTH_LIMIT = 10_000_000  # time steps or tokens of one sequence, window or chunk
MAX_BATCH = 65_536  # sequences per batch per worker
# data.max_length when none is set (ts, ucr, parquet: classify): a longer row is refused, naming
# it and the key. One 200,000-step row took about 10 GB to train; 20,000 steps fit in about 1 GB.
DEFAULT_MAX_LENGTH = 20_000
# Formats whose importer applies `data.max_length` (float sequences of a classify dataset).
MAX_LENGTH_FORMATS: tuple[str, ...] = ("ts", "ucr", "parquet")
FORMAT_TASKS: dict[str, tuple[str, ...]] = {
    "ts": ("classify",), "ucr": ("classify",), "parquet": ("classify",), "csv": ("forecast",),
    "conll": ("tag",),
    "text": ("lm",), "tsv": ("seq2seq",),
}


class SourceConfig(_Section):
    """Where raw data comes from; imported into the canonical dataset at `data.root`."""

    format: Literal["ts", "ucr", "parquet", "csv", "conll", "text", "tsv"] = Field(
        description="importer: UCR/UEA .ts, the UCR archive's .tsv/.txt (ucr) or Parquet (classify), "
        "csv time series (forecast), "
        "CoNLL columns (tag), plain text (lm), tab-separated pairs (seq2seq)"
    )
    paths: list[str] = Field(
        min_length=1,
        description="source files; `builtin://JapaneseVowels/...` names data shipped with recur. "
        "A file whose name ends in _TRAIN/_VAL/_TEST goes to that split.",
    )
    missing: Literal["error", "zero", "ffill", "interpolate"] = Field(
        "error", description="missing values (`?` in .ts, NaN inside a ucr row, blank csv cells): error "
        "names them; zero (ts/ucr), ffill or interpolate fill them, counted in the manifest"
    )
    x_column: str = Field("x", description="Parquet sources: the sequence column")
    y_column: str = Field("y", description="Parquet sources: the label column")
    id_column: str | None = Field("id", description="Parquet sources: row id column (None: generated)")
    split_column: str | None = Field(None, description="Parquet sources: column holding train/val/test")
    # csv (forecast)
    time_column: str | None = Field(None, description="csv: column that orders the rows (kept as row ids)")
    value_columns: list[str] = Field(default_factory=list, description="csv: the series' value columns")
    window: int = Field(64, ge=1, le=MAX_LENGTH_LIMIT, description="csv: history steps per example")
    horizon: int = Field(12, ge=1, le=MAX_LENGTH_LIMIT, description="csv: steps to forecast per example")
    stride: int = Field(1, ge=1, le=MAX_LENGTH_LIMIT, description="csv: steps between consecutive windows")
    seasonal_period: int = Field(1, ge=1, le=MAX_LENGTH_LIMIT,
        description="csv: season length of the seasonal-naive baseline")
    gaps: Literal["error", "keep"] = Field(
        "error", description="csv: time steps further apart than the series' usual spacing (missing "
        "rows): error names them; keep windows the series as it is (e.g. business days), counted in "
        "the manifest's task_params.gaps"
    )
    # conll (tag)
    token_column: int = Field(0, description="conll: column index of the token")
    tag_column: int = Field(-1, description="conll: column index of the tag (-1: last)")
    # text (lm) and tsv (seq2seq)
    level: Literal["char", "word"] = Field("char", description="text/tsv: tokens are characters or words")
    lowercase: bool = Field(False, description="conll/text/tsv: lowercase tokens before the vocabulary")
    min_count: int = Field(1, ge=1, description="vocabulary: tokens seen fewer times in train become <unk>")
    max_vocab: int | None = Field(None, ge=5, description="vocabulary: keep at most this many tokens")
    chunk_length: int = Field(1024, ge=2, le=MAX_LENGTH_LIMIT,
        description="text: tokens per stored row of the stream")
    source_column: int = Field(0, description="tsv: column index of the source text")
    target_column: int = Field(1, description="tsv: column index of the target text")

    @model_validator(mode="after")
    def _options_match_format(self) -> SourceConfig:
        allowed = set(FORMAT_OPTIONS[self.format]) | {"format", "paths"}
        # Set to something other than its default: a dumped config round-trips with every key.
        fields = type(self).model_fields
        wrong = sorted(k for k in _FORMAT_SPECIFIC - allowed
                       if getattr(self, k) != fields[k].get_default(call_default_factory=True))
        if wrong:
            raise ValueError(f"data.source.{wrong[0]} does not apply to format {self.format!r} "
                             f"(its options: {', '.join(FORMAT_OPTIONS[self.format])})")
        if self.format == "csv":
            columns = self.value_columns
            if not columns:
                raise ValueError("data.source.value_columns: a csv source needs at least one value column")
            if len(set(columns)) != len(columns):
                raise ValueError(f"data.source.value_columns: {columns} names a column twice")
            if self.time_column in columns:
                raise ValueError(f"data.source.time_column {self.time_column!r} is also one of "
                                 "data.source.value_columns")
            if self.missing == "zero":
                raise ValueError("data.source.missing: zero does not apply to format 'csv' (a 0 would read "
                                 "as a real value of the series); use ffill or interpolate")
            if self.seasonal_period > self.window:
                raise ValueError(f"data.source.seasonal_period {self.seasonal_period} is longer than "
                                 f"data.source.window {self.window}: the seasonal-naive baseline repeats "
                                 "the last season of each history")
        return self

    @model_serializer(mode="wrap")
    def _only_this_formats_options(self, handler: Any) -> dict[str, Any]:
        """Dumps (MLflow params, `recur config show`, the Ray boundary) leave out other formats'
        options; they are defaults, so the config validates back to the same object."""
        data = handler(self)
        keep = set(FORMAT_OPTIONS[self.format])
        return {k: v for k, v in data.items() if k not in _FORMAT_SPECIFIC or k in keep}

    def importer_options(self) -> dict[str, Any]:
        """The options of this source's format, as keywords for its importer."""
        return {k: getattr(self, k) for k in FORMAT_OPTIONS[self.format]}


_FORMAT_SPECIFIC = {k for options in FORMAT_OPTIONS.values() for k in options}


class DataConfig(_Section):
    task: Literal["classify", "tag", "forecast", "lm", "seq2seq"] = Field(
        "classify", description="what the model learns; picks the head, loss and metrics"
    )
    root: str = Field(
        "recur-runs/datasets/default",
        description="canonical dataset folder (manifest.json + train/val/test Parquet)",
    )
    name: str | None = Field(None, description="dataset name in MLflow lineage (default: folder name)")
    source: SourceConfig | None = Field(
        None, description="import from here when `root` has no dataset or its sources changed"
    )
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="val split carved from train, stratified")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="test split when sources name none")
    on_invalid: Literal["fail", "quarantine"] = Field(
        "fail", description="rows breaking the contract: fail listing them, or quarantine with reasons"
    )
    max_length: int | None = Field(
        None, ge=1, le=MAX_LENGTH_LIMIT,
        description=f"ts/ucr/parquet sources: longest sequence in time steps (None: a row longer than "
        f"{DEFAULT_MAX_LENGTH} is refused, naming it; set a limit to keep longer rows or to cut them)"
    )
    on_too_long: Literal["truncate", "reject"] = Field(
        "truncate", description="a sequence longer than max_length: truncate keeps its first max_length "
        "steps (counted in the manifest's import_params.truncated); reject makes it an invalid row "
        "(on_invalid: fail or quarantine)"
    )
    batch_size: int | Literal["auto"] = Field(
        32, description="sequences per batch per worker; auto: from the train split's rows so that "
        "every worker gets enough optimizer steps per epoch (pipeline.training.budget)"
    )
    bucket_by_length: bool | Literal["auto"] = Field(
        "auto", description="auto: on, except under a model.frontend conv, whose batch norm would learn "
        "the statistics of length-sorted batches rather than the data's (pipeline.training.budget). "
        "On: training batches of similar lengths: pools of bucket_batches batches' worth "
        "of rows are sorted by length, cut into batches and the batches shuffled (less padding, the "
        "same number of steps); rows of one length (forecast windows) keep their shuffled order; lm "
        "batches its own token streams"
    )
    bucket_batches: int = Field(
        64, ge=1, le=100_000,
        description="data.bucket_by_length: batches' worth of rows pooled and sorted at a "
        "time (more: less padding, batches less random; 64 brings a long-tailed set under 10%)"
    )
    bucket_pool_mib: float = Field(
        64.0, gt=0.0, description="data.bucket_by_length: a pool holds at most this many MiB of rows (mean "
        "length x channels x 4 bytes, from the manifest): wide rows get fewer batches per pool, so a "
        "worker's memory does not grow with the row width"
    )
    materialize: bool | Literal["auto"] = Field(
        "auto",
        description="true holds train/val in Ray's object store across epochs (fast for data that fits "
        "in memory); false streams Parquet every epoch (data larger than the object store, and blocks "
        "a lost node held are read again); auto: true on a one-node cluster, false on more nodes",
    )
    seed: int = Field(0, description="seed for splits and per-epoch shuffling")

    @model_validator(mode="after")
    def _check_import_options(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"data.val_fraction + data.test_fraction must be below 1 (something must be "
                             f"left to train on); got {self.val_fraction} + {self.test_fraction}")
        if self.source is not None and self.source.format == "csv" \
                and not (self.val_fraction > 0 and self.test_fraction > 0):
            raise ValueError(f"data.val_fraction and data.test_fraction must be > 0 for a csv source (val "
                             f"and test are the last parts of the series); got {self.val_fraction} and "
                             f"{self.test_fraction}")
        if self.max_length is not None and self.source is not None \
                and self.source.format not in MAX_LENGTH_FORMATS:
            raise ValueError(f"data.max_length applies to {' and '.join(MAX_LENGTH_FORMATS)} sources "
                             f"(classify), not {self.source.format!r}")
        return self


class ModelConfig(_Section):
    cell: Literal["lstm", "gru", "rnn"] = "lstm"
    nonlinearity: Literal["tanh", "relu"] = Field("tanh", description="only for cell: rnn")
    hidden_size: int = Field(64, ge=1, le=MAX_WIDTH)
    num_layers: int = Field(1, ge=1, le=64)
    bidirectional: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="between stacked layers and before the head")
    pooling: Literal["last", "mean", "attention"] = Field(
        "last", description="steps -> one vector: final state, mean over valid steps, or attention"
    )
    attention: Literal["additive", "dot", "general"] = Field(
        "additive", description="attention score for pooling: attention (Bahdanau, Luong dot/general)"
    )
    input_layer_norm: bool = Field(False, description="Linear + LayerNorm on each input step before the RNN")
    frontend: Literal["none", "conv", "auto"] = Field(
        "none", description="classify/forecast: conv puts masked 1-D convolutions in front of the RNN "
        "(hybrid CNN-RNN in the spirit of LSTM-FCN) and adds their masked mean to the pooled state; "
        "auto: conv for univariate or long sequences (pipeline.training.budget)"
    )
    frontend_channels: int = Field(64, ge=1, le=MAX_WIDTH,
        description="frontend: conv: channels of each conv block")
    patch: int | Literal["auto"] = Field(
        1, description="classify/forecast: steps merged into one before the RNN (temporal downsampling "
        "by a strided conv; 1: none); auto: enough that the RNN sees at most about 128 steps"
    )
    instance_norm: bool | Literal["auto"] = Field(
        "auto", description="forecast: normalize each history window by its own mean and std and "
        "reverse it on the forecast (survives trend and level shift); classify: each sequence on its "
        "own scale, its mean and log std given to the head; auto: for forecast, on when the train "
        "segment's level drifts by half a std or more (a trend, a level shift), and for classify "
        "when the train rows' own scales differ tenfold or more (pipeline.training.budget)"
    )
    difference: bool = Field(
        False, description="forecast: the model sees first differences of the history and forecasts "
        "differences, summed back onto the last value"
    )
    embedding_size: int | None = Field(
        None, ge=1, le=MAX_WIDTH,
        description="token inputs (tag, lm, seq2seq): embedding width (default hidden_size)"
    )
    tie_weights: bool = Field(
        False, description="lm: the output layer shares the embedding matrix (needs embedding_size == "
        "hidden_size)"
    )
    char_features: bool = Field(False, description="tag: add a character-level encoding of each word")
    char_embedding_size: int = Field(16, ge=1, le=MAX_WIDTH,
        description="tag: character embedding and encoder width")
    teacher_forcing: float = Field(
        1.0, ge=0.0, le=1.0, description="seq2seq: probability of feeding the true previous token in training"
    )
    beam_size: int = Field(1, ge=1, le=1024, description="seq2seq: beam width when decoding (1 = greedy)")
    max_decode_length: int = Field(64, ge=1, le=MAX_LENGTH_LIMIT,
        description="seq2seq: longest output decoded")

    def encoder_args(self) -> dict[str, Any]:
        """Keywords of `RecurrentEncoder` (every model's encoder) from this section."""
        return dict(hidden_size=self.hidden_size, num_layers=self.num_layers, cell=self.cell,
                    nonlinearity=self.nonlinearity, bidirectional=self.bidirectional,
                    dropout=self.dropout, input_layer_norm=self.input_layer_norm)

    def frontend_args(self) -> dict[str, Any]:
        """Keywords of the classify/forecast models' front-end (`frontend`, `frontend_channels`,
        `patch`); "auto" values must be resolved first (`pipeline.training.budget.resolve`)."""
        if "auto" in (self.frontend, self.patch):
            raise ValueError("model.frontend/model.patch 'auto' is resolved from the dataset's manifest "
                             "before a model is built (pipeline.training.budget.resolve)")
        return dict(frontend=self.frontend, frontend_channels=self.frontend_channels, patch=self.patch)


class ScheduleConfig(_Section):
    """Learning rate per epoch: optional linear warm-up, then the named schedule."""

    name: Literal["none", "step", "cosine", "plateau"] = "none"
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up: lr * (epoch + 1) / (warmup + 1)")
    step_size: int = Field(10, ge=1, description="step: epochs between decays")
    gamma: float = Field(0.5, gt=0.0, le=1.0, description="step and plateau: decay factor")
    patience: int = Field(3, ge=1, description="plateau: epochs without train.monitor improvement")
    min_lr: float = Field(0.0, ge=0.0, description="cosine and plateau: floor")


class TrainConfig(_Section):
    epochs: int = Field(30, ge=1, le=100_000)
    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    lr: float = Field(3e-3, gt=0.0, le=10.0, description="learning rate (finite, at most 10)")
    weight_decay: float = Field(0.0, ge=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, le=1.0, description="sgd and rmsprop only")
    grad_clip: float = Field(
        1.0, ge=0.0, description="clip gradients at this value (see grad_clip_mode); 0 disables"
    )
    grad_clip_mode: Literal["norm", "value"] = Field(
        "norm", description="norm: scale by the global L2 norm; value: clamp each element"
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="classification loss only")
    bptt: int = Field(128, ge=2, le=MAX_LENGTH_LIMIT,
        description="lm: tokens per truncated-backpropagation chunk")
    schedule: ScheduleConfig = ScheduleConfig()
    min_steps: int = Field(
        0, ge=0, le=100_000_000,
        description="train at least this many optimizer steps (per worker): epochs are added "
        "beyond train.epochs until reached, and early stopping never ends a run before it"
    )
    early_stopping_patience: int = Field(
        8, ge=0, description="stop after this many epochs without val improvement; 0 disables"
    )
    monitor: str = Field(
        "val_loss", description="any logged per-epoch metric: early stopping, best checkpoint, plateau"
    )
    monitor_mode: Literal["max", "min"] = Field("min", description="whether higher or lower is better")
    seed: int = Field(0, description="seed for weights and dropout")
    max_failures: int = Field(1, ge=-1, description="worker-group restarts from the last checkpoint")
    num_checkpoints_to_keep: int = Field(2, ge=1)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: fp16 mixed precision with a gradient scaler on GPU (cuDNN's fast "
        "RNN kernels), fp32 on CPU; bf16: bfloat16 autocast, no scaler (Ampere and newer GPUs only)",
    )
    report_poll_s: float = Field(
        0.25, gt=0.0, le=60.0, description="how often Ray Train's controller collects workers' epoch "
        "reports (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, Ray's default 2 s): an epoch shorter than it waits",
    )
    cache_train_mb: float = Field(
        256.0, ge=0.0, description="keep a worker's share of the train split in memory after the first "
        "epoch when it fits in this many MB, and shuffle and batch it there every epoch instead of "
        "running Ray Data again (about a second an epoch); 0 disables",
    )
    sync_batch_norm: bool = Field(
        True, description="with 2+ workers, the conv front-end's batch norm takes its statistics over "
        "every worker's batch (like one process with the global batch) instead of each worker's own",
    )
    cache_val_mb: float = Field(
        256.0, ge=0.0, description="keep the val split's batches in each worker after the first epoch "
        "when they fit in this many MB, instead of streaming them from Ray Data every epoch; 0 disables",
    )
    ray_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING",
        description="console level of Ray's own logs (Train, Data); recur prints a line per epoch",
    )


class TrackingConfig(_Section):
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; default MLFLOW_TRACKING_URI, else sqlite under runs_dir",
    )
    experiment: str = "recur"
    run_name: str | None = None
    runs_dir: str = Field("recur-runs", description="local store for sqlite, artifacts and checkpoints")
    storage_path: str | None = Field(
        None,
        description="where Ray Train writes checkpoints: a folder every node can reach or "
                    "s3://bucket/prefix (needed on a multi-node cluster); default <runs_dir>/ray",
    )
    ui_port: int = Field(5000, ge=1, le=65535)
    # One policy for every MLflow request of a run (pipeline.tracking.policy): MLflow's own default
    # (7 retries with backoff, 120 s timeouts) holds a finished run for minutes per call when the
    # server is gone.
    retries: int = Field(2, ge=0, le=10, description="MLflow calls: tries after the first (backoff "
                         "0.5-1-2 s), then the call fails (epoch metrics are kept on disk)")
    request_timeout_s: float = Field(10.0, gt=0.0, le=600.0,
                                     description="MLflow calls: the longest wait for one answer")
    deadline_s: float = Field(60.0, ge=1.0, le=3600.0,
                              description="MLflow calls: the longest one call takes, every try and "
                              "backoff together; after training a dead server ends the run in about "
                              "this long, with the checkpoint kept and `recur runs sync` to finish")


class GenerateConfig(_Section):
    """lm: text sampled from the trained model and logged after training."""

    samples: int = Field(3, ge=0, description="how many samples to log")
    prompt: str | None = Field(None, description="text the samples start from (default: a test excerpt)")
    length: int = Field(300, ge=1, description="tokens to generate per sample")
    temperature: float = Field(0.8, gt=0.0, description="softmax temperature (lower: more conservative)")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens; 0 = all")
    seed: int = 0


class SchedulerConfig(_Section):
    """How Tune stops or exploits trials, counted in epochs (Tune's training iterations)."""

    name: Literal["fifo", "asha", "hyperband", "pbt"] = Field(
        "asha", description="fifo: run every trial to the end; asha/hyperband: stop poor trials early; "
        "pbt: copy the best trials' checkpoints and perturb their hyperparameters",
    )
    grace_period: int = Field(1, ge=1, description="asha: epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(2.0, gt=1.0, description="asha/hyperband: keep 1/factor at each rung")
    max_t: int | None = Field(None, ge=1, description="asha/hyperband: epochs of the longest trial "
                              "(default: the most any trial of the space trains, train.epochs raised "
                              "by train.min_steps for its batch size)")
    perturbation_interval: int = Field(2, ge=1, description="pbt: epochs between exploit/explore steps")
    quantile_fraction: float = Field(
        0.25, ge=0.0, le=0.5, description="pbt: the bottom fraction of trials copies the top fraction",
    )
    synch: bool = Field(
        False, description="pbt: trials wait (paused) until all reach the interval, then the "
        "bottom ones copy the top ones: every interval exploits; slower than the asynchronous default",
    )


class TuneConfig(_Section):
    """Hyperparameter search (`recur tune`, or before training in `recur run` when enabled)."""

    enabled: bool = Field(False, description="recur run: search first, then register the best trial")
    name: str | None = Field(None, description="study name (default: tracking.experiment)")
    metric: str | None = Field(None, description="per-epoch metric to optimize (default train.monitor)")
    mode: Literal["min", "max"] | None = Field(None, description="default: the metric's direction")
    num_samples: int = Field(8, ge=1, description="trials (with grid values: samples of every grid point)")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="default: as many as fit the cluster (each trial: num_workers workers)"
    )
    time_budget_s: float | None = Field(
        None, gt=0, description="seconds: after this the study stops its running trials and starts no more"
    )
    allow_partial: bool = Field(
        False, description="a study in which some trials failed or never started (the time budget "
        "ran out first) still registers its best trial and exits 0; false: it fails (exit 1), "
        "naming them, and `recur tune --resume` runs what is left"
    )
    search: Literal["random", "grid", "optuna"] = Field(
        "random", description="random or grid (Tune's variant generator), optuna (TPE)"
    )
    scheduler: SchedulerConfig = SchedulerConfig()
    space: dict[str, dict[str, list[Any]]] = Field(
        default_factory=dict,
        description="dotted config key -> {choice|grid|uniform|loguniform|quniform|randint: [args]}",
    )
    seed: int = Field(0, description="seed of the search algorithm")


class RegistryConfig(_Section):
    model_name: str = Field(
        "recur-model", min_length=1, max_length=256,
        description="registered model name: no '/' or ':' (MLflow refuses them) nor '@' (recur's "
        "NAME@alias), no '..', no leading or trailing spaces",
    )

    @field_validator("model_name")
    @classmethod
    def _registrable(cls, name: str) -> str:
        # checked here, before Ray starts, not at registration after training
        bad = [c for c in "/:@" if c in name]
        if bad or name != name.strip() or ".." in name:
            what = f"contains {' and '.join(repr(c) for c in bad)}" if bad else "has '..' or outer spaces"
            raise ValueError(f"{name!r} {what}; MLflow model names cannot contain '/' or ':', and recur "
                             "reads NAME@alias and NAME/version, so use letters, digits, '-', '_' or '.'")
        return name
    metric: str | None = Field(
        None,
        description="test metric the gate compares (default per task: accuracy, mase, f1, "
        "perplexity, bleu); lower-is-better metrics must improve downwards",
    )
    min_improvement: float = Field(
        0.0, ge=0.0, description="the new model must beat the champion by more than this to replace it"
    )
    enabled: bool = Field(True, description="register the trained model and run the promotion gate")


class ResourcesConfig(_Section):
    num_workers: int = Field(
        2, ge=0, description="Ray Train workers (data-parallel ranks); 0 runs the worker function "
        "as one rank in the calling process, with no worker group to start (pipeline.training.local)"
    )
    cpus_per_worker: float = Field(
        0.5,
        gt=0.0,
        description="fractional by default so Ray Data read tasks keep a CPU on a 2-core machine",
    )
    use_gpu: bool = Field(False, description="one GPU per worker, NCCL backend, AMP")
    ray_address: str | None = Field(
        None, description="existing cluster; default RAY_ADDRESS, else a local Ray is started"
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (default: all cores)")
    reserve_cpus_for_data: float = Field(
        0.5, ge=0.0, description="CPUs left free for Ray Data's tasks, at least 1 (its file listing asks "
        "for a whole CPU); each read task asks for this, at most 1. Checked before training and tuning"
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="where Ray places the Train workers on a multi-node cluster: PACK on as few "
        "nodes as possible (fastest gradient sync), SPREAD on different nodes where possible, "
        "STRICT_PACK all on one node, STRICT_SPREAD each on its own node (waits until that fits)"
    )
    start_timeout_s: float = Field(
        60.0, gt=0.0, description="how long Ray Train waits for the workers' resources (at the start "
        "and after a node is lost) before the attempt fails and counts against train.max_failures; "
        "raise it on an autoscaling cluster",
    )


class RecurConfig(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    generate: GenerateConfig = GenerateConfig()
    tune: TuneConfig = TuneConfig()
    registry: RegistryConfig = RegistryConfig()
    resources: ResourcesConfig = ResourcesConfig()

    @property
    def tune_metric(self) -> tuple[str, str]:
        """(metric, mode) the study optimizes: `tune.metric`/`tune.mode`, else train.monitor's."""
        metric = self.tune.metric or self.train.monitor
        if self.tune.mode is not None:
            return metric, self.tune.mode
        from pipeline.tasks.metrics import task_metrics  # not the task class: no torch import

        name = metric.removeprefix("val_")
        return metric, "max" if task_metrics(self.data.task).higher_is_better.get(name, False) else "min"

    @property
    def gate_metric(self) -> str:
        """The registry gate's metric: `registry.metric`, else the task's default."""
        from pipeline.tasks.metrics import task_metrics

        return self.registry.metric or task_metrics(self.data.task).default_gate_metric

    @model_validator(mode="after")
    def _check_monitor(self) -> RecurConfig:
        # the tasks' metric names, without importing a task (and torch): a bad config is refused at once
        from pipeline.tasks import metric_names, task_metrics

        task = task_metrics(self.data.task)
        if self.registry.metric is not None and self.registry.metric not in task.gate_metrics:
            raise ValueError(f"registry.metric must be one of {list(task.gate_metrics)} for task "
                             f"{self.data.task}; got {self.registry.metric!r}")
        source = self.data.source
        if source is not None and self.data.task not in FORMAT_TASKS[source.format]:
            raise ValueError(f"data.source.format {source.format!r} imports {FORMAT_TASKS[source.format][0]} "
                             f"data, but data.task is {self.data.task!r}")
        model = self.model
        if self.data.task not in ("classify", "forecast"):
            defaults = (("frontend", "none"), ("patch", 1))
            set_here = [k for k, default in defaults if getattr(model, k) != default]
            if set_here:
                raise ValueError(f"model.{set_here[0]} applies to classify and forecast models, not "
                                 f"{self.data.task!r}")
        if isinstance(model.patch, int) and not 1 <= model.patch <= MAX_WIDTH:
            raise ValueError(f"model.patch must be 1..{MAX_WIDTH} or auto; got {model.patch}")
        if self.data.task not in ("classify", "forecast") and model.instance_norm is True:
            raise ValueError(f"model.instance_norm applies to classify and forecast models, not "
                             f"{self.data.task!r}")
        if self.data.task != "forecast" and model.difference:
            raise ValueError(f"model.difference applies to forecast models, not {self.data.task!r}")
        if isinstance(self.data.batch_size, int) and not 1 <= self.data.batch_size <= MAX_BATCH:
            raise ValueError(f"data.batch_size must be 1..{MAX_BATCH} or auto; got {self.data.batch_size}")
        known = metric_names(self.data.task)
        if self.tune.metric is not None and self.tune.metric not in known:
            raise ValueError(f"tune.metric must be a metric that {self.data.task} runs log, one of "
                             f"{sorted(known)}; got {self.tune.metric!r}")
        if self.train.monitor not in known:
            raise ValueError(
                f"train.monitor must be a metric that {self.data.task} runs log, one of {sorted(known)}; "
                f"got {self.train.monitor!r}"
            )
        metric = self.train.monitor.removeprefix("val_")
        expected = "max" if task.higher_is_better.get(metric, False) else "min"
        if self.train.monitor_mode != expected:
            raise ValueError(
                f"train.monitor_mode must be {expected!r} for train.monitor={self.train.monitor}"
            )
        return self


# ---------------------------------------------------------------------------------------------
# Loading


def _deep_merge(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _origins(tree: dict, source: str, prefix: str = "", into: dict | None = None) -> dict[str, str]:
    """Map every dotted key in `tree` to the file (or override) it came from."""
    into = {} if into is None else into
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        into[dotted] = source
        if isinstance(value, dict):
            _origins(value, source, f"{dotted}.", into)
    return into


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=0.003` -> (["train", "lr"], 0.003); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, for example train.lr=0.003")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key")
    return key.split("."), _load_yaml(raw, f"--set {text!r}") if raw.strip() else None


MAX_YAML_VALUES = 100_000  # values in a config after expanding its aliases (a big one holds ~1,000)


def _load_yaml(text: str, where: str) -> Any:
    """YAML text (a config file, a --set value) as Python; ConfigError in one line naming `where`
    and the line and column when it is not valid YAML, or when its aliases expand to more than
    MAX_YAML_VALUES values (a few hundred bytes of nested aliases can expand to billions)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{where}: not valid YAML{at}: {what}") from None
    count, stack = 0, [data]
    while stack:  # every value as often as aliases repeat it, stopping at the bound
        node = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise ConfigError(f"{where}: more than {MAX_YAML_VALUES} values once its aliases (*name) are "
                              "expanded; a config needs far fewer: expand the aliases by hand or use "
                              "fewer of them")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return data


def _read_yaml(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                          f"{exc.start}); save the config as UTF-8") from None
    data = _load_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(
    paths: list[str | os.PathLike] | None = None, overrides: list[str] | None = None
) -> RecurConfig:
    """Merge YAML files left to right, apply `--set` overrides, validate.

    Errors name the dotted key, the file or override it came from, and what was expected.
    """
    merged: dict = {}
    origin: dict[str, str] = {}
    for path in paths or []:
        tree = _read_yaml(Path(path))
        merged = _deep_merge(merged, tree)
        _origins(tree, str(path), into=origin)
    for text in overrides or []:
        keys, value = parse_override(text)
        node = {keys[-1]: value}
        for key in reversed(keys[:-1]):
            node = {key: node}
        merged = _deep_merge(merged, node)
        _origins(node, f"--set {text}", into=origin)
    return validate_config(merged, origin)


def validate_config(tree: dict, origin: dict[str, str] | None = None) -> RecurConfig:
    try:
        return RecurConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin or {})) from None


def _format_errors(exc: ValidationError, origin: dict[str, str]) -> str:
    lines = ["invalid config:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        where = _origin_of(key, origin)
        if not err["loc"]:  # a cross-field check: its message names the keys itself
            lines.append(f"  {err['msg'].removeprefix('Value error, ')}")
            continue
        if err["type"] == "value_error" and isinstance(err.get("input"), dict):
            # a section's own check (e.g. data.source options): its message names the keys
            what = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {what}{f'  [from {where}]' if where else ''}")
            continue
        if err["type"] == "extra_forbidden":
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            known = _known_keys(parent)
            what = f"unknown key; known keys{' in ' + parent if parent else ''}: {', '.join(known)}"
        else:
            what = f"{err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})"
        lines.append(f"  {key or '<root>'}: {what}{f'  [from {where}]' if where else ''}")
    return "\n".join(lines)


def _origin_of(key: str, origin: dict[str, str]) -> str | None:
    while key:
        if key in origin:
            return origin[key]
        key = key.rsplit(".", 1)[0] if "." in key else ""
    return None


def _known_keys(dotted_section: str) -> list[str]:
    model: type[BaseModel] = RecurConfig
    for part in filter(None, dotted_section.split(".")):
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        candidates = getattr(annotation, "__args__", (annotation,))
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return sorted(model.model_fields)


def dump_yaml(cfg: RecurConfig | dict[str, Any]) -> str:
    """The config (or its dict, e.g. a redacted copy) as YAML, keys in schema order."""
    return yaml.safe_dump(cfg if isinstance(cfg, dict) else cfg.model_dump(mode="json"), sort_keys=False)


def json_schema() -> str:
    return json.dumps(RecurConfig.model_json_schema(), indent=2)


def flatten(cfg: RecurConfig) -> dict[str, Any]:
    """Dotted keys -> scalar values (lists as JSON), for MLflow params."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = json.dumps(node) if isinstance(node, list) else node

    walk(cfg.model_dump(mode="json"), "")
    return out


# ---------------------------------------------------------------------------------------------
# Paths

BUILTIN_SCHEME = "builtin://"  # data shipped with recur (pipeline/data/builtin)


def absolute_store_uri(uri: str, base: Path) -> str | None:
    """A local MLflow store URI (`sqlite:///rel`, `file:rel`, a plain path) with its path made
    absolute against `base`; None when it already is absolute or is no local path (a server,
    sqlite in memory)."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        return None if not path or path.startswith("/") else f"sqlite:///{(base / path).resolve()}"
    if uri.startswith("file://"):
        return None  # file:///abs
    if uri.startswith("file:"):
        return (base / uri.removeprefix("file:")).resolve().as_uri()
    if "://" not in uri and not os.path.isabs(os.path.expanduser(uri)):
        return str((base / uri).resolve())
    return None


def relative_paths(cfg: RecurConfig, base: Path, environ: dict[str, str] | None = None
                   ) -> list[tuple[str, Any, Any]]:
    """(dotted key, value as configured, value made absolute against `base`) for every local
    path of `cfg` that is relative: data.root, data.source.paths (not builtin:// or URLs),
    tracking.runs_dir, tracking.storage_path, and tracking.tracking_uri or, when that is unset,
    a local store in MLFLOW_TRACKING_URI (it goes in as tracking.tracking_uri, which wins)."""
    environ = os.environ if environ is None else environ
    found: list[tuple[str, Any, Any]] = []

    def local(path: str) -> str | None:
        expanded = os.path.expanduser(path)
        return None if os.path.isabs(expanded) else str((base / expanded).resolve())

    for key, value in (("data.root", cfg.data.root), ("tracking.runs_dir", cfg.tracking.runs_dir),
                       ("tracking.storage_path", cfg.tracking.storage_path)):
        if value and "://" not in value and (absolute := local(value)) is not None:
            found.append((key, value, absolute))
    uri = cfg.tracking.tracking_uri or environ.get("MLFLOW_TRACKING_URI")
    if uri and (absolute := absolute_store_uri(uri, base)) is not None:
        found.append(("tracking.tracking_uri", uri, absolute))
    if cfg.data.source is not None:
        paths = list(cfg.data.source.paths)
        resolved = [p if p.startswith(BUILTIN_SCHEME) or ("://" in p and not p.startswith("file://"))
                    else local(p.removeprefix("file://")) or p for p in paths]
        if resolved != paths:
            found.append(("data.source.paths", paths, resolved))
    return found


def with_absolute_paths(cfg: RecurConfig, base: Path | None = None,
                        environ: dict[str, str] | None = None) -> RecurConfig:
    """`cfg` with its relative paths (`relative_paths`) made absolute against `base`, by default
    the directory recur was run from. Done before anything is handed to Ray: a Tune trial runs
    in a working directory of its own, where `recur-runs/datasets/...` names nothing."""
    tree = cfg.model_dump(mode="json")
    for key, _, value in relative_paths(cfg, (base or Path.cwd()).resolve(), environ):
        *sections, name = key.split(".")
        node = tree
        for section in sections:
            node = node[section]
        node[name] = value
    return RecurConfig.model_validate(tree)
