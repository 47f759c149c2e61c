"""A predict job's arguments, in one parser shared by `recur predict`, `jobs/predict.py` (for
`ray job submit`) and `recur submit --entry predict` (which checks them before it submits)."""

from __future__ import annotations

import argparse

DEFAULT_BATCH_SIZE = 256


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="NAME@alias, NAME/version, or NAME (its @champion)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="dataset folder in recur's format (manifest.json + Parquet splits)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: a local path or a URI pyarrow can write (file://, s3://...)")
    p.add_argument("--split", dest="splits", action="append", choices=["train", "val", "test"],
                   metavar="NAME", help="split to predict: train, val or test (repeatable; default: all)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"rows per model call (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--concurrency", type=int,
                   help="model replicas (Ray actors); default: one per GPU, else one per CPU left "
                        "after resources.reserve_cpus_for_data")
    p.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None,
                   help="one GPU per actor (default: when the cluster has GPUs and torch sees CUDA)")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="a param of the model's predict, e.g. beam_size=4 (repeatable; YAML values)")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")
    p.add_argument("--force", action="store_true",
                   help="predict even when the same model version already predicted this data into --out "
                        "with these options (a recorded step; otherwise skipped)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else sqlite under --runs-dir")
    p.add_argument("--runs-dir", help="local store folder (default recur-runs)")
    p.add_argument("--config", action="append",
                   help="take tracking and resources settings from this config (repeatable)")
