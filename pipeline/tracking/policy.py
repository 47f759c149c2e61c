"""One way of calling MLflow for a whole run: bounded retries, a timeout per request, a deadline.

MLflow's client retries a failing request 7 times with exponential backoff (about 4 minutes a
call) and waits up to 120 s for each answer. After training, a run makes a dozen calls, so a
dead server would hold a finished run for most of an hour. recur instead applies one
`CallPolicy` (the `tracking.retries`, `tracking.request_timeout_s`, `tracking.deadline_s` keys) to
every MLflow request of a command, in the driver and in the Train controller that logs epochs:

- a request is tried at most 1 + `retries` times, each try waiting at most `request_timeout_s`,
  with short backoff between tries (1, 2, 4 ... s);
- no call, tries and backoff together, outlasts `deadline_s`;
- recur's own loops (`call`) do the retrying themselves, with MLflow's retries off inside, so
  tries never multiply.

MLflow reads its `MLFLOW_HTTP_REQUEST_*` variables on every request, so `applied()` sets them for
a block and puts back what was there after.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from pipeline.environ import temporary_environ

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class CallPolicy:
    """How recur calls MLflow (see the module docstring); picklable, so Ray actors get the same."""

    retries: int = 2  # tries after the first, per call
    timeout_s: float = 10.0  # the longest wait for one answer
    deadline_s: float = 60.0  # the longest one call takes, all its tries and backoff together

    @classmethod
    def from_config(cls, tracking: Any) -> CallPolicy:
        """From a config's `tracking` section."""
        return cls(retries=tracking.retries, timeout_s=tracking.request_timeout_s,
                   deadline_s=tracking.deadline_s)

    @property
    def request_timeout_s(self) -> int:
        """Seconds one try may wait (MLflow takes whole seconds): within the deadline with every
        try timing out."""
        return max(1, math.floor(min(self.timeout_s, self.deadline_s / (self.retries + 1))))

    def mlflow_env(self, retries: int | None = None) -> dict[str, str]:
        """MLflow's variables for this policy (`retries` overrides, e.g. 0 inside `call`)."""
        return {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.retries if retries is None else retries),
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # 0, 2, 4 ... s between tries (urllib3)
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.request_timeout_s)}

    def applied(self, retries: int | None = None) -> AbstractContextManager[None]:
        """Every MLflow request of this process inside the block follows the policy; the
        variables are put back as they were after it."""
        return temporary_environ(self.mlflow_env(retries))

    def delays(self) -> tuple[float, ...]:
        """Seconds between recur's own tries: 0.5, 1, 2, ... (`retries` of them)."""
        return tuple(0.5 * 2**i for i in range(self.retries))

    def call(self, fn: Callable[[], T], what: str, *, retry_if: Callable[[Exception], bool] = lambda e: True,
             log_level: int = logging.INFO, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> T:
        """`fn()`, tried again after each of `delays()` while it raises an error `retry_if` accepts,
        but no try starts once `deadline_s` has passed since the first; MLflow's own retries are
        off inside. The last error is raised. Each retry is logged at `log_level`."""
        start = clock()
        with self.applied(retries=0):
            for delay in (*self.delays(), None):
                try:
                    return fn()
                except Exception as exc:
                    late = clock() - start + (delay or 0.0) >= self.deadline_s
                    if delay is None or late or not retry_if(exc):
                        raise
                    log.log(log_level, "%s failed (%s); trying again in %.1f s", what,
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__, delay)
                    sleep(delay)
        raise AssertionError("unreachable")


DEFAULT = CallPolicy()
