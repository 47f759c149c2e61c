"""The scheduler loop: observe, decide (`decide.decide`), act on the Ray cluster, persist.

One tick: read the state file; refresh the last job's status from the cluster; read the data
version at the data location; decide; stop the running job (policy replace) and submit the
retraining job; write the new state atomically. The loop ticks every `poll_seconds`, and on
time for the next cron fire; `--once` runs one tick.

Jobs are submitted through `pipeline.cluster` (Ray's Jobs API). The submission id is derived
from what fired (data version, cron time), so a scheduler that crashed between submitting and
saving its state finds the job on the cluster after a restart and records it instead of
submitting it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pipeline.scheduling.decide import (
    TERMINAL,
    UNKNOWN,
    Decision,
    Triggers,
    decide,
    fmt_time,
    record,
)
from pipeline.scheduling.state import StateLock, load_state, save_state
from pipeline.scheduling.watch import DataVersion

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def schedule_key(configs: list[str], overrides: list[str], entrypoint: list[str] | None = None) -> str:
    """Short stable id of one schedule: its configs (absolute paths), overrides and entrypoint."""
    ident = [[os.path.abspath(c) for c in configs], list(overrides), list(entrypoint or [])]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:8]


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "model"


def default_state_path(runs_dir: str, model_name: str, key: str) -> Path:
    return Path(runs_dir) / "schedules" / f"{slug(model_name)}-{key}.json"


def submission_id(model_name: str, key: str, decision: Decision) -> str:
    """Deterministic per trigger: `recur-<model>-<schedule>-data-<version>` for new data,
    `recur-<model>-<schedule>-cron-<UTC time>-<version>` for a cron time."""
    version = decision.data_version[:12] if decision.data_version else "nodata"
    if decision.fire_time is not None:
        return f"recur-{slug(model_name)}-{key}-cron-{decision.fire_time:%Y%m%dt%H%M%S}z-{version}"
    return f"recur-{slug(model_name)}-{key}-data-{version}"


@dataclass
class JobSpec:
    """What to submit and where."""

    entrypoint: list[str]
    model_name: str
    key: str  # schedule_key
    configs: list[str]
    address: str | None = None
    working_dir: str = "."
    env: dict[str, str] = field(default_factory=dict)  # on top of what pipeline.cluster forwards


class Scheduler:
    def __init__(self, triggers: Triggers, state_path: str | os.PathLike, job: JobSpec, watcher=None, *,
                 clock: Callable[[], datetime] = utcnow, say: Callable[[str], None] | None = None,
                 stop_timeout: float = 60.0, verbose_waits: bool = False) -> None:
        self.triggers = triggers
        self.state_path = Path(state_path)
        self.job = job
        self.watcher = watcher
        self.clock = clock
        self._say = say or (lambda line: print(line, flush=True))
        self.stop_timeout = stop_timeout
        self.verbose_waits = verbose_waits  # print every wait, not only a changed one
        self._stopping = threading.Event()

    def say(self, message: str) -> None:
        from pipeline.tracking.redact import redact_text

        self._say(f"{fmt_time(self.clock())} schedule: {redact_text(message)}")

    # ------------------------------------------------------------------------------- I/O

    def job_status(self, job_id: str) -> str:
        """The job's status on the cluster; UNKNOWN when the cluster does not know it (a new
        cluster). An unreachable cluster raises."""
        from pipeline.cluster import ClusterError, job_status

        try:
            return job_status(job_id, address=self.job.address)
        except ClusterError:
            if not self.job_exists(job_id):  # the cluster answers, and has no such job
                return UNKNOWN
            raise

    def job_exists(self, job_id: str) -> bool:
        from pipeline.cluster import list_jobs

        return any(job_id in (j.get("submission_id"), j.get("job_id"))
                   for j in list_jobs(address=self.job.address))

    def data_version(self) -> DataVersion | None:
        if self.watcher is None:
            return None
        try:
            return self.watcher.current()
        except Exception as exc:
            if self.triggers.on_new_data:
                raise
            self.say(f"warning: cannot read the data version at {self.watcher.location}: {exc}")
            return None

    def _stop(self, job_id: str) -> None:
        from pipeline.cluster import stop_job

        stop_job(job_id, address=self.job.address)
        deadline = time.monotonic() + self.stop_timeout
        status = self.job_status(job_id)
        while status not in TERMINAL and status != UNKNOWN and time.monotonic() < deadline:
            time.sleep(0.5)
            status = self.job_status(job_id)
        if status in TERMINAL:
            self.say(f"stopped job {job_id} ({status})")
        else:
            self.say(f"warning: job {job_id} is still {status} {self.stop_timeout:g} s after the stop "
                     "request; submitting the new job anyway")

    def _submit(self, decision: Decision, version: DataVersion | None) -> tuple[str, str]:
        from pipeline.cluster import submit_job

        sub_id = submission_id(self.job.model_name, self.job.key, decision)
        if self.job_exists(sub_id):  # submitted before a crash or restart: record it, do not repeat it
            existing = self.job_status(sub_id)
            self.say(f"job {sub_id} for this trigger already exists on the cluster ({existing}); "
                     "not submitting it again")
            return sub_id, existing
        metadata = {
            "recur_schedule": self.job.key,
            "recur_trigger": decision.trigger,
            "recur_model": self.job.model_name,
            "recur_configs": ",".join(self.job.configs),
            "recur_data_version": version.short if version else "",
            "recur_data_hash": version.key if version else "",
            "recur_data_kind": version.kind if version else "",
            "recur_fire_time": fmt_time(decision.fire_time) if decision.fire_time else "",
            "recur_state_file": str(self.state_path),
        }
        job_id = submit_job(self.job.entrypoint, address=self.job.address, working_dir=self.job.working_dir,
                            env=self.job.env or None, submission_id=sub_id, metadata=metadata)
        return job_id, "PENDING"

    # ------------------------------------------------------------------------------- tick

    def tick(self) -> Decision:
        state = load_state(self.state_path)
        status = None
        if state.last_job is not None:
            status = state.last_job.status
            if status not in TERMINAL and status != UNKNOWN:
                status = self.job_status(state.last_job.job_id)
        version = self.data_version()
        now = self.clock()
        decision = decide(state, self.triggers, now=now, data_version=version.key if version else None,
                          job_status=status)
        for note in decision.notes:
            self.say(note)
        job_id = job_status = None
        until = f" (in {_duration(decision.next_fire - now)})" if decision.next_fire is not None else ""
        if decision.action == "submit":
            if decision.stop_job is not None:
                self.say(decision.message)
                self._stop(decision.stop_job)
            job_id, job_status = self._submit(decision, version)
            self.say(f"{decision.message} -> job {job_id}")
        elif decision.action == "skip":
            self.say(decision.message)
        elif decision.message != state.last_decision or self.verbose_waits:
            self.say(decision.message + until)
        else:  # the same wait as on the last tick: not printed again every poll
            log.debug("%s%s", decision.message, until)
        save_state(self.state_path, record(state, decision, self.triggers, now=now, job_id=job_id,
                                           job_status=job_status))
        if decision.action != "wait" and decision.next_fire is not None:
            self.say(f"next cron fire at {fmt_time(decision.next_fire)}{until}")
        return decision

    # ------------------------------------------------------------------------------- loop

    def stop(self) -> None:
        self._stopping.set()

    def run(self, *, poll_seconds: float = 60.0, once: bool = False) -> int:
        """Tick until stopped (or once). Returns the exit status."""
        self.verbose_waits = self.verbose_waits or once
        with StateLock(self.state_path):
            while True:
                try:
                    decision = self.tick()
                except Exception as exc:
                    if once:
                        raise
                    self.say(f"error: {type(exc).__name__}: {exc} (retrying in {poll_seconds:g} s)")
                    decision = None
                if once:
                    return 0
                wait = poll_seconds
                if decision is not None and decision.next_fire is not None:
                    until_fire = (decision.next_fire - self.clock()).total_seconds()
                    wait = min(wait, max(until_fire, 0.0) + 0.01)
                if self._stopping.wait(max(wait, 0.01)):
                    self.say("stopped")
                    return 0


def _duration(delta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


def parse_entrypoint(command: str) -> list[str]:
    """`--entrypoint "python -c '...'"` as a list of arguments."""
    args = shlex.split(command)
    if not args:
        raise ValueError("--entrypoint is empty")
    return args
