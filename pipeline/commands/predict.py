"""`recur predict MODEL --data DIR --out DIR`: batch inference with a registered model.

The logic is in `pipeline.inference`; this module parses arguments, resolves the tracking URI,
fetches the model, connects to Ray (RAY_ADDRESS / --address, else a local Ray) and prints the
summary. `jobs/predict.py` forwards to it for `ray job submit`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from pipeline.errors import CommandError
from pipeline.inference.arguments import add_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="batch inference: a registered model over a dataset, to Parquet",
                       description="Run a registered model over a dataset's splits with Ray Data and "
                                   "write Parquet: id, split, the model's prediction columns, error.")
    add_arguments(p)
    p.set_defaults(func=cmd_predict)


def parse_params(items: list[str]) -> dict[str, Any]:
    import yaml

    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"--param {item!r}: expected KEY=VALUE")
        try:
            params[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise CommandError(f"--param {item!r}: {exc}") from None
    return params


def cmd_predict(args: argparse.Namespace) -> int:
    from pipeline import config as config_mod
    from pipeline.inference.model import PredictError
    from pipeline.tracking.store import resolve_tracking_uri

    started = time.perf_counter()
    cfg = config_mod.load_config(args.config) if args.config else config_mod.RecurConfig()
    if args.runs_dir:
        cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"runs_dir": args.runs_dir})})
    # relative paths mean the directory recur runs from, wherever Ray runs the work
    cfg = config_mod.with_absolute_paths(cfg)
    args.data, args.out = (p if "://" in p else os.path.abspath(os.path.expanduser(p))
                           for p in (args.data, args.out))
    given = args.tracking_uri
    uri = (config_mod.absolute_store_uri(given, Path.cwd()) or given) if given else resolve_tracking_uri(cfg)
    params = parse_params(args.params)
    try:
        from pipeline.workflow.predict import run_predict
        from pipeline.workflow.session import connect_ray

        outcome = run_predict(cfg, args.model, args.data, args.out, tracking_uri=uri, splits=args.splits,
                              batch_size=args.batch_size, concurrency=args.concurrency, gpu=args.gpu,
                              params=params, overwrite=args.overwrite, force=args.force, started_at=started,
                              connect=lambda: connect_ray(cfg, args.address))
    except PredictError as exc:
        raise CommandError(str(exc)) from None
    print(outcome.format())
    result = outcome.result
    # Every row is in the output either way; a run in which no row could be predicted is a failure.
    return 1 if result is not None and result.total_in and result.failed == result.total_in else 0
