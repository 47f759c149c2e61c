"""`ray job submit --working-dir . -- python jobs/retrain.py --config configs/quickstart.yaml`

Thin entry point for `recur retrain`: fine-tune the registered @champion on the newest data
version (or `--from-scratch`), then the usual registry gate. Inside a Ray job, RAY_ADDRESS points
at the cluster, so the run joins it instead of starting a local Ray.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", action="append", required=True, help="YAML file (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--from-scratch", action="store_true", help="train a new model instead")
    args = parser.parse_args(argv)

    from pipeline.cli import main as recur

    return recur(["retrain", *args.config, *sum((["--set", o] for o in args.overrides), []),
                  *(["--from-scratch"] if args.from_scratch else [])])


if __name__ == "__main__":
    sys.exit(main())
