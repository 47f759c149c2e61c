"""What several `recur` commands share: their common arguments, and the config and tracking
URI those arguments name."""

from __future__ import annotations

import argparse

from pipeline import config as config_mod


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML files, merged left to right")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, e.g. --set train.lr=0.003 (repeatable)")


def add_where_args(p: argparse.ArgumentParser) -> None:
    """run, retrain, tune: which Ray and which MLflow."""
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI, as --set tracking.tracking_uri=URI "
                                          "(default: the config's, else MLFLOW_TRACKING_URI, else sqlite "
                                          "under tracking.runs_dir)")


def add_step_args(p: argparse.ArgumentParser) -> None:
    from pipeline.workflow.records import STEPS

    p.add_argument("--from", dest="from_step", choices=STEPS, metavar="STEP",
                   help="re-run this step and every later one (earlier ones reuse their records): "
                        + ", ".join(STEPS) + " (tune with a search, train without)")
    p.add_argument("--force", action="store_true", help="re-run every step, even those with records")


def add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else sqlite under --runs-dir")
    p.add_argument("--runs-dir", help="local store folder (default recur-runs)")
    p.add_argument("--config", action="append", help="take tracking settings from this config")


def load(args: argparse.Namespace, *, as_given: bool = False) -> config_mod.RecurConfig:
    """The config of CONFIG... and --set; its relative paths (data.root, tracking.runs_dir, ...)
    made absolute against the directory recur runs from, unless `as_given`: Ray runs Tune trials
    and jobs in directories of their own, where a relative path names nothing."""
    overrides = list(args.overrides)
    if getattr(args, "tracking_uri", None):  # run, retrain, tune --tracking-uri
        overrides.append(f"tracking.tracking_uri={args.tracking_uri}")
    cfg = config_mod.load_config(args.configs, overrides)
    return cfg if as_given else config_mod.with_absolute_paths(cfg)


def tracking_uri(args: argparse.Namespace) -> str:
    from pipeline.tracking.store import resolve_tracking_uri

    if getattr(args, "tracking_uri", None):
        return args.tracking_uri
    cfg = config_mod.load_config(args.config) if getattr(args, "config", None) else config_mod.RecurConfig()
    if getattr(args, "runs_dir", None):
        cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"runs_dir": args.runs_dir})})
    return resolve_tracking_uri(cfg)

