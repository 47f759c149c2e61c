"""Statistics the manifest records: per-channel normalization fit on train, how far the rows'
own scales spread, sequence lengths per split, and the channel count."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.data.dataset.arrays import XParts, as_array, is_token_x, list_lengths, null_mask
from pipeline.data.dataset.manifest import LengthStats, Normalization
from pipeline.data.dataset.schema import DatasetError

# std below this is treated as this, so normalising a constant channel never divides by zero.
STD_FLOOR = 1e-6


def fit_normalization(train_table: pa.Table) -> Normalization:
    """Per-channel mean/std over every finite value of every time step of the train split.

    All time steps must have the same channel count C. Accumulates in float64. A channel with no
    finite value gets mean 0, std 1; std is floored at STD_FLOOR.
    """
    parts = XParts(train_table.column("x"))
    widths = parts.step_widths[~parts.step_null]
    if len(widths) == 0:
        raise DatasetError("cannot fit normalization: the train split has no time steps")
    c = int(widths[0])
    if (widths != c).any() or parts.step_null.any() or c == 0:
        raise DatasetError("cannot fit normalization: time steps have different channel counts")
    vals = parts.values.reshape(-1, c)
    total = np.zeros(c, np.float64)
    count = np.zeros(c, np.int64)
    # Blocks of steps, so 100k x 100 x 12 values never need a full float64 copy; non-finite
    # values (only present in unvalidated data) are left out of the statistics.
    block = 1 << 18
    all_finite = bool(np.isfinite(vals).all())
    for start in range(0, len(vals), block):
        v = vals[start : start + block].astype(np.float64)
        if all_finite:
            total += v.sum(axis=0)
            count += len(v)
        else:
            ok = np.isfinite(v)
            total += np.where(ok, v, 0.0).sum(axis=0)
            count += ok.sum(axis=0)
    mean = np.divide(total, count, out=np.zeros(c), where=count > 0)
    sq = np.zeros(c, np.float64)
    for start in range(0, len(vals), block):
        v = vals[start : start + block].astype(np.float64)
        v -= mean
        v *= v
        sq += v.sum(axis=0) if all_finite else np.where(np.isfinite(v), v, 0.0).sum(axis=0)
    var = np.divide(sq, count, out=np.ones(c), where=count > 0)
    std = np.maximum(np.sqrt(var), STD_FLOOR)
    p10, p90 = row_std_quantiles(vals, parts.row_steps)
    return Normalization(mean=[float(m) for m in mean], std=[float(s) for s in std],
                         row_std_p10=p10, row_std_p90=p90)


def row_std_quantiles(vals_NC: np.ndarray, row_steps: np.ndarray) -> tuple[list[float], list[float]]:
    """Per channel, the 10th and 90th percentile over rows of each row's own std (population,
    over its steps; rows with a non-finite value or no step are left out). Rows are taken in
    blocks of about 2**18 steps, so no float64 copy of the whole split is made."""
    c = vals_NC.shape[1]
    ends = np.cumsum(row_steps)
    starts = ends - row_steps
    stds: list[np.ndarray] = []
    block, first = 1 << 18, 0
    while first < len(row_steps):
        last = int(np.searchsorted(ends, starts[first] + block, side="right"))
        last = max(last, first + 1)
        rows = slice(first, last)
        keep = row_steps[rows] > 0
        lo, hi = int(starts[first]), int(ends[last - 1])
        seg = vals_NC[lo:hi].astype(np.float64)
        local = (starts[rows] - lo)[keep]
        if len(local):
            n = row_steps[rows][keep][:, None].astype(np.float64)
            finite = np.add.reduceat(np.isfinite(seg).all(axis=1).astype(np.int64), local)[:, None] == n
            seg = np.where(np.isfinite(seg), seg, 0.0)
            mean = np.add.reduceat(seg, local, axis=0) / n
            var = np.maximum(np.add.reduceat(seg * seg, local, axis=0) / n - mean * mean, 0.0)
            stds.append(np.sqrt(var)[finite[:, 0]])
        first = last
    every = np.concatenate(stds) if stds else np.zeros((0, c))
    if not len(every):
        return [1.0] * c, [1.0] * c
    p10, p90 = np.quantile(every, [0.1, 0.9], axis=0)
    return [float(v) for v in p10], [float(v) for v in p90]


def length_stats(table: pa.Table) -> LengthStats:
    """Min, max and mean number of time steps over the non-null rows (0s for an empty table)."""
    x = as_array(table.column("x")) if table.num_rows else None
    if x is not None and is_token_x(x.type):
        steps = list_lengths(x)[~null_mask(x)]
    else:
        parts = XParts(table.column("x"))
        steps = parts.row_steps[~parts.row_null]
    if len(steps) == 0:
        return LengthStats(min=0, max=0, mean=0.0)
    return LengthStats(min=int(steps.min()), max=int(steps.max()), mean=float(steps.mean()))


def num_channels(table: pa.Table) -> int:
    """Values per time step of ``x`` (the train split's: the manifest's ``feature.num_channels``)."""
    parts = XParts(table.column("x"))
    widths = parts.step_widths[~parts.step_null]
    if len(widths) == 0:
        raise DatasetError("cannot tell the channel count: the train split has no time steps")
    return int(widths[0])

