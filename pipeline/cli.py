"""`recur` command line. Parses arguments and calls the workflow; nothing runs at import time."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from pipeline import config as config_mod


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML files, merged left to right")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, e.g. --set train.lr=0.003 (repeatable)")


def _add_step_args(p: argparse.ArgumentParser) -> None:
    from pipeline.workflow.records import STEPS

    p.add_argument("--from", dest="from_step", choices=STEPS, metavar="STEP",
                   help="re-run this step and every later one (earlier ones reuse their records): "
                        + ", ".join(STEPS) + " (tune with a search, train without)")
    p.add_argument("--force", action="store_true", help="re-run every step, even those with records")


def _load(args: argparse.Namespace) -> config_mod.RecurConfig:
    return config_mod.load_config(args.configs, args.overrides)


def _tracking_uri(args: argparse.Namespace) -> str:
    from pipeline.tracking.store import resolve_tracking_uri

    if getattr(args, "tracking_uri", None):
        return args.tracking_uri
    cfg = config_mod.load_config(args.config) if getattr(args, "config", None) else config_mod.RecurConfig()
    if getattr(args, "runs_dir", None):
        cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"runs_dir": args.runs_dir})})
    return resolve_tracking_uri(cfg)


# ---------------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.workflow.pipeline import run_pipeline
    from pipeline.workflow.session import connect_ray

    cfg = _load(args)
    if cfg.tune.enabled:  # the search replaces the single training; its best trial is registered
        return _tune(cfg, args, resume=False)
    summary = run_pipeline(cfg, config_sources=list(args.configs),
                           connect=lambda: connect_ray(cfg, args.address),
                           from_step=args.from_step, force=args.force)
    print(summary.format(cfg.tracking.ui_port))
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from pipeline.tracking.store import check_reachable, resolve_tracking_uri
    from pipeline.workflow.pipeline import run_pipeline
    from pipeline.workflow.retrain import champion_to_fine_tune
    from pipeline.workflow.session import connect_ray

    cfg = _load(args)
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


def cmd_runs_sync(args: argparse.Namespace) -> int:
    """Upload what `pipeline.tracking.spool` kept; exit 1 while some of it still cannot go."""
    from pipeline.tracking.spool import sync_all
    from pipeline.tracking.store import check_reachable

    uri = _tracking_uri(args)
    check_reachable(uri)
    runs_dir = args.runs_dir or (config_mod.load_config(args.config).tracking.runs_dir if args.config
                                 else config_mod.RecurConfig().tracking.runs_dir)
    return 1 if sync_all(uri, runs_dir) else 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipeline.workflow.records import PREDICT, STEPS
    from pipeline.workflow.runner import STEP_TAG

    uri = _tracking_uri(args)
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


def cmd_tune(args: argparse.Namespace) -> int:
    return _tune(_load(args), args, resume=args.resume)


def _tune(cfg: config_mod.RecurConfig, args: argparse.Namespace, *, resume: bool) -> int:
    from pipeline.workflow.session import connect_ray
    from pipeline.workflow.tune import run_study

    summary = run_study(cfg, config_sources=list(args.configs), resume=resume,
                        connect=lambda: connect_ray(cfg, args.address), from_step=args.from_step,
                        force=args.force)
    print(summary.format(cfg.tune_metric[0]))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    print(config_mod.dump_yaml(_load(args)), end="")
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    print(config_mod.json_schema())
    return 0


def cmd_data_import(args: argparse.Namespace) -> int:
    from pipeline.data.importers import import_dataset, resolve_source

    given = {k: getattr(args, k) for k in config_mod._FORMAT_SPECIFIC if getattr(args, k) is not None}
    if isinstance(given.get("value_columns"), str):
        given["value_columns"] = [c.strip() for c in given["value_columns"].split(",") if c.strip()]
    try:  # the same checks as data and data.source in a config: options must fit the format
        source = config_mod.SourceConfig(format=args.format, paths=args.sources, **given)
        data = config_mod.DataConfig(task=config_mod.FORMAT_TASKS[args.format][0], source=source,
                                     val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                                     on_invalid=args.on_invalid, max_length=args.max_length,
                                     on_too_long=args.on_too_long)
    except config_mod.ValidationError as exc:
        raise config_mod.ConfigError("recur data import: " + "; ".join(
            ("" if e["type"] == "value_error" else f"{'.'.join(map(str, e['loc']))}: ")
            + e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
    from pipeline.storage import check_bucket

    check_bucket(args.out, "write the dataset (--out)")
    length = {"max_length": data.max_length, "on_too_long": data.on_too_long} if data.max_length else {}
    manifest = import_dataset(args.format, [resolve_source(s) for s in args.sources], args.out,
                              name=args.name, val_fraction=args.val_fraction,
                              test_fraction=args.test_fraction, seed=args.seed,
                              on_invalid=args.on_invalid, **length, **source.importer_options())
    rows = ", ".join(f"{split} {info.rows}" for split, info in manifest.splits.items())
    print(f"imported {manifest.name} ({manifest.task}) -> {args.out}")
    print(f"  rows: {rows}")
    shape = (f"vocabulary {len(manifest.vocab)} tokens" if manifest.feature.kind == "token"
             else f"channels {manifest.feature.num_channels}")
    labels = f", {len(manifest.labels)} labels" if manifest.labels else ""
    print(f"  {shape}{labels}, data version {manifest.data_version}")
    truncated = sum(manifest.import_params.get("truncated", {}).values())
    if truncated:
        print(f"  truncated {truncated} rows to their first {data.max_length} time steps (--max-length)")
    if manifest.task_params.get("gaps"):
        print(f"  kept {manifest.task_params['gaps']} gaps in the time column (--gaps keep)")
    cells = manifest.task_params.get("filled") or {}  # csv: filled cells per value column
    if any(cells.values()):
        counts = ", ".join(f"{column} {n}" for column, n in cells.items() if n)
        print(f"  filled {sum(cells.values())} blank/NaN cells (--missing "
              f"{manifest.import_params['missing']}): {counts}")
    if manifest.import_params.get("filled"):  # ucr: NaN values inside series
        print(f"  filled {manifest.import_params['filled']} missing values (--missing "
              f"{manifest.import_params['missing']})")
    if manifest.quarantined:
        total = sum(manifest.quarantined.values())
        print(f"  quarantined {total} rows with reasons: {Path(args.out) / 'quarantine'}")
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from pipeline.data.validate import validate_dataset

    report = validate_dataset(args.root)
    print(report.format())
    return 0 if report.ok else 1


def cmd_models_list(args: argparse.Namespace) -> int:
    from pipeline.tracking.registry import list_versions

    rows = list_versions(_tracking_uri(args), args.name)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ["version", "aliases", "metric", "score", "baseline", "decision", "run_id", "data_hash"]
    widths = {h: max(len(h), *(len(str(r[h])) for r in rows)) if rows else len(h) for h in headers}
    print("  ".join(h.ljust(widths[h]) for h in headers))
    for row in rows:
        print("  ".join(str(row[h]).ljust(widths[h]) for h in headers))
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from pipeline.tracking.registry import promote

    previous = promote(_tracking_uri(args), args.name, args.version)
    replaced = f" (replaced version {previous})" if previous and previous != str(args.version) else ""
    print(f"{args.name} version {args.version} is now @champion{replaced}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import mlflow
    import pandas as pd

    from pipeline.tracking.store import use_tracking_uri

    uri = _tracking_uri(args)
    # NAME@alias, NAME/version, or NAME alone (its @champion)
    if "@" in args.model or "/" in args.model:
        model_uri = f"models:/{args.model}"
    else:
        model_uri = f"models:/{args.model}@champion"
    if args.length < 1 or args.temperature <= 0 or args.top_k < 0:
        raise config_mod.ConfigError("recur generate: --length must be >= 1, --temperature > 0 and "
                                     "--top-k >= 0")
    with use_tracking_uri(uri):
        try:
            model = mlflow.pyfunc.load_model(model_uri)
        except mlflow.exceptions.MlflowException as exc:
            raise FileNotFoundError(f"no registered model {model_uri} at {uri}: {exc.message}") from None
    params = {"max_new_tokens": args.length, "temperature": args.temperature, "top_k": args.top_k,
              "seed": args.seed}
    out = model.predict(pd.DataFrame({"text": [args.prompt]}), params=params)
    print(out["text"].iloc[0])
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    uri = _tracking_uri(args)
    runs_dir = Path(args.runs_dir or "recur-runs").resolve()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--host", "127.0.0.1", "--port", str(args.port),
               "--workers", "1"]  # one local user; MLflow's default 4 take ~30 s to start on 2 cores
    if uri.startswith("sqlite:"):
        command += ["--default-artifact-root", (runs_dir / "artifacts").as_uri()]
    from pipeline.tracking.redact import redact_text

    print(f"MLflow UI on http://127.0.0.1:{args.port} over {redact_text(uri)} (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0


# ------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(prog="recur", description="Train recurrent sequence models on Ray.")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="no progress: errors, warnings and the final summary only")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="ingest, validate, train, evaluate, register and promote")
    _add_config_args(p)
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    _add_step_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("retrain", help="fine-tune the @champion on the newest data, then the usual gate")
    _add_config_args(p)
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--from-scratch", action="store_true", help="train a new model instead of fine-tuning")
    p.set_defaults(func=cmd_retrain)

    runs = sub.add_parser("runs", help="pipeline runs").add_subparsers(dest="action", required=True)
    p = runs.add_parser("show", help="a run's steps (status, time, record) and metrics")
    p.add_argument("run_id", metavar="RUN")
    _add_store_args(p)
    p.set_defaults(func=cmd_runs_show)

    p = runs.add_parser("sync", help="write epoch metrics kept while MLflow was unreachable")
    _add_store_args(p)
    p.set_defaults(func=cmd_runs_sync)

    p = sub.add_parser("tune", help="hyperparameter search (tune.space); the best trial is registered")
    _add_config_args(p)
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--resume", action="store_true",
                   help="continue the newest interrupted study of this config (same parent MLflow run)")
    _add_step_args(p)
    p.set_defaults(func=cmd_tune)

    cfg = sub.add_parser("config", help="inspect configuration").add_subparsers(dest="action", required=True)
    p = cfg.add_parser("show", help="print the resolved config")
    _add_config_args(p)
    p.set_defaults(func=cmd_config_show)
    p = cfg.add_parser("schema", help="print the JSON schema of the config")
    p.set_defaults(func=cmd_config_schema)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="action", required=True)
    p = data.add_parser("import", help="import real-world files into the canonical dataset")
    p.add_argument("sources", nargs="+", metavar="SRC",
                   help="files; names ending in _TRAIN/_VAL/_TEST pick the split; "
                        "builtin://... for data shipped with recur")
    p.add_argument("--format", required=True, choices=sorted(config_mod.FORMAT_OPTIONS),
                   help="; ".join(f"{f}: {', '.join(t)}" for f, t in config_mod.FORMAT_TASKS.items()))
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--name", help="dataset name (default: the folder name)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--on-invalid", default="fail", choices=["fail", "quarantine"])
    p.add_argument("--max-length", type=int, metavar="STEPS",
                   help=config_mod.DataConfig.model_fields["max_length"].description)
    p.add_argument("--on-too-long", default="truncate", choices=["truncate", "reject"],
                   help=config_mod.DataConfig.model_fields["on_too_long"].description)
    _add_format_options(p)
    p.set_defaults(func=cmd_data_import)
    p = data.add_parser("validate", help="check every row and the data hash")
    p.add_argument("root", metavar="DIR")
    p.set_defaults(func=cmd_data_validate)

    models = sub.add_parser("models", help="model registry").add_subparsers(dest="action", required=True)
    for name, func, helptext in (("list", cmd_models_list, "versions, aliases and metrics"),
                                 ("promote", cmd_models_promote, "set @champion by hand (rollback)")):
        p = models.add_parser(name, help=helptext)
        p.add_argument("name", metavar="NAME")
        if name == "promote":
            p.add_argument("version", metavar="VERSION")
        else:
            p.add_argument("--json", action="store_true")
        _add_store_args(p)
        p.set_defaults(func=func)

    p = sub.add_parser("generate", help="sample text from a registered lm model")
    p.add_argument("model", metavar="MODEL", help="NAME@alias, NAME/version, or NAME (its @champion)")
    p.add_argument("--prompt", default="", help="text to continue (default: start from a new line)")
    p.add_argument("--length", type=int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature (> 0)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens; 0 = all")
    p.add_argument("--seed", type=int, default=0)
    _add_store_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("ui", help="MLflow UI over the configured store, on 127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    _add_store_args(p)
    p.set_defaults(func=cmd_ui)

    from pipeline.commands import register_all

    register_all(sub)
    return parser


def _add_format_options(p: argparse.ArgumentParser) -> None:
    """One flag per importer option (`data.source` keys), documented from the config model."""
    fields = config_mod.SourceConfig.model_fields
    for fmt, options in config_mod.FORMAT_OPTIONS.items():
        group = p.add_argument_group(f"--format {fmt}")
        for key in options:
            flag = "--" + key.replace("_", "-")
            if any(flag in a.option_strings for a in p._actions):
                continue  # shared by several formats: added once
            field = fields[key]
            annotation = str(field.annotation)
            kwargs: dict = {"dest": key, "default": None, "help": field.description}
            if "Literal" in annotation:
                kwargs["choices"] = list(field.annotation.__args__)
            elif key == "value_columns":
                kwargs["help"] = "comma-separated value columns"
            elif field.annotation is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif "int" in annotation:
                kwargs["type"] = int
            group.add_argument(flag, **kwargs)


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else sqlite under --runs-dir")
    p.add_argument("--runs-dir", help="local store folder (default recur-runs)")
    p.add_argument("--config", action="append", help="take tracking settings from this config")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline import progress

    # live on a terminal, plain lines in CI and `ray job logs`, nothing with -q (RECUR_PROGRESS overrides)
    mode = progress.set_mode("quiet" if args.quiet else None)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if mode != "live":  # MLflow's download bars are \r-rewritten lines
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # quiet: INFO is off also where a handler was set up before (MLflow's own, a test's), until
    # this command returns; MLflow sets its level when it is first imported, from this variable
    loggers = [logging.getLogger(name) for name in (None, "mlflow", "ray", "ray.data")] if args.quiet else []
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    mlflow_level = args.quiet and "MLFLOW_LOGGING_LEVEL" not in os.environ
    if mlflow_level:
        os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    try:
        return _dispatch(args)
    finally:
        for logger, previous in zip(loggers, levels):
            logger.setLevel(previous)
        if mlflow_level:
            os.environ.pop("MLFLOW_LOGGING_LEVEL", None)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command; recur's own errors become one line on stderr and an exit code."""
    from pipeline.tracking.redact import install_log_redaction, redact_text, redacting_excepthook

    install_log_redaction()  # secret env values and URL passwords never reach the log
    sys.excepthook = redacting_excepthook
    from pipeline.commands import CommandError
    from pipeline.data.contract import DatasetError
    from pipeline.data.ts_format import TsFormatError
    from pipeline.data.validate import DataValidationError
    from pipeline.storage import StorageError
    from pipeline.tracking.store import TrackingUnavailable
    from pipeline.training.trainer import ResourceError, TrainingFailed
    from pipeline.tuning.space import SpaceError

    try:
        return args.func(args)
    except (config_mod.ConfigError, DatasetError, DataValidationError, TsFormatError, ResourceError,
            TrackingUnavailable, FileNotFoundError, SpaceError, CommandError, StorageError) as exc:
        print(f"recur: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except TrainingFailed as exc:
        print(f"recur: {redact_text(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
