"""`ray job submit --working-dir . -- python jobs/predict.py MODEL --data DIR --out DIR [...]`

Thin entry point for batch inference: the same arguments as `recur predict` (checked here, so
`--help` and mistakes show in the job's log), forwarded to it. Inside a Ray job, RAY_ADDRESS
points at the cluster, so the command joins it instead of starting a local Ray.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from pipeline.inference.arguments import add_arguments

    parser = argparse.ArgumentParser(prog="jobs/predict.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.parse_args(argv)

    from pipeline.cli import main as recur

    return recur(["predict", *argv])


if __name__ == "__main__":
    sys.exit(main())
