"""Importers: real-world files -> the canonical dataset (``pipeline.data.dataset``).

One module per ``data.source.format`` (``pipeline.config.SourceConfig``): ts.py, ucr.py,
parquet.py, csv.py, conll.py, text.py, tsv.py,
text_classes.py, music.py. What they share: sources.py (where source files
come from, how they are named) and common.py (splits, bad rows failed or quarantined, the
classify skeleton of ts, ucr and parquet). ``import_dataset`` runs the one of a format.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.data.dataset import DatasetError, Manifest
from pipeline.data.importers.sources import resolve_source

__all__ = ["IMPORTERS", "check_output_folder", "import_dataset", "resolve_source"]

# Importers by format, imported when used. Every importer takes (paths, out) and the keywords
# name, val_fraction, test_fraction, seed, on_invalid plus its format's options
# (`pipeline.config.FORMAT_OPTIONS`), and returns the written dataset's Manifest. The formats of
# `pipeline.config.MAX_LENGTH_FORMATS` also take max_length and on_too_long.
IMPORTERS: dict[str, str] = {
    "ts": "pipeline.data.importers.ts:import_ts",
    "ucr": "pipeline.data.importers.ucr:import_ucr",
    "parquet": "pipeline.data.importers.parquet:import_parquet",
    "csv": "pipeline.data.importers.csv:import_csv",
    "conll": "pipeline.data.importers.conll:import_conll",
    "text": "pipeline.data.importers.text:import_text",
    "tsv": "pipeline.data.importers.tsv:import_pairs",
    "text-classes": "pipeline.data.importers.text_classes:import_text_classes",
    "music": "pipeline.data.importers.music:import_music",
}


def check_output_folder(out: str) -> None:
    """A local dataset folder (`--out`, `data.root`) must be a folder or not exist yet, and its
    parent a folder: DatasetError naming the path before anything is read."""
    if "://" in out:
        return
    path = os.path.abspath(os.path.expanduser(out))
    if os.path.exists(path) and not os.path.isdir(path):
        raise DatasetError(f"{out}: is a file, not a folder; the dataset is written as a folder "
                           "(manifest.json and train/val/test): choose another --out / data.root")
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise DatasetError(f"{out}: {parent} is a file, not a folder; choose another --out / data.root")


def import_dataset(fmt: str, paths: list[str] | str, out: str, **kwargs: Any) -> Manifest:
    """Import `paths` in format `fmt` (a key of IMPORTERS) into the dataset folder `out`."""
    import importlib

    if fmt not in IMPORTERS:
        raise ValueError(f"unknown import format {fmt!r}; expected one of {sorted(IMPORTERS)}")
    check_output_folder(out)
    from pipeline.progress import importing

    module, _, attr = IMPORTERS[fmt].partition(":")
    with importing():  # the importer's `source_read` calls show files and rows as they are read
        return getattr(importlib.import_module(module), attr)(paths, out, **kwargs)
