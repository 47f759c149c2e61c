"""The training budget and the "auto" settings, resolved from what the manifest says.

A config may leave some settings to the data (`data.batch_size: auto`, `model.frontend: auto`,
`model.patch: auto`, `model.instance_norm: auto`, `model.raw_view: auto`,
`model.branch_dropout: auto`, `train.random_crop: auto`) and ask for a
minimum number of optimizer steps (`train.min_steps`). `resolve` turns them into concrete values
from the dataset's manifest (rows, lengths, channels) by the rules below, the same for every
dataset, so that small and long series train without hand tuning and a run's logged config says
what actually ran:

- **batch size** (auto): per worker, rows_per_worker / 16 rounded to the nearest power of two,
  within [4, 32] (never more than the rows a worker has): a worker gets about 16 optimizer steps
  per epoch (11 to 23) when it holds 64 rows or more, and large sets keep batches of 32.
  Tasks that batch their own token streams (lm) take 32.
- **epochs** (with `train.min_steps`): train.epochs, raised to ceil(min_steps / steps per epoch)
  when that is more, so a small set trains for at least `min_steps` steps whatever its size;
  early stopping never ends a run before `min_steps` either (`pipeline.training.loop.fit`).
- **front-end** (auto, classify and forecast): `resnet` (three masked residual blocks of
  convolutions before the RNN, see `pipeline.models.frontend`) for classification of float inputs,
  short sequences included (JapaneseVowels, 7-29 steps: 0.997 with the three-block `conv`, 0.973
  without; ItalyPowerDemand, 24 steps: 0.974 against 0.960); `none` for token inputs (which an
  embedding reads) and for forecasting (whose windows the recurrence reads directly). `resnet`
  over `conv`: about twice the time per step on CPU; on long series with few rows a class far
  better (PigCVP 0.707 -> 0.822, OSULeaf 0.909 -> 0.946, ArrowHead 0.691 -> 0.737, PLAID 0.896 ->
  0.909), on four of twelve sets worse (PickupGestureWiimoteZ 0.860 -> 0.780, 4 of 50 test rows;
  docs/measured-results.md).
- **patch** (auto): the fewest steps merged into one so that the RNN sees at most
  `RNN_STEPS` steps of a sequence of mean length: ceil(mean length / RNN_STEPS).
- **branch_dropout** (auto, classify): 0.8 under a conv front-end (conv or resnet), 0 without
  (`pipeline.models.classifier.auto_branch_dropout`).
  The hybrid's head sees the pooled recurrent state beside the conv summary; on small training
  sets it fits them by the recurrent features alone and generalizes worse than the conv summary
  would (OSULeaf, 200 training rows: 0.839 with both, 0.942 with the conv summary alone). LSTM-FCN
  (Karim et al. 2018) drops 80% of its LSTM block's output for the same reason; so does this. It
  slows fitting: with 100 epochs PigCVP fell from 0.514-0.548 to 0.361, with the restarts of
  `train.max_epochs` (400) it rose to 0.707 (docs/measured-results.md).
- **random_crop** (auto, classify): `CROP_SHARE` (0.8) under a conv front-end (conv or resnet) when
  the train rows' mean length is at least the front-end's receptive field (40 steps for resnet,
  `pipeline.models.frontend.receptive_field`), 0 elsewhere: each training row is cut, anew at
  every step, to a random window of 80-100% of its length (window slicing, Le Guennec et al.
  2016), evaluation sees whole rows. The front-end's convolutions and the mean over steps read
  shapes wherever they sit; the windows keep a small set from being learned by where its shapes
  sit and where its rows end (ArrowHead 0.737 -> 0.869, PLAID 0.909 -> 0.920). A row shorter than
  the receptive field has no shapes apart from the whole: every conv feature reads all of it, and
  a window of it is another row, not the same one moved (ItalyPowerDemand, 24 hourly steps: 0.964
  -> 0.948 with windows, 16 of 1,029 test rows; JapaneseVowels, 7-29 steps, gained 2 of 370 rows:
  the one rule rests on the one set; docs/measured-results.md).
- **bucket_by_length** (auto): length-bucketed batches (less padding), except under a conv
  front-end: its batch norm learns batch statistics in training and uses their running mean in
  evaluation, and batches sorted by length (often by class too) have statistics unlike the data's
  (measured on a variable-length set: test accuracy 0.69 bucketed against 0.84 with random batches;
  with population statistics for evaluation, `train.population_batch_norm`, still 0.756 against
  0.862 on PLAID, so the harm is in training on such batches, not only in their running averages).
- **train_on_val** (auto, classify): on when the val split has fewer than `VAL_SELECT_ROWS` rows.
  One such split's accuracy has a standard error of 3.5 points or more (0.5 / sqrt(rows)), more
  than what separates one epoch's checkpoint from the next, so picking a checkpoint or stopping
  by it is mostly noise, while its rows are a fifth of what a small train split could learn
  from (a 2-rows-a-class set loses the second row of every class it takes one from). The val
  rows then join the train split, the run monitors `train_loss` (the checkpoint with the lowest
  training loss, as Fawaz et al. 2019 select on the UCR archive; early stopping on a training
  loss that stopped falling) and the budget counts train + val rows. Val metrics are still
  logged, of rows trained on. Off for other tasks and under `recur tune` (it ranks by val).
- **instance_norm** (auto): for forecast, on when the series moves its level within the train
  segment (`level_drift` of some column at least `LEVEL_DRIFT`: the means of the segment's two
  halves are half a standard deviation apart or more, recorded by the CSV importer): each window
  is then normalized by its own level and scale, so a trend or level shift between train and test
  years does not push inputs out of the range training saw. A series that cycles around one level
  keeps the dataset's one scaling, under which a window's level still says where in the cycle it
  is (lynx: MASE 0.953 with per-window scaling, 0.837 without). On when the manifest does not say
  (a forecast dataset written by other code). For classify, on when the train rows' own scales
  are far apart (the 90th percentile of their std at least `ROW_SCALE_SPREAD` times the 10th, in
  some channel, from the manifest): one global scaling would leave the quiet rows as flat
  lines, so each row is scaled by itself (`pipeline.models.instance.row_normalize`) and its
  level, log scale and level relative to its spread are given to the head as features. Off
  elsewhere.
- **raw_view** (auto, classify): on exactly when instance_norm is (and the manifest holds the
  train rows' 10th-percentile std): beside each row on its own scale, the front-end also sees
  every row's raw values on one signed log scale, asinh(raw / p10)
  (`pipeline.models.instance.raw_view`). Row normalization gives a quiet row's noise the same
  size as a loud row's waveform; the raw view keeps quiet rows at their own level and shape, as a
  1-NN distance on raw values sees them (PLAID, three seeds: 0.909 -> 0.942, above 1-NN DTW's
  0.931; its standby-current class 9 -> 13-15 of 17 test rows; docs/measured-results.md).

No Ray and no MLflow here: the driver and the trainer builder call it, the tests call it alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import ConfigError, RecurConfig

AUTO_BATCH_STEPS = 16  # steps per epoch per worker that data.batch_size auto aims for
AUTO_BATCH_RANGE = (4, 32)  # smallest and largest batch it picks
RNN_STEPS = 128  # most steps model.patch auto leaves for the recurrence
AUTO_FRONTEND = "resnet"  # model.frontend auto for classification of float inputs
ROW_SCALE_SPREAD = 10.0  # p90 / p10 of the train rows' own std from which classify normalizes each row
VAL_SELECT_ROWS = 200  # val rows from which classify's train_on_val auto keeps them for selection
CROP_SHARE = 0.8  # train.random_crop auto under a conv front-end: windows of 80-100% of a row
LEVEL_DRIFT = 0.5  # std between the train segment's halves' means from which forecast normalizes windows


def level_drift(manifest: Any) -> float | None:
    """The largest per-column level drift of a forecast series' train segment (None when the
    manifest does not say: `pipeline.data.importers.csv.level_drift`)."""
    drift = (manifest.task_params or {}).get("level_drift")
    return max(drift) if drift else None


def raw_scale_known(manifest: Any) -> bool:
    """Whether the manifest holds the train rows' 10th-percentile std, the raw view's scale."""
    norm = manifest.normalization
    return norm is not None and norm.row_std_p10 is not None


def row_scale_spread(manifest: Any) -> float:
    """How many times larger the 90th percentile of the train rows' own std is than the 10th,
    for the channel where that is largest (1.0 when the manifest does not say)."""
    norm = manifest.normalization
    if norm is None or norm.row_std_p10 is None or norm.row_std_p90 is None:
        return 1.0
    return max((hi / max(lo, 1e-12) for lo, hi in zip(norm.row_std_p10, norm.row_std_p90)), default=1.0)


@dataclass(frozen=True)
class Resolved:
    """A config with its "auto" values decided, and what was decided (for the log and MLflow)."""

    cfg: RecurConfig
    decisions: dict[str, Any] = field(default_factory=dict)  # dotted key -> value chosen
    steps_per_epoch: int | None = None  # per worker, when the rows say so

    def lines(self) -> list[str]:
        """One line per decision, as `recur run` prints them."""
        return [f"{key} = {value}" for key, value in self.decisions.items()]


def auto_batch_size(rows_per_worker: int) -> int:
    """data.batch_size auto for a worker holding `rows_per_worker` train rows (see the module doc)."""
    low, high = AUTO_BATCH_RANGE
    target = rows_per_worker / AUTO_BATCH_STEPS
    size = 2 ** round(math.log2(target)) if target >= 1 else 1
    return max(1, min(max(size, low), high, max(rows_per_worker, 1)))


def steps_per_epoch(task: str, train_rows: int, num_workers: int, batch_size: int) -> int | None:
    """Optimizer steps each worker takes per epoch: ceil(its equal share of the train rows /
    batch size). None for tasks that batch their own streams (lm)."""
    from pipeline.tasks import task_class

    if not task_class(task).split_train:
        return None
    rows = train_rows // max(num_workers, 1)
    return max(math.ceil(rows / batch_size), 1)


def resolve(cfg: RecurConfig, manifest: Any) -> Resolved:
    """`cfg` with every "auto" decided and train.epochs raised to reach train.min_steps.

    Idempotent: resolving a resolved config changes nothing, so the driver and the trainer
    builder (each Tune trial's sampled config) may both call it.
    """
    data, model, train = cfg.data, cfg.model, cfg.train
    task = data.task
    decisions: dict[str, Any] = {}
    train_rows = manifest.splits["train"].rows
    workers = max(cfg.resources.num_workers, 1)
    val_rows = manifest.splits["val"].rows if "val" in manifest.splits else 0
    train_updates: dict[str, Any] = {}
    if train.train_on_val == "auto":
        train_updates["train_on_val"] = task == "classify" and 0 < val_rows < VAL_SELECT_ROWS
        if train_updates["train_on_val"]:
            decisions["train.train_on_val"] = True
    if model.naive_blend and val_rows == 0:  # before training, not after it
        raise ConfigError("model.naive_blend weighs the forecast against seasonal naive on the val "
                          "windows, and this dataset's val split has none: import the series with val "
                          "windows, or set model.naive_blend false")
    if train_updates.get("train_on_val", train.train_on_val) is True:
        train_rows += val_rows
        if train.monitor.startswith("val_"):  # a val metric no longer says how the model does
            train_updates.update(monitor="train_loss", monitor_mode="min")
            decisions["train.monitor"] = "train_loss"

    batch_size = data.batch_size
    if batch_size == "auto":
        from pipeline.tasks import task_class

        split = task_class(task).split_train
        batch_size = auto_batch_size(train_rows // workers) if split else AUTO_BATCH_RANGE[1]
        decisions["data.batch_size"] = batch_size

    model_updates: dict[str, Any] = {}
    lengths = manifest.lengths.get("train")
    mean_length = lengths.mean if lengths is not None else 0.0
    float_inputs = manifest.feature.kind == "float"
    if model.frontend == "auto":
        conv = task == "classify" and float_inputs
        model_updates["frontend"] = AUTO_FRONTEND if conv else "none"
    if model.patch == "auto":
        long_inputs = task in ("classify", "forecast") and float_inputs
        model_updates["patch"] = max(1, math.ceil(mean_length / RNN_STEPS)) if long_inputs else 1
    decisions.update({f"model.{k}": v for k, v in model_updates.items()})
    if model.branch_dropout == "auto":  # said only where it means something: beside a conv front-end
        from pipeline.models.classifier import auto_branch_dropout

        frontend = model_updates.get("frontend", model.frontend) if task == "classify" else "none"
        model_updates["branch_dropout"] = auto_branch_dropout(frontend)
        if model_updates["branch_dropout"]:
            decisions["model.branch_dropout"] = model_updates["branch_dropout"]
    elif model.branch_dropout and model_updates.get("frontend", model.frontend) == "none":
        raise ConfigError(f"model.branch_dropout {model.branch_dropout} needs a conv front-end, and "
                          f"model.frontend auto chose none here (token inputs; {AUTO_FRONTEND} for float "
                          f"inputs): set model.branch_dropout 0")
    if model.instance_norm == "auto":  # said only where it means something
        drift = level_drift(manifest) if task == "forecast" else None
        on = ((task == "forecast" and (drift is None or drift >= LEVEL_DRIFT))
              or (task == "classify" and float_inputs and row_scale_spread(manifest) >= ROW_SCALE_SPREAD))
        model_updates["instance_norm"] = on
        if on or task == "forecast":
            decisions["model.instance_norm"] = on

    if model.raw_view == "auto":  # said only where it means something: beside row normalization
        from pipeline.models.classifier import auto_raw_view

        instance_norm = model_updates.get("instance_norm", model.instance_norm)
        on = (task == "classify" and float_inputs and auto_raw_view(instance_norm)
              and raw_scale_known(manifest))
        model_updates["raw_view"] = on
        if on:
            decisions["model.raw_view"] = on
    elif model.raw_view and not (float_inputs and raw_scale_known(manifest)):
        raise ConfigError("model.raw_view views float channels on the scale of the train rows' "
                          "10th-percentile std (the manifest's normalization.row_std_p10): "
                          + ("this dataset's inputs are tokens" if not float_inputs else
                             "this dataset was imported before recur kept it; import it again")
                          + ", or set model.raw_view false")

    if train.random_crop == "auto":  # said only where it means something: under a conv front-end
        from pipeline.models.frontend import receptive_field

        frontend = model_updates.get("frontend", model.frontend)
        windows = (task == "classify" and float_inputs and frontend != "none"
                   and mean_length >= receptive_field(frontend))
        crop = CROP_SHARE if windows else 0.0
        train_updates["random_crop"] = crop
        if crop:
            decisions["train.random_crop"] = crop
    elif train.random_crop and not float_inputs:
        raise ConfigError(f"train.random_crop {train.random_crop} cuts float sequences to random windows; "
                          f"this dataset's inputs are tokens: set train.random_crop 0")

    data_updates: dict[str, Any] = {"batch_size": batch_size}
    if data.bucket_by_length == "auto":
        frontend = model_updates.get("frontend", model.frontend)
        data_updates["bucket_by_length"] = frontend == "none"
        if frontend != "none":
            decisions["data.bucket_by_length"] = False

    steps = steps_per_epoch(task, train_rows, workers, batch_size)
    epochs = train.epochs
    if train.min_steps and steps:
        needed = math.ceil(train.min_steps / steps)
        if needed > epochs:
            epochs = needed
            decisions["train.epochs"] = epochs
    if train.max_epochs is not None and train.max_epochs < epochs:  # no room for a restart
        train_updates["max_epochs"] = epochs

    if (not decisions and not model_updates and not train_updates
            and data_updates == {"batch_size": data.batch_size}):
        return Resolved(cfg, {}, steps)
    resolved = cfg.model_copy(update={
        "data": data.model_copy(update=data_updates),
        "model": model.model_copy(update=model_updates),
        "train": train.model_copy(update={**train_updates, "epochs": epochs}),
    })
    # validated again: the decided values must pass every check an explicit one would
    return Resolved(RecurConfig.model_validate(resolved.model_dump()), decisions, steps)


def budget_params(resolved: Resolved) -> dict[str, Any]:
    """What MLflow records about the budget beside the resolved config (`budget.*` params)."""
    cfg = resolved.cfg
    out: dict[str, Any] = {f"budget.auto.{k}": v for k, v in resolved.decisions.items()}
    if resolved.steps_per_epoch is not None:
        out["budget.steps_per_epoch"] = resolved.steps_per_epoch
        out["budget.max_steps"] = resolved.steps_per_epoch * (cfg.train.max_epochs or cfg.train.epochs)
    out["budget.min_steps"] = cfg.train.min_steps
    return out
