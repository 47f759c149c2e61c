"""A stored dataset checked against its manifest: every row of every split (rows.py, the per-row
contract checks), the row counts, and the data hash recomputed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.dataset.hashing import compute_data_hash
from pipeline.data.dataset.io import read_manifest, read_split, split_files
from pipeline.data.dataset.schema import SPLITS, DatasetError
from pipeline.data.validate.rows import Problem, find_row_problems


@dataclass
class ValidationReport:
    """Result of ``validate_dataset``; ``ok`` when there are no problems and the hash matches."""

    root: str
    rows_checked: dict[str, int]
    problems: list[Problem] = field(default_factory=list)
    hash_ok: bool = True
    expected_hash: str = ""
    actual_hash: str = ""

    @property
    def ok(self) -> bool:
        return self.hash_ok and not self.problems

    def format(self, limit: int = 20) -> str:
        """Readable multi-line report: a summary line, then file, row id, column, reason."""
        counts = ", ".join(f"{s} {n} rows" for s, n in self.rows_checked.items())
        if self.ok:
            return (f"dataset {self.root}: OK ({counts}; data hash {self.actual_hash[:12]} "
                    "matches the manifest)")
        lines = [f"dataset {self.root}: INVALID ({counts})"]
        if not self.hash_ok:
            lines.append(
                f"  data hash mismatch: manifest says {self.expected_hash}, content hashes to "
                f"{self.actual_hash or '(not computed)'}; the data changed after import"
            )
        if self.problems:
            n = len(self.problems)
            lines.append(f"  {n} problem{'s' if n != 1 else ''}:")
            for p in self.problems[:limit]:
                lines.append(f"    {p.source or p.split}  row {p.row_id!r}  {p.column}: {p.reason}")
            if n > limit:
                lines.append(f"    ... and {n - limit} more")
        return "\n".join(lines)


def validate_dataset(root: str) -> ValidationReport:
    """Check every split of the dataset at ``root`` against its manifest.

    Reads the manifest (DatasetError if missing/invalid), checks every row of every split
    (``check_rows``), compares row counts with the manifest and recomputes the data hash.
    """
    manifest = read_manifest(root)
    problems: list[Problem] = []
    rows_checked: dict[str, int] = {}
    tables: dict[str, pa.Table] = {}
    for split in SPLITS:
        files = split_files(root, split)
        try:
            table = read_split(root, split)
        except (DatasetError, OSError, pa.ArrowException) as e:
            # unreadable or missing files are a finding, not a crash
            problems.append(Problem(split, "*", "file", f"cannot read split: {e}",
                                    source=files[0] if len(files) == 1 else None))
            continue
        tables[split] = table
        rows_checked[split] = table.num_rows
        # Map row index -> part file, for the report.
        bounds = np.cumsum([_rows_in(f) for f in files]) if len(files) > 1 else None
        for r, p in find_row_problems(
            table, split=split, num_channels=manifest.feature.num_channels,
            num_labels=manifest.num_labels or None, task=manifest.task,
            feature_kind=manifest.feature.kind, vocab_size=len(manifest.vocab) or None,
            target_vocab_size=len(manifest.target_vocab) or None,
            horizon=manifest.task_params.get("horizon"),
            columns=("id", "x", "y"),
        ):
            if bounds is None or r < 0:
                src = files[0] if files else None
            else:
                src = files[int(np.searchsorted(bounds, r, "right"))]
            problems.append(dataclasses.replace(p, source=src))
        expected = manifest.splits[split].rows
        if table.num_rows != expected:
            problems.append(Problem(
                split, "*", "rows",
                f"manifest says {expected} rows, the files hold {table.num_rows}",
                source=files[0] if len(files) == 1 else None))
    try:
        actual = compute_data_hash(tables) if len(tables) == len(SPLITS) else ""
    except DatasetError:  # a column of the wrong type, already reported as a problem above
        actual = ""
    return ValidationReport(
        root=root,
        rows_checked=rows_checked,
        problems=problems,
        hash_ok=actual == manifest.data_hash,
        expected_hash=manifest.data_hash,
        actual_hash=actual,
    )


def _rows_in(path: str) -> int:
    return pq.ParquetFile(path).metadata.num_rows
