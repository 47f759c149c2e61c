"""UCR/UEA ``.ts`` files -> a classify dataset (``--format ts``); the format itself: ts_format.py.

Splits, labels (the ``@classLabel`` order of the first file that declares one), ``max_length``,
validation, quarantine and writing: ``common.finish``.
"""

from __future__ import annotations

from typing import Literal

from pipeline.data.dataset import DatasetError, Manifest
from pipeline.data.importers.common import Rows, add_cases, case_files, finish, ordered
from pipeline.data.importers.sources import base_name
from pipeline.data.importers.ts_format import parse_ts
from pipeline.progress import source_read


def import_ts(
    paths: list[str] | str,
    out: str,
    *,
    task: str = "classify",
    name: str | None = None,
    missing: str = "error",
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    on_invalid: Literal["fail", "quarantine"] = "fail",
    max_length: int | None = None,
    on_too_long: Literal["truncate", "reject"] = "truncate",
) -> Manifest:
    """Import UCR/UEA ``.ts`` files (or folders of them, or ``builtin://...``) into ``out``.

    Row ids are ``"<file stem>:<0-based case index>"``. ``missing`` is the ts_format policy;
    with ``"error"`` rows holding missing values are invalid rows (fail or quarantine, per
    ``on_invalid``) rather than a parse error, so every such row is reported at once.
    Format errors (bad numbers, wrong dimension count, ...) raise TsFormatError.
    """
    files = case_files(paths, "ts", missing=missing, val_fraction=val_fraction, test_fraction=test_fraction)

    rows = Rows()
    declared: list[str] | None = None
    num_channels: int | None = None
    first_file = None
    problem_name = None
    for index, (shown, local) in enumerate(ordered(files), start=1):
        data = parse_ts(local, missing="keep", check_labels=False)
        source_read(shown, len(data.series), index=index, files=len(files))
        if data.labels is None:
            raise DatasetError(
                f"{shown}: no class labels (@classLabel false); a classify dataset needs a "
                "label after the last ':' of every case"
            )
        if data.header.get("targetLabel") and not data.header.get("classLabel"):
            # UEA's extrinsic regression files: read as labels, every test value would be unknown
            raise DatasetError(
                f"{shown}: @targetLabel true: each case ends in a numeric regression target, not a "
                "class label, and recur's tasks do not regress a whole series on a number; a "
                "classify dataset needs @classLabel true <labels> (to classify, bin the targets "
                "into classes and declare them there)"
            )
        c = data.num_channels
        if num_channels is None:
            num_channels, first_file = c, shown
        elif c is not None and c != num_channels:
            raise DatasetError(
                f"{shown}: {c} dimensions, but {first_file} has {num_channels}; all files of one "
                "dataset need the same dimensions"
            )
        if declared is None and data.class_labels:
            declared = data.class_labels
        problem_name = problem_name or data.problem_name
        add_cases(rows, data.series, data.labels, data.line_numbers, file=local, shown=shown,
                  missing=missing)

    return finish(
        rows, out,
        name=name or problem_name or base_name(files[0][1]),
        task=task,
        num_channels=num_channels or 1,
        declared_labels=declared,
        files=files,
        import_params={
            "format": "ts", "missing": missing, "val_fraction": val_fraction,
            "test_fraction": test_fraction, "seed": seed, "on_invalid": on_invalid,
        },
        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, on_invalid=on_invalid,
        max_length=max_length, on_too_long=on_too_long,
        hint="missing values: pass missing='zero', 'ffill' or 'interpolate' to fill them",
    )
