"""`ray job submit --working-dir . -- python jobs/train.py --config configs/quickstart.yaml`

Thin entry point for one training run: `recur run` with the hyperparameter search turned off
(`tune.enabled=false`, so a config with a `tune` section still trains once). Inside a Ray job,
RAY_ADDRESS points at the cluster, so the run joins it instead of starting a local Ray.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", action="append", required=True, help="YAML file (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    from pipeline.cli import main as recur

    return recur(["run", *args.config, *sum((["--set", o] for o in args.overrides), []),
                  "--set", "tune.enabled=false"])


if __name__ == "__main__":
    sys.exit(main())
