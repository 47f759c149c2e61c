"""The epoch loop in plain PyTorch: no Ray, no MLflow. Runs on tensors from any iterable.

A batch is a dict with `x` (padded inputs: (B, T, C) float32 or (B, T) token ids), `lengths`
(B,) int64 valid steps and the task's targets. What differs between tasks (forward pass, loss,
metrics, carried state) comes from a `Task`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.tasks import MetricState, Task
from pipeline.training.optimizer import learning_rate, set_learning_rate

Batch = Mapping[str, torch.Tensor]


@dataclass
class EpochStats:
    loss: float  # mean training loss per unit (sequence, or token for token losses; nats)
    num_units: int  # what the loss averages over (Task.loss_weight)
    num_sequences: int
    num_steps: int
    grad_norm: float  # mean pre-clipping global gradient norm over steps
    grad_norm_max: float
    seconds: float
    data_wait_seconds: float = 0.0  # of `seconds`, spent waiting for the next batch
    nonfinite_steps: int = 0  # steps whose gradient norm was NaN or inf (fp16: skipped by the scaler)

    @property
    def sequences_per_second(self) -> float:
        return self.num_sequences / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Precision:
    """How a training step computes: `amp_dtype` None is fp32; fp16 also scales the loss."""

    name: str  # fp32 | fp16 | bf16
    amp_dtype: torch.dtype | None = None

    @classmethod
    def resolve(cls, setting: str, device: torch.device | str) -> Precision:
        """train.precision for a device: auto is fp16 on CUDA and fp32 elsewhere."""
        cuda = torch.device(device).type == "cuda"
        name = ("fp16" if cuda else "fp32") if setting == "auto" else setting
        if name != "fp32" and not cuda:
            # oneDNN has no fp16 LSTM kernel and bf16 ones only on some CPUs ("could not create a
            # primitive descriptor for the LSTM forward propagation primitive")
            raise ValueError(f"train.precision={name} needs a GPU; on the CPU use fp32 (or auto)")
        return cls(name, {"fp16": torch.float16, "bf16": torch.bfloat16}.get(name))

    def scaler(self, device: torch.device | str) -> torch.amp.GradScaler | None:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
        return torch.amp.GradScaler(torch.device(device).type) if self.name == "fp16" else None


FP32 = Precision("fp32")


def to_device(batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    # lengths stay on the CPU: pack_padded_sequence wants them there.
    return {k: (v if k == "lengths" else v.to(device, non_blocking=True)) for k, v in batch.items()}


def train_step(model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer, task: Task, *,
               grad_clip: float = 0.0, grad_clip_mode: str = "norm",
               scaler: torch.amp.GradScaler | None = None,
               precision: Precision = FP32) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step. Returns (mean loss, pre-clipping global gradient norm) as tensors on
    the model's device: reading them would wait for the GPU, so the epoch reads its sums once."""
    optimizer.zero_grad(set_to_none=True)
    device_type = batch["x"].device.type
    with torch.autocast(device_type=device_type, dtype=precision.amp_dtype,
                        enabled=precision.amp_dtype is not None):
        outputs = task.forward(model, batch, train=True)
        loss = task.loss(outputs, batch)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    # The norm is always measured (and reported); clip it at grad_clip, or clamp each element at
    # +-grad_clip in "value" mode; grad_clip == 0 disables clipping.
    by_norm = grad_clip > 0 and grad_clip_mode == "norm"
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if by_norm else math.inf)
    if grad_clip > 0 and grad_clip_mode == "value":
        torch.nn.utils.clip_grad_value_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.detach().float(), grad_norm.detach().float()


