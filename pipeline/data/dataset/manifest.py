"""``manifest.json``: the pydantic models of what a later step needs to know about a dataset.

Frozen and strict (unknown fields are refused); the JSON is ``Manifest.model_dump_json(indent=2)``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from pipeline.data.dataset.schema import FORMAT_VERSION, PART_FILE, SPECIALS, SPLITS


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeatureSpec(_Frozen):
    """What ``x`` holds: float features with ``num_channels`` values per time step, or token ids
    (``kind == "token"``, ``num_channels == 1``) into ``Manifest.vocab``."""

    kind: Literal["float", "token"] = "float"
    num_channels: int

    @field_validator("num_channels")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"num_channels must be >= 1, got {v}")
        return v


class SplitInfo(_Frozen):
    """Row count of one split and its Parquet files, relative to the dataset root."""

    rows: int
    files: list[str]

    @field_validator("files")
    @classmethod
    def _inside_the_dataset(cls, files: list[str]) -> list[str]:
        # A manifest names files in its own folder only: `../..` or an absolute path would make
        # a dataset read (or a copy of it trust) files elsewhere on the machine or the bucket.
        for f in files:
            parts = f.replace("\\", "/").split("/")
            if f.startswith(("/", "\\")) or "://" in f or ".." in parts or re.match(r"^[A-Za-z]:", f):
                raise ValueError(f"file {f!r} is outside the dataset folder; expected a path like "
                                 f"'train/{PART_FILE}' relative to the folder holding manifest.json")
        return files


class Normalization(_Frozen):
    """Per-channel mean and std of ``x``, fit on the TRAIN split over every finite time step.

    ``std`` is the population std (ddof=0), floored at ``stats.STD_FLOOR``.
    Normalise with ``(x - mean) / std``.
    """

    mean: list[float]
    std: list[float]
    # How much the rows' own scale varies: per channel, the 10th and 90th percentile over train
    # rows of each row's std (its finite steps). None in manifests written before recur kept them.
    row_std_p10: list[float] | None = None
    row_std_p90: list[float] | None = None

    @model_validator(mode="after")
    def _same_length(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"normalization mean has {len(self.mean)} channels but std has {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError("normalization std must be > 0 for every channel")
        return self


class LengthStats(_Frozen):
    """Sequence lengths (time steps) of one split."""

    min: int
    max: int
    mean: float


class SourceFile(_Frozen):
    """A source file an import read: its path (as given), size in bytes and sha256 (hex); for
    an object read from S3 also its ETag and, on a versioned bucket, its version id."""

    path: str
    size: int
    sha256: str
    etag: str | None = None
    version_id: str | None = None


class Manifest(_Frozen):
    """``manifest.json``: everything a later step needs to know about a dataset."""

    format_version: int = FORMAT_VERSION
    name: str
    task: Literal["classify", "tag", "forecast", "lm", "seq2seq"]
    feature: FeatureSpec
    labels: list[str]  # classify: class names; tag: tag names
    splits: dict[str, SplitInfo]
    normalization: Normalization | None  # float features only
    lengths: dict[str, LengthStats]
    data_hash: str
    sources: list[SourceFile]
    quarantined: dict[str, int]
    import_params: dict[str, Any]
    created_at: str
    vocab: list[str] = []  # token features: id -> token (SPECIALS first)
    target_vocab: list[str] = []  # seq2seq: id -> target token (SPECIALS first)
    task_params: dict[str, Any] = {}  # e.g. forecast window/horizon/columns, lm level
    columns: list[str] = []  # optional task columns present (EXTRA_COLUMNS)

    @field_validator("data_hash")
    @classmethod
    def _hex_sha256(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("data_hash must be 64 lowercase hex characters (sha256)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version} is not supported (expected {FORMAT_VERSION})"
            )
        missing = [s for s in SPLITS if s not in self.splits]
        unknown = [s for s in self.splits if s not in SPLITS]
        if missing or unknown:
            raise ValueError(
                f"splits must be exactly {list(SPLITS)} (missing {missing}, unknown {unknown})"
            )
        if self.task in ("classify", "tag") and not self.labels:
            raise ValueError(f"a {self.task} dataset needs at least one label")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        for what, vocab in (("vocab", self.vocab), ("target_vocab", self.target_vocab)):
            if vocab and tuple(vocab[: len(SPECIALS)]) != SPECIALS:
                raise ValueError(f"{what} must start with {list(SPECIALS)}")
        if self.feature.kind == "token" and not self.vocab:
            raise ValueError("token features need a vocab")
        if self.task == "seq2seq" and not self.target_vocab:
            raise ValueError("a seq2seq dataset needs a target_vocab")
        n = self.feature.num_channels
        if self.feature.kind == "float":
            if self.normalization is None:
                raise ValueError("float features need normalization statistics")
            if len(self.normalization.mean) != n:
                raise ValueError(
                    f"normalization has {len(self.normalization.mean)} channels, feature has {n}"
                )
        return self

    @property
    def data_version(self) -> str:
        """Short data version: the first 12 hex characters of ``data_hash``."""
        return self.data_hash[:12]

    @property
    def num_labels(self) -> int:
        return len(self.labels)
