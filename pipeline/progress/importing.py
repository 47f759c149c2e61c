"""An import's progress: files and rows read, and the library bars it replaces."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pipeline.progress.display import TAG, Display, mode

log = logging.getLogger(__name__)

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
