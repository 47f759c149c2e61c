"""A study's progress: the table of trials, rewritten in place or printed as throttled lines."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.progress.display import TAG, Display, number

log = logging.getLogger(__name__)

TRIAL_ENDS = ("completed", "stopped by scheduler", "failed", "stopped by time budget", "interrupted",
              "never started")
TRIAL_STATUSES = ("pending", "running", "paused", *TRIAL_ENDS)


@dataclass
class TrialRow:
    """One trial as the table shows it."""

    trial_id: str
    status: str  # one of TRIAL_STATUSES
    params: dict[str, Any] = field(default_factory=dict)  # sampled values by dotted config key
    epochs: int = 0
    last: float | None = None  # the tune metric at the last reported epoch
    best: float | None = None  # its best so far (per the study's mode)


class TrialTable:
    """A study's trials: a live table redrawn in place; in plain mode a line per status change
    and a one-line summary at most every `plain_every_s` while results come in; nothing in quiet."""

    def __init__(self, display: Display, *, metric: str, mode: str, plain_every_s: float = 30.0,
                 live_every_s: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.display, self.metric, self.goal = display, metric, mode
        self.plain_every_s, self.live_every_s, self.clock = plain_every_s, live_every_s, clock
        self.rows: dict[str, TrialRow] = {}
        self._status: dict[str, str] = {}  # last status said per trial (plain)
        self._last_summary = clock()
        self._last_draw = -math.inf

    def update(self, rows: list[TrialRow]) -> None:
        """The trials as Tune holds them now (any order, any subset)."""
        changed = []
        for row in rows:
            self.rows[row.trial_id] = row
            if self._status.get(row.trial_id) != row.status:
                self._status[row.trial_id] = row.status
                changed.append(row)
        now = self.clock()
        if self.display.mode == "live":
            if changed or now - self._last_draw >= self.live_every_s:
                self._last_draw = now
                self.display.status(self.render())
        elif self.display.mode == "plain":
            for row in changed:
                self.display.line(self.change_line(row))
            if not changed and now - self._last_summary >= self.plain_every_s:
                self.display.line(self.summary_line())
            if changed or now - self._last_summary >= self.plain_every_s:
                self._last_summary = now

    def close(self) -> None:
        """The final table stays on screen (live); plain ends with the summary line."""
        if self.display.mode == "live":
            self.display.status(self.render())
            self.display.keep()
        elif self.display.mode == "plain" and self.rows:
            self.display.line(self.summary_line())

    def best_row(self) -> TrialRow | None:
        scored = [r for r in self.rows.values() if r.best is not None and not math.isnan(r.best)]
        if not scored:
            return None
        return (min if self.goal == "min" else max)(scored, key=lambda r: r.best)

    def counts(self) -> str:
        n = {s: sum(r.status == s for r in self.rows.values()) for s in TRIAL_STATUSES}
        return ", ".join(f"{k} {v}" for k, v in n.items() if v)

    def change_line(self, row: TrialRow) -> str:
        params = "  ".join(f"{k}={number(v)}" for k, v in sorted(row.params.items()))
        text = f"{TAG} trial {row.trial_id} {row.status}"
        if row.status in ("pending", "running") and params:
            return f"{text}  {params}"
        if row.epochs:
            text += (f" after {row.epochs} epoch(s): {self.metric} last {number(row.last)} "
                     f"best {number(row.best)}")
        return text

    def summary_line(self) -> str:
        text = f"{TAG} trials: {self.counts()}"
        best = self.best_row()
        if best is not None:
            text += f"; best {best.trial_id} {self.metric} {number(best.best)}"
        return text

    def render(self) -> list[str]:
        """The table: a header, one row per trial (start order), the counts and the best."""
        keys = sorted({k for r in self.rows.values() for k in r.params})
        headers = ["trial", "status", *keys, "epochs", f"last {self.metric}", f"best {self.metric}"]
        cells = [[r.trial_id, r.status, *(number(r.params[k]) if k in r.params else "" for k in keys),
                  str(r.epochs), "" if r.last is None else number(r.last),
                  "" if r.best is None else number(r.best)] for r in self.rows.values()]
        widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
                  for i, h in enumerate(headers)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
        lines.append(self.summary_line())
        return lines


# ---------------------------------------------------------------------------------- import
