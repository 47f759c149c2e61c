"""Per-sequence (instance) statistics and normalization over valid steps, shared by the
forecaster (RevIN: reversed on the forecast) and the classifier (each series on its own scale,
its scale kept as features: `row_normalize`).

Shape suffixes: B batch, T time steps (padded), C channels.
"""

from __future__ import annotations

import torch

from pipeline.models.attention import lengths_to_mask

# Floor of a window's standard deviation, in the units the model sees (already divided by the
# train split's global std, so 1e-3 is a thousandth of the series' typical spread): a flat
# history is centred and left unscaled instead of being divided by ~0.
INSTANCE_STD_FLOOR = 1e-3
# The classifier's floor instead: a row's std is floored at this fraction of its own largest
# |value|. float32 holds about 7 significant digits, so variation under ~1e-5 of the values
# themselves (about 100 units in the last place) is rounding, not shape; above it, a row keeps
# its shape however far under the dataset's scale it lies.
ROW_STD_FLOOR = 1e-5


def window_statistics(x_BTC: torch.Tensor, lengths_B: torch.Tensor,
                      eps: float = INSTANCE_STD_FLOOR) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window and channel mean and (population) std over the valid steps only.

    Args:
        x_BTC: padded values (whatever sits in the pad steps is ignored).
        lengths_B: valid steps per window (>= 1), any device.
        eps: the std's floor (a history of one step, or a flat one, has std 0).

    Returns:
        mean_B1C, std_B1C: detached (as in RevIN: the statistics are data, not something to
        learn through), std >= eps.
    """
    lengths_B = lengths_B.to(x_BTC.device)
    valid_BT1 = lengths_to_mask(lengths_B, x_BTC.shape[1]).unsqueeze(-1)
    count_B11 = lengths_B.view(-1, 1, 1).to(x_BTC.dtype)
    x_BTC = x_BTC.detach()
    mean_B1C = x_BTC.masked_fill(~valid_BT1, 0.0).sum(dim=1, keepdim=True) / count_B11
    centred_BTC = (x_BTC - mean_B1C).masked_fill(~valid_BT1, 0.0)
    var_B1C = (centred_BTC**2).sum(dim=1, keepdim=True) / count_B11
    return mean_B1C, var_B1C.sqrt().clamp_min(eps)


def instance_normalize(x_BTC: torch.Tensor, lengths_B: torch.Tensor,
                       eps: float = INSTANCE_STD_FLOOR) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RevIN's first half: each window and channel centred on its mean and divided by its std.

    Returns:
        z_BTC: (x - mean) / std on valid steps, exactly 0 on pad steps (as the body gets pads
            without instance norm); mean_B1C, std_B1C: from `window_statistics`, for
            `instance_denormalize`.
    """
    mean_B1C, std_B1C = window_statistics(x_BTC, lengths_B, eps)
    valid_BT1 = lengths_to_mask(lengths_B.to(x_BTC.device), x_BTC.shape[1]).unsqueeze(-1)
    return ((x_BTC - mean_B1C) / std_B1C).masked_fill(~valid_BT1, 0.0), mean_B1C, std_B1C


def row_normalize(x_BTC: torch.Tensor, lengths_B: torch.Tensor,
                  floor: float = ROW_STD_FLOOR) -> tuple[torch.Tensor, torch.Tensor]:
    """The classifier's instance normalization: each row and channel centred on its own mean and
    divided by its own std, floored at `floor` times the row's largest |value| over valid steps.

    Unlike `instance_normalize` (whose floor is a fraction of the dataset's scale, right for a
    forecast window), nothing here depends on the dataset's scale: a row 10^5 times quieter than
    the loudest ones reaches the encoder with the same shape as if it were loud (with a floor of
    a thousandth of the dataset's scale it was a flat line, and every such row had the same
    clamped log std). A constant row gives zeros.

    Returns:
        z_BTC: 0 on pad steps. stats_BS (S = 3C), what the normalization took away, in the units
        the model sees: each channel's mean, then each channel's log std, then each channel's
        asinh(mean / std), where the row sits relative to its own spread (scale-free: rows whose
        scales differ by orders of magnitude still get comparable numbers, which a linear head
        cannot make of the first two). Detached, as in `window_statistics`.
    """
    lengths_B = lengths_B.to(x_BTC.device)
    valid_BT1 = lengths_to_mask(lengths_B, x_BTC.shape[1]).unsqueeze(-1)
    peak_B1C = x_BTC.detach().abs().masked_fill(~valid_BT1, 0.0).amax(dim=1, keepdim=True)
    mean_B1C, std_B1C = window_statistics(x_BTC, lengths_B, eps=0.0)
    # 1e-12 of the dataset's scale only for an all-zero row (z 0, log std -27.6 rather than -inf)
    std_B1C = torch.maximum(std_B1C, floor * peak_B1C).clamp_min(1e-12)
    z_BTC = ((x_BTC - mean_B1C) / std_B1C).masked_fill(~valid_BT1, 0.0)
    stats_BS = torch.cat([mean_B1C[:, 0], std_B1C.log()[:, 0], torch.asinh(mean_B1C / std_B1C)[:, 0]], dim=1)
    return z_BTC, stats_BS


def raw_view_affine(mean_C: list[float], std_C: list[float],
                    row_std_p10_C: list[float]) -> tuple[list[float], list[float]]:
    """gain_C, bias_C with x * gain + bias = raw / p10 for x = (raw - mean) / std (the units the
    model sees): the dataset's raw values over the 10th percentile of its train rows' own std
    (`pipeline.data.dataset.stats.row_std_quantiles`), per channel. A p10 of 0 (a tenth of the
    rows constant) is raised to a millionth of the channel's std."""
    gain, bias = [], []
    for mean, std, p10 in zip(mean_C, std_C, row_std_p10_C, strict=True):
        p10 = max(float(p10), 1e-6 * float(std))
        gain.append(float(std) / p10)
        bias.append(float(mean) / p10)
    return gain, bias


def raw_view(x_BTC: torch.Tensor, lengths_B: torch.Tensor, gain_C: torch.Tensor,
             bias_C: torch.Tensor) -> torch.Tensor:
    """The rows' raw values on a signed log scale, the same for every row: asinh(raw / p10) with
    raw / p10 = x * gain + bias (`raw_view_affine`). Linear within a few p10 of zero, where a
    quiet row's shape and level stay as sharp as in its raw values; logarithmic beyond, so rows
    whose scales differ by orders of magnitude share one range (|values| of 1e5 p10 give 12).
    0 on pad steps. Not detached: it is the input, not a statistic."""
    valid_BT1 = lengths_to_mask(lengths_B.to(x_BTC.device), x_BTC.shape[1]).unsqueeze(-1)
    return torch.asinh(x_BTC * gain_C.to(x_BTC.dtype) + bias_C.to(x_BTC.dtype)).masked_fill(~valid_BT1, 0.0)
