"""The scheduler's pure decision: cron fires (missed ones collapse), once per data version,
overlap policies, and the state recorded after each decision. No Ray, no clock, no files."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.scheduling.decide import (
    UNKNOWN,
    JobRecord,
    ScheduleError,
    State,
    Triggers,
    count_fires,
    decide,
    latest_fire_at_or_before,
    next_fire_after,
    record,
)

UTC = timezone.utc
NIGHTLY = Triggers(cron="0 3 * * *")
DATA = Triggers(on_new_data=True)
V1, V2 = "a" * 64, "b" * 64


def t(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2025, 1, day, hour, minute, second, tzinfo=UTC)


def job(status: str = "RUNNING", version: str | None = V1, job_id: str = "job-1") -> JobRecord:
    return JobRecord(job_id=job_id, status=status, trigger="new-data", submitted_at=t(1, 0),
                     data_version=version)


def tick(state: State, triggers: Triggers, now: datetime, **observed):
    """decide, then record as the loop does (a submit gets job id 'new')."""
    d = decide(state, triggers, now=now, **observed)
    new = record(state, d, triggers, now=now, job_id="new" if d.action == "submit" else None)
    return d, new


# ------------------------------------------------------------------------------ triggers


def test_triggers_are_validated():
    with pytest.raises(ScheduleError, match="--cron EXPR, --on-new-data"):
        Triggers()
    with pytest.raises(ScheduleError, match="invalid cron expression"):
        Triggers(cron="every night")
    with pytest.raises(ScheduleError, match="policy must be one of"):
        Triggers(on_new_data=True, policy="allow")
    with pytest.raises(ScheduleError, match="unknown time zone"):
        Triggers(cron="0 3 * * *", timezone="Mars/Olympus")


def test_cron_helpers():
    assert next_fire_after("0 3 * * *", "UTC", t(1, 3)) == t(2, 3)  # strictly after
    assert next_fire_after("0 3 * * *", "UTC", t(1, 2, 59)) == t(1, 3)
    assert latest_fire_at_or_before("0 3 * * *", "UTC", t(1, 3)) == t(1, 3)  # at counts
    assert latest_fire_at_or_before("0 3 * * *", "UTC", t(5, 12)) == t(5, 3)
    assert count_fires("0 3 * * *", "UTC", t(1, 3), t(5, 3)) == 5
    assert count_fires("* * * * *", "UTC", t(1, 0), t(31, 0), cap=10) == 10
    # the expression is read in its time zone: 03:00 in Berlin is 02:00 UTC in winter
    assert next_fire_after("0 3 * * *", "Europe/Berlin", t(1, 12)) == t(2, 2)


# ------------------------------------------------------------------------------ cron


def test_first_tick_sets_the_next_fire_without_firing():
    d, state = tick(State(), NIGHTLY, t(1, 12))
    assert d.action == "wait" and d.next_fire == t(2, 3)
    assert "first fire at 2025-01-02T03:00:00Z" in d.notes[0]
    assert state.next_fire == t(2, 3) and state.cron == "0 3 * * *" and state.timezone == "UTC"


def test_cron_waits_before_and_fires_at_the_fire_time():
    state = State(cron="0 3 * * *", timezone="UTC", next_fire=t(2, 3))
    d, same = tick(state, NIGHTLY, t(2, 2, 59, 59))
    assert d.action == "wait" and "next cron fire at 2025-01-02T03:00:00Z" in d.message
    assert same.next_fire == t(2, 3) and same.last_job is None

    d, fired = tick(state, NIGHTLY, t(2, 3, 0, 5), data_version=V1)
    assert d.action == "submit" and d.triggers == ("cron",) and d.fire_time == t(2, 3)
    assert d.missed == 0 and d.next_fire == t(3, 3) and d.stop_job is None
    assert d.message == "fired cron time 2025-01-02T03:00:00Z, data version aaaaaaaaaaaa"
    assert fired.next_fire == t(3, 3) and fired.last_fire == t(2, 3)
    assert fired.last_job.job_id == "new" and fired.last_job.status == "PENDING"
    assert fired.last_job.trigger == "cron" and fired.last_job.fire_time == t(2, 3)
    assert fired.last_data_version == V1  # a cron run trains on V1: new-data need not fire for it

    # the same tick again (a restart right after) does not fire twice
    d, _ = tick(fired, NIGHTLY, t(2, 3, 0, 6), job_status="RUNNING")
    assert d.action == "wait"


def test_missed_fire_times_collapse_into_one_run_for_the_latest():
    state = State(cron="0 3 * * *", timezone="UTC", next_fire=t(2, 3))
    d, new = tick(state, NIGHTLY, t(5, 12))  # down from the 1st to the 5th, noon
    assert d.action == "submit" and d.fire_time == t(5, 3) and d.missed == 3
    assert any("3 earlier cron time(s) from 2025-01-02T03:00:00Z" in n for n in d.notes)
    assert new.next_fire == t(6, 3) and new.last_fire == t(5, 3)
    d, _ = tick(new, NIGHTLY, t(5, 12, 1), job_status="SUCCEEDED")
    assert d.action == "wait"


def test_changed_cron_expression_or_zone_recomputes_the_next_fire():
    state = State(cron="0 3 * * *", timezone="UTC", next_fire=t(2, 3))
    d, new = tick(state, Triggers(cron="30 4 * * *"), t(3, 0))  # old next_fire passed: not fired
    assert d.action == "wait" and d.next_fire == t(3, 4, 30)
    assert "changed from '0 3 * * *' (UTC)" in d.notes[0] and new.cron == "30 4 * * *"
    d, _ = tick(state, Triggers(cron="0 3 * * *", timezone="Europe/Berlin"), t(1, 12))
    assert d.action == "wait" and d.next_fire == t(2, 2)


# ------------------------------------------------------------------------------ new data


def test_new_data_fires_once_per_version():
    d, state = tick(State(), DATA, t(1, 0), data_version=V1)
    assert d.action == "submit" and d.triggers == ("new-data",) and d.fire_time is None
    assert d.message == "fired new data version aaaaaaaaaaaa" and d.next_fire is None
    assert state.last_data_version == V1 and state.last_job.data_version == V1

    d, state = tick(state, DATA, t(1, 1), data_version=V1, job_status="SUCCEEDED")
    assert d.action == "wait"
    assert d.message == "no new data: version aaaaaaaaaaaa already submitted (job new: SUCCEEDED)"
    assert state.last_job.status == "SUCCEEDED"  # the refreshed status is kept

    d, state = tick(state, DATA, t(1, 2), data_version=V2, job_status="SUCCEEDED")
    assert d.action == "submit" and d.data_version == V2 and state.last_data_version == V2


def test_a_failed_job_does_not_retry_the_same_version():
    state = State(last_data_version=V1, last_job=job("FAILED"))
    d = decide(state, DATA, now=t(1, 5), data_version=V1, job_status="FAILED")
    assert d.action == "wait" and "job-1: FAILED" in d.message


def test_no_complete_dataset_never_fires():
    d = decide(State(), DATA, now=t(1, 0), data_version=None)
    assert d.action == "wait" and "no complete dataset" in d.message


def test_data_version_is_ignored_without_on_new_data():
    state = State(cron="0 3 * * *", timezone="UTC", next_fire=t(2, 3), last_data_version=V1)
    assert decide(state, NIGHTLY, now=t(1, 5), data_version=V2).action == "wait"


def test_cron_and_new_data_due_together_submit_one_job():
    both = Triggers(cron="0 3 * * *", on_new_data=True)
    state = State(cron="0 3 * * *", timezone="UTC", next_fire=t(2, 3), last_data_version=V1)
    d, new = tick(state, both, t(2, 3), data_version=V2)
    assert d.action == "submit" and d.trigger == "cron+new-data"
    assert new.last_job.trigger == "cron+new-data" and new.last_data_version == V2
    d, _ = tick(new, both, t(2, 4), data_version=V2, job_status="RUNNING")
    assert d.action == "wait"
    # either trigger alone fires as well
    d = decide(new, both, now=t(2, 5), data_version=V1, job_status="SUCCEEDED")
    assert d.action == "submit" and d.triggers == ("new-data",)


# ------------------------------------------------------------------------------ overlap


@pytest.mark.parametrize("status", ["PENDING", "RUNNING"])
def test_forbid_skips_new_data_while_a_job_runs_and_fires_after(status):
    state = State(last_data_version=V1, last_job=job(status))
    d, new = tick(state, DATA, t(1, 5), data_version=V2, job_status=status)
    assert d.action == "skip" and d.stop_job is None
    assert d.message == (f"skipped new data version bbbbbbbbbbbb: job job-1 is {status} "
                         "(policy forbid; the new data fires once that job ends)")
    assert new.last_data_version == V1  # not consumed
    assert new.last_job.job_id == "job-1" and new.last_job.status == status
    d, new = tick(new, DATA, t(1, 6), data_version=V2, job_status="SUCCEEDED")
    assert d.action == "submit" and new.last_data_version == V2


def test_forbid_drops_a_cron_time_while_a_job_runs():
    state = State(cron="0 3 * * *", timezone="UTC", next_fire=t(2, 3), last_job=job("RUNNING"))
    d, new = tick(state, NIGHTLY, t(2, 3), job_status="RUNNING")
    assert d.action == "skip" and "this cron time is dropped" in d.message
    assert new.next_fire == t(3, 3) and new.last_fire == t(2, 3)
    d, _ = tick(new, NIGHTLY, t(2, 4), job_status="SUCCEEDED")
    assert d.action == "wait"  # not fired late once the job ended


def test_replace_stops_the_running_job_and_submits():
    state = State(last_data_version=V1, last_job=job("RUNNING"))
    replace_policy = Triggers(on_new_data=True, policy="replace")
    d, new = tick(state, replace_policy, t(1, 5), data_version=V2, job_status="RUNNING")
    assert d.action == "submit" and d.stop_job == "job-1"
    assert "replacing job job-1 (RUNNING, policy replace)" in d.message
    assert new.last_job.job_id == "new" and new.last_data_version == V2


@pytest.mark.parametrize("status", ["SUCCEEDED", "FAILED", "STOPPED", UNKNOWN])
def test_a_finished_or_unknown_job_does_not_block(status):
    state = State(last_data_version=V1, last_job=job(status))
    d = decide(state, Triggers(on_new_data=True, policy="replace"), now=t(1, 5), data_version=V2,
               job_status=status)
    assert d.action == "submit" and d.stop_job is None


def test_record_needs_a_job_id_for_a_submit():
    d = decide(State(), DATA, now=t(1, 0), data_version=V1)
    with pytest.raises(ValueError, match="job's id"):
        record(State(), d, DATA, now=t(1, 0))


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="naive datetime"):
        decide(State(), DATA, now=datetime(2025, 1, 1), data_version=V1)


def test_record_keeps_the_tick_and_decision():
    d, new = tick(State(), DATA, t(1, 0), data_version=None)
    assert new.last_tick == t(1, 0) and new.last_decision == d.message and new.last_job is None
    assert replace(new, last_tick=None, last_decision=None) == State()
    assert new.last_tick - t(1, 0) == timedelta(0)
