"""`ray job submit --working-dir . -- python jobs/tune.py --config configs/quickstart.yaml \
    --config configs/tune-quickstart.yaml`

Thin entry point for `recur tune`: a Ray Tune study over `tune.space`, the best trial evaluated
and registered; `--resume` continues the newest interrupted study of the same config. Inside a
Ray job, RAY_ADDRESS points at the cluster, so the study joins it instead of starting a local Ray.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", action="append", required=True, help="YAML file (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true",
                        help="continue the newest interrupted study of this config")
    args = parser.parse_args(argv)

    from pipeline.cli import main as recur

    return recur(["tune", *args.config, *sum((["--set", o] for o in args.overrides), []),
                  *(["--resume"] if args.resume else [])])


if __name__ == "__main__":
    sys.exit(main())
