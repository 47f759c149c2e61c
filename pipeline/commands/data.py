"""`recur data import|validate`: real-world files into the canonical dataset, and its checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from pipeline import config as config_mod


def cmd_data_import(args: argparse.Namespace) -> int:
    from pipeline.data.importers import import_dataset, resolve_source

    given = {k: getattr(args, k) for k in config_mod.FORMAT_SPECIFIC if getattr(args, k) is not None}
    for key in ("value_columns", "parts"):  # comma-separated lists
        if isinstance(given.get(key), str):
            given[key] = [c.strip() for c in given[key].split(",") if c.strip()]
    try:  # the same checks as data and data.source in a config: options must fit the format
        source = config_mod.source_config(format=args.format, paths=args.sources, **given)
        data = config_mod.DataConfig(task=config_mod.FORMAT_TASKS[args.format][0], source=source,
                                     val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                                     on_invalid=args.on_invalid, max_length=args.max_length,
                                     on_too_long=args.on_too_long)
    except ValidationError as exc:
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


def _add_format_options(p: argparse.ArgumentParser) -> None:
    """One flag per importer option (`data.source` keys), documented from the config model."""
    for fmt, options in config_mod.FORMAT_OPTIONS.items():
        group = p.add_argument_group(f"--format {fmt}")
        for key in options:
            flag = "--" + key.replace("_", "-")
            if any(flag in a.option_strings for a in p._actions):
                continue  # shared by several formats: added once
            field = config_mod.SOURCE_MODELS[fmt].model_fields[key]
            annotation = str(field.annotation)
            kwargs: dict = {"dest": key, "default": None, "help": field.description}
            if "Literal" in annotation:  # every format's values (level: text has no wordpunct);
                # the format's own model refuses the others, naming them
                kwargs["choices"] = list(dict.fromkeys(
                    v for model in config_mod.SOURCE_MODELS.values() if key in model.model_fields
                    for v in model.model_fields[key].annotation.__args__))
            elif key == "value_columns":
                kwargs["help"] = "comma-separated value columns"
            elif field.annotation is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif "int" in annotation:
                kwargs["type"] = int
            group.add_argument(flag, **kwargs)



def register(sub: argparse._SubParsersAction) -> None:
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
