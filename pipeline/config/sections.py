"""The config's sections under `RecurConfig`: data, model, train, tracking, generate, tune,
registry and resources."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from pipeline.config.base import DEFAULT_MAX_LENGTH, MAX_LENGTH_FORMATS, MAX_LENGTH_LIMIT, MAX_WIDTH, Section
from pipeline.config.source import SourceConfig


class DataConfig(Section):
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
        "auto", description="auto: on, except under a model.frontend conv or resnet, whose batch "
        "norm would learn the statistics of length-sorted batches rather than the data's "
        "(pipeline.training.budget). On: training batches of similar lengths: pools of "
        "bucket_batches batches' worth of rows are sorted by length, cut into batches and the "
        "batches shuffled (less padding, the same number of steps); rows of one length (forecast "
        "windows) keep their shuffled order; lm batches its own token streams"
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
            *rest, last = MAX_LENGTH_FORMATS
            raise ValueError(f"data.max_length applies to {', '.join(rest)} and {last} sources "
                             f"(classify), not {self.source.format!r}")
        return self


class ModelConfig(Section):
    cell: Literal["lstm", "gru", "rnn"] = "lstm"
    nonlinearity: Literal["tanh", "relu"] = Field("tanh", description="only for cell: rnn")
    hidden_size: int = Field(64, ge=1, le=MAX_WIDTH)
    num_layers: int = Field(1, ge=1, le=64)
    bidirectional: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="between stacked layers and before the head "
        "(text classification: on the word embeddings too)")
    pooling: Literal["last", "mean", "max", "attention"] = Field(
        "last", description="steps -> one vector: final state, mean or per-feature max over valid "
        "steps, or attention"
    )
    attention: Literal["additive", "dot", "general"] = Field(
        "additive", description="attention score for pooling: attention (Bahdanau, Luong dot/general)"
    )
    input_layer_norm: bool = Field(False, description="Linear + LayerNorm on each input step before the RNN")
    frontend: Literal["none", "conv", "resnet", "auto"] = Field(
        "none", description="classify/forecast: conv puts three masked 1-D convolution blocks in front "
        "of the RNN (hybrid CNN-RNN in the spirit of LSTM-FCN) and adds their masked mean to the pooled "
        "state; resnet: three residual blocks of three (Wang et al. 2017's ResNet) in their place, "
        "about twice conv's time per step; auto: resnet for classification of float inputs, none for "
        "tokens (pipeline.training.budget)"
    )
    frontend_channels: int = Field(64, ge=1, le=MAX_WIDTH,
        description="frontend: conv or resnet: channels of each conv block")
    patch: int | Literal["auto"] = Field(
        1, description="classify/forecast: steps merged into one before the RNN (temporal downsampling "
        "by a strided conv; 1: none); auto: enough that the RNN sees at most about 128 steps"
    )
    branch_dropout: float | Literal["auto"] = Field(
        0.0, description="classify with frontend conv or resnet (or auto): dropout on the pooled "
        "recurrent state in training, before it joins the conv summary (LSTM-FCN uses 0.8 after its "
        "LSTM block), so the head cannot fit small training sets on the recurrent features alone; "
        "auto: 0.8 where there is a conv front-end (conv or resnet), 0 elsewhere (pipeline.training.budget; "
        "docs/measured-results.md)"
    )
    instance_norm: bool | Literal["auto"] = Field(
        "auto", description="forecast: normalize each history window by its own mean and std and "
        "reverse it on the forecast (survives trend and level shift); classify: each sequence on its "
        "own scale (its std floored at 1e-5 of its own largest value, not at the dataset's scale), "
        "its mean, log std and asinh(mean / std) given to the head; auto: for forecast, on when the "
        "train segment's level drifts by half a std or more (a trend, a level shift), and for classify "
        "when the train rows' own scales differ tenfold or more (pipeline.training.budget)"
    )
    raw_view: bool | Literal["auto"] = Field(
        "auto", description="classify (float inputs): the encoder (its front-end) also gets each channel's "
        "raw values on one signed log scale for every row, asinh(raw / p10) with p10 the 10th percentile "
        "of the train rows' own std, beside the row-normalized channels: quiet rows keep their level and "
        "shape as a raw-value distance sees them; auto: on exactly when model.instance_norm is "
        "(pipeline.training.budget; docs/measured-results.md)"
    )
    difference: bool = Field(
        False, description="forecast: the model sees first differences of the history and forecasts "
        "differences, summed back onto the last value"
    )
    seasonal_skip: bool = Field(
        False, description="forecast: the forecast also gets a learned multiple of the seasonal-naive "
        "forecast (the history's last data.source.seasonal_period steps repeated, the gate's baseline; "
        "one weight per horizon step and channel, starting at 0): a linear highway from input to "
        "output, as LSTNet's autoregressive part, for the one lag that carries a season "
        "(pipeline.models.forecaster)"
    )
    naive_blend: bool = Field(
        False, description="forecast: after training, the forecast becomes w * model + (1 - w) * "
        "seasonal naive, one w per channel in 0, 0.05, ..., 1 with the lowest MAE on the val windows "
        "(a forecast combination weighted on a holdout): a model that forecasts the val years worse "
        "than repeating the last season is shrunk towards it. Needs val windows held out (not "
        "train.train_on_val); the weights are logged as naive_blend_weight, the val MASE of every candidate "
        "in plots/naive_blend.png (pipeline.models.forecaster)"
    )
    embedding_size: int | None = Field(
        None, ge=1, le=MAX_WIDTH,
        description="token inputs (classify text, tag, lm, seq2seq): embedding width (default "
        "hidden_size); with model.embeddings the vectors' width instead"
    )
    embeddings: str | None = Field(
        None, description="text classification and tag: pretrained word vectors to start the word "
        "embedding from, a file in GloVe's or word2vec's text format (local, .gz or s3://); its "
        "width is the embedding's, whatever model.embedding_size says (pipeline.data.embeddings)"
    )
    freeze_embeddings: bool = Field(
        False, description="with model.embeddings: keep the word vectors as loaded (train the rest)"
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


class LrScheduleConfig(Section):
    """Learning rate per epoch: optional linear warm-up, then the named schedule."""

    name: Literal["none", "step", "cosine", "plateau"] = "none"
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up: lr * (epoch + 1) / (warmup + 1)")
    step_size: int = Field(10, ge=1, description="step: epochs between decays")
    gamma: float = Field(0.5, gt=0.0, le=1.0, description="step and plateau: decay factor")
    patience: int = Field(3, ge=1, description="plateau: epochs without train.monitor improvement")
    min_lr: float = Field(0.0, ge=0.0, description="cosine and plateau: floor")


class TrainConfig(Section):
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
    random_crop: float | Literal["auto"] = Field(
        0.0, description="classify (float inputs): every training row is cut, anew at every step, to a "
        "random window of between this share of its length and all of it (window slicing); evaluation, "
        "batch-norm statistics and predictions see whole rows; 0: off. auto: 0.8 under a conv front-end "
        "(conv or resnet) for rows at least its receptive field long on average (40 steps for resnet), "
        "0 elsewhere (pipeline.training.budget; docs/measured-results.md)"
    )
    bptt: int = Field(128, ge=2, le=MAX_LENGTH_LIMIT,
        description="lm: tokens per truncated-backpropagation chunk")
    schedule: LrScheduleConfig = LrScheduleConfig()
    min_steps: int = Field(
        0, ge=0, le=100_000_000,
        description="train at least this many optimizer steps (per worker): epochs are added "
        "beyond train.epochs until reached, and early stopping never ends a run before it"
    )
    max_epochs: int | None = Field(
        None, ge=1, le=100_000,
        description="restart the schedule (warm-up included) for another train.epochs when they end "
        "with the training loss still falling (an improvement of train.monitor within the early-"
        "stopping patience) and above 1/20 of the first epoch's (both counted from the loss's floor: "
        "label smoothing's entropy), while the next cycle ends by "
        "max_epochs: epochs added only where the planned ones were too few to fit the training "
        "rows; null: never"
    )
    early_stopping_patience: int = Field(
        8, ge=0, description="stop after this many epochs without improvement of train.monitor "
        "(epochs whose validation is still at chance do not count); 0 disables"
    )
    monitor: str = Field(
        "val_loss", description="any logged per-epoch metric: early stopping, best checkpoint, plateau"
    )
    monitor_mode: Literal["max", "min"] = Field("min", description="whether higher or lower is better")
    train_on_val: bool | Literal["auto"] = Field(
        False, description="train on the val rows too (the train split's epochs include them) and "
        "monitor train_loss instead of a val metric: for sets too small to spare rows for a val "
        "split whose metrics could pick a checkpoint (val metrics are then of rows trained on). "
        "auto: on for classify when val has fewer than 200 rows (pipeline.training.budget); "
        "always off under recur tune, which ranks trials by val"
    )
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
    population_batch_norm: bool = Field(
        True, description="after training, set the conv front-end's batch-norm statistics to those of "
        "the whole train split (train + val with train.train_on_val) under the final weights, instead "
        "of the running averages of training batches, which small batches of unlike rows get wrong",
    )
    cache_val_mb: float = Field(
        256.0, ge=0.0, description="keep the val split's batches in each worker after the first epoch "
        "when they fit in this many MB, instead of streaming them from Ray Data every epoch; 0 disables",
    )
    ray_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING",
        description="console level of Ray's own logs (Train, Data); recur prints a line per epoch",
    )

    @model_validator(mode="after")
    def _check_max_epochs(self) -> TrainConfig:
        if self.max_epochs is not None and self.max_epochs < self.epochs:
            raise ValueError(f"train.max_epochs ({self.max_epochs}) must be at least train.epochs "
                             f"({self.epochs}): it bounds the epochs added after them")
        return self


class TrackingConfig(Section):
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


class GenerateConfig(Section):
    """lm: text sampled from the trained model and logged after training."""

    samples: int = Field(3, ge=0, description="how many samples to log")
    prompt: str | None = Field(None, description="text the samples start from (default: a test excerpt)")
    length: int = Field(300, ge=1, description="tokens to generate per sample")
    temperature: float = Field(0.8, gt=0.0, description="softmax temperature (lower: more conservative)")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens; 0 = all")
    seed: int = 0


class TrialSchedulerConfig(Section):
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


class TuneConfig(Section):
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
    scheduler: TrialSchedulerConfig = TrialSchedulerConfig()
    space: dict[str, dict[str, list[Any]]] = Field(
        default_factory=dict,
        description="dotted config key -> {choice|grid|uniform|loguniform|quniform|randint: [args]}",
    )
    seed: int = Field(0, description="seed of the search algorithm")


class RegistryConfig(Section):
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


class ResourcesConfig(Section):
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
