"""Long-lived child processes that recur starts stop when recur stops.

`recur ui` runs `mlflow server`, which starts uvicorn and a job runner with its own consumers
(about ten processes). Killing recur alone used to leave all of them serving the port. Here the
child gets a process group of its own, and SIGTERM, SIGINT or SIGHUP to recur stops that whole
group (SIGTERM, then SIGKILL after a grace period) before recur exits. The local Ray that
`recur run` starts is Ray's to stop: `ray.init` turns SIGTERM into an exit whose `ray.shutdown`
ends the processes it started, and those are started to die with their parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def run_until_stopped(command: Sequence[str], *, env: Mapping[str, str] | None = None,
                      grace_s: float = 5.0) -> int:
    """Run `command` in its own process group until it exits or recur gets a stop signal; either
    way the whole group is gone on return. Returns the child's exit status, 0 after Ctrl-C, and
    128 + the signal number after SIGTERM or SIGHUP (the shell's convention).

    Call from the main thread (signal handlers live there); the previous handlers are restored.
    """
    def stop(signum: int, frame: object) -> None:
        raise _Stopped(signum)

    child = subprocess.Popen(list(command), env=None if env is None else dict(env), start_new_session=True)
    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        return child.wait()
    except _Stopped as stopped:
        return 0 if stopped.signum == signal.SIGINT else 128 + stopped.signum
    finally:
        # the group outlives its leader (MLflow's workers): always stopped, by its id
        stop_group(child, grace_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_group(child: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM to `child`'s process group, SIGKILL to what is left after `grace_s` seconds."""
    group = child.pid  # start_new_session: the child leads a group of its own id
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _group_alive(group):
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=grace_s)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
