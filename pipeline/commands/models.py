"""`recur models list|promote` and `recur generate`: the registry's versions, a rollback by hand, and
text from a registered lm model."""

from __future__ import annotations

import argparse
import json

from pipeline import config as config_mod
from pipeline.commands.common import (
    add_store_args,
    tracking_uri,
)


def cmd_models_list(args: argparse.Namespace) -> int:
    uri = tracking_uri(args)
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
    from pipeline.errors import CommandError

    if not args.version.isdigit():
        raise CommandError(f"recur models promote {args.name} {args.version}: VERSION is a version number "
                           f"(see `recur models list {args.name}`)")
    uri = tracking_uri(args)
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

    from pipeline.tracking.integrity import download_verified, model_dir
    from pipeline.tracking.model_ref import ModelSpec, resolve_version
    from pipeline.tracking.store import use_tracking_uri

    uri = tracking_uri(args)
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
    from pipeline.tasks.music import is_music

    if is_music(model.unwrap_python_model().pre.task_params or {}):  # note events: also as music
        from pipeline.tasks.music import write_sample

        midi, png = write_sample(out["text"].iloc[0], args.midi or f"{spec.name}-v{version}.mid")
        print(f"wrote {midi} (MIDI) and {png} (piano roll)")
    return 0



def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="model registry").add_subparsers(dest="action", required=True)
    for name, func, helptext in (("list", cmd_models_list, "versions, aliases and metrics"),
                                 ("promote", cmd_models_promote, "set @champion by hand (rollback)")):
        p = models.add_parser(name, help=helptext)
        p.add_argument("name", metavar="NAME")
        if name == "promote":
            p.add_argument("version", metavar="VERSION")
        else:
            p.add_argument("--json", action="store_true")
        add_store_args(p)
        p.set_defaults(func=func)

    p = sub.add_parser("generate", help="sample text from a registered lm model (a music model: also a "
                       "MIDI file and a piano roll)")
    p.add_argument("model", metavar="MODEL", help="NAME@alias, NAME/version, or NAME (its @champion)")
    p.add_argument("--prompt", default="", help="text to continue (default: start from a new line)")
    p.add_argument("--length", type=int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature (> 0)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens; 0 = all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--midi", metavar="PATH", help="music models: the MIDI file to write (default "
                   "NAME-vVERSION.mid in the current folder); its piano roll goes beside it as .png")
    add_store_args(p)
    p.set_defaults(func=cmd_generate)