def train_epoch(model: nn.Module, batches: Iterable[Batch], optimizer: torch.optim.Optimizer, task: Task,
                *, device: torch.device | str = "cpu", grad_clip: float = 0.0,
                grad_clip_mode: str = "norm", scaler: torch.amp.GradScaler | None = None,
                precision: Precision | None = None, publisher: Any = None) -> EpochStats:
    """Train over every batch once.

    Loss and gradient-norm sums stay on the device and are read once, after the last step, so a
    GPU never waits for the host between steps. A step whose gradients overflowed (fp16: the
    scaler skips it) has an infinite norm and is left out of the norm statistics.

    `publisher` (rank 0's `pipeline.training.step_board.StepPublisher`, or None): after a step, when
    its `due()` says so (at most about once a second), it gets the running mean loss, which reads
    the loss sum once.
    """
    device = torch.device(device)
    if precision is None:  # a scaler alone means fp16, as before train.precision existed
        precision = Precision("fp16", torch.float16) if scaler is not None else FP32
    model.train()
    task.start_epoch(train=True)
    start = time.perf_counter()
    num_units, num_sequences, num_steps = 0, 0, 0
    # loss sum, norm sum, finite-norm steps, norm max
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    waited = [0.0]
    for batch in _timed(batches, waited):
        units = task.loss_weight(batch)  # before the copy: counted on the host, no device sync
        batch = to_device(batch, device)
        loss, grad_norm = train_step(model, batch, optimizer, task, grad_clip=grad_clip,
                                     grad_clip_mode=grad_clip_mode, scaler=scaler, precision=precision)
        finite = torch.isfinite(grad_norm)
        norm = torch.where(finite, grad_norm, 0.0).double()
        sums += torch.stack([loss.double() * units, norm, finite.double(), torch.zeros_like(norm)])
        sums[3] = torch.maximum(sums[3], norm)
        num_units += units
        num_sequences += int(batch["x"].shape[0])
        num_steps += 1
        if publisher is not None and publisher.due():
            publisher.publish(step=num_steps, loss=sums[0].item() / max(num_units, 1),
                             sequences=num_sequences, seconds=time.perf_counter() - start)
    loss_sum, norm_sum, finite_steps, norm_max = sums.tolist()
    return EpochStats(
        nonfinite_steps=num_steps - int(finite_steps),
        loss=loss_sum / max(num_units, 1),
        num_units=num_units,
        num_sequences=num_sequences,
        num_steps=num_steps,
        grad_norm=norm_sum / max(finite_steps, 1),
        grad_norm_max=norm_max,
        seconds=time.perf_counter() - start,
        data_wait_seconds=waited[0],
    )


def _timed(batches: Iterable[Batch], waited: list[float]) -> Iterator[Batch]:
    """`batches`, adding the seconds spent waiting for each one to waited[0]."""
    iterator = iter(batches)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        waited[0] += time.perf_counter() - start
        yield batch


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches: Iterable[Batch], task: Task, *,
             device: torch.device | str = "cpu") -> MetricState:
    """Accumulate the task's metric sums over every batch (model in eval mode)."""
    device = torch.device(device)
    model.eval()
    task.start_epoch(train=False)
    state = task.new_state(device)
    for batch in batches:
        batch = to_device(batch, device)
        task.update(state, task.forward(model, batch, train=False), batch)
    return state


# ---------------------------------------------------------------------------------------- fit


@dataclass
class FitState:
    """What survives a restart besides weights: where the run is and its early-stopping state."""

    next_epoch: int = 0
    best_value: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0  # epochs since the monitored metric last improved
    plateau_decays: int = 0  # learning-rate decays made by the plateau schedule
    steps_done: int = 0  # optimizer steps taken by this worker (equal on every rank)
    chance_epochs: int = 0  # consecutive epochs whose val metrics were those of a trivial predictor
    cycle_start: int = 0  # first epoch of the schedule's current cycle (a restart's, FitPlan.max_epochs)
    first_loss: float | None = None  # the first epoch's training loss: what "fit" is measured against
    cycle_loss: float | None = None  # the lowest training loss of the current cycle
    ended_cycle_loss: float | None = None  # the last restarted cycle's lowest training loss

    def improved(self, value: float, mode: str) -> bool:
        if self.best_value is None:
            return True
        return value > self.best_value if mode == "max" else value < self.best_value


