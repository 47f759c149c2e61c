"""A training run's progress: the epoch and step lines, the live view of both, and what a run
that has not started yet waits for."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from pipeline.progress.display import Display, duration, number, tag

log = logging.getLogger(__name__)

def epoch_line(report: dict[str, Any], total_epochs: int, prefix: str = "") -> str:
    """One epoch's summary from rank 0's report: `[recur] epoch 3/20  train_loss ...  seq/s`."""
    vals = "".join(f"{k} {report[k]:.4f}  " for k in report if k.startswith("val_"))
    chance = "  AT CHANCE (val no better than a trivial predictor)" if report.get("at_chance") else ""
    return (f"{tag(prefix)} epoch {int(report['epoch']) + 1}/{total_epochs}  "
            f"train_loss {report['train_loss']:.4f}  {vals}"
            f"grad_norm {report['grad_norm']:.2f}  {report['sequences_per_second']:.0f} seq/s{chance}")


def step_line(update: dict[str, Any], total_epochs: int, prefix: str = "") -> str:
    """In-epoch progress from rank 0: `[recur] epoch 3/20  step 120/400 (30%)  loss 0.4312  ...`."""
    step, total = int(update["step"]), update.get("steps")
    where = f"step {step}/{total} ({100 * step // total}%)" if total and step <= total else f"step {step}"
    text = (f"{tag(prefix)} epoch {int(update['epoch']) + 1}/{total_epochs}  {where}  "
            f"loss {update['loss']:.4f}  {update['sequences_per_second']:.0f} seq/s")
    seconds = float(update.get("seconds", 0.0))
    if total and 0 < step < total and seconds > 0:
        text += f"  eta {duration(seconds / step * (total - step))}"
    return text


# ------------------------------------------------------------------------------- training


class TrainView:
    """The driver's rendering of one training run, from what the progress board hands it.

    Epoch lines always (not in quiet). The step progress is the live status; in plain mode a step
    becomes a line only when it is the run's first (so a log shows when training started), or it
    crosses a quarter of the epoch at least `plain_quarter_s` after the last line, or
    `plain_every_s` have passed: short epochs print their epoch line alone.
    """

    def __init__(self, display: Display, total_epochs: int, *, prefix: str = "",
                 plain_every_s: float = 30.0, plain_quarter_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.display, self.total_epochs, self.prefix = display, total_epochs, prefix
        self.plain_every_s, self.plain_quarter_s = plain_every_s, plain_quarter_s
        self.clock = clock
        self.started = False  # a step or an epoch arrived
        self.started_at = clock()
        self._last_line = -math.inf  # when the last plain line was written
        self._quarter: dict[tuple[Any, int], int] = {}  # (rank 0 pid, epoch) -> quarters printed

    def apply(self, taken: dict[str, Any]) -> None:
        """One poll of the board: {"first": step | None, "epochs": [reports], "step": step | None}."""
        if taken.get("first") is not None:
            self.step(taken["first"], first=True)
        for report in taken.get("epochs") or ():
            self.epoch(report)
        if taken.get("step") is not None:
            self.step(taken["step"])

    def epoch(self, report: dict[str, Any]) -> None:
        self.started = True
        self.display.clear()  # the epoch's step progress is over
        self.display.line(epoch_line(report, self.total_epochs, self.prefix))
        self._last_line = self.clock()

    def step(self, update: dict[str, Any], *, first: bool = False) -> None:
        self.started = True
        text = step_line(update, self.total_epochs, self.prefix)
        if self.display.mode == "live":
            self.display.status(text)
            return
        now, total = self.clock(), update.get("steps")
        key = (update.get("pid"), int(update["epoch"]))
        quarter = min(4 * int(update["step"]) // total, 3) if total else 0
        crossed = quarter > self._quarter.get(key, 0) and now - self._last_line >= self.plain_quarter_s
        if first or crossed or now - self._last_line >= self.plain_every_s:
            self._quarter[key] = max(quarter, self._quarter.get(key, 0))
            self._last_line = now
            self.display.line(text)

    def idle(self, what: str) -> None:
        """Live status while nothing has arrived yet: what it is waiting for, and for how long."""
        if not self.started:
            self.display.status(f"{tag(self.prefix)} {what}... {duration(self.clock() - self.started_at)}")

    def waiting(self, text: str, *, pending: bool) -> None:
        """A long wait, said once: a line, or in quiet mode a warning when resources are missing."""
        if self.display.quiet:
            if pending:
                log.warning(text)
            return
        self.display.line(f"{tag(self.prefix)} {text}")

    def close(self) -> None:
        self.display.clear()


def wait_message(*, num_workers: int, per_worker: dict[str, float], available: dict[str, float],
                 total: dict[str, float], pending: bool, start_timeout_s: float) -> str:
    """What training waits for when no worker has reported yet: the workers' request against the
    cluster's free and total resources. `pending`: Ray has not placed the workers yet."""
    request = " + ".join(f"{number(float(v))} {k}" for k, v in per_worker.items())
    have = ", ".join(f"{number(float(available.get(k, 0.0)))} of {number(float(total.get(k, 0.0)))} {k}"
                     for k in per_worker)
    if pending:
        return (f"waiting for resources: {num_workers} Train worker(s) x {request} requested, the "
                f"cluster has {have} free; an autoscaling cluster may be adding nodes (training gives "
                f"up after resources.start_timeout_s = {number(start_timeout_s)} s)")
    return (f"waiting for the first report of {num_workers} Train worker(s) ({request} each, placed; "
            f"{have} free): the workers are starting and reading their data")


# ---------------------------------------------------------------------------------- tuning


# How a trial ended, from what Tune did to it (pipeline.tuning.study_progress.trial_status): it trained
# every epoch or stopped early by itself; its scheduler (ASHA, HyperBand) stopped it; it raised;
# the study's time budget or a Ctrl-C ended it while it ran; it never ran.
