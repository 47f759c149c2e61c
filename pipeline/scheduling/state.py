"""The scheduler's state file: JSON, replaced atomically, one scheduler at a time.

`save_state` writes a temporary file in the same folder, flushes it to disk and renames it over
the old one (`os.replace`), so a reader (or a scheduler restarted after a crash) sees either the
old state or the new one, never half a file. `StateLock` holds an exclusive `flock` on
`<state>.lock` while a scheduler runs, so two schedulers never share (and overwrite) one state.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.scheduling.decide import JobRecord, State

FORMAT_VERSION = 1


class StateError(ValueError):
    """The state file is unreadable, or another scheduler holds it."""


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def state_to_dict(state: State) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, **_encode(asdict(state))}


def state_from_dict(data: dict[str, Any]) -> State:
    if data.get("format_version") != FORMAT_VERSION:
        raise StateError(f"state format_version {data.get('format_version')!r} is not "
                         f"{FORMAT_VERSION}")
    known = {f.name for f in fields(State)}
    unknown = sorted(set(data) - known - {"format_version"})
    if unknown:
        raise StateError(f"unknown state keys {unknown}")
    job = data.get("last_job")
    if job is not None:
        job = JobRecord(**{**job, "submitted_at": _time(job["submitted_at"]),
                           "fire_time": _time(job.get("fire_time"))})
    times = {k: _time(data.get(k)) for k in ("next_fire", "last_fire", "last_tick")}
    rest = {k: v for k, v in data.items() if k in known and k not in times and k != "last_job"}
    return State(**rest, **times, last_job=job)


def load_state(path: str | os.PathLike) -> State:
    """The state at `path`; an empty State when the file does not exist yet."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return State()
    try:
        return state_from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        raise StateError(f"state file {path} is unreadable ({exc}); move it away to start the schedule "
                         "afresh (the next tick then fires for the current data)") from None


def save_state(path: str | os.PathLike, state: State) -> None:
    """Write `state` to `path` atomically (temporary file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(state_to_dict(state), fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class StateLock:
    """Exclusive lock on `<state>.lock` for as long as a scheduler uses the state file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(str(path) + ".lock")
        self._fh = None

    def __enter__(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise StateError(f"another scheduler (pid {holder}) is using {self.path.with_suffix('')}; "
                             "stop it, or give this one its own --state") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
