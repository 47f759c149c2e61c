"""In-epoch progress across Ray: rank 0 publishes, a small actor holds, the driver renders.

- `StepBoard` is an actor the driver starts (no CPU) and hands to the workers (in the train
  loop config) and to `EpochLogger` (in the Train controller). It keeps rank 0's latest step and
  the epoch reports not yet shown.
- `StepPublisher` runs on rank 0: `train_epoch` asks it `due()` after each step (a clock read),
  and at most once per `interval_s` it reads the running loss (one `.item()`) and sends it,
  fire and forget; a board that is gone is dropped, never waited for.
- `TrainWatch` runs in the driver beside `trainer.fit()`: it polls the board and renders through
  `pipeline.progress.TrainView`, and when no worker has reported `wait_after_s` after the start
  it says once what training waits for (`describe_wait`).

Epochs that run again after a worker-group restart are shown again (a restarted rank 0 has a new
pid); a step update that arrives after its epoch's report is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline.progress import TrainView, wait_message

log = logging.getLogger(__name__)


class StepBoard:
    """The actor's class (made remote by `start_board`). Plain Python: tested without Ray."""

    def __init__(self) -> None:
        self._first: dict[str, Any] | None = None  # the run's first step, kept until taken
        self._seen = False
        self._step: dict[str, Any] | None = None
        self._epochs: list[dict[str, Any]] = []
        self._done: dict[Any, int] = {}  # rank 0 pid -> last epoch reported

    def step(self, update: dict[str, Any]) -> None:
        if int(update["epoch"]) <= self._done.get(update.get("pid"), -1):
            return  # sent before its epoch's report arrived
        if not self._seen:
            self._seen, self._first = True, update
            return
        self._step = update

    def epoch(self, report: dict[str, Any]) -> None:
        pid, epoch = report.get("pid"), int(report["epoch"])
        self._done[pid] = max(self._done.get(pid, -1), epoch)
        self._seen = True
        self._epochs.append(report)
        if self._step is not None and self._step.get("pid") == pid and int(self._step["epoch"]) <= epoch:
            self._step = None

    def take(self) -> dict[str, Any]:
        """What arrived since the last take: the first step, epoch reports, the latest step."""
        out = {"first": self._first, "epochs": self._epochs, "step": self._step}
        self._first, self._epochs, self._step = None, [], None
        return out


def start_board() -> Any:
    """A StepBoard actor (no CPU: it fits on a full cluster), or None if Ray cannot start one."""
    import ray

    try:
        return ray.remote(StepBoard).options(num_cpus=0, max_restarts=0).remote()
    except Exception as exc:  # progress is a convenience: training goes on without it
        log.debug("no progress board: %s", exc)
        return None


class StepPublisher:
    """Rank 0's side of the board; `train_epoch` calls `due()` each step and `publish` when due."""

    def __init__(self, board: Any, *, world_size: int = 1, interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.board, self.world_size, self.interval_s, self.clock = board, world_size, interval_s, clock
        self.epoch, self.steps = 0, None
        self._next = -float("inf")  # the run's first step is sent at once
        self.pid = os.getpid()

    def start_epoch(self, epoch: int, steps: int | None) -> None:
        """`steps`: the epoch's expected step count (None when it is not known yet)."""
        self.epoch, self.steps = epoch, steps

    def due(self) -> bool:
        return self.board is not None and self.clock() >= self._next

    def publish(self, *, step: int, loss: float, sequences: int, seconds: float) -> None:
        """Rank 0's running numbers; sequences/s counts every rank (equal shards)."""
        self._next = self.clock() + self.interval_s
        update = {"epoch": self.epoch, "step": step, "steps": self.steps, "loss": loss,
                  "sequences_per_second": sequences * self.world_size / seconds if seconds > 0 else 0.0,
                  "seconds": seconds, "pid": self.pid}
        try:
            self.board.step.remote(update)  # fire and forget
        except Exception as exc:
            log.debug("progress board gone (%s); no more step progress", exc)
            self.board = None


class TrainWatch:
    """Beside `trainer.fit()` in the driver (a `with` block): polls the board every `poll_s`,
    renders, and says once what training waits for when nothing arrived within `wait_after_s`."""

    def __init__(self, board: Any, view: TrainView, *, poll_s: float = 1.0, wait_after_s: float = 10.0,
                 describe_wait: Callable[[], tuple[str, bool]] | None = None,
                 starting: str = "starting the Train workers") -> None:
        self.board, self.view, self.poll_s, self.wait_after_s = board, view, poll_s, wait_after_s
        self.describe_wait, self.starting = describe_wait, starting
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._waited = False

    def __enter__(self) -> TrainWatch:
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="recur-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._poll()  # the last epochs: the controller put them on the board before fit() returned
        self.view.close()
        if self.board is not None:
            import ray

            with contextlib.suppress(Exception):  # already gone
                ray.kill(self.board)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._poll()
            if self.view.started:
                continue
            self.view.idle(self.starting)
            if not self._waited and time.monotonic() - self._start >= self.wait_after_s:
                self._waited = True
                if self.describe_wait is not None:
                    try:
                        text, pending = self.describe_wait()
                    except Exception as exc:
                        log.debug("could not describe the wait: %s", exc)
                        continue
                    self.view.waiting(text, pending=pending)

    def _poll(self) -> None:
        if self.board is None:
            return
        import ray

        try:
            taken = ray.get(self.board.take.remote(), timeout=10)
        except Exception as exc:
            log.debug("progress board did not answer: %s", exc)
            return
        self.view.apply(taken)


def describe_wait(cfg: Any) -> tuple[str, bool]:
    """The wait line for `cfg`'s workers from Ray's resources now; pending when a placement group
    (the workers' request) is not placed yet."""
    import ray
    from ray.util import placement_group_table

    from pipeline.training.resources import worker_resources

    groups = placement_group_table().values()
    pending = any(g.get("state") in ("PENDING", "RESCHEDULING") for g in groups)
    r = cfg.resources
    text = wait_message(num_workers=r.num_workers, per_worker=worker_resources(cfg),
                        available=ray.available_resources(), total=ray.cluster_resources(),
                        pending=pending, start_timeout_s=r.start_timeout_s)
    return text, pending