@dataclass(frozen=True)
class FitPlan:
    """The budget and the rules of one run (from `train.*` of a resolved config)."""

    epochs: int  # planned epochs (the schedule's length); more only while min_steps is not reached
    lr: float
    schedule: Any  # pipeline.config.LrScheduleConfig
    monitor: str  # a key of the epoch's metrics
    monitor_mode: str  # max | min
    patience: int = 0  # epochs without improvement before stopping; 0: never stop early
    min_steps: int = 0  # optimizer steps before early stopping may end the run
    chance_epochs: int = 3  # consecutive epochs at chance before the run says so
    max_epochs: int | None = None  # unfit runs: restart the schedule for another `epochs` up to this
    loss_floor: float = 0.0  # the lowest training loss the task's loss can reach (`Task.loss_floor`)

    @classmethod
    def from_config(cls, train: Any, *, loss_floor: float = 0.0) -> FitPlan:
        return cls(epochs=train.epochs, lr=train.lr, schedule=train.schedule, monitor=train.monitor,
                   monitor_mode=train.monitor_mode, patience=train.early_stopping_patience,
                   min_steps=train.min_steps, max_epochs=train.max_epochs, loss_floor=loss_floor)

    def wants_epoch(self, state: FitState) -> bool:
        """Another epoch: the planned ones (a restarted cycle's included), then more while fewer
        than min_steps steps were taken (a split smaller than planned; the schedule holds its final
        learning rate there)."""
        end = state.cycle_start + self.epochs
        if state.next_epoch < end:
            return True
        return state.steps_done < self.min_steps and state.next_epoch < end + MAX_EXTRA_EPOCHS

    def restarts(self, state: FitState) -> bool:
        """Whether the cycle that just ended gets another (`state` booked up to its last epoch).

        With `max_epochs`, a run whose schedule ran its course while it was still learning and
        short of fitting its training rows restarts the schedule (warm-up and all, like SGDR's warm
        restarts) for `epochs` more, as long as that cycle ends by `max_epochs`:
        - still learning: the monitored metric reached its best of the run within the last
          `patience` epochs (a tenth of the cycle without early stopping);
        - short of fit: the cycle's lowest training loss is above `FIT_LOSS_FRACTION` of the first
          epoch's (at chance for a classifier: ln(classes)), both counted from `loss_floor`, the
          least the loss can be (label smoothing's entropy: its cross-entropy never nears 0).
        A run that fits, or whose loss stopped falling, ends as planned: the rule adds epochs only
        where the planned ones were too few (docs/measured-results.md: PigCVP)."""
        if self.max_epochs is None or state.next_epoch != state.cycle_start + self.epochs:
            return False
        if state.next_epoch + self.epochs > self.max_epochs:
            return False
        window = self.patience if self.patience > 0 else max(self.epochs // 10, 1)
        if state.bad_epochs >= window or state.first_loss is None or state.cycle_loss is None:
            return False
        floor = self.loss_floor
        return state.cycle_loss - floor > FIT_LOSS_FRACTION * (state.first_loss - floor)


MAX_EXTRA_EPOCHS = 10_000  # a bound on epochs added for min_steps (an epoch of no steps never ends it)
FIT_LOSS_FRACTION = 0.05  # training loss, as a fraction of the first epoch's, below which a run is fit


def end_epoch(plan: FitPlan, state: FitState, epoch: int, metrics: dict[str, float], *,
              steps: int, at_chance: bool = False) -> bool:
    """Book an epoch's outcome in `state`; returns whether to stop now (early stopping).

    The monitored metric's best value and epoch, the plateau schedule's decays, the steps taken,
    and the count of consecutive epochs at chance. Early stopping ends the run after `patience`
    epochs without improvement, but never before `min_steps` steps. An epoch whose validation is
    at chance (`at_chance`: what a trivial predictor scores) is not an epoch without improvement:
    patience (and the plateau schedule's) starts counting once the model has left chance. A tagger
    tags every word `O` for its first epochs with entity F1 0; counting them, patience 6 ended such
    a run at F1 0 (docs/tasks.md). A run that never leaves chance trains its planned epochs.
    Early stopping acts in the first cycle only: a restarted one (`FitPlan.restarts`) runs whole.
    """
    state.steps_done += steps
    value = metrics[plan.monitor]
    if state.improved(value, plan.monitor_mode):
        state.best_value, state.best_epoch, state.bad_epochs = value, epoch, 0
    elif not at_chance:
        state.bad_epochs += 1
        if plan.schedule.name == "plateau" and state.bad_epochs % plan.schedule.patience == 0:
            state.plateau_decays += 1
    state.chance_epochs = state.chance_epochs + 1 if at_chance else 0
    state.next_epoch = epoch + 1
    loss = metrics.get("train_loss")
    if loss is not None and math.isfinite(loss):
        state.first_loss = loss if state.first_loss is None else state.first_loss
        state.cycle_loss = loss if state.cycle_loss is None else min(state.cycle_loss, loss)
    if plan.restarts(state):
        state.ended_cycle_loss = state.cycle_loss
        state.cycle_start, state.cycle_loss, state.plateau_decays = state.next_epoch, None, 0
        return False
    # A restarted cycle runs to its end, where `restarts` decides again: its first epochs, at the
    # restarted learning rate, are worse than the last cycle's end, and early stopping counted from
    # its start stopped it in its warm-up's wake (PigCVP: 23 epochs into its third cycle).
    return (plan.patience > 0 and state.bad_epochs >= plan.patience and state.steps_done >= plan.min_steps
            and state.cycle_start == 0)


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, task: Task, plan: FitPlan, *,
        train_batches: Any, validate: Any, report: Any, state: FitState | None = None,
        device: torch.device | str = "cpu", grad_clip: float = 0.0, grad_clip_mode: str = "norm",
        scaler: torch.amp.GradScaler | None = None, precision: Precision | None = None,
        publisher: Any = None, epoch_metrics: Any = None, agree: Any = None) -> FitState:
    """Train epoch after epoch under `plan`: learning rate per epoch (warm-up, schedule, plateau),
    at least `plan.min_steps` steps, early stopping, a note when validation stays at chance.

    Plain PyTorch; what differs between one process and a Ray Train worker comes in as callables:
    - `train_batches(epoch)`: the epoch's training batches;
    - `validate(model)`: {"val_<metric>": value} for the epoch (and "at_chance": bool, when the
      task can tell that the val metrics are those of a trivial predictor);
    - `report(epoch, metrics, state, stop)`: after each epoch (a worker reports and checkpoints);
    - `epoch_metrics(stats)`: the epoch's training metrics from its `EpochStats` (DDP: combined
      over ranks); default: this process's;
    - `agree(stop)`: the stop decision every process takes (DDP: rank 0's, so that no rank leaves
      the loop alone); default: this process's own.
    `publisher` is handed to `train_epoch`. Returns the final state; `state` continues a run.

    An epoch whose loss, gradients, weights or monitored metric are NaN or inf ends the run: it
    is reported once more with `diverged` (the reason) and stop, and `TrainingDiverged` names
    the epoch and what to change.
    """
    state = state if state is not None else FitState()
    if epoch_metrics is None:
        epoch_metrics = _local_epoch_metrics
    while plan.wants_epoch(state):
        epoch = state.next_epoch
        set_learning_rate(optimizer, learning_rate(plan.lr, epoch - state.cycle_start,
                                                   total_epochs=plan.epochs, schedule=plan.schedule,
                                                   plateau_decays=state.plateau_decays))
        stats = train_epoch(model, train_batches(epoch), optimizer, task, device=device,
                            grad_clip=grad_clip, grad_clip_mode=grad_clip_mode, scaler=scaler,
                            precision=precision, publisher=publisher)
        metrics = dict(epoch_metrics(stats))
        val = dict(validate(model))
        at_chance = bool(val.pop("at_chance", False))
        metrics.update(val)
        metrics.update(epoch=epoch, lr=optimizer.param_groups[0]["lr"])
        why = non_finite(model, metrics, stats, monitor=plan.monitor, scaled=scaler is not None)
        if (agree(why is not None) if agree is not None else why is not None):
            # Told once, without a checkpoint of these weights; no rank goes on alone (DDP: every
            # rank sees the same combined loss and gradients, and takes rank 0's word)
            why = why or "another rank saw NaN or inf"
            metrics.update(steps_done=state.steps_done + stats.num_steps, early_stopped=1, at_chance=0,
                           diverged=why)
            report(epoch, metrics, state, True)
            raise TrainingDiverged(epoch, why, lr=plan.lr, grad_clip=grad_clip)
        stop = end_epoch(plan, state, epoch, metrics, steps=stats.num_steps, at_chance=at_chance)
        if agree is not None:
            stop = agree(stop)
        metrics.update(steps_done=state.steps_done, early_stopped=int(stop),
                       at_chance=int(state.chance_epochs >= plan.chance_epochs),
                       restarted=int(state.cycle_start == state.next_epoch))
        report(epoch, metrics, state, stop)
        if stop:
            break
    return state


