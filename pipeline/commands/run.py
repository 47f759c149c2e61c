"""`recur run`, `recur retrain`, `recur tune` and `recur runs show|sync`: the workflow, and what it
recorded."""

from __future__ import annotations

import argparse

from pipeline import config as config_mod
from pipeline.commands.common import (
    add_config_args,
    add_step_args,
    add_store_args,
    add_where_args,
    load,
    tracking_uri,
)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load(args)  # before Ray, MLflow and torch are imported: a bad config is refused at once
    from pipeline.workflow.session import connect_ray, refuse_dashboard_address

    refuse_dashboard_address(cfg, args.address)  # before any work, too
    from pipeline.workflow.runner import run_pipeline

    if cfg.tune.enabled:  # the search replaces the single training; its best trial is registered
        return _tune(cfg, args, resume=False)
    summary = run_pipeline(cfg, config_sources=list(args.configs),
                           connect=lambda: connect_ray(cfg, args.address),
                           from_step=args.from_step, force=args.force)
    print(summary.format(cfg.tracking.ui_port))
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    cfg = load(args)  # first, as in cmd_run
    from pipeline.tracking.store import check_reachable, resolve_tracking_uri
    from pipeline.workflow.retrain import champion_to_fine_tune
    from pipeline.workflow.runner import run_pipeline
    from pipeline.workflow.session import connect_ray

    fine_tune = None
    if not args.from_scratch:
        uri = resolve_tracking_uri(cfg)
        check_reachable(uri)
        fine_tune = champion_to_fine_tune(cfg, uri)
    summary = run_pipeline(cfg, config_sources=list(args.configs),
                           connect=lambda: connect_ray(cfg, args.address), fine_tune=fine_tune)
    if fine_tune is not None:
        print(f"\nfine-tuned from {fine_tune.source}")
    print(summary.format(cfg.tracking.ui_port))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    return _tune(load(args), args, resume=args.resume)


def _tune(cfg: config_mod.RecurConfig, args: argparse.Namespace, *, resume: bool) -> int:
    from pipeline.workflow.runner import run_study
    from pipeline.workflow.session import connect_ray

    summary = run_study(cfg, config_sources=list(args.configs), resume=resume,
                        connect=lambda: connect_ray(cfg, args.address), from_step=args.from_step,
                        force=args.force)
    print(summary.format(cfg.tune_metric[0]))
    return 0


def cmd_runs_sync(args: argparse.Namespace) -> int:
    """Upload what `pipeline.tracking.spool` kept; exit 1 while some of it still cannot go."""
    from pipeline.tracking.spool import sync_all
    from pipeline.tracking.store import check_reachable

    uri = tracking_uri(args)
    check_reachable(uri)
    runs_dir = args.runs_dir or (config_mod.load_config(args.config).tracking.runs_dir if args.config
                                 else config_mod.RecurConfig().tracking.runs_dir)
    return 1 if sync_all(uri, runs_dir) else 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipeline.workflow.records import PREDICT, STEP_TAG, STEPS

    uri = tracking_uri(args)
    try:
        run = MlflowClient(uri).get_run(args.run_id)
    except MlflowException as exc:
        raise FileNotFoundError(f"no MLflow run {args.run_id} at {uri}: {exc.message}") from None
    tags, info = run.data.tags, run.info
    print(f"run {info.run_id}  ({tags.get('mlflow.runName', '')})  status {info.status}")
    print(f"  experiment {info.experiment_id}, task {tags.get('recur.task', '?')}, "
          f"config {tags.get('recur.config_files', '')}")
    print(f"  {'step':<10}{'status':<11}{'seconds':>9}  record")
    for step in (*STEPS, PREDICT):
        if STEP_TAG + step in tags:
            print(f"  {step:<10}{tags[STEP_TAG + step]:<11}{tags.get(f'{STEP_TAG}{step}.seconds', ''):>9}  "
                  f"{tags.get(f'{STEP_TAG}{step}.key', '')}")
            if f"{STEP_TAG}{step}.error" in tags:
                print(f"    error: {tags[f'{STEP_TAG}{step}.error'][:500]}")
    metrics = {k: v for k, v in sorted(run.data.metrics.items()) if k.startswith(("test_", "best_", "gate_"))}
    if metrics:
        print("  metrics  " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="ingest, validate, train, evaluate, register and promote")
    add_config_args(p)
    add_where_args(p)
    add_step_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("retrain", help="fine-tune the @champion on the newest data, then the usual gate")
    add_config_args(p)
    add_where_args(p)
    p.add_argument("--from-scratch", action="store_true", help="train a new model instead of fine-tuning")
    p.set_defaults(func=cmd_retrain)

    runs = sub.add_parser("runs", help="pipeline runs").add_subparsers(dest="action", required=True)
    p = runs.add_parser("show", help="a run's steps (status, time, record) and metrics")
    p.add_argument("run_id", metavar="RUN")
    add_store_args(p)
    p.set_defaults(func=cmd_runs_show)

    p = runs.add_parser("sync", help="write epoch metrics kept while MLflow was unreachable")
    add_store_args(p)
    p.set_defaults(func=cmd_runs_sync)

    p = sub.add_parser("tune", help="hyperparameter search (tune.space); the best trial is registered")
    add_config_args(p)
    add_where_args(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the newest interrupted study of this config (same parent MLflow run)")
    add_step_args(p)
    p.set_defaults(func=cmd_tune)
