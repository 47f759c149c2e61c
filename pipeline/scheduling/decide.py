"""What the scheduler does on one tick: a pure function of its state and what it observed.

`decide(state, triggers, now=..., data_version=..., job_status=...)` answers, with no clock,
filesystem or Ray: submit a job (and stop the running one first, policy replace), skip a trigger
because the previous job is still PENDING/RUNNING (policy forbid), or wait. `record(...)` then
gives the state to persist after the loop has carried the decision out.

Rules (docs/scheduled-retraining.md says the same):

* cron: the first tick of a schedule (or after its expression or time zone changed) only sets the
  next fire time; a tick at or after it fires. Fire times missed while the scheduler was down
  collapse into ONE run, for the latest missed time; the next fire time is the first one after
  now. A cron fire that is skipped (forbid) is consumed, like a Kubernetes CronJob with
  concurrencyPolicy Forbid.
* new data: fires when the data version differs from the last one submitted (the idempotency
  key; any submission records the version it trained on, so a cron fire covers it too). A data
  trigger skipped because of an overlap is NOT consumed: it fires on the first tick after the
  running job ends. No complete dataset (no manifest yet, an import half-way) never fires.
* both due on one tick: one job, trigger "cron+new-data".
* replace: the running job is stopped, then the new one is submitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

ACTIVE = frozenset({"PENDING", "RUNNING"})
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
UNKNOWN = "UNKNOWN"  # the cluster no longer knows the job (restarted cluster): not running
POLICIES = ("forbid", "replace")
MISSED_COUNT_CAP = 1000  # missed fire times counted for the log line, at most

Action = Literal["submit", "skip", "wait"]


class ScheduleError(ValueError):
    """An invalid cron expression, time zone or policy."""


@dataclass(frozen=True)
class Triggers:
    """What the scheduler reacts to (from the command line)."""

    cron: str | None = None
    on_new_data: bool = False
    policy: str = "forbid"
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if self.cron is None and not self.on_new_data:
            raise ScheduleError("give --cron EXPR, --on-new-data, or both")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise ScheduleError(f"invalid cron expression {self.cron!r} (5 fields: minute hour "
                                "day-of-month month day-of-week, e.g. '0 3 * * *')")
        if self.policy not in POLICIES:
            raise ScheduleError(f"policy must be one of {list(POLICIES)}, got {self.policy!r}")
        zone(self.timezone)


@dataclass(frozen=True)
class JobRecord:
    """The last job this schedule submitted."""

    job_id: str
    status: str
    trigger: str  # "cron", "new-data" or "cron+new-data"
    submitted_at: datetime
    data_version: str | None = None
    fire_time: datetime | None = None


@dataclass(frozen=True)
class State:
    """Everything persisted between ticks and restarts (see `pipeline.scheduling.state`)."""

    cron: str | None = None  # the expression (and time zone) next_fire was computed from
    timezone: str | None = None
    next_fire: datetime | None = None
    last_fire: datetime | None = None  # the latest cron time handled (fired or skipped)
    last_data_version: str | None = None  # the data version of the last submission
    last_job: JobRecord | None = None
    last_tick: datetime | None = None
    last_decision: str | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    message: str  # one log line saying what was decided and why
    triggers: tuple[str, ...] = ()  # what fired: "cron", "new-data"
    fire_time: datetime | None = None  # the cron time fired or skipped
    missed: int = 0  # further cron times that passed unrun (collapsed into fire_time)
    next_fire: datetime | None = None  # to persist (None: no cron)
    data_version: str | None = None  # observed this tick
    stop_job: str | None = None  # replace: stop this job before submitting
    job_status: str | None = None  # the last job's status observed this tick
    notes: tuple[str, ...] = field(default=())  # extra log lines (schedule set, missed fires)

    @property
    def trigger(self) -> str:
        return "+".join(self.triggers)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r} (an IANA name: UTC, Europe/Berlin, ...)") from None


def next_fire_after(expr: str, tz: str, after: datetime) -> datetime:
    """The first fire time strictly after `after`, in UTC."""
    local = after.astimezone(zone(tz))
    return croniter(expr, local).get_next(datetime).astimezone(timezone.utc)


def latest_fire_at_or_before(expr: str, tz: str, when: datetime) -> datetime:
    """The last fire time at or before `when`, in UTC."""
    nxt = croniter(expr, when.astimezone(zone(tz))).get_next(datetime)  # strictly after `when`
    return croniter(expr, nxt).get_prev(datetime).astimezone(timezone.utc)  # strictly before nxt


def count_fires(expr: str, tz: str, start: datetime, end: datetime, cap: int = MISSED_COUNT_CAP) -> int:
    """How many fire times lie in [start, end], counting at most `cap`."""
    it = croniter(expr, (start - timedelta(microseconds=1)).astimezone(zone(tz)))
    n = 0
    while n < cap and it.get_next(datetime) <= end:
        n += 1
    return n


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t}: give times with a time zone")
    return t.astimezone(timezone.utc)


def fmt_time(t: datetime | None) -> str:
    return "-" if t is None else _utc(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def decide(state: State, triggers: Triggers, *, now: datetime, data_version: str | None = None,
           job_status: str | None = None) -> Decision:
    """One tick's decision.

    `data_version`: the version now at the data location (None: no complete dataset there, or
    not watched). `job_status`: the current status of `state.last_job` (None: no last job;
    UNKNOWN: the cluster does not know it).
    """
    now = _utc(now)
    notes: list[str] = []
    fired: list[str] = []
    waiting: list[str] = []

    # ---- cron
    fire_time = None
    missed = 0
    next_fire = None
    cron_wait = None
    if triggers.cron is not None:
        expr, tz = triggers.cron, triggers.timezone
        if state.next_fire is None or state.cron != expr or state.timezone != tz:
            next_fire = next_fire_after(expr, tz, now)
            what = "set" if state.cron is None else f"changed from {state.cron!r} ({state.timezone})"
            notes.append(f"cron schedule {expr!r} ({tz}) {what}; first fire at {fmt_time(next_fire)}")
            cron_wait = f"next cron fire at {fmt_time(next_fire)}"
        elif now >= _utc(state.next_fire):
            fire_time = latest_fire_at_or_before(expr, tz, now)
            missed = count_fires(expr, tz, _utc(state.next_fire), fire_time) - 1
            next_fire = next_fire_after(expr, tz, now)
            fired.append("cron")
            if missed > 0:
                plus = "+" if missed + 1 >= MISSED_COUNT_CAP else ""
                notes.append(f"{missed}{plus} earlier cron time(s) from {fmt_time(state.next_fire)} passed "
                             f"while the scheduler was not running: one run, for {fmt_time(fire_time)}")
        else:
            next_fire = _utc(state.next_fire)
            cron_wait = f"next cron fire at {fmt_time(next_fire)}"

    # ---- new data
    if triggers.on_new_data:
        if data_version is None:
            waiting.append("no complete dataset at the data location (nothing imported yet, or an "
                           "import in progress)")
        elif data_version != state.last_data_version:
            fired.append("new-data")
        else:
            job = state.last_job
            by = (f" (job {job.job_id}: {job_status or job.status})"
                  if job is not None and job.data_version == data_version else "")
            waiting.append(f"no new data: version {data_version[:12]} already submitted{by}")

    base = dict(next_fire=next_fire, data_version=data_version, job_status=job_status, notes=tuple(notes))
    if not fired:
        return Decision("wait", "; ".join([*waiting, *([cron_wait] if cron_wait else [])]), **base)

    what = _describe(fired, fire_time, data_version)
    job = state.last_job
    fire = dict(triggers=tuple(fired), fire_time=fire_time, missed=missed, **base)
    if job is not None and job_status in ACTIVE:
        if triggers.policy == "forbid":
            after = []
            if "cron" in fired:
                after.append("this cron time is dropped")
            if "new-data" in fired:
                after.append("the new data fires once that job ends")
            return Decision("skip", f"skipped {what}: job {job.job_id} is {job_status} "
                            f"(policy forbid; {', '.join(after)})", **fire)
        return Decision("submit", f"fired {what}: replacing job {job.job_id} ({job_status}, policy replace)",
                        stop_job=job.job_id, **fire)
    return Decision("submit", f"fired {what}", **fire)


def _describe(fired: list[str], fire_time: datetime | None, data_version: str | None) -> str:
    parts = []
    if "cron" in fired:
        parts.append(f"cron time {fmt_time(fire_time)}")
    if "new-data" in fired:
        parts.append(f"new data version {data_version[:12] if data_version else '?'}")
    elif data_version:
        parts.append(f"data version {data_version[:12]}")
    return ", ".join(parts)


def record(state: State, decision: Decision, triggers: Triggers, *, now: datetime,
           job_id: str | None = None, job_status: str | None = None) -> State:
    """The state after carrying `decision` out. `job_id`: the job submitted (submit only);
    `job_status`: its status, or for other actions the last job's refreshed status."""
    now = _utc(now)
    new = replace(state, cron=triggers.cron, timezone=triggers.timezone if triggers.cron else None,
                  next_fire=decision.next_fire, last_tick=now, last_decision=decision.message)
    if decision.fire_time is not None:  # fired or skipped: either way that cron time is handled
        new = replace(new, last_fire=decision.fire_time)
    if decision.action == "submit":
        if job_id is None:
            raise ValueError("a submit decision needs the submitted job's id")
        new = replace(new, last_job=JobRecord(job_id=job_id, status=job_status or "PENDING",
                                              trigger=decision.trigger, submitted_at=now,
                                              data_version=decision.data_version,
                                              fire_time=decision.fire_time))
        if decision.data_version is not None:
            new = replace(new, last_data_version=decision.data_version)
    else:
        status = job_status or decision.job_status
        if new.last_job is not None and status is not None:
            new = replace(new, last_job=replace(new.last_job, status=status))
    return new