class TrainingDiverged(ArithmeticError):
    """An epoch ended with NaN or inf in its loss, gradients, weights or monitored metric: the
    model is garbage from here on, and more epochs cannot mend it."""

    def __init__(self, epoch: int, why: str, *, lr: float, grad_clip: float) -> None:
        self.epoch, self.why = epoch, why
        clip = f"train.grad_clip (now {grad_clip:g})" if grad_clip > 0 else "train.grad_clip (now off)"
        super().__init__(
            f"training diverged in epoch {epoch + 1}: {why}. Lower train.lr (now {lr:g}), keep "
            f"{clip} on, or check the data for extreme values (recur data validate)")

    def __reduce__(self):  # crosses process boundaries (Ray) with its message
        return (_diverged, (self.epoch, self.why, str(self)))


def _diverged(epoch: int, why: str, message: str) -> TrainingDiverged:
    exc = TrainingDiverged.__new__(TrainingDiverged)
    ArithmeticError.__init__(exc, message)
    exc.epoch, exc.why = epoch, why
    return exc


def non_finite(model: nn.Module, metrics: Mapping[str, Any], stats: EpochStats, *, monitor: str,
               scaled: bool = False) -> str | None:
    """Why an epoch's outcome is not finite (None when it is): its training loss, the monitored
    metric, a gradient (unless a gradient scaler skipped those steps, as fp16 training does), or
    a weight. One device sync for the weights."""
    loss = float(metrics.get("train_loss", stats.loss))
    if not math.isfinite(loss):
        return f"train_loss is {loss}"
    if stats.nonfinite_steps and not scaled:
        return f"gradients were NaN or inf in {stats.nonfinite_steps} of {stats.num_steps} step(s)"
    value = metrics.get(monitor)
    if isinstance(value, (int, float)) and not math.isfinite(value):
        return f"{monitor} is {value}"
    module = getattr(model, "module", model)  # DDP
    flags = [torch.isfinite(p).all() for p in module.parameters()]
    if flags and not bool(torch.stack(flags).all()):
        bad = next(name for name, p in module.named_parameters() if not torch.isfinite(p).all())
        return f"weights hold NaN or inf ({bad})"
    return None


def _local_epoch_metrics(stats: EpochStats) -> dict[str, float]:
    return {"train_loss": stats.loss, "grad_norm": stats.grad_norm, "grad_norm_max": stats.grad_norm_max,
            "epoch_seconds": stats.seconds, "sequences_per_second": stats.sequences_per_second,
            "train_sequences": stats.num_sequences, "train_steps": stats.num_steps}
