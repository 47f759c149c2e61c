"""recur's error kinds, as the `recur` command line reports them.

How an exception ends a `recur` command (`pipeline.cli.main`):

- `UserError` (and every subclass: ConfigError, DatasetError, StorageError, CommandError, ...),
  and FileNotFoundError: a problem the user can fix (a config key, a file, a row, a model
  name, a server that does not answer). One line on stderr, `recur: error: <message>`, exit 2.
  The message says what was wrong, where (file, row, column, key, URI) and what to do.
- `Failure` (TrainingFailed, ...): recur did its part, the work failed, and the message already
  says why and what is kept. One line, `recur: <message>`, exit 1.
- KeyboardInterrupt: `recur: interrupted`, exit 130.
- anything else is a bug: Python's traceback, exit 1.

No traceback for the first three unless `recur --debug` or RECUR_DEBUG=1 (then the traceback
comes first and the line after it). So: raise a `UserError` subclass of your own, or one of the
existing ones, with a one-line message; never print and `sys.exit` from library code.

This module imports nothing, so every layer can use it without import cost.
"""

from __future__ import annotations

import os

DEBUG_ENV = "RECUR_DEBUG"  # RECUR_DEBUG=1: tracebacks for user errors and failures too


class RecurError(Exception):
    """Every error recur raises on purpose: `except RecurError` catches them all (a bug is anything else)."""


class UserError(RecurError):
    """A problem the user can fix: `recur: error: <message>` and exit 2, no traceback."""


class CommandError(UserError):
    """A problem with a `recur` command's arguments the user can fix; printed without a traceback."""


class Failure(RecurError):
    """Work that failed for a reason the message states (training diverged, workers died):
    `recur: <message>` and exit 1, no traceback."""


def debug_enabled(flag: bool = False) -> bool:
    """`--debug` given, or RECUR_DEBUG set to anything but empty, 0, false or no."""
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def exit_code(exc: BaseException) -> int | None:
    """The exit status recur gives `exc` without a traceback: 2 for a user error, 1 for a failure,
    130 for an interrupt; None for anything else (a bug: show the traceback)."""
    if isinstance(exc, (UserError, FileNotFoundError)) or _kind(exc) == "UserError":
        return 2
    if isinstance(exc, Failure) or _kind(exc) == "Failure":
        return 1
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return None


def _kind(exc: BaseException) -> str | None:
    """UserError or Failure from a copy of this module (the code bundled with a registered model,
    `pipeline.tracking.pyfunc`, is recur under another package name), by name."""
    for cls in type(exc).__mro__:
        if cls.__name__ in ("UserError", "Failure") and cls.__module__.endswith(".errors"):
            return cls.__name__
    return None


def one_line(exc: BaseException) -> str:
    """What recur prints for `exc`: its message, or its type when it has none."""
    if isinstance(exc, KeyboardInterrupt):
        return "recur: interrupted"
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"  # not "[Errno 2] No such file or directory: '...'"
    return f"recur: error: {text}" if exit_code(exc) == 2 else f"recur: {text}"
