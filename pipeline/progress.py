"""What recur shows on stderr while it works, in one of three modes decided once per process.

- ``live``: stderr is a terminal. A status block (an epoch's step progress, the table of trials,
  an import's files and rows) is rewritten in place; lasting lines (an epoch's summary, what a
  long wait is waiting for) are written above it.
- ``plain``: stderr is a file or a pipe (CI, ``ray job logs``). Whole lines only, never a carriage
  return or an ANSI code, and throttled so a log stays readable (see `TrainView`, `TrialTable`).
- ``quiet``: ``recur -q``. Nothing from here; errors, warnings and the final summary still print.

``RECUR_PROGRESS=live|plain|quiet`` overrides the choice. The driver hands its mode to what Ray
runs for it: the runtime env of `pipeline.workflow.session.connect_ray`, the Train callback's and
the Tune trials' arguments.

Nothing here imports Ray: the Ray side (the board rank 0 publishes to, the driver's watcher) is in
`pipeline.training.progress`, the Tune callback in `pipeline.tuning.tuner`.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

log = logging.getLogger(__name__)

ENV = "RECUR_PROGRESS"
MODES = ("live", "plain", "quiet")
TAG = "[recur]"

_mode: str | None = None


def detect(stream: TextIO | None = None) -> str:
    """The mode for this process: RECUR_PROGRESS when it names one, else live on a terminal
    (not TERM=dumb), else plain."""
    chosen = os.environ.get(ENV, "").strip().lower()
    if chosen in MODES:
        return chosen
    stream = stream if stream is not None else sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        tty = False
    return "live" if tty and os.environ.get("TERM") != "dumb" else "plain"


def mode() -> str:
    """The process's mode, decided on first use (or by `set_mode`)."""
    global _mode
    if _mode is None:
        _mode = detect()
    return _mode


current_mode = mode  # for code whose own names shadow `mode`


def set_mode(value: str | None) -> str:
    """Fix the mode (`recur -q` sets quiet); None decides it again from RECUR_PROGRESS and stderr."""
    global _mode
    if value is not None and value not in MODES:
        raise ValueError(f"{ENV}: expected one of {', '.join(MODES)}, got {value!r}")
    _mode = value if value is not None else detect()
    return _mode


# ------------------------------------------------------------------------------------ output


