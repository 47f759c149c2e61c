"""`recur config show|schema`: the resolved config and its JSON schema."""

from __future__ import annotations

import argparse

from pipeline import config as config_mod
from pipeline.commands.common import (
    add_config_args,
    load,
)


def cmd_config_show(args: argparse.Namespace) -> int:
    print(config_mod.dump_yaml(load(args, as_given=True)), end="")
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    print(config_mod.json_schema())
    return 0



def register(sub: argparse._SubParsersAction) -> None:
    cfg = sub.add_parser("config", help="inspect configuration").add_subparsers(dest="action", required=True)
    p = cfg.add_parser("show", help="print the resolved config")
    add_config_args(p)
    p.set_defaults(func=cmd_config_show)
    p = cfg.add_parser("schema", help="print the JSON schema of the config")
    p.set_defaults(func=cmd_config_schema)
