"""`recur lineage MODEL@alias`: which data a registered model was trained on.

Prints the model version, its run, the data hash and every source file of the import (URI,
size, sha256, and for S3 objects the ETag and version id), from the version's tags, which the
registry step writes from the run's manifest (`pipeline.tracking.registry.lineage_tags`).
"""

from __future__ import annotations

import argparse
import json

from pipeline.errors import CommandError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lineage", help="the data a registered model version was trained on",
                       description="Print a model version's run, data hash and source files "
                                   "(with S3 ETags and version ids).")
    p.add_argument("model", metavar="MODEL", help="NAME@alias, NAME/version, or NAME (its @champion)")
    p.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else sqlite under --runs-dir")
    p.add_argument("--runs-dir", help="local store folder (default recur-runs)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_lineage)


def cmd_lineage(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from pipeline.config import RecurConfig
    from pipeline.inference.model import PredictError
    from pipeline.tracking.registry import lineage
    from pipeline.tracking.store import check_reachable, resolve_tracking_uri

    cfg = RecurConfig()
    if args.runs_dir:
        cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"runs_dir": args.runs_dir})})
    uri = args.tracking_uri or resolve_tracking_uri(cfg)
    check_reachable(uri)
    try:
        info = lineage(uri, args.model)
    except (MlflowException, PredictError) as exc:
        raise CommandError(f"recur lineage {args.model}: {str(exc).splitlines()[0]}") from None
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    aliases = ", ".join(f"@{a}" for a in info["aliases"]) or "no alias"
    print(f"{info['model']} version {info['version']} ({aliases})  run {info['run_id']}")
    print(f"  data hash   {info['data_hash'] or '(not recorded)'}")
    if info["data_source"]:
        print(f"  dataset     {info['data_source']}")
    print(f"  sources     {len(info['sources'])}")
    for src in info["sources"]:
        extra = "".join(f"  {k} {src[k]}" for k in ("etag", "version_id") if src.get(k))
        print(f"    {src['path']}  {src['size']} bytes  sha256 {src['sha256'][:12]}{extra}")
    return 0