class Display:
    """Writes to stderr (looked up at each write) in one mode.

    `line` writes a lasting line (nothing in quiet). `status` sets the live status block, redrawn
    in place under the lasting lines; plain and quiet ignore it (their callers decide which
    updates become lines). Thread-safe: the driver's watcher writes from its own thread.
    """

    def __init__(self, mode: str | None = None, stream: TextIO | None = None) -> None:
        self.mode = mode or current_mode()
        self._stream = stream
        self._block: list[str] = []  # live: the status lines on screen now
        self._lock: threading.Lock | None = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks with the study
        return {"mode": self.mode, "_stream": None, "_block": [], "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def quiet(self) -> bool:
        return self.mode == "quiet"

    def line(self, text: str) -> None:
        if self.quiet:
            return
        with self._locked():
            if self.mode == "live":
                block = self._block
                self._erase()
                self._write(text + "\n")
                self._draw(block)
            else:
                self._write(_plain(text) + "\n")

    def status(self, lines: list[str] | str) -> None:
        if self.mode != "live":
            return
        lines = [lines] if isinstance(lines, str) else list(lines)
        with self._locked():
            self._erase()
            self._draw(lines)

    def clear(self) -> None:
        """Remove the live status block."""
        if self.mode == "live" and self._block:
            with self._locked():
                self._erase()

    def keep(self) -> None:
        """Leave the live status block on screen as lasting lines (a study's final table)."""
        if self.mode == "live" and self._block:
            with self._locked():
                self._write("\n")
                self._block = []

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock is None:
            self._lock = threading.Lock()
        with self._lock:
            yield

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe must not stop training
            pass

    def _erase(self) -> None:
        if self._block:
            # to the start of the block's first line, clearing each line on the way
            self._write("\r\x1b[2K" + "\x1b[1A\x1b[2K" * (len(self._block) - 1))
        self._block = []

    def _draw(self, lines: list[str]) -> None:
        if not lines:
            return
        width = max(shutil.get_terminal_size((100, 24)).columns - 1, 20)
        rows = max(shutil.get_terminal_size((100, 24)).lines - 1, 3)
        if len(lines) > rows:  # a block taller than the screen cannot be moved back over
            lines = [*lines[: rows - 1], f"... {len(lines) - rows + 1} more"]
        lines = [s[:width] for s in lines]
        self._write("\n".join(lines))
        self._block = lines


def _plain(text: str) -> str:
    """A plain line: no carriage return or escape sequence can slip into a log."""
    return text.replace("\r", " ").replace("\x1b", "")


# ------------------------------------------------------------------------------ formatting


def duration(seconds: float) -> str:
    """12s, 3m05s, 2h01m."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def number(value: Any) -> str:
    """A sampled value or a metric, short: 0.003162, 64, gru, 1.2e-05."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3g}"
    return f"{value:.4g}"


def tag(prefix: str = "") -> str:
    return f"[recur {prefix}]" if prefix else TAG


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


# How a trial ended, from what Tune did to it (pipeline.tuning.tuner.trial_status): it trained
# every epoch or stopped early by itself; its scheduler (ASHA, HyperBand) stopped it; it raised;
# the study's time budget or a Ctrl-C ended it while it ran; it never ran.
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


class ImportProgress:
    """Files and rows read by an importer: the live status, or in plain mode a line per file
    (at most one every `plain_every_s` when there are more than `plain_files` files)."""

    def __init__(self, display: Display, *, plain_files: int = 20, plain_every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.display, self.plain_files, self.plain_every_s, self.clock = (
            display, plain_files, plain_every_s, clock)
        self.rows = 0
        self.files = 0
        self._last_line = -math.inf

    def file(self, shown: str, rows: int, *, index: int, files: int, unit: str = "rows") -> None:
        self.rows += rows
        self.files = index
        name = os.path.basename(shown.rstrip("/")) or shown
        text = (f"{TAG} import: file {index}/{files} {name}: {rows:,} {unit} "
                f"({self.rows:,} {unit} read so far)")
        if self.display.mode == "live":
            self.display.status(text)
            return
        now = self.clock()
        if files <= self.plain_files or index == files or now - self._last_line >= self.plain_every_s:
            self._last_line = now
            self.display.line(text)

    def close(self) -> None:
        self.display.keep()  # live: the last file's line, with every row read, stays


@contextmanager
def dropping(*prefixes: str) -> Iterator[None]:
    """Quiet mode: lines the block writes to stderr that start with one of `prefixes` (a library's
    chatter, e.g. MLflow's "Successfully registered model") are dropped; the others go through."""
    if mode() != "quiet":
        yield
        return
    import io
    from contextlib import redirect_stderr

    held = io.StringIO()
    try:
        with redirect_stderr(held):
            yield
    finally:
        kept = [s for s in held.getvalue().splitlines(keepends=True) if not s.startswith(prefixes)]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


_import: ImportProgress | None = None


@contextmanager
def importing(display: Display | None = None) -> Iterator[ImportProgress]:
    """While an import runs, `source_read` calls from its importer go to this progress (an import
    inside another one reports to the outer one)."""
    global _import
    if _import is not None:
        yield _import
        return
    previous, _import = _import, ImportProgress(display or Display())
    try:
        yield _import
    finally:
        _import.close()
        _import = previous


def source_read(shown: str, rows: int, *, index: int, files: int, unit: str = "rows") -> None:
    """An importer has read file `index` of `files` (1-based); a no-op outside `importing`."""
    if _import is not None:
        _import.file(shown, rows, index=index, files=files, unit=unit)
