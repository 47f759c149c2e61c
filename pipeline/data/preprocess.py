"""Preprocessing shared by training, evaluation and the MLflow model: normalize and pad.

One padding function (`pad_steps`) serves the training collate, driver-side evaluation and the
MLflow model's `predict`, so a sequence is normalized and padded the same way everywhere.
No Ray import here: a registered model loads without it.

Shape suffixes: N total valid steps in a batch, B batch, T padded time, C channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipeline.data.dataset import XParts


@dataclass(frozen=True)
class Preprocessing:
    """What a trained model needs besides its weights to read raw sequences."""

    mean: list[float]  # per channel, fit on the train split (float features; empty for tokens)
    std: list[float]
    labels: list[str] = field(default_factory=list)  # class/tag index -> name
    task: str = "classify"
    feature_kind: str = "float"  # float | token
    vocab: list[str] = field(default_factory=list)  # token id -> token
    target_vocab: list[str] = field(default_factory=list)  # seq2seq target id -> token
    task_params: dict[str, Any] = field(default_factory=dict)
    # per channel, the 10th percentile of the train rows' own std (float features; the raw view's
    # scale, `pipeline.models.instance.raw_view_affine`); empty where the manifest predates it
    row_std_p10: list[float] = field(default_factory=list)

    @property
    def num_channels(self) -> int:
        return len(self.mean) if self.feature_kind == "float" else 1

    @classmethod
    def from_manifest(cls, manifest: Any) -> Preprocessing:
        norm = manifest.normalization
        return cls(
            mean=list(norm.mean) if norm is not None else [],
            std=list(norm.std) if norm is not None else [],
            labels=list(manifest.labels),
            task=manifest.task,
            feature_kind=manifest.feature.kind,
            vocab=list(manifest.vocab),
            target_vocab=list(manifest.target_vocab),
            task_params=dict(manifest.task_params),
            row_std_p10=list(norm.row_std_p10 or []) if norm is not None else [],
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(**data)


def pad_steps(
    steps_NC: np.ndarray, lengths_B: np.ndarray, pre: Preprocessing
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalize concatenated steps and scatter them into a zero-padded batch.

    Args:
        steps_NC: every valid step of every sequence, sequence after sequence.
        lengths_B: steps per sequence; sums to N.

    Returns:
        x_BTC float32 (pad steps are exactly 0 after normalization) and lengths_B int64.
    """
    lengths_B = np.asarray(lengths_B, dtype=np.int64)
    if steps_NC.shape[1] != pre.num_channels:
        raise ValueError(
            f"expected {pre.num_channels} channels per step (from the training data), got {steps_NC.shape[1]}"
        )
    if lengths_B.size and lengths_B.min() < 1:
        raise ValueError("every sequence needs at least one step; got an empty sequence")
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    steps_NC = (steps_NC.astype(np.float32, copy=False) - mean) / std
    batch, max_len = len(lengths_B), int(lengths_B.max()) if lengths_B.size else 0
    x_BTC = np.zeros((batch, max_len, pre.num_channels), dtype=np.float32)
    starts_B = np.concatenate([[0], np.cumsum(lengths_B)[:-1]])
    row_N = np.repeat(np.arange(batch), lengths_B)
    time_N = np.arange(int(lengths_B.sum())) - np.repeat(starts_B, lengths_B)
    x_BTC[row_N, time_N] = steps_NC
    return torch.from_numpy(x_BTC), torch.from_numpy(lengths_B)


def arrow_steps(x: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """`x` column (list<list<float>> or list<float>) -> (steps_NC, lengths_B)."""
    parts = XParts(x)
    num_channels = int(parts.step_widths[0]) if len(parts.step_widths) else 0
    if len(parts.step_widths) and (parts.step_widths != num_channels).any():
        raise ValueError("every step must have the same number of channels; validate the dataset")
    return parts.values.reshape(-1, num_channels), parts.row_steps


def python_steps(sequences: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Raw sequences (each T x C nested lists/arrays, or T values for one channel).

    Returns (steps_NC, lengths_B) for `pad_steps`.
    """
    arrays = []
    for i, seq in enumerate(sequences):
        arr = np.asarray(list(seq) if isinstance(seq, np.ndarray) and seq.dtype == object else seq,
                         dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"sequence {i}: expected time x channels, got shape {arr.shape}")
        arrays.append(arr)
    lengths_B = np.array([len(a) for a in arrays], dtype=np.int64)
    steps_NC = np.concatenate(arrays) if arrays else np.zeros((0, 0), dtype=np.float32)
    return steps_NC, lengths_B


def pad_token_lists(values_N: np.ndarray, lengths_B: np.ndarray, *, pad: int = 0,
                    dtype: Any = np.int64) -> torch.Tensor:
    """Concatenated per-row values (token ids, per-step labels) -> (B, T) padded with `pad`."""
    lengths_B = np.asarray(lengths_B, dtype=np.int64)
    batch, max_len = len(lengths_B), int(lengths_B.max()) if lengths_B.size else 0
    out_BT = np.full((batch, max_len), pad, dtype=dtype)
    starts_B = np.concatenate([[0], np.cumsum(lengths_B)[:-1]]).astype(np.int64)
    row_N = np.repeat(np.arange(batch), lengths_B)
    time_N = np.arange(int(lengths_B.sum())) - np.repeat(starts_B, lengths_B)
    out_BT[row_N, time_N] = values_N
    return torch.from_numpy(out_BT)


def arrow_lists(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A list<number> column -> (flat values, lengths per row)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
    return col.flatten().to_numpy(zero_copy_only=False), lengths


def collate_inputs(batch: pa.Table, pre: Preprocessing) -> dict[str, torch.Tensor]:
    """The `x` column -> {"x": x_BTC float (normalized) or x_BT int64 token ids, "lengths": lengths_B}."""
    if pre.feature_kind == "token":
        ids_N, lengths_B = arrow_lists(batch.column("x"))
        if lengths_B.size and lengths_B.min() < 1:
            raise ValueError("every sequence needs at least one token; got an empty sequence")
        return {"x": pad_token_lists(ids_N, lengths_B), "lengths": torch.from_numpy(lengths_B)}
    steps_NC, lengths_B = arrow_steps(batch.column("x"))
    x_BTC, lengths_B = pad_steps(steps_NC, lengths_B, pre)
    return {"x": x_BTC, "lengths": lengths_B}
