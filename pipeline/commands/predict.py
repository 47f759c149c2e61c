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

from pipeline.commands import CommandError

DEFAULT_BATCH_SIZE = 256


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="NAME@alias, NAME/version, or NAME (its @champion)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="dataset folder in recur's format (manifest.json + Parquet splits)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: a local path or a URI pyarrow can write (file://, s3://...)")
    p.add_argument("--split", dest="splits", action="append", choices=["train", "val", "test"],
                   metavar="NAME", help="split to predict: train, val or test (repeatable; default: all)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"rows per model call (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--concurrency", type=int,
                   help="model replicas (Ray actors); default: one per GPU, else one per CPU left "
                        "after resources.reserve_cpus_for_data")
    p.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None,
                   help="one GPU per actor (default: when the cluster has GPUs and torch sees CUDA)")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="a param of the model's predict, e.g. beam_size=4 (repeatable; YAML values)")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")
    p.add_argument("--force", action="store_true",
                   help="predict even when the same model version already predicted this data into --out "
                        "with these options (a recorded step; otherwise skipped)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else sqlite under --runs-dir")
    p.add_argument("--runs-dir", help="local store folder (default recur-runs)")
    p.add_argument("--config", action="append",
                   help="take tracking and resources settings from this config (repeatable)")


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
