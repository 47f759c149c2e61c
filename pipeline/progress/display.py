"""The display mode (live, plain, quiet), decided once per process, the `Display` that writes in
it, and the number and duration formats every progress line uses."""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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
