"""`python -m benchmarks NAME [options]`: run one benchmark (see `python -m benchmarks --help`)."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = {
    "tune": ("benchmarks.tune_schedulers", "ASHA against FIFO random search on JapaneseVowels"),
    "bucketing": ("benchmarks.bucketing", "length-bucketed against random batches: padding and sequences/s"),
    "load": ("benchmarks.load", "a 32-trial study and batch prediction over 1M sequences: peak memory"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("name", choices=sorted(BENCHMARKS),
                        help="; ".join(f"{k}: {v[1]}" for k, v in BENCHMARKS.items()))
    args, rest = parser.parse_known_args(argv)
    return importlib.import_module(BENCHMARKS[args.name][0]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
