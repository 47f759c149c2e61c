"""`recur` command line: the parser (each command's arguments and function come from its module in
`pipeline.commands`), logging, and how an error ends the command. Nothing runs at import time."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recur", description="Train recurrent sequence models on Ray.")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="no progress: errors, warnings and the final summary only")
    parser.add_argument("--debug", action="store_true",
                        help="a traceback with every error (also RECUR_DEBUG=1)")
    parser.add_argument("--version", action="version", version=f"recur {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    from pipeline.commands import register_all

    register_all(sub)
    return parser


def _version() -> str:
    """The installed distribution's version (a source checkout without metadata: unknown)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("recur")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline import progress

    # live on a terminal, plain lines in CI and `ray job logs`, nothing with -q (RECUR_PROGRESS overrides)
    mode = progress.set_mode("quiet" if args.quiet else None)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if mode != "live":  # MLflow's download bars are \r-rewritten lines
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # recur's summary names the run page; MLflow's own "View run ... at:" lines would repeat it
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # quiet: errors, recur's own warnings and the summary. Until this command returns, recur's
    # loggers stay at WARNING and the libraries' at ERROR, also where a handler was set up before
    # (MLflow's own, a test's); MLflow sets its level when first imported, from the variable.
    levels = {None: logging.WARNING, "mlflow": logging.ERROR, "ray": logging.ERROR,
              "ray.data": logging.ERROR, "ray.train": logging.ERROR, "ray.tune": logging.ERROR}
    loggers = [(logging.getLogger(name), level) for name, level in levels.items()] if args.quiet else []
    before = [logger.level for logger, _ in loggers]
    for logger, level in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), level))
    mlflow_level = args.quiet and "MLFLOW_LOGGING_LEVEL" not in os.environ
    if mlflow_level:
        os.environ["MLFLOW_LOGGING_LEVEL"] = "ERROR"
    import warnings

    try:
        with warnings.catch_warnings():
            if args.quiet:  # the libraries' Python warnings (deprecations, hints) too; recur's stay
                warnings.filterwarnings("ignore")
                warnings.filterwarnings("default", module=r"pipeline(\.|$)")
            return _dispatch(args)
    finally:
        for (logger, _), previous in zip(loggers, before):
            logger.setLevel(previous)
        if mlflow_level:
            os.environ.pop("MLFLOW_LOGGING_LEVEL", None)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command; how an error ends it is `pipeline.errors`'s rule: a user error is one line
    and exit 2, a failure one line and exit 1, Ctrl-C exit 130, a bug its traceback. `--debug`
    (or RECUR_DEBUG=1) prints the traceback before the line."""
    from pipeline import errors
    from pipeline.tracking.redact import install_log_redaction, redact_text, redacting_excepthook

    install_log_redaction()  # secret env values and URL passwords never reach the log
    sys.excepthook = redacting_excepthook
    try:
        return args.func(args)
    except BaseException as exc:
        code = errors.exit_code(exc)
        if code is None:
            raise  # a bug: the (redacted) traceback
        if errors.debug_enabled(args.debug):
            import traceback

            print(redact_text("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
        print(redact_text(errors.one_line(exc)), file=sys.stderr, flush=True)
        return code



if __name__ == "__main__":
    sys.exit(main())
