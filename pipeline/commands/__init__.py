"""`recur` subcommands that live in their own modules (jobs, predict, schedule, ...).

Each module listed in COMMAND_MODULES has `register(sub)`, which adds its parsers to the
`recur` subparsers and sets `func` on each; `pipeline.cli` calls them all when it builds the
parser. A command raises `pipeline.errors.CommandError` (or a ConfigError) for a problem the user
can fix: the CLI prints it as `recur: error: ...` and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib

COMMAND_MODULES: list[str] = [
    "pipeline.commands.run",
    "pipeline.commands.configs",
    "pipeline.commands.data",
    "pipeline.commands.models",
    "pipeline.commands.ui",
    "pipeline.commands.schedule",
    "pipeline.commands.predict",
    "pipeline.commands.jobs",
    "pipeline.commands.lineage",
]


def register_all(sub: argparse._SubParsersAction) -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
