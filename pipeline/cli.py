"""`recur` command line. Parses arguments and calls the workflow; nothing runs at import time."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pipeline import config as config_mod


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML files, merged left to right")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, e.g. --set train.lr=0.003 (repeatable)")


def _add_where_args(p: argparse.ArgumentParser) -> None:
    """run, retrain, tune: which Ray and which MLflow."""
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI, as --set tracking.tracking_uri=URI "
                                          "(default: the config's, else MLFLOW_TRACKING_URI, else sqlite "
                                          "under tracking.runs_dir)")


def _add_step_args(p: argparse.ArgumentParser) -> None:
    from pipeline.workflow.records import STEPS

    p.add_argument("--from", dest="from_step", choices=STEPS, metavar="STEP",
                   help="re-run this step and every later one (earlier ones reuse their records): "
                        + ", ".join(STEPS) + " (tune with a search, train without)")
    p.add_argument("--force", action="store_true", help="re-run every step, even those with records")


def _load(args: argparse.Namespace, *, as_given: bool = False) -> config_mod.RecurConfig:
    """The config of CONFIG... and --set; its relative paths (data.root, tracking.runs_dir, ...)
    made absolute against the directory recur runs from, unless `as_given`: Ray runs Tune trials
    and jobs in directories of their own, where a relative path names nothing."""
    overrides = list(args.overrides)
    if getattr(args, "tracking_uri", None):  # run, retrain, tune --tracking-uri
        overrides.append(f"tracking.tracking_uri={args.tracking_uri}")
    cfg = config_mod.load_config(args.configs, overrides)
    return cfg if as_given else config_mod.with_absolute_paths(cfg)


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
    cfg = _load(args)  # before Ray, MLflow and torch are imported: a bad config is refused at once
    from pipeline.workflow.session import connect_ray, refuse_dashboard_address

    refuse_dashboard_address(cfg, args.address)  # before any work, too
    from pipeline.workflow.pipeline import run_pipeline

    if cfg.tune.enabled:  # the search replaces the single training; its best trial is registered
        return _tune(cfg, args, resume=False)
    summary = run_pipeline(cfg, config_sources=list(args.configs),
                           connect=lambda: connect_ray(cfg, args.address),
                           from_step=args.from_step, force=args.force)
    print(summary.format(cfg.tracking.ui_port))
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    cfg = _load(args)  # first, as in cmd_run
    from pipeline.tracking.store import check_reachable, resolve_tracking_uri
    from pipeline.workflow.pipeline import run_pipeline
    from pipeline.workflow.retrain import champion_to_fine_tune
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
    print(config_mod.dump_yaml(_load(args, as_given=True)), end="")
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
    uri = _tracking_uri(args)
    from pipeline.tracking.registry import list_versions
    from pipeline.tracking.store import check_reachable

    check_reachable(uri)  # seconds, not MLflow's minutes of retries
    rows = list_versions(uri, args.name)
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
    from pipeline.commands import CommandError

    if not args.version.isdigit():
        raise CommandError(f"recur models promote {args.name} {args.version}: VERSION is a version number "
                           f"(see `recur models list {args.name}`)")
    uri = _tracking_uri(args)
    from pipeline.tracking.registry import promote
    from pipeline.tracking.store import check_reachable

    check_reachable(uri)
    previous = promote(uri, args.name, args.version)
    replaced = f" (replaced version {previous})" if previous and previous != str(args.version) else ""
    print(f"{args.name} version {args.version} is now @champion{replaced}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import mlflow
    import pandas as pd

    from pipeline.inference.model import ModelSpec, resolve_version
    from pipeline.tracking.registry import download_verified, model_dir
    from pipeline.tracking.store import use_tracking_uri

    uri = _tracking_uri(args)
    if args.length < 1 or args.temperature <= 0 or args.top_k < 0:
        raise config_mod.ConfigError("recur generate: --length must be >= 1, --temperature > 0 and "
                                     "--top-k >= 0")
    # NAME@alias, NAME/version, or NAME alone (its @champion); its files checked before loading
    spec = ModelSpec.parse(args.model)
    version, _ = resolve_version(spec, uri)
    with use_tracking_uri(uri):
        model = mlflow.pyfunc.load_model(download_verified(spec.name, version, model_dir()))
    params = {"max_new_tokens": args.length, "temperature": args.temperature, "top_k": args.top_k,
              "seed": args.seed}
    out = model.predict(pd.DataFrame({"text": [args.prompt]}), params=params)
    print(out["text"].iloc[0])
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from pipeline.tracking.store import server_command

    uri = _tracking_uri(args)
    # the store URI (with a database password) goes in the server's environment, not its argv (ps)
    command, env = server_command(uri, port=args.port, runs_dir=Path(args.runs_dir or "recur-runs").resolve())
    from pipeline.tracking.redact import redact_text

    print(f"MLflow UI on http://127.0.0.1:{args.port} over {redact_text(uri)} (Ctrl-C stops it)", flush=True)
    from pipeline.children import run_until_stopped

    # the server and its workers stop with recur (Ctrl-C, kill PID), by their process group
    return run_until_stopped(command, env=env)


# ------------------------------------------------------------------------------------ parser


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

    p = sub.add_parser("run", help="ingest, validate, train, evaluate, register and promote")
    _add_config_args(p)
    _add_where_args(p)
    _add_step_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("retrain", help="fine-tune the @champion on the newest data, then the usual gate")
    _add_config_args(p)
    _add_where_args(p)
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
    _add_where_args(p)
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


def _version() -> str:
    """The installed distribution's version (a source checkout without metadata: unknown)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("recur")
    except PackageNotFoundError:
        return "unknown (not installed)"


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
